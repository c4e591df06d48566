"""TOML configuration for vrrpd: typed, validated, with errors a user can act on.

Every error names the file, the dotted key and the problem, e.g.
``r1.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got 300``.
Unknown keys inside vrrpd's own tables are errors (a typo must not silently fall back
to a default); unknown top-level tables are not, since the same file holds [ctsync].
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacommon.config import Checker, ConfigError, TableSpec, check_file, read_toml
from hacommon.paths import VRRPD_CONTROL_SOCKET

from .machine import RouterParams
from .packet import AUTH_NONE, AUTH_SIMPLE, encode_auth
from .packet_v3 import MAX_ADVER_INT

VirtualAddress = ipaddress.IPv4Interface | ipaddress.IPv6Interface
MAX_ADDRESSES = 20  # per instance, either family

DEFAULT_CONTROL_SOCKET = VRRPD_CONTROL_SOCKET


@dataclass(frozen=True)
class TrackInterface:
    interface: str
    weight: int = 0  # 0: the instance goes to FAULT while the link is down


@dataclass(frozen=True)
class InstanceConfig:
    name: str
    interface: str
    vrid: int
    priority: int = 100
    advert_interval: float = 1  # seconds: whole in VRRPv2, hundredths in VRRPv3
    preempt: bool = True
    preempt_delay: float = 0.0
    virtual_addresses: tuple[VirtualAddress, ...] = ()
    use_vmac: bool = True
    auth_type: int = AUTH_NONE
    auth_password: str = ""
    track_interfaces: tuple[TrackInterface, ...] = ()
    strict: bool = False
    notify: tuple[str, ...] = ()
    garp_count: int = 5
    garp_interval: float = 0.0
    garp_repeat_delay: float = 5.0
    track_probes: tuple = ()  # of uplink_config.TrackProbe: see docs/uplinks.md
    version: int = 2  # 2: RFC 3768; 3: RFC 5798 (IPv4 or IPv6)
    accept_mode: bool | None = None  # None: the version's default (see RouterParams.accept)
    checksum_pseudo_header: bool = True  # VRRPv3 over IPv4: how the checksum is summed
    garp_refresh: float = 0.0  # seconds between announcements while master; 0: off

    @property
    def family(self) -> int:
        """4 or 6: the family of the virtual addresses (one per instance)."""
        return self.virtual_addresses[0].version if self.virtual_addresses else 4

    def router_params(self) -> RouterParams:
        return RouterParams(
            name=self.name,
            vrid=self.vrid,
            priority=self.priority,
            virtual_addresses=tuple(a.ip for a in self.virtual_addresses),
            advert_interval=self.advert_interval,
            preempt=self.preempt,
            preempt_delay=self.preempt_delay,
            auth_type=self.auth_type,
            auth_data=encode_auth(self.auth_password) if self.auth_type == AUTH_SIMPLE else bytes(8),
            strict=self.strict,
            garp_count=self.garp_count,
            garp_repeat_delay=self.garp_repeat_delay,
            garp_refresh=self.garp_refresh,
            version=self.version,
            accept_mode=self.accept_mode,
        )

    @property
    def vmac_ifname(self) -> str:
        """Name of the macvlan carrying the virtual MAC (≤ 15 chars, like keepalived's
        vrrp.N): ``vrrpVRID.IFACE`` for IPv4, ``vrrp6.VRID.IFACE`` for IPv6 (an IPv4 and an
        IPv6 instance may share a VRID; their virtual MACs differ)."""
        if self.family == 6:
            return f"vrrp6.{self.vrid}.{self.interface}"[:15]
        return f"vrrp{self.vrid}.{self.interface}"[:15]


@dataclass(frozen=True)
class SyncGroupConfig:
    name: str
    instances: tuple[str, ...]
    notify: tuple[str, ...] = ()


@dataclass(frozen=True)
class VrrpdConfig:
    path: str
    control_socket: str = DEFAULT_CONTROL_SOCKET
    # Members of this group may connect to the control socket and change things
    # (hold transitions, demote); others who can connect only read. None: root only.
    control_group: str | None = None
    control_gid: int | None = None
    instances: dict[str, InstanceConfig] = field(default_factory=dict)
    sync_groups: dict[str, SyncGroupConfig] = field(default_factory=dict)
    # How long a transition to master waits for subscribers (ctsync) before adding
    # the VIPs anyway; see docs/ctsync.md (the commit-before-VIP handshake).
    transition_hold_timeout: float = 2.0
    # How long a backup about to preempt a live lower-priority master waits for its
    # preparing subscribers (ctsync commits the master's table first); 0: preempt at once.
    preempt_prepare_timeout: float = 10.0
    # A notify hook running longer than this is killed with its process group.
    notify_timeout: float = 60.0
    # Probes pinned to one uplink, and uplink failover (vrrpd/uplink_config.py).
    probes: dict = field(default_factory=dict)
    uplinks: object | None = None
    # "127.0.0.1:9650": serve Prometheus metrics over HTTP there (None: off).
    metrics_listen: tuple[str, int] | None = None

    def group_of(self, instance: str) -> str | None:
        for g in self.sync_groups.values():
            if instance in g.instances:
                return g.name
        return None


_INSTANCE_KEYS = {
    "interface", "vrid", "priority", "advert_interval", "preempt", "preempt_delay", "virtual_addresses",
    "use_vmac", "auth", "track_interfaces", "strict", "notify", "garp_count", "garp_interval",
    "garp_repeat_delay", "track_probes", "version", "accept_mode", "checksum_pseudo_header", "garp_refresh",
}
_TOP_KEYS = {"control_socket", "control_group", "instance", "sync_group", "transition_hold_timeout", "preempt_prepare_timeout",
             "notify_timeout",
             "probe", "uplinks", "metrics_listen"}


def _instance(c: Checker, name: str, t: Any) -> InstanceConfig | None:
    prefix = f"vrrpd.instance.{name}"
    if not isinstance(t, dict):
        c.fail(prefix, "must be a table")
        return None
    c.unknown(t, _INSTANCE_KEYS, prefix)
    iface = c.string(t, "interface", prefix)
    if iface is not None and len(iface) > 15:
        c.fail(f"{prefix}.interface", f"interface names are at most 15 characters, got {iface!r}")
    vrid = c.integer(t, "vrid", prefix, 1, 255)
    prio = c.integer(t, "priority", prefix, 1, 255, 100)
    version = c.integer(t, "version", prefix, 2, 3, 2)
    interval = _advert_interval(c, t, prefix, version)
    vips = _virtual_addresses(c, t, prefix, version)
    auth_type, password = AUTH_NONE, ""
    auth = t.get("auth")
    if auth is not None:
        if auth == "none" or (isinstance(auth, dict) and auth.get("type") == "none"):
            pass
        elif isinstance(auth, dict) and auth.get("type") == "pass" and version != 3:
            pw = auth.get("password")
            extra = set(auth) - {"type", "password"}
            if extra:
                c.fail(f"{prefix}.auth", f"unknown key(s) {sorted(extra)}; expected type and password")
            if not isinstance(pw, str) or not pw:
                c.fail(f"{prefix}.auth.password", "missing: auth type \"pass\" needs a password (1 to 8 characters)")
            elif len(pw.encode()) > 8:
                c.fail(f"{prefix}.auth.password", f"at most 8 bytes (RFC 2338 simple password), got {len(pw.encode())}")
            else:
                auth_type, password = AUTH_SIMPLE, pw
        elif version == 3:
            c.fail(f"{prefix}.auth", "VRRPv3 has no authentication (RFC 5798 §9); remove auth or use version = 2")
        elif isinstance(auth, dict) and auth.get("type") == "ah":
            c.fail(f"{prefix}.auth.type", "\"ah\" (IP Authentication Header) is not supported: RFC 3768 removed it")
        else:
            c.fail(f"{prefix}.auth", f"must be \"none\" or {{ type = \"pass\", password = \"...\" }}, got {auth!r}")
    tracks = [TrackInterface(n, w) for n, w in c.weighted_names(t, "track_interfaces", prefix, "interface", "eth2")]
    garp_count = c.integer(t, "garp_count", prefix, 0, 100, 5)
    # Check every remaining key before giving up on the instance, so that one bad
    # required field does not hide the other problems of the same table.
    preempt = c.boolean(t, "preempt", prefix, True)
    preempt_delay = c.number(t, "preempt_delay", prefix, 0, 3600, 0.0)
    use_vmac = c.boolean(t, "use_vmac", prefix, True)
    strict = c.boolean(t, "strict", prefix, False)
    notify = c.command(t, "notify", prefix)
    garp_interval = c.number(t, "garp_interval", prefix, 0, 10, 0.0)
    garp_repeat_delay = c.number(t, "garp_repeat_delay", prefix, 0, 3600, 5.0)
    from .uplink_config import parse_track_probes

    track_probes = parse_track_probes(c, t, prefix)
    family = vips[0].version if vips else 4
    accept_mode = None
    if "accept_mode" in t:
        accept_mode = c.boolean(t, "accept_mode", prefix, False)
    pseudo = c.boolean(t, "checksum_pseudo_header", prefix, True)
    if "checksum_pseudo_header" in t and (version != 3 or family != 4):
        c.fail(f"{prefix}.checksum_pseudo_header",
               "only VRRPv3 over IPv4 has a choice of checksum (RFC 5798 §5.2.8); remove it"
               + (" (this instance is VRRPv2)" if version != 3 else " (this instance is IPv6: always with the pseudo-header)"))
    garp_refresh = c.number(t, "garp_refresh", prefix, 0, 86400, 0.0)
    if None in (iface, vrid, prio, interval, garp_count, version) or not vips:
        return None
    icfg = InstanceConfig(
        name=name,
        interface=iface,
        vrid=vrid,
        priority=prio,
        advert_interval=interval,
        preempt=preempt,
        preempt_delay=preempt_delay,
        virtual_addresses=tuple(vips),
        use_vmac=use_vmac,
        auth_type=auth_type,
        auth_password=password,
        track_interfaces=tuple(tracks),
        strict=strict,
        notify=notify,
        garp_count=garp_count,
        garp_interval=garp_interval,
        garp_repeat_delay=garp_repeat_delay,
        track_probes=track_probes,
        version=version,
        accept_mode=accept_mode,
        checksum_pseudo_header=pseudo,
        garp_refresh=garp_refresh,
    )
    try:
        icfg.router_params()  # the state machine's own checks, as a backstop
    except ValueError as e:
        c.fail(prefix, str(e))
        return None
    return icfg


def _advert_interval(c: Checker, t: dict, prefix: str, version: int | None) -> float | None:
    """VRRPv2: whole seconds 1-255; VRRPv3: 0.01-40.95 s in hundredths (a 12-bit count of
    centiseconds on the wire)."""
    if version != 3:
        v = t.get("advert_interval")
        if isinstance(v, float) and version == 2:
            if not v.is_integer():
                c.fail(f"{prefix}.advert_interval", f"VRRPv2 carries whole seconds (1 to 255), got {v!r}; "
                       "fractions of a second need version = 3")
                return None
            t = {**t, "advert_interval": int(v)}
        return c.integer(t, "advert_interval", prefix, 1, 255, 1)
    v = t.get("advert_interval", 1)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        c.fail(f"{prefix}.advert_interval", f"must be a number of seconds from 0.01 to 40.95, got {v!r}")
        return None
    cs = v * 100
    if not 1 <= round(cs) <= MAX_ADVER_INT or abs(cs - round(cs)) > 1e-6:
        c.fail(f"{prefix}.advert_interval",
               f"VRRPv3 carries 0.01 to 40.95 s in steps of 0.01 s (RFC 5798 §5.2.7), got {v!r}")
        return None
    return round(cs) / 100


def _virtual_addresses(c: Checker, t: dict, prefix: str, version: int | None) -> list[VirtualAddress]:
    key = f"{prefix}.virtual_addresses"
    if version == 3:
        kind, example = "IPv4 or IPv6 CIDR strings", '"10.0.0.1/24", or "fe80::1/64", "2001:db8::1/64"'
    else:
        kind, example = "IPv4 CIDR strings", '"10.0.0.1/24"'
    raw = t.get("virtual_addresses")
    if raw is None:
        c.fail(key, f"missing (required): a list of {kind} like {example}")
        return []
    if not isinstance(raw, list) or not raw:
        c.fail(key, f"must be a non-empty list of {kind}, got {raw!r}")
        return []
    vips: list[VirtualAddress] = []
    bad = False
    for i, a in enumerate(raw):
        ikey = f"{key}[{i}]"
        if isinstance(a, str) and "%" in a:
            c.fail(ikey, f"no scope id ({a!r}): the instance's interface is the scope of a link-local address")
            bad = True
            continue
        try:
            if not isinstance(a, str):
                raise ValueError
            vip = ipaddress.ip_interface(a)
        except ValueError:
            c.fail(ikey, f"not an {'IPv4 or IPv6' if version == 3 else 'IPv4'} address or CIDR: {a!r}")
            bad = True
            continue
        if vip.version == 6 and version == 2:
            c.fail(ikey, f"{a}: VRRPv2 carries IPv4 addresses only; IPv6 needs version = 3")
            bad = True
            continue
        if vip.ip.is_multicast or vip.ip.is_unspecified or vip.ip.is_loopback:
            c.fail(ikey, f"{a} cannot be a virtual address (multicast, unspecified or loopback)")
            bad = True
            continue
        vips.append(vip)
    if bad:
        return []
    families = {v.version for v in vips}
    if len(families) > 1:
        c.fail(key, "IPv4 and IPv6 addresses mixed: a virtual router has one family (RFC 5798 §5.2.9); "
               "make two instances, one per family (they may share the VRID)")
        return []
    if len({v.ip for v in vips}) != len(vips):
        c.fail(key, "an address is listed twice")
        return []
    if len(vips) > MAX_ADDRESSES:
        c.fail(key, f"at most {MAX_ADDRESSES} addresses per instance, got {len(vips)}")
        return []
    if families == {6} and not vips[0].ip.is_link_local:
        c.fail(f"{key}[0]", f"{vips[0]}: the first IPv6 virtual address must be the virtual router's link-local "
               "address, e.g. \"fe80::1/64\" (RFC 5798 §5.2.9: hosts know their router by it)")
        return []
    return vips


def parse(data: dict, path: str = "") -> VrrpdConfig:
    c = Checker(path)
    top = data.get("vrrpd")
    if not isinstance(top, dict):
        raise ConfigError([f"{c.file}: vrrpd: missing table [vrrpd]"])
    c.refuse_nul(top, "vrrpd")
    if c.problems:  # names and strings the rest may pass on (argv, paths, logs)
        raise ConfigError(c.problems)
    c.unknown(top, _TOP_KEYS, "vrrpd")
    sock = c.string(top, "control_socket", "vrrpd", DEFAULT_CONTROL_SOCKET)
    control_group, control_gid = c.group(top, "control_group", "vrrpd")
    hold = c.number(top, "transition_hold_timeout", "vrrpd", 0, 60, 2.0)
    prepare = c.number(top, "preempt_prepare_timeout", "vrrpd", 0, 600, 10.0)
    notify_timeout = c.number(top, "notify_timeout", "vrrpd", 1, 3600, 60.0)
    metrics = c.listen_address(top, "metrics_listen", "vrrpd")
    instances: dict[str, InstanceConfig] = {}
    raw_inst = top.get("instance", {})
    # A box may run vrrpd only for its uplinks (no VRRP instance).
    uplinks_only = "uplinks" in top and "instance" not in top
    if uplinks_only:
        raw_inst = {}
    elif not isinstance(raw_inst, dict) or not raw_inst:
        c.fail("vrrpd.instance", "no instance defined: add a [vrrpd.instance.NAME] table")
        raw_inst = {}
    else:
        for name, t in raw_inst.items():
            inst = _instance(c, name, t)
            if inst:
                instances[name] = inst
    seen: dict[tuple[str, int, int], str] = {}
    macvlans: dict[str, str] = {}
    for inst in instances.values():
        # RFC 5798 §1: IPv4 and IPv6 virtual routers are independent, even with one VRID.
        key = (inst.interface, inst.family, inst.vrid)
        if key in seen:
            c.fail(f"vrrpd.instance.{inst.name}.vrid",
                   f"VRID {inst.vrid} on {inst.interface} is already used by IPv{inst.family} instance {seen[key]}")
            continue
        seen[key] = inst.name
        if inst.use_vmac:
            other = macvlans.get(inst.vmac_ifname)
            if other is not None:
                c.fail(f"vrrpd.instance.{inst.name}.interface",
                       f"its macvlan name {inst.vmac_ifname} (cut to 15 characters) is also instance {other}'s; "
                       "use a shorter interface name")
            macvlans[inst.vmac_ifname] = inst.name
    groups: dict[str, SyncGroupConfig] = {}
    member_of: dict[str, str] = {}
    raw_groups = top.get("sync_group") or {}
    if not isinstance(raw_groups, dict):
        c.fail("vrrpd.sync_group", "must be a table of [vrrpd.sync_group.NAME] tables")
        raw_groups = {}
    for gname, g in raw_groups.items():
        prefix = f"vrrpd.sync_group.{gname}"
        if not isinstance(g, dict):
            c.fail(prefix, "must be a table with instances = [...]")
            continue
        c.unknown(g, {"instances", "notify"}, prefix)
        members = g.get("instances")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            c.fail(f"{prefix}.instances", f"must be a non-empty list of instance names, got {members!r}")
            continue
        for m in members:
            if m not in raw_inst:
                c.fail(f"{prefix}.instances", f"no instance named {m!r} (defined: {', '.join(sorted(raw_inst)) or 'none'})")
            elif m in member_of:
                c.fail(f"{prefix}.instances", f"instance {m!r} is already in sync group {member_of[m]!r}")
            else:
                member_of[m] = gname
        groups[gname] = SyncGroupConfig(gname, tuple(members), c.command(g, "notify", prefix))
    probes, uplinks = _probes_and_uplinks(c, top, raw_inst)
    if c.problems:
        raise ConfigError(c.problems)
    return VrrpdConfig(path=path, control_socket=sock, control_group=control_group, control_gid=control_gid,
                       instances=instances, sync_groups=groups, transition_hold_timeout=hold,
                       preempt_prepare_timeout=prepare, notify_timeout=notify_timeout, probes=probes, uplinks=uplinks, metrics_listen=metrics)


def _probes_and_uplinks(c: Checker, top: dict, raw_inst: dict) -> tuple[dict, object | None]:
    from . import uplink_config as uc

    probes = uc.parse_probes(c, top.get("probe"))
    raw_probes = top.get("probe") if isinstance(top.get("probe"), dict) else {}
    uplinks = uc.parse_uplinks(c, top.get("uplinks"), probes, set(raw_probes))
    probes = uc.assign_probe_tables(c, probes, uplinks)
    for name, t in raw_inst.items():
        if not isinstance(t, dict) or not isinstance(t.get("track_probes"), list):
            continue
        for i, tr in enumerate(t["track_probes"]):
            p = tr.get("probe") if isinstance(tr, dict) else tr
            if isinstance(p, str) and p not in raw_probes:
                c.fail(f"vrrpd.instance.{name}.track_probes[{i}].probe",
                       f"no probe named {p!r} (defined: {', '.join(sorted(raw_probes)) or 'none'}; add a [vrrpd.probe.{p}] table)")
    return probes, uplinks


def load(path: str | Path) -> VrrpdConfig:
    return parse(read_toml(path), str(path))


def _summary(cfg: VrrpdConfig) -> str:
    extra = ""
    if cfg.probes or cfg.uplinks:
        extra = f", {len(cfg.probes)} probe(s), {len(cfg.uplinks.links) if cfg.uplinks else 0} uplink(s)"
    return f"{len(cfg.instances)} instance(s), {len(cfg.sync_groups)} sync group(s){extra}"


def _provides(top: dict) -> dict[str, set[str]]:
    """Names other tables of the file may refer to, read from the raw [vrrpd] table (so
    a reference is checked even when this table has problems of its own)."""
    groups, insts = top.get("sync_group"), top.get("instance")
    sock = top.get("control_socket", DEFAULT_CONTROL_SOCKET)
    return {
        "vrrpd.sync_group": set(groups) if isinstance(groups, dict) else set(),
        "vrrpd.instance": set(insts) if isinstance(insts, dict) else set(),
        "vrrpd.control_socket": {sock} if isinstance(sock, str) else set(),
    }


#: [vrrpd] in the one check of a box's file (hacommon.config.check_file; registered as
#: an entry point in pyproject.toml).
TABLE = TableSpec("vrrpd", parse, summary=_summary, provides=_provides)


def load_checked(path: str | Path) -> VrrpdConfig:
    """The [vrrpd] table, after every table of the file and their cross-references
    passed (what the daemon runs and reloads, and what --check checks)."""
    return check_file(path, TABLE).configs["vrrpd"]
