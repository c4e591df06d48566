"""The two VRRP stacks under test, behind one small interface, and the topology.

Topology (the same as the netns tests' ``pair`` fixture)::

    r1 10.0.0.2 ─┐
    r2 10.0.0.3 ─┼─ bridge "lan" (switch namespace, multicast snooping off)
    h  10.0.0.4 ─┘          VIP 10.0.0.100/24, VRID 7, advert interval 1 s

Both stacks run with their defaults: vrrpd puts the VIP on a virtual-MAC
macvlan; keepalived puts it on eth0 and sends from eth0's MAC (multicast
VRRPv2, no vrrp_strict).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from halab import Host, Lab, Proc, wait_for
from halab.daemons import start_keepalived
from halab.vrrp import Vrrpd, start_vrrpd
from vrrpd.packet import mac_str, vmac

ADDRS = {"r1": "10.0.0.2", "r2": "10.0.0.3", "h": "10.0.0.4"}
VIP = "10.0.0.100"
VRID = 7
IFACE = "eth0"


class BenchTimeout(Exception):
    """A run went over its time budget."""


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """Raise BenchTimeout in the main thread if the block runs longer than
    ``seconds``.  Use it *inside* ``with Lab()`` so that the timer is cancelled
    before the lab is torn down (teardown must never be interrupted)."""

    def _expired(signum, frame):
        raise BenchTimeout(f"{what}: over its {seconds:.0f} s budget")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))  # 0 would disarm it
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def build_pair(lab: Lab, hosts=("r1", "r2", "h")):
    br = lab.add_bridge("lan")
    out = {}
    for name in hosts:
        out[name] = lab.add_host(name)
        lab.connect(out[name], br, IFACE, f"{ADDRS[name]}/24")
    return br, out


# ---------------------------------------------------------------------------
# configs


def timing(interval: float = 1.0) -> dict:
    """vrrpd's instance keys for an advert interval: whole seconds are VRRPv2 (the
    default), anything faster VRRPv3 (centiseconds), accepting packets to the VIP as v2
    does (so that the two versions differ in nothing else)."""
    if interval >= 1 and float(interval).is_integer():
        return {"advert_interval": int(interval)}
    return {"version": 3, "advert_interval": interval, "accept_mode": True}


def vrrpd_instances(count: int = 1, priority: int = 100, first_vrid: int | None = None,
                    interval: float = 1.0) -> dict[str, dict]:
    """``count`` instances on eth0.  One instance: VRID 7, VIP 10.0.0.100.
    Several: VRIDs 1..count, VIP 10.0.0.(100+i)/24 each (see :func:`multi_vip`).
    ``interval`` below 1 s: VRRPv3 (:func:`timing`)."""
    if count == 1 and first_vrid is None:
        return {"V": {"interface": IFACE, "vrid": VRID, "priority": priority, **timing(interval),
                      "virtual_addresses": [f"{VIP}/24"]}}
    start = first_vrid or 1
    return {f"V{i}": {"interface": IFACE, "vrid": i, "priority": priority, **timing(interval),
                      "virtual_addresses": [multi_vip(i, count)]}
            for i in range(start, start + count)}


def multi_vip(i: int, count: int) -> str:
    """VIP of instance ``i`` of ``count``: 10.0.0.(100+i)/24 up to 150 instances
    (the figures measured before), 10.1.0.i/24 beyond (up to 254)."""
    return f"10.0.0.{100 + i}/24" if count <= 150 else f"10.1.0.{i}/24"


def keepalived_conf(count: int = 1, priority: int = 100, router_id: str = "bench", interval: float = 1.0) -> str:
    """The keepalived equivalent of :func:`vrrpd_instances`: multicast VRRPv2
    on eth0, state BACKUP, advert_int 1, no vrrp_strict, everything else default;
    below 1 s, ``vrrp_version 3`` and that ``advert_int``."""
    if count == 1:
        specs = [("VI_1", VRID, VIP)]
    else:
        specs = [(f"VI_{i}", i, multi_vip(i, count).split("/")[0]) for i in range(1, count + 1)]
    v3 = "" if "version" not in timing(interval) else "    vrrp_version 3\n"
    blocks = [f"global_defs {{\n    router_id {router_id}\n{v3}}}\n"]
    for name, vrid, vip in specs:
        blocks.append(f"""vrrp_instance {name} {{
    state BACKUP
    interface {IFACE}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {interval:g}
    virtual_ipaddress {{
        {vip}/24
    }}
}}
""")
    return "\n".join(blocks)


# ---------------------------------------------------------------------------
# stacks


@dataclass
class Daemon:
    """One running daemon of either stack."""

    stack: "Stack"
    host: Host
    proc: Proc
    vrrpd: Vrrpd | None = None


class Stack:
    name = ""

    def start(self, host: Host, priority: int, count: int = 1, tag: str = "", interval: float = 1.0) -> Daemon:
        raise NotImplementedError

    def is_master(self, d: Daemon) -> bool:
        raise NotImplementedError

    def is_backup(self, d: Daemon) -> bool:
        raise NotImplementedError

    def masters(self, d: Daemon) -> int:
        """How many of the daemon's instances are master."""
        raise NotImplementedError

    def announce_mac(self, host: Host) -> str:
        """Source MAC of the adverts and GARPs this stack sends from ``host``."""
        raise NotImplementedError

    def wait_master(self, d: Daemon, timeout: float) -> None:
        wait_for(lambda: self.is_master(d), timeout=timeout, interval=0.1,
                 what=f"{self.name} on {d.host.name} to become master")

    def wait_backup(self, d: Daemon, timeout: float) -> None:
        wait_for(lambda: self.is_backup(d), timeout=timeout, interval=0.05,
                 what=f"{self.name} on {d.host.name} to be backup")


