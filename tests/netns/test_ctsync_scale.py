"""A master's whole table, larger than the send queue, reaches a fresh backup (lab only).

The master's kernel holds N made-up SNATed UDP flows (created with ctnetlink before its
ctsync starts, so they reach the backup only through table pushes); then the backup's
ctsync starts with an empty replica, asks for the table, and must become in sync with
all N in its external cache; a failover (`ctsyncctl commit`) must then put all N into
its kernel. A push used to go into the send queue at once: with more entries than the
queue holds (`send_queue`, 2^18 messages by default), the queue was dropped with the
push's BEGIN in it and the push started over, forever.

- the short form (default run): 30 000 entries through a send queue of 1024 messages;
- the slow form (`-m slow`): 1 000 000 entries with the default queue. It needs room
  for 1M entries per namespace: `net.netfilter.nf_conntrack_max` is global on this kernel
  (read-only in a namespace, 262144 here), so the test skips unless the limit is high
  enough or HAPAIR_TEST_RAISE_CONNTRACK_MAX=1 lets it raise the host's limit for its
  duration (restored afterwards; the only thing outside the lab it touches).

Timings are printed (`-s`); they are indicative (a shared machine), not asserted beyond
generous bounds: speed is measured in bench/, not here.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from bench.replication import create_in_kernel, kernel_count, lan_udp_flows
from ctsync.replicator import PUSH_QUEUE
from hacommon.control import request
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair

pytestmark = [pytest.mark.netns]


CT_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
RAISE_OPT_IN = "HAPAIR_TEST_RAISE_CONNTRACK_MAX"


@contextlib.contextmanager
def conntrack_room(p, n: int):
    """Room for ``n`` entries in each router's namespace: their own nf_conntrack_max if
    the kernel lets a namespace set it, else (opt-in) the host's, restored afterwards."""
    want = n + n // 4 + 1000
    hosts = [h for h in (p.r1, p.r2) if int(h.sysctl_get("net.netfilter.nf_conntrack_max")) < want]
    for h in hosts:
        h.run(["sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_max={want}"], timeout=10)
    short = [h.name for h in hosts if int(h.sysctl_get("net.netfilter.nf_conntrack_max")) < want]
    if not short:
        yield
        return
    if os.environ.get(RAISE_OPT_IN) != "1":
        pytest.skip(f"{n} entries need net.netfilter.nf_conntrack_max >= {want} in {', '.join(short)}: it is global "
                    f"on this kernel (read-only in a namespace, {CT_MAX.read_text().strip()} now); "
                    f"{RAISE_OPT_IN}=1 lets the test raise the host's for its duration")
    old = CT_MAX.read_text().strip()
    CT_MAX.write_text(str(want))
    try:
        yield
    finally:
        CT_MAX.write_text(old)


def wait_in_sync(c1, c2, n: int, budget: float) -> int:
    """Until r2 is in sync with all ``n`` of r1's entries (progress printed every 10 s;
    a failure shows both statuses and logs). Returns the largest send queue seen at r1."""
    t0 = last_print = time.monotonic()
    peak = 0
    s1 = s2 = {}
    while time.monotonic() < t0 + budget:
        try:
            s1, s2 = c1.status(), c2.status()
        except (OSError, ValueError, KeyError):
            time.sleep(0.5)
            continue
        peak = max(peak, s1["send_queue"])
        if s2["in_sync"] and s2["external_entries"] >= n:
            return peak
        if time.monotonic() - last_print >= 10:
            last_print = time.monotonic()
            print(f"  {last_print - t0:5.0f}s: r2 holds {s2['external_entries']}, in sync {s2['in_sync']}; "
                  f"r1 push {s1['table_push']}, send queue {s1['send_queue']}, unacked {s1['unacked']}", flush=True)
        time.sleep(0.5)
    raise AssertionError(f"r2 not in sync with r1's {n} entries after {budget}s\nr1 {s1}\nr2 {s2}\n"
                         f"r1 log {c1.proc.read_log()[-3000:]}\nr2 log {c2.proc.read_log()[-3000:]}")


def push_whole_table(lab, n: int, sync_budget: float, commit_budget: float, **ctsync_extra) -> dict:
    p = build_hapair(lab, ruleset="strict")
    with conntrack_room(p, n):
        return _push_whole_table(p, n, sync_budget, commit_budget, **ctsync_extra)


def _push_whole_table(p, n: int, sync_budget: float, commit_budget: float, **ctsync_extra) -> dict:
    ctsync_extra.setdefault("commit_timeout", commit_budget)  # ctsyncctl commit waits that long for it
    for r in (p.r1, p.r2):
        r.sysctl("net.netfilter.nf_conntrack_udp_timeout", 3600)  # nothing expires meanwhile
    t0 = time.monotonic()
    _, _, failed = create_in_kernel(p.r1, lan_udp_flows(n, timeout=3600))
    created_s = time.monotonic() - t0
    assert failed == 0 and kernel_count(p.r1) >= n
    c1 = start_ctsync(p.r1, "commit", None, group=None, **ctsync_extra)
    t1 = time.monotonic()
    c2 = start_ctsync(p.r2, "commit", None, group=None, **ctsync_extra)  # a fresh backup
    peak_queue = wait_in_sync(c1, c2, n, sync_budget)
    sync_s = time.monotonic() - t1
    s1, s2 = c1.status(), c2.status()
    assert s2["external_entries"] == n, s2["external_entries"]
    assert s1["channel"]["queue_overflows"] == 0, s1["channel"]
    assert s1["counters"]["resyncs_sent"] >= 1, s1["counters"]
    push_queue = min(PUSH_QUEUE, ctsync_extra.get("send_queue", 1 << 18) // 4)
    assert peak_queue <= push_queue + 64, peak_queue  # a push keeps that many queued at most (plus events)
    t2 = time.monotonic()
    rep = request(c2.socket, "commit", timeout=commit_budget)
    commit_s = time.monotonic() - t2
    assert rep.get("ok"), rep
    lc = rep["commit"]
    in_kernel = kernel_count(p.r2)
    out = {"n": n, "create_s": created_s, "sync_s": sync_s, "rate": n / sync_s, "commit_s": commit_s,
           "committed": lc["committed"], "r2_kernel": in_kernel, "r1_channel": s1["channel"],
           "r1_counters": s1["counters"], "r2_counters": s2["counters"], "peak_send_queue": peak_queue}
    print(f"{n} entries: created in {created_s:.1f}s; fresh backup in sync after {sync_s:.1f}s "
          f"({n / sync_s:.0f} entries/s); commit {commit_s:.1f}s, {lc['committed']} committed, "
          f"{in_kernel} in r2's kernel; r1's send queue peaked at {peak_queue} messages (polled); "
          f"r1 channel {s1['channel']}; r1 counters {s1['counters']}")
    assert lc["count"] == n and lc["committed"] == n, lc
    assert in_kernel >= n, in_kernel
    for c in (c1, c2):
        assert c.proc.alive(), c.proc.read_log()[-2000:]
    return out


@pytest.mark.timeout(240)
def test_a_table_larger_than_the_send_queue_reaches_a_fresh_backup(lab):
    """30k entries through a queue of 1024 messages: 30 times what it holds."""
    push_whole_table(lab, 30_000, sync_budget=90, commit_budget=60, send_queue=1024)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_million_entries_reach_a_fresh_backup_and_a_failover_commits_them(lab):
    push_whole_table(lab, 1_000_000, sync_budget=900, commit_budget=600)
