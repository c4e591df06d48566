"""The [ctsync] table of the box's configuration file (the same file as [vrrpd]).

Errors name file, dotted key and problem (hacommon.config's checker, as for [vrrpd]).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path

from hacommon.config import Checker, ConfigError, Reference, TableSpec, check_file, read_toml
from hacommon.labenv import in_lab
from hacommon.paths import CTSYNC_CONTROL_SOCKET
from hacommon.paths import VRRPD_CONTROL_SOCKET as VRRPD_DEFAULT_SOCKET

DEFAULT_CONTROL_SOCKET = CTSYNC_CONTROL_SOCKET
DEFAULT_PORT = 3780
MIN_KEY = 16
MAX_KEY_FILE = 4096
#: Keys published with the project: the example configs/r1.toml and r2.toml, the lab's
#: (halab/ctsync.py). Anyone can read them, so anyone who can spoof peer_address could
#: forge entries for our failover commit: refused outside a lab (hacommon.labenv).
PUBLISHED_KEYS = frozenset({b"change-me-to-a-long-random-secret", b"lab-only-shared-secret-0123456789"})


class Mode(StrEnum):
    COMMIT = "commit"  # the replica waits in the external cache; committed on becoming master
    INJECT = "inject"  # every replicated entry goes into the kernel as it arrives


PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP,
             "icmpv6": socket.IPPROTO_ICMPV6, "sctp": 132, "gre": 47, "udplite": 136, "dccp": 33}
TCP_STATES = {"none": 0, "syn_sent": 1, "syn_recv": 2, "established": 3, "fin_wait": 4, "close_wait": 5,
              "last_ack": 6, "time_wait": 7, "close": 8, "syn_sent2": 9}

_KEYS = {"sync_interface", "local_address", "peer_address", "port", "key", "key_file", "mode", "failover",
         "ignore_addresses", "ignore_protocols", "ignore_tcp_states", "netlink_rcvbuf", "resend_queue",
         "mtu", "control_socket", "control_group", "node_id", "commit_timeout", "heartbeat_interval", "peer_timeout",
         "multicast_group", "backup_purge_timeout", "key_rotation_grace", "metrics_listen", "parking", "send_queue"}
_PARKING_KEYS = {"enabled", "max_hold", "max_packets", "max_bytes", "queue", "mark", "interfaces", "vips_before_commit"}


@dataclass(frozen=True)
class Failover:
    vrrp_sync_group: str | None = None  # follow this vrrpd sync group (or instance)
    vrrpd_socket: str = VRRPD_DEFAULT_SOCKET
    # Lower the group's VRRP priority by this much while this backup is not ready (its
    # bulk resync from a live peer unfinished), as pfsync demotes CARP. 0: never.
    demote_when_not_ready: int = 0


@dataclass(frozen=True)
class ParkingConfig:
    """[ctsync.parking]: packets wait for a takeover's commit (ctsync/parking.py, nfqueue.py)."""

    enabled: bool = False
    max_hold: float = 1.0  # seconds a packet waits at most
    max_packets: int = 10000  # waiting at once, past it new arrivals are dropped
    max_bytes: int = 16 << 20
    queue: int = 3780  # NFQUEUE number
    mark: int = 0x10000000  # one packet-mark bit, set on released packets for one pass of the raw table
    interfaces: tuple[str, ...] = ("vrrp+",)  # where packets arrive for the VIPs (vrrpd's macvlans)
    vips_before_commit: bool = True  # ack vrrpd's hold at once: the VIPs move, packets wait for the commit


