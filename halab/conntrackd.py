"""conntrackd + keepalived in the HA pair: the reference stack the benchmark
compares vrrpd + ctsync with.

Configured the way conntrack-tools' documentation recommends for a
primary-backup pair: conntrackd in FTFW mode over the dedicated sync link
(UDP, checksums on), the kernel table mirrored in the internal cache and the
peer's in the external cache; keepalived's sync group runs a notify script
that does the documented sequence (``primary``: commit the external cache,
flush both caches, resync the internal cache with the kernel, send a bulk
update; ``backup``: make sure conntrackd runs, shorten the kernel's timers,
ask the master for a resync; ``fault``: shorten the timers).  The script is
our own (see :func:`notify_script`), equivalent to the stock
``primary-backup.sh`` shipped in conntrack-tools' ``doc/sync/``.

Everything instance-specific is in the lab's workdir, named
``conntrackd-<host>.*`` (config, UNIX socket, lock file, log), so labs never
share the default /var/lock/conntrack.lock or /var/run/conntrackd.ctl, and
conntrackd only ever runs inside a lab namespace (it dies with the lab, as
every Proc does).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import struct
import subprocess
from dataclasses import dataclass

from .hapair import LAN_VIP, LAN_VIP6, ROUTER_ADDRS, ROUTER_ADDRS6, SYNC_ADDRS, VIP_LINK_LOCAL, WAN_VIP, WAN_VIP6, HaPair
from .lab import Host, LabError, Proc, wait_for

__all__ = ["Conntrackd", "conntrackd_conf", "start_conntrackd", "notify_script",
           "keepalived_hapair_conf", "SYNC_PORT"]

SYNC_PORT = 3780
#: conntrack-tools' request code for "-s" (STATS in its include/conntrackd.h)
STATS_REQUEST = 21
PEER = {"r1": "r2", "r2": "r1"}


def _paths(host: Host) -> dict[str, str]:
    base = os.path.join(host.lab.workdir, f"conntrackd-{host.name}")
    return {"conf": base + ".conf", "sock": base + ".ctl", "lock": base + ".lock",
            "log": base + ".daemon.log", "script": base + ".notify.sh",
            "notify_log": base + ".notify.log"}


def conntrackd_conf(host: Host, *, hash_size: int = 65536, hash_limit: int = 524288,
                    netlink_buffer: int = 8 << 20, netlink_max_growth: int = 32 << 20,
                    socket_buffer: int = 4 << 20, mode: str = "commit") -> str:
    """conntrackd.conf for ``host`` (r1 or r2 of the pair): FTFW over sync0.

    Sized for a few 100k entries (HashLimit); the netlink buffer may grow to
    32 MiB on overruns, the size ctsync's event socket gets (netlink_rcvbuf),
    so neither daemon is favoured by a bigger buffer.  TCP and UDP are
    replicated; the routers' own addresses (IPv4 and IPv6), the sync link and
    the VIPs are ignored (the documentation's Filter example).  ``mode="inject"``:
    ``DisableExternalCache On``, conntrackd's way of writing the peer's entries
    straight into the kernel (ctsync's inject mode); the notify script's commit
    then has nothing to do."""
    me, peer = host.name, PEER[host.name]
    p = _paths(host)
    own = [a.split("/")[0] for r in ROUTER_ADDRS.values() for a in r.values()]
    own6 = [a.split("/")[0] for r in ROUTER_ADDRS6.values() for a in r.values()]
    ignore = "\n".join([f"\t\t\tIPv4_address {a}" for a in ["127.0.0.1", *own, WAN_VIP, LAN_VIP]]
                       + [f"\t\t\tIPv6_address {a}" for a in ["::1", *own6, WAN_VIP6, LAN_VIP6]])
    inject = "\t\tDisableExternalCache On\n" if mode == "inject" else ""
    return f"""# conntrackd for {me} (halab, generated): FTFW over the sync link
Sync {{
\tMode FTFW {{
\t\tResendQueueSize 131072
{inject}\t}}
\tUDP {{
\t\tIPv4_address {SYNC_ADDRS[me]}
\t\tIPv4_Destination_Address {SYNC_ADDRS[peer]}
\t\tPort {SYNC_PORT}
\t\tInterface sync0
\t\tSndSocketBuffer {socket_buffer}
\t\tRcvSocketBuffer {socket_buffer}
\t\tChecksum on
\t}}
}}
General {{
\tSystemd off
\tHashSize {hash_size}
\tHashLimit {hash_limit}
\tLogFile {p['log']}
\tSyslog off
\tLockFile {p['lock']}
\tUNIX {{
\t\tPath {p['sock']}
\t}}
\tNetlinkBufferSize {netlink_buffer}
\tNetlinkBufferSizeMaxGrowth {netlink_max_growth}
\tNetlinkEventsReliable On
\tFilter From Userspace {{
\t\tProtocol Accept {{
\t\t\tTCP
\t\t\tUDP
\t\t}}
\t\tAddress Ignore {{
{ignore}
\t\t}}
\t}}
}}
"""


def notify_script(conntrackd_bin: str, conf: str, sock: str, lock: str, log: str) -> str:
    """keepalived's notify script: the documented primary-backup sequence.

    Each step is logged with its exit code and times to ``log`` (keepalived
    sends a script's output nowhere): the benchmark reads when the commit ran."""
    return f"""#!/bin/sh
# halab: conntrackd's primary-backup sequence, run by keepalived's sync group.
CT="{conntrackd_bin} -C {conf}"
step() {{
    t0=$(date +%s.%N)
    $CT "$@" >/dev/null 2>&1
    rc=$?
    echo "ctnotify: conntrackd $* rc=$rc start=$t0 end=$(date +%s.%N)" >> {log}
    return $rc
}}
case "$1" in
  primary)
    step -c     # commit the external cache (the peer's flows) into the kernel
    step -f     # flush the internal and external caches
    step -R     # resync the internal cache with the kernel table
    step -B     # send a bulk update to the backup
    ;;
  backup)
    if ! step -s; then   # not running: start it (a stale lock means it crashed)
        rm -f {lock}
        $CT -d
    fi
    step -t     # shorten the kernel timers: zombie entries go away
    step -n     # ask the master for a resync of its table
    ;;
  fault)
    step -t
    ;;
  *)
    echo "usage: $0 primary|backup|fault" >&2
    exit 1
    ;;
esac
exit 0
"""


@dataclass
class Conntrackd:
    host: Host
    proc: Proc
    conf: str
    sock: str
    script: str

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``conntrackd -C CONF ARGS`` (talks to this daemon over its UNIX socket)."""
        return self.host.run(["conntrackd", "-C", self.conf, *args], timeout=timeout)

    def stats(self) -> str:
        cp = self.ctl("-s")
        if cp.returncode != 0:
            raise LabError(f"conntrackd -s on {self.host.name}: {cp.stderr.strip() or cp.stdout.strip()}")
        return cp.stdout

    def request(self, code: int = STATS_REQUEST, timeout: float = 5.0) -> str:
        """One request on the daemon's UNIX socket the way its own client sends it (the
        request code as a native ``int``, then the answer until the daemon closes), without
        starting a ``conntrackd`` process: a benchmark that polls ``-s`` every 20 ms
        (bench/churn.py) would otherwise fork and exec 50 processes a second on the same
        cores as the daemons it measures.  The answer is the text ``conntrackd -s``
        prints (:func:`parse_stats` reads it)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.sock)
            s.sendall(struct.pack("=i", code))
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode(errors="replace")

    def notify_log(self) -> str:
        """What the notify script did (one line per conntrackd call)."""
        try:
            with open(self.conf[: -len(".conf")] + ".notify.log", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def daemon_log(self) -> str:
        """conntrackd's own log file (LogFile): commit durations and counts."""
        try:
            with open(self.conf[: -len(".conf")] + ".daemon.log", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def cache_entries(self, which: str = "external") -> int:
        """Current entries in the internal or external cache (``conntrackd -s``)."""
        return parse_stats(self.stats())[f"{which}_entries"]


def parse_stats(text: str) -> dict[str, int]:
    """The figures of ``conntrackd -s`` (also ``-s runtime``, ``-s network``)
    the benchmark uses; sections start with a line ending in ':' and end with
    a blank line."""
    out: dict[str, int] = {}
    section = None
    for line in text.splitlines():
        low = line.strip().lower()
        if not low:
            section = None
            continue
        if low in ("cache internal:", "cache external:"):
            section = low.split()[1][:-1]
            continue
        if section and low.startswith("current active connections"):
            out[f"{section}_entries"] = int(low.split(":")[1].split()[0])
        elif section and low.startswith("connections created"):
            n = re.findall(r"(\d+)", low)
            out[f"{section}_created"] = int(n[0])
            if len(n) > 1:
                out[f"{section}_create_failed"] = int(n[1])
        for key, pat in (("netlink_overruns", r"netlink overrun:\s*(\d+)"),
                         ("netlink_resyncs", r"resync with kernel table:\s*(\d+)"),
                         ("netlink_buffer_bytes", r"current buffer size \(in bytes\):\s*(\d+)"),
                         ("events_received", r"events received:\s*(\d+)"),
                         ("packets_lost", r"packets lost:\s*(\d+)"),
                         ("lost_msgs", r"(\d+)\s+lost msgs"),
                         ("malformed_msgs", r"(\d+)\s+malformed msgs"),
                         ("send_errors", r"(\d+)\s+error send")):
            mm = re.search(pat, low)
            if mm:
                out[key] = out.get(key, 0) + int(mm.group(1))
    return out


def start_conntrackd(host: Host, wait: bool = True, **conf_kw) -> Conntrackd:
    """Write ``host``'s conntrackd.conf and notify script, start conntrackd in
    the foreground in ``host`` (a lab namespace only: Lab.start refuses any
    other)."""
    exe = shutil.which("conntrackd")
    if exe is None:
        raise LabError("conntrackd is not installed (apt-get install conntrackd)")
    host.lab._check_target(host)
    p = _paths(host)
    with open(p["conf"], "w") as f:
        f.write(conntrackd_conf(host, **conf_kw))
    with open(p["script"], "w") as f:
        f.write(notify_script(exe, p["conf"], p["sock"], p["lock"], p["notify_log"]))
    os.chmod(p["script"], stat.S_IRWXU)
    if os.path.exists(p["lock"]):  # a previous run in this lab was killed (hard failure)
        os.unlink(p["lock"])
    proc = host.start([exe, "-C", p["conf"]], name="conntrackd")
    d = Conntrackd(host, proc, p["conf"], p["sock"], p["script"])
    if wait:
        def up():
            if not proc.alive():
                raise LabError(f"conntrackd exited in {host.name}: {proc.read_log()[-2000:]}")
            return d.ctl("-s", timeout=10).returncode == 0
        wait_for(up, timeout=15, interval=0.1, what=f"conntrackd in {host.name} to answer")
    return d


def keepalived_hapair_conf(pair: HaPair, router: str, priority: int, script: str,
                           advert_int: float = 1) -> str:
    """keepalived.conf for one router of the pair: the same two instances and
    sync group as vrrpd's (WAN VRID 1 on eth0, LAN VRID 2 on eth1, group
    MAIN-GW, preempt), the conntrackd notify script on the group (as in
    conntrack-tools' doc/sync/keepalived.conf).  An IPv6 pair, or adverts
    faster than 1 s: ``vrrp_version 3`` (IPv6 VIPs with fe80::1 first, as vrrpd's)."""
    family = getattr(pair, "family", 4)
    v3 = family == 6 or not float(advert_int).is_integer()
    if family == 6:
        vips = {"WAN": [f"{VIP_LINK_LOCAL}/64", f"{WAN_VIP6}/64"], "LAN": [f"{VIP_LINK_LOCAL}/64", f"{LAN_VIP6}/64"]}
    else:
        vips = {"WAN": [f"{WAN_VIP}/24"], "LAN": [f"{LAN_VIP}/24"]}
    inst = []
    for name, iface, vrid in (("WAN", "eth0", 1), ("LAN", "eth1", 2)):
        lines = "\n".join(f"        {v}" for v in vips[name])
        inst.append(f"""vrrp_instance {name} {{
    state BACKUP
    interface {iface}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert_int:g}
    virtual_ipaddress {{
{lines}
    }}
}}
""")
    version = "    vrrp_version 3\n" if v3 else ""
    return f"""global_defs {{
    router_id {router}
    script_user root
    enable_script_security
{version}}}

vrrp_sync_group MAIN-GW {{
    group {{
        WAN
        LAN
    }}
    notify_master "{script} primary"
    notify_backup "{script} backup"
    notify_fault "{script} fault"
}}

""" + "\n".join(inst)
