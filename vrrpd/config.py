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
    advert_interval: int = 1
    preempt: bool = True
    preempt_delay: float = 0.0
    virtual_addresses: tuple[ipaddress.IPv4Interface, ...] = ()
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
        )

    @property
    def vmac_ifname(self) -> str:
        """Name of the macvlan carrying the virtual MAC (≤ 15 chars, like keepalived's vrrp.N)."""
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
    "garp_repeat_delay", "track_probes",
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
    interval = c.integer(t, "advert_interval", prefix, 1, 255, 1)
    vips: list[ipaddress.IPv4Interface] = []
    raw = t.get("virtual_addresses")
    if raw is None:
        c.fail(f"{prefix}.virtual_addresses", "missing (required): a list of IPv4 CIDR strings like \"10.0.0.1/24\"")
    elif not isinstance(raw, list) or not raw:
        c.fail(f"{prefix}.virtual_addresses", f"must be a non-empty list of IPv4 CIDR strings, got {raw!r}")
    else:
        for i, a in enumerate(raw):
            try:
                if not isinstance(a, str):
                    raise ValueError
                vips.append(ipaddress.IPv4Interface(a))
            except ValueError:
                c.fail(f"{prefix}.virtual_addresses[{i}]", f"not an IPv4 address or CIDR: {a!r}")
        if len(vips) > 20:
            c.fail(f"{prefix}.virtual_addresses", "at most 20 addresses fit one VRRPv2 advert on a 1500-byte link")
    auth_type, password = AUTH_NONE, ""
    auth = t.get("auth")
    if auth is not None:
        if auth == "none" or (isinstance(auth, dict) and auth.get("type") == "none"):
            pass
        elif isinstance(auth, dict) and auth.get("type") == "pass":
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
    if None in (iface, vrid, prio, interval, garp_count) or not vips:
        return None
    return InstanceConfig(
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
    )


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
    seen: dict[tuple[str, int], str] = {}
    for inst in instances.values():
        key = (inst.interface, inst.vrid)
        if key in seen:
            c.fail(f"vrrpd.instance.{inst.name}.vrid", f"VRID {inst.vrid} on {inst.interface} is already used by instance {seen[key]}")
        seen[key] = inst.name
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