@dataclass(frozen=True)
class CtsyncConfig:
    path: str
    sync_interface: str
    local_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    peer_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    key: bytes
    port: int = DEFAULT_PORT
    mode: Mode = Mode.COMMIT
    failover: Failover = field(default_factory=Failover)
    ignore_addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ignore_protocols: frozenset[int] = frozenset()
    ignore_tcp_states: frozenset[int] = frozenset()
    netlink_rcvbuf: int = 32 << 20
    resend_queue: int = 8192
    # Messages waiting for the send window (events while the peer takes nothing; a table
    # push streams into a quarter of it at most): past it, dropped and the table pushed.
    send_queue: int = 1 << 18
    mtu: int = 1400
    control_socket: str = DEFAULT_CONTROL_SOCKET
    # Members of this group may connect to the control socket and change things (commit,
    # flush, resync, flush-uplink); others who can connect only read. None: root only.
    control_group: str | None = None
    control_gid: int | None = None
    node_id: int = 0  # 0: derived from local_address
    commit_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    peer_timeout: float = 3.0
    # Send to this group (joined on sync_interface only) instead of unicast to the peer;
    # the peer is still identified by peer_address (the source of its datagrams).
    multicast_group: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    # On becoming backup (commit mode), once the new master's table has arrived, the
    # entries of ours it holds get at most this many seconds left (conntrackd -t). 0: off.
    backup_purge_timeout: int = 60
    parking: ParkingConfig = field(default_factory=ParkingConfig)
    # After a SIGHUP with a new key: the old one is still accepted this long (and sent
    # with for the first half, unless the peer already uses the new one). See reload_plan.
    key_rotation_grace: float = 60.0
    # "127.0.0.1:9651": serve Prometheus metrics over HTTP there (None: off).
    metrics_listen: tuple[str, int] | None = None


