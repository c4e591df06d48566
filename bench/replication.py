"""Figures 4-6: replication rate, commit time, memory per entry (both HA stacks).

One run = one fresh HA pair (halab.hapair, strict ruleset), one stack on both
routers: r1 master (priority 200), r2 backup (priority 100), the sync
daemons in their failover mode (ctsync ``commit`` mode; conntrackd FTFW with
its external cache).  Then N made-up SNATed UDP flows of the LAN
(192.168.100.x:port -> 10.10.0.200:53, public source 10.10.0.101:port) are
*created in r1's kernel with ctnetlink* (CtSocket.commit_batch, batches of
5000): each creation is a NEW event for the sync daemon on r1, exactly as a
real flow's first packet would be, at a rate far beyond what a Python packet
generator reaches (the generator's limit is the kernel's ctnetlink create
rate).  Measured:

* replication (figure 4): from the first creation until r2's sync daemon
  holds all N in its external cache (polled every 20 ms once 90 % are there,
  every 200 ms before: ctsync's status / ``conntrackd -s``): entries/s, the lag after the last creation, entries
  missing after 15 s without progress, kernel event overruns on either side,
  CPU seconds (utime+stime) of each sync daemon over that interval;
* memory (figure 6): RSS growth of each sync daemon over the run / N;
* commit (figure 5): then ``conntrackd -c`` / ``ctsyncctl commit`` on r2 (the
  command a failover runs), wall time of the command and the daemon's own
  figure, and the entries in r2's kernel afterwards.
"""

from __future__ import annotations

import ipaddress
import time

import trio

from ctnetlink import constants as C
from ctnetlink.codec import Entry, Tuple
from ctnetlink.socket import CtSocket
from halab import Lab
from halab.hapair import CLIENT_IP, SERVER_IP, WAN_VIP, build_hapair

from .idle import cpu_ticks, rss_kib
from .stacks import HaStack, deadline

A = ipaddress.ip_address
POLL = 0.02
STALL = 15.0
BATCH = 5000


def lan_udp_flows(n: int, timeout: int = 600, first: int = 0) -> list[Entry]:
    """N distinct SNATed UDP flows of the LAN: sources .20 upward, ports
    10000-59999, server ports 5300 upward (a new one every 50000 flows, so that
    the public side VIP:port -> server:port stays unique too).  Flow i is always
    the same; ``first``: start at flow ``first`` (figure 10 extends its list)."""
    out = []
    base = A(CLIENT_IP)
    for i in range(first, first + n):
        src = base + 10 + i // 50000
        sport, dport = 10000 + i % 50000, 5300 + i // 50000
        out.append(Entry(Tuple(C.AF_INET, 17, src, A(SERVER_IP), sport, dport),
                         Tuple(C.AF_INET, 17, A(SERVER_IP), A(WAN_VIP), dport, sport),
                         C.IPS_CONFIRMED | C.IPS_SRC_NAT | C.IPS_SEEN_REPLY, timeout))
    return out


def create_in_kernel(host, entries: list[Entry]) -> tuple[float, float, int]:
    """Create ``entries`` in ``host``'s kernel; returns (t_first, t_last, failures)
    in time.monotonic()."""
    async def go():
        with CtSocket.open(netns=host.netns, sndbuf=4 << 20, rcvbuf=4 << 20) as s:
            t0 = time.monotonic()
            failed = 0
            for i in range(0, len(entries), BATCH):
                failed += sum(1 for r in await s.commit_batch(entries[i:i + BATCH]) if r.errno)
            return t0, time.monotonic(), failed
    return trio.run(go)


def kernel_count(host) -> int:
    cp = host.run(["conntrack", "-C"], timeout=30)
    return int(cp.stdout.strip() or 0)


def _pids(r) -> list[int]:
    return sorted(r.sync.group_pids())


def _cpu(r) -> float:
    from .idle import CLK_TCK
    return sum(cpu_ticks(p) for p in _pids(r)) / CLK_TCK


def _rss(r) -> int:
    return sum(rss_kib(p) for p in _pids(r))


def replication_run(stack: HaStack, n: int, budget: float, commit: bool = True, probe=None) -> dict:
    """One run of figures 4-6.  ``probe(phase, pair, r1, r2)``, if given, is called with
    phase "burst" right before the creation, "burst_end" once replication is over,
    "commit" right before the commit and "commit_end" after it (the lab still up):
    bench/profile_replication.py attaches its profilers there."""
    entries = lan_udp_flows(n)
    probe = probe or (lambda *a: None)
    with Lab() as lab:
        with deadline(budget, f"{stack.name} replication run with {n} entries"):
            p = build_hapair(lab)
            for r in (p.r1, p.r2):
                r.sysctl("net.netfilter.nf_conntrack_udp_timeout", 600)
            r1, r2 = stack.start_pair(p)
            time.sleep(1.0)
            stack.check_start(r1)
            stack.check_start(r2)
            base_replica = stack.replica_entries(r2)
            rss0 = {"master": _rss(r1), "backup": _rss(r2)}
            cpu0 = {"master": _cpu(r1), "backup": _cpu(r2)}
            probe("burst", p, r1, r2)
            t_first, t_last, failed = create_in_kernel(p.r1, entries)
            # until all are in r2's external cache, or no progress for STALL s
            seen, t_seen, t_progress = base_replica, None, time.monotonic()
            while True:
                cur = stack.replica_entries(r2) - base_replica
                now = time.monotonic()
                if cur > seen:
                    seen, t_progress = cur, now
                if cur >= n:
                    t_seen = now
                    break
                if now - t_progress > STALL:
                    break
                # status queries cost the daemons CPU too: poll often only near the end
                time.sleep(POLL if cur >= 0.9 * n else 0.2)
            cpu1 = {"master": _cpu(r1), "backup": _cpu(r2)}
            probe("burst_end", p, r1, r2)
            time.sleep(0.5)  # allocations settle
            rss1 = {"master": _rss(r1), "backup": _rss(r2)}
            cnt = {"master": stack.counters(r1), "backup": stack.counters(r2)}
            internal = stack.local_entries(r1)
            out = {
                "n": n,
                "created_failed": failed,
                "generator_rate": n / max(t_last - t_first, 1e-9),
                "generator_s": t_last - t_first,
                "replicated": seen,
                "missing": n - seen,
                "master_internal": internal,
                "complete": t_seen is not None,
                # when the last entry arrived (all N, or the last progress before the stall)
                "all_replicated_s": t_progress - t_first,
                "rate": seen / max(t_progress - t_first, 1e-9),
                "lag_after_last_s": max(0.0, t_progress - t_last),
                "overruns_master": cnt["master"]["overruns"],
                "overruns_backup": cnt["backup"]["overruns"],
                "cpu_s_master": cpu1["master"] - cpu0["master"],
                "cpu_s_backup": cpu1["backup"] - cpu0["backup"],
                "rss_kib_before": rss0,
                "rss_kib_after": rss1,
                "bytes_per_entry_backup": (rss1["backup"] - rss0["backup"]) * 1024 / max(seen, 1),
                "bytes_per_entry_master": (rss1["master"] - rss0["master"]) * 1024 / max(internal, 1),
                "counters": cnt,
            }
            if commit:
                before = kernel_count(p.r2)
                probe("commit", p, r1, r2)
                c = stack.commit(r2)
                out["commit_wall_s"] = c["wall_s"]
                out["commit_reported_s"] = c["reported_s"]
                out["commit_committed"] = c["committed"]
                out["commit_kernel_entries"] = kernel_count(p.r2) - before
                probe("commit_end", p, r1, r2)
    return out