class VrrpdStack(Stack):
    name = "vrrpd"

    def start(self, host, priority, count=1, tag="", interval=1.0):
        v = start_vrrpd(host, vrrpd_instances(count, priority, interval=interval), name=f"vrrpd{tag}")
        return Daemon(self, host, v.proc, v)

    def is_master(self, d):
        return d.vrrpd.state("V") == "master"

    def is_backup(self, d):
        return d.vrrpd.state("V") == "backup"

    def masters(self, d):
        try:
            return sum(1 for i in d.vrrpd.status().values() if i["state"] == "master")
        except (OSError, ValueError):
            return 0

    def announce_mac(self, host):
        return mac_str(vmac(VRID))


class KeepalivedStack(Stack):
    name = "keepalived"

    def start(self, host, priority, count=1, tag="", interval=1.0):
        if shutil.which("keepalived") is None:
            raise RuntimeError("keepalived is not installed (apt-get install keepalived)")
        p = start_keepalived(host, keepalived_conf(count, priority, router_id=host.name, interval=interval),
                             name=f"keepalived{tag}")
        d = Daemon(self, host, p)
        # Parent + VRRP child up before anyone measures anything.
        wait_for(lambda: len(p.group_pids()) >= 2 or not p.alive(), timeout=10,
                 what="keepalived parent and VRRP child")
        if not p.alive():
            raise RuntimeError(f"keepalived exited: {p.read_log()[-2000:]}")
        return d

    def is_master(self, d):
        return d.host.has_addr(IFACE, VIP)

    def is_backup(self, d):
        return "Entering BACKUP STATE" in d.proc.read_log() and not d.host.has_addr(IFACE, VIP)

    def masters(self, d):
        return sum(1 for a in d.host.ipv4_addrs(IFACE) if a.split("/")[0] != ADDRS[d.host.name])

    def announce_mac(self, host):
        return host.link_mac(IFACE)


STACKS: dict[str, Stack] = {"vrrpd": VrrpdStack(), "keepalived": KeepalivedStack()}



# ---------------------------------------------------------------------------
# HA stacks: VRRP + conntrack replication in the full HA pair (halab.hapair)


@dataclass
class Router:
    """One router's daemons of either HA stack."""

    stack: "HaStack"
    host: Host
    vrrp: Proc  # vrrpd or keepalived (process group)
    sync: Proc  # ctsync or conntrackd
    vrrpd: Vrrpd | None = None
    ctsync: object | None = None  # halab.ctsync.Ctsync
    conntrackd: object | None = None  # halab.conntrackd.Conntrackd