def parse(data: dict, path: str = "", lab: bool | None = None) -> CtsyncConfig:
    """The [ctsync] table of ``data`` (read from ``path``). ``lab``: is this a lab
    (hacommon.labenv; None: find out, only if the key is one of PUBLISHED_KEYS)?"""
    c = Checker(path)
    t = data.get("ctsync")
    if not isinstance(t, dict):
        raise ConfigError([f"{c.file}: ctsync: missing table [ctsync]"])
    c.refuse_nul(t, "ctsync")
    if c.problems:
        raise ConfigError(c.problems)
    c.unknown(t, _KEYS, "ctsync")
    iface = c.string(t, "sync_interface", "ctsync")
    addrs = {}
    for k in ("local_address", "peer_address"):
        v = c.string(t, k, "ctsync")
        if v is not None:
            try:
                addrs[k] = ipaddress.ip_address(v)
            except ValueError:
                c.fail(f"ctsync.{k}", f"not an IP address: {v!r}")
    if len(addrs) == 2 and addrs["local_address"].version != addrs["peer_address"].version:
        c.fail("ctsync.peer_address", "must be of the same IP version as local_address")
    if len(addrs) == 2 and addrs["local_address"] == addrs["peer_address"]:
        c.fail("ctsync.peer_address", "must differ from local_address")
    for k, a in addrs.items():
        if a.is_multicast or a.is_unspecified:
            c.fail(f"ctsync.{k}", f"must be a unicast address of the sync link, got {a}"
                   + (" (a multicast group goes in multicast_group)" if a.is_multicast else ""))
    group = None
    g = c.string(t, "multicast_group", "ctsync", "")
    if g:
        try:
            group = ipaddress.ip_address(g)
        except ValueError:
            c.fail("ctsync.multicast_group", f"not an IP address: {g!r}")
        else:
            if not group.is_multicast:
                c.fail("ctsync.multicast_group", f"{g} is not a multicast address (IPv4 224.0.0.0/4, IPv6 ff00::/8; e.g. 225.0.0.50 or ff02::3780)")
            elif "local_address" in addrs and group.version != addrs["local_address"].version:
                c.fail("ctsync.multicast_group", "must be of the same IP version as local_address")
            elif group.version == 6 and group.packed[1] & 0x0F == 1:
                c.fail("ctsync.multicast_group", f"{g} is interface-local (ff01::/16): it never leaves this box; use ff02::/16")
    key: bytes | None = None
    where = "ctsync.key"
    if "key" in t and "key_file" in t:
        c.fail("ctsync.key", "give key or key_file, not both")
    elif "key" in t:
        v = c.string(t, "key", "ctsync")
        if v is not None and not v.strip():
            c.fail("ctsync.key", "only whitespace: not a secret")
        elif v is not None:
            key = v.encode()
    elif "key_file" in t:
        where = "ctsync.key_file"
        kf = c.string(t, "key_file", "ctsync")
        if kf:
            key = _read_key_file(c, Path(kf) if Path(kf).is_absolute() or not path else Path(path).parent / kf)
    else:
        c.fail("ctsync.key", "missing (required): a shared secret (key = \"...\" or key_file = \"/etc/hapair/ctsync.key\")")
    if key is not None and len(key) < MIN_KEY:
        c.fail(where, f"at least {MIN_KEY} bytes of secret, got {len(key)}")
    elif key is not None and key in PUBLISHED_KEYS and not (in_lab() if lab is None else lab):
        c.fail(where, "this key is published with hapair (an example): anyone can forge entries with it; generate a "
                      "secret (head -c 32 /dev/urandom | base64 > /etc/hapair/ctsync.key, key_file = that file) "
                      "(accepted in a lab only)")
    mode = c.string(t, "mode", "ctsync", "commit")
    if mode not in tuple(Mode):
        c.fail("ctsync.mode", f"must be \"commit\" or \"inject\", got {mode!r}")
    else:
        mode = Mode(mode)
    fo = t.get("failover", {})
    failover = Failover(vrrpd_socket=_vrrpd_socket(data))
    if not isinstance(fo, dict):
        c.fail("ctsync.failover", "must be a table like { vrrp_sync_group = \"MAIN-GW\" }")
    else:
        c.unknown(fo, {"vrrp_sync_group", "vrrpd_socket", "demote_when_not_ready"}, "ctsync.failover")
        failover = Failover(
            vrrp_sync_group=c.string(fo, "vrrp_sync_group", "ctsync.failover", "") or None,
            vrrpd_socket=c.string(fo, "vrrpd_socket", "ctsync.failover", failover.vrrpd_socket),
            demote_when_not_ready=c.integer(fo, "demote_when_not_ready", "ctsync.failover", 0, 254, 0),
        )
        if failover.demote_when_not_ready and not failover.vrrp_sync_group:
            c.fail("ctsync.failover.demote_when_not_ready", "needs vrrp_sync_group (the group whose priority it lowers)")
    nets = []
    for i, a in enumerate(_list(c, t, "ignore_addresses", 'addresses or CIDRs, e.g. ["10.0.0.0/8"]')):
        try:
            if not isinstance(a, str):  # ip_network(True) would be 0.0.0.1/32
                raise TypeError
            nets.append(ipaddress.ip_network(a, strict=False))
        except (ValueError, TypeError):
            c.fail(f"ctsync.ignore_addresses[{i}]", f"not an address or CIDR: {a!r}")
    protos = set()
    for i, p in enumerate(_list(c, t, "ignore_protocols", 'protocol names or numbers, e.g. ["icmp", 132]')):
        if isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 255:
            protos.add(p)
        elif isinstance(p, str) and p.lower() in PROTOCOLS:
            protos.add(PROTOCOLS[p.lower()])
        else:
            c.fail(f"ctsync.ignore_protocols[{i}]", f"unknown protocol {p!r} (names: {', '.join(PROTOCOLS)} or a number)")
    states = set()
    for i, s in enumerate(_list(c, t, "ignore_tcp_states", 'TCP state names, e.g. ["syn_sent", "time_wait"]')):
        if isinstance(s, str) and s.lower() in TCP_STATES:
            states.add(TCP_STATES[s.lower()])
        else:
            c.fail(f"ctsync.ignore_tcp_states[{i}]", f"unknown TCP state {s!r} (one of: {', '.join(TCP_STATES)})")
    port = c.integer(t, "port", "ctsync", 1, 65535, DEFAULT_PORT)
    rcvbuf = c.integer(t, "netlink_rcvbuf", "ctsync", 8192, 1 << 30, 32 << 20)
    resend = c.integer(t, "resend_queue", "ctsync", 16, 1 << 20, 8192)
    send_queue = c.integer(t, "send_queue", "ctsync", 1024, 1 << 24, 1 << 18)
    mtu = c.integer(t, "mtu", "ctsync", 576, 65000, 1400)
    node = c.integer(t, "node_id", "ctsync", 0, 65535, 0)
    sock = c.string(t, "control_socket", "ctsync", DEFAULT_CONTROL_SOCKET)
    control_group, control_gid = c.group(t, "control_group", "ctsync")
    ctimeout = c.number(t, "commit_timeout", "ctsync", 0.1, 600, 10.0)
    hb = c.number(t, "heartbeat_interval", "ctsync", 0.05, 60, 1.0)
    pt = c.number(t, "peer_timeout", "ctsync", 0.1, 600, 3.0)
    purge = c.integer(t, "backup_purge_timeout", "ctsync", 0, 1 << 31, 60)
    parking = _parking(c, t.get("parking", {}))
    grace = c.number(t, "key_rotation_grace", "ctsync", 1, 86400, 60.0)
    metrics = c.listen_address(t, "metrics_listen", "ctsync")
    if c.problems:
        raise ConfigError(c.problems)
    local = addrs["local_address"]
    return CtsyncConfig(
        path=path, sync_interface=iface, local_address=local, peer_address=addrs["peer_address"], key=key or b"",
        port=port, mode=mode, failover=failover, ignore_addresses=tuple(nets), ignore_protocols=frozenset(protos),
        ignore_tcp_states=frozenset(states), netlink_rcvbuf=rcvbuf, resend_queue=resend, send_queue=send_queue, mtu=mtu,
        control_socket=sock, control_group=control_group, control_gid=control_gid,
        node_id=node or (int(local) & 0xFFFF) or 1, commit_timeout=ctimeout,
        heartbeat_interval=hb, peer_timeout=pt, multicast_group=group,
        backup_purge_timeout=purge, key_rotation_grace=grace, metrics_listen=metrics, parking=parking,
    )