class HaStack:
    """Both HA stacks behind one interface: start a router's daemons, wait for
    its role, read the replica, commit, and the processes to measure."""

    name = ""
    label = ""
    vrrp_name = ""
    sync_name = ""

    def start(self, pair, router: str, priority: int, mode: str = "commit", advert_interval: float = 1) -> Router:
        """Both daemons in ``router``; ``advert_interval`` below 1 s (or an IPv6 pair):
        VRRPv3 on both stacks; ``mode``: commit or inject (conntrackd:
        DisableExternalCache On)."""
        raise NotImplementedError

    def start_pair(self, pair, mode: str = "commit", advert_interval: float = 1) -> tuple[Router, Router]:
        """The starting point of every HA figure: r1 (priority 200) master, then r2 (100)
        backup, its sync daemon in touch with r1's."""
        r1 = self.start(pair, "r1", 200, mode, advert_interval)
        self.wait_master(pair, r1)
        r2 = self.start(pair, "r2", 100, mode, advert_interval)
        self.wait_backup(pair, r2)
        self.wait_ready(pair, r2)
        return r1, r2

    def wait_master(self, pair, r: Router, timeout: float = 15.0) -> None:
        raise NotImplementedError

    def wait_backup(self, pair, r: Router, timeout: float = 15.0) -> None:
        raise NotImplementedError

    def wait_ready(self, pair, backup: Router, timeout: float = 15.0) -> None:
        """The backup's sync daemon talks to the master's."""
        raise NotImplementedError

    def replica_entries(self, r: Router) -> int:
        """Entries of the peer held by ``r``'s sync daemon (its external cache)."""
        raise NotImplementedError

    def local_entries(self, r: Router) -> int:
        """Entries of its own kernel held by ``r``'s sync daemon (internal cache)."""
        raise NotImplementedError

    def poll_replica(self, r: Router) -> int:
        """:meth:`replica_entries` as cheaply as the daemon allows, for polling every
        20 ms (figure 10): no process started per call."""
        return self.replica_entries(r)

    def wait_failover_commit(self, r: Router, after: float, timeout: float = 60.0) -> dict:
        """Wait until the failover's own commit (the one the takeover started, not
        :meth:`commit`) has ended in ``r``, later than epoch time ``after``; returns
        reported_s (its duration, as the stack tells it) and committed (entries)."""
        raise NotImplementedError

    def commit(self, r: Router) -> dict:
        """Write the external cache into ``r``'s kernel, as a failover does;
        returns wall_s (the command) and reported_s (the daemon's own figure)."""
        raise NotImplementedError

    def counters(self, r: Router) -> dict:
        """overruns (kernel event overruns) and other loss counters."""
        raise NotImplementedError

    def check_start(self, r: Router) -> None:
        for p in (r.vrrp, r.sync):
            if not p.alive():
                raise RuntimeError(f"{p.name} in {r.host.name} exited: {p.read_log()[-1500:]}")


class OursStack(HaStack):
    name, label, vrrp_name, sync_name = "ours", "vrrpd + ctsync", "vrrpd", "ctsync"

    def start(self, pair, router, priority, mode="commit", advert_interval=1):
        from halab.ctsync import start_ctsync
        v = pair.start_vrrpd(router, priority, advert_interval=advert_interval)
        c = start_ctsync(pair.router(router), mode, v.socket)
        return Router(self, pair.router(router), v.proc, c.proc, vrrpd=v, ctsync=c)

    def wait_master(self, pair, r, timeout=15.0):
        pair.wait_master(r.host, timeout=timeout)

    def wait_backup(self, pair, r, timeout=15.0):
        pair.wait_backup(r.host, timeout=timeout)

    def wait_ready(self, pair, backup, timeout=15.0):
        backup.ctsync.wait(lambda s: s["in_sync"], timeout, "in sync with the master")

    def replica_entries(self, r):
        return r.ctsync.status()["external_entries"]

    def local_entries(self, r):
        return r.ctsync.status()["internal_entries"]

    def wait_failover_commit(self, r, after, timeout=60.0):
        c = r.ctsync.wait_commit(after, timeout)
        return {"reported_s": c.get("duration"), "committed": c.get("committed", c.get("count")),
                "reason": c.get("reason")}

    def commit(self, r):
        # The command a notify script runs, a fresh process in the router's namespace
        # (`ctsyncctl -c CONF commit`, as `conntrackd -C CONF -c` for theirs): its wall time
        # includes the client's start-up, which a failover pays.
        ctl = str(Path(sys.executable).with_name("ctsyncctl"))
        t0 = time.monotonic()
        cp = r.host.run([ctl, "-c", str(r.ctsync.config_path), "commit"], timeout=300)
        wall = time.monotonic() - t0
        if cp.returncode != 0:
            raise RuntimeError(f"ctsyncctl commit in {r.host.name}: rc {cp.returncode} {cp.stderr.strip()}")
        c = r.ctsync.status()["last_commit"] or {}
        return {"wall_s": wall, "reported_s": c.get("duration"), "committed": c.get("committed", c.get("count"))}

    def counters(self, r):
        st = r.ctsync.status()
        return {"overruns": st["netlink_overruns"], "counters": st["counters"], "channel": st["channel"]}