def _read_key_file(c: Checker, p: Path) -> bytes | None:
    """The key in file ``p`` (whitespace around it stripped), or None with the problem
    recorded: not a regular file, too large, readable or writable by others, writable
    by its group, owned by someone else than root (or us), empty."""
    try:
        # Not even opened unless it is a regular file: opening a device can do things
        # (/dev/watchdog starts its timer), a FIFO would block.
        if not stat.S_ISREG(os.stat(p).st_mode):
            c.fail("ctsync.key_file", f"{p} is not a regular file")
            return None
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, ValueError) as e:  # ValueError: a path with a NUL (refused earlier anyway)
        c.fail("ctsync.key_file", f"cannot read {p}: {getattr(e, 'strerror', None) or e}")
        return None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            c.fail("ctsync.key_file", f"{p} is not a regular file")
        elif st.st_size > MAX_KEY_FILE:
            c.fail("ctsync.key_file", f"{p} is too large for a key ({st.st_size} bytes, at most {MAX_KEY_FILE})")
        elif mode & 0o004:
            c.fail("ctsync.key_file", f"readable by others (mode {mode:04o}): chmod o-rwx {p}")
        elif mode & 0o002:
            c.fail("ctsync.key_file", f"writable by others (mode {mode:04o}): chmod o-rwx {p}")
        elif mode & 0o020:
            c.fail("ctsync.key_file", f"writable by its group (mode {mode:04o}): chmod g-w,o-rwx {p}")
        elif st.st_uid not in (0, os.geteuid()):
            c.fail("ctsync.key_file", f"owned by uid {st.st_uid}, who can change it: chown root {p}")
        else:
            try:
                key = os.read(fd, MAX_KEY_FILE + 1).strip()
            except OSError as e:
                c.fail("ctsync.key_file", f"cannot read {p}: {e.strerror}")
                return None
            if not key:
                c.fail("ctsync.key_file", f"{p} holds no key (empty or only whitespace)")
                return None
            return key
    finally:
        os.close(fd)
    return None


def _list(c: Checker, t: dict, key: str, what: str) -> list:
    v = t.get(key, [])
    if not isinstance(v, list):
        c.fail(f"ctsync.{key}", f"must be a list of {what}, got {v!r}")
        return []
    return v


def _parking(c: Checker, t) -> ParkingConfig:
    prefix = "ctsync.parking"
    if not isinstance(t, dict):
        c.fail(prefix, "must be a table like { enabled = true }")
        return ParkingConfig()
    c.unknown(t, _PARKING_KEYS, prefix)
    d = ParkingConfig()
    ifaces = t.get("interfaces", list(d.interfaces))
    if not isinstance(ifaces, list) or not ifaces or not all(isinstance(i, str) and 0 < len(i) <= 15 and " " not in i
                                                            for i in ifaces):
        c.fail(f"{prefix}.interfaces", f"must be a non-empty list of interface names (a trailing + matches a prefix, "
                                       f"e.g. \"vrrp+\"), got {ifaces!r}")
        ifaces = list(d.interfaces)
    mark = c.integer(t, "mark", prefix, 1, 0xFFFFFFFF, d.mark)
    if mark & (mark - 1):
        c.fail(f"{prefix}.mark", f"must be a single bit (a power of two, e.g. 0x10000000), got {mark:#x}")
    return ParkingConfig(
        enabled=c.boolean(t, "enabled", prefix, d.enabled),
        max_hold=c.number(t, "max_hold", prefix, 0.01, 60, d.max_hold),
        max_packets=c.integer(t, "max_packets", prefix, 1, 1 << 20, d.max_packets),
        max_bytes=c.integer(t, "max_bytes", prefix, 1500, 1 << 30, d.max_bytes),
        queue=c.integer(t, "queue", prefix, 0, 65535, d.queue),
        mark=mark,
        interfaces=tuple(ifaces),
        vips_before_commit=c.boolean(t, "vips_before_commit", prefix, d.vips_before_commit),
    )


#: What SIGHUP changes in a running ctsync (dotted keys of the [ctsync] table); every
#: other key keeps its running value until a restart, with a log line naming it.
RELOADABLE = ("key", "key_rotation_grace", "ignore_addresses", "ignore_protocols", "ignore_tcp_states",
              "heartbeat_interval", "peer_timeout", "commit_timeout", "backup_purge_timeout")
_SECRET = {"key"}


def _running_values(cfg: CtsyncConfig) -> dict[str, object]:
    """Every setting of a config under its dotted key (key_file's content is "key")."""
    out = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("path", "failover")}
    out.update({f"failover.{f.name}": getattr(cfg.failover, f.name) for f in fields(cfg.failover)})
    return out


def reload_plan(old: CtsyncConfig, new: CtsyncConfig) -> tuple[CtsyncConfig, list[str], list[str]]:
    """What a SIGHUP does with a newly read file: (the config to run, the keys that
    change now, one line per key that cannot change at run time). Refused keys keep
    their running value; the daemon keeps running."""
    was, now = _running_values(old), _running_values(new)
    applied = [k for k in RELOADABLE if was[k] != now[k]]
    refused = []
    for k in was:
        if k not in RELOADABLE and was[k] != now[k]:
            refused.append(f"ctsync.{k}: cannot change while ctsync runs (running {_show(was[k])}, the file now says "
                           f"{_show(now[k])}); restart ctsync to apply it")
    running = replace(old, path=new.path, **{k: getattr(new, k) for k in applied})
    return running, [f"ctsync.{'key (or key_file)' if k in _SECRET else k}" for k in applied], refused


def _show(v: object) -> str:
    if isinstance(v, (tuple, frozenset, set)):
        return "[" + ", ".join(sorted(str(x) for x in v)) + "]"
    if isinstance(v, StrEnum):
        return str(v)
    return repr(v) if isinstance(v, str) else str(v)


def _vrrpd_socket(data: dict) -> str:
    """Default: the control socket of the [vrrpd] table of the same file."""
    v = data.get("vrrpd")
    if isinstance(v, dict) and isinstance(v.get("control_socket"), str):
        return v["control_socket"]
    return VRRPD_DEFAULT_SOCKET


def load(path: str | Path) -> CtsyncConfig:
    return parse(read_toml(path), str(path))


def _summary(cfg: CtsyncConfig) -> str:
    via = f" via multicast {cfg.multicast_group}" if cfg.multicast_group else ""
    follow = f", following vrrpd sync group {cfg.failover.vrrp_sync_group}" if cfg.failover.vrrp_sync_group else ""
    return f"mode {cfg.mode}, peer {cfg.peer_address}{via} on {cfg.sync_interface}{follow}"


def _references(data: dict) -> list[Reference]:
    """What [ctsync] takes from [vrrpd]: the sync group (or instance) it follows, and
    vrrpd's control socket if given here (by default it is [vrrpd]'s own)."""
    t = data.get("ctsync")
    fo = t.get("failover") if isinstance(t, dict) else None
    if not isinstance(fo, dict):
        return []
    refs = []
    group = fo.get("vrrp_sync_group")
    if isinstance(group, str) and group:
        refs.append(Reference("ctsync.failover.vrrp_sync_group", group,
                              {"vrrpd.sync_group": "sync groups", "vrrpd.instance": "instances"}, "sync group or instance"))
    sock = fo.get("vrrpd_socket")
    if isinstance(sock, str) and sock:
        refs.append(Reference("ctsync.failover.vrrpd_socket", sock, {"vrrpd.control_socket": "its control_socket"},
                              "control socket"))
    return refs


#: [ctsync] in the one check of a box's file (hacommon.config.check_file; registered as
#: an entry point in pyproject.toml).
TABLE = TableSpec("ctsync", parse, summary=_summary, references=_references)


def load_checked(path: str | Path) -> CtsyncConfig:
    """The [ctsync] table, after every table of the file and their cross-references
    passed (what the daemon runs and reloads, and what --check checks)."""
    return check_file(path, TABLE).configs["ctsync"]