class TheirsStack(HaStack):
    name, label, vrrp_name, sync_name = "theirs", "keepalived + conntrackd", "keepalived", "conntrackd"

    def start(self, pair, router, priority, mode="commit", advert_interval=1):
        from halab.conntrackd import keepalived_hapair_conf, start_conntrackd
        if shutil.which("keepalived") is None or shutil.which("conntrackd") is None:
            raise RuntimeError("keepalived and conntrackd are needed (apt-get install keepalived conntrackd)")
        host = pair.router(router)
        ct = start_conntrackd(host, mode=mode)
        # A new name each start: a killed keepalived leaves pid files that make the next
        # one in the same lab believe it is still running.
        self._starts = getattr(self, "_starts", 0) + 1
        ka = start_keepalived(host, keepalived_hapair_conf(pair, host.name, priority, ct.script, advert_interval),
                              name=f"keepalived{self._starts}" if self._starts > 1 else "keepalived")
        return Router(self, host, ka, ct.proc, conntrackd=ct)

    @staticmethod
    def _last(log: str, inst: str, state: str) -> int:
        return log.rfind(f"({inst}) Entering {state} STATE")

    def is_master(self, pair, r) -> bool:
        log = r.vrrp.read_log()
        return (all(self._last(log, i, "MASTER") > self._last(log, i, "BACKUP") for i in ("WAN", "LAN"))
                and pair.holds_vips(r.host))

    def is_backup(self, pair, r) -> bool:
        log = r.vrrp.read_log()
        return all(self._last(log, i, "BACKUP") > self._last(log, i, "MASTER") for i in ("WAN", "LAN"))

    def wait_master(self, pair, r, timeout=15.0):
        wait_for(lambda: self.is_master(pair, r), timeout=timeout, interval=0.05,
                 what=f"keepalived in {r.host.name} MASTER on WAN and LAN with both VIPs")

    def wait_backup(self, pair, r, timeout=15.0):
        wait_for(lambda: self.is_backup(pair, r), timeout=timeout, interval=0.05,
                 what=f"keepalived in {r.host.name} BACKUP on WAN and LAN")

    def wait_ready(self, pair, backup, timeout=15.0):
        # conntrackd has no "in sync" state: the backup's notify script asked for a
        # resync (-n); wait until that script has run.
        wait_for(lambda: "ctnotify: conntrackd -n" in backup.conntrackd.notify_log(), timeout=timeout,
                 interval=0.05, what=f"{backup.host.name}: the backup notify script")

    def replica_entries(self, r):
        return r.conntrackd.cache_entries("external")

    def local_entries(self, r):
        return r.conntrackd.cache_entries("internal")

    def poll_replica(self, r):
        from halab.conntrackd import parse_stats
        return parse_stats(r.conntrackd.request())["external_entries"]

    def wait_failover_commit(self, r, after, timeout=60.0):
        # keepalived's notify script (primary) logs each conntrackd call with its times;
        # `conntrackd -c` returns when the commit is done.
        def done():
            for m in re.finditer(r"ctnotify: conntrackd -c rc=(\d+) start=([0-9.]+) end=([0-9.]+)",
                                 r.conntrackd.notify_log()):
                if float(m.group(2)) > after:
                    return m
            return None
        m = wait_for(done, timeout=timeout, interval=0.05, what=f"{r.host.name}: the notify script's conntrackd -c")
        log = r.conntrackd.daemon_log()
        took = [float(x) for x in re.findall(r"commit has taken ([0-9.]+) seconds", log)]
        committed = [int(x) for x in re.findall(r"Committed (\d+) new entries", log)]
        return {"reported_s": took[-1] if took else None, "committed": committed[-1] if committed else None,
                "script_rc": int(m.group(1)), "command_s": float(m.group(3)) - float(m.group(2))}

    def commit(self, r):
        t0 = time.monotonic()
        cp = r.conntrackd.ctl("-c", timeout=300)
        wall = time.monotonic() - t0
        if cp.returncode != 0:
            raise RuntimeError(f"conntrackd -c in {r.host.name}: rc {cp.returncode} {cp.stderr.strip()}")
        log = r.conntrackd.daemon_log()
        took = [float(x) for x in re.findall(r"commit has taken ([0-9.]+) seconds", log)]
        done = [int(x) for x in re.findall(r"Committed (\d+) new entries", log)]
        return {"wall_s": wall, "reported_s": took[-1] if took else None, "committed": done[-1] if done else None}

    def counters(self, r):
        from halab.conntrackd import parse_stats
        st = parse_stats(r.conntrackd.stats())
        rt = parse_stats(r.conntrackd.ctl("-s", "runtime").stdout)
        net = parse_stats(r.conntrackd.ctl("-s", "network").stdout)
        return {"overruns": rt.get("netlink_overruns"), "resyncs": rt.get("netlink_resyncs"),
                "stats": st, "runtime": rt, "network": net}


HA_STACKS: dict[str, HaStack] = {"ours": OursStack(), "theirs": TheirsStack()}
