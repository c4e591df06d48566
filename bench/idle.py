"""Idle cost of one daemon: CPU (% of one core) and RSS with N instances.

One lab per measurement: router r1 alone on the bridge, one daemon with N
instances on eth0 (N = 1: VRID 7, VIP 10.0.0.100/24; N > 1: VRIDs 1..N, VIP
10.0.0.(100+i)/24 each), priority 100.  Nobody else speaks, so every instance
becomes master and sends one advert per second: the steady state of a master.

After all instances are master, the startup transients are allowed to pass
(``settle``: both stacks send a second GARP burst 5 s after becoming master),
then CPU time is read from ``/proc/PID/stat`` (utime + stime, which include
every thread of the process, also threads that have exited) at the start and
the end of the window, for every process of the daemon's process group
(vrrpd: one process; keepalived: the parent and its VRRP child).  Nothing
queries the daemons during the window.  As a cross-check with ns resolution
(utime/stime are sampled at the scheduler tick and reported in 1/100 s), the
scheduler's own run time of every thread (/proc/PID/task/TID/schedstat) is
read at both ends too.  RSS is VmRSS from
``/proc/PID/status`` at the end of the window, summed over the processes.
"""

from __future__ import annotations

import os
import time

from halab import Lab, wait_for

from .stacks import Stack, build_pair, deadline

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def task_runtime_ns(pid: int) -> dict[int, int]:
    """Scheduler run time (ns, exact) of each live thread of ``pid``, from
    /proc/PID/task/TID/schedstat; a cross-check of the tick-sampled stat."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def _runtime(pids: list[int]) -> dict[tuple[int, int], int]:
    return {(p, t): ns for p in pids for t, ns in task_runtime_ns(p).items()}


def advert_timers(path: str, count: int, advert_interval: float = 1.0) -> dict:
    """From a capture of the window, per VRID the intervals between its adverts.

    tcpdump on a busy machine drops packets (``capture_dropped``): a dropped
    advert shows as an interval of two advert intervals.  So lateness is
    measured against the nearest whole number of advert intervals (the jitter
    of the daemon's timer), and intervals of 1.5 intervals or more are counted
    apart as ``intervals_missing`` (a dropped capture packet or an advert not
    sent: compare with ``capture_dropped``).  Jitter: per instance its worst
    (median and worst instance), and pooled over every interval of every instance
    (99th percentile).  An instance is late if its jitter exceeds 10 % of the
    interval; missed if an interval reached Master_Down_Interval (a priority-100
    backup would have taken over: 3.609375 intervals, v2 and v3 alike)."""
    from halab.vrrp import wire_events
    last: dict[int, float] = {}
    jitter: dict[int, float] = {}
    longest: dict[int, float] = {}
    pooled: list[float] = []
    missing = 0
    for e in wire_events(path):
        if e.kind != "advert" or e.vrid is None:
            continue
        if e.vrid in last:
            iv = e.time - last[e.vrid]
            k = max(1, round(iv / advert_interval))
            if k > 1:
                missing += k - 1
            j = abs(iv - k * advert_interval)
            pooled.append(j)
            jitter[e.vrid] = max(jitter.get(e.vrid, 0.0), j)
            longest[e.vrid] = max(longest.get(e.vrid, 0.0), iv)
        last[e.vrid] = e.time
    gaps = sorted(longest.values())
    jit = sorted(jitter.values())
    pooled.sort()
    return {
        "instances_seen": len(last),
        "intervals_seen": len(pooled),
        "advert_interval_max_s": gaps[-1] if gaps else None,
        "advert_jitter_max_s": jit[-1] if jit else None,
        "advert_jitter_median_s": jit[len(jit) // 2] if jit else None,
        "advert_jitter_p99_s": pooled[min(len(pooled) - 1, int(0.99 * len(pooled)))] if pooled else None,
        "intervals_missing": missing,
        "instances_late": sum(1 for j in jit if j > 0.1 * advert_interval) + (count - len(last)),
        "instances_missed": sum(1 for g in gaps if g >= 3.609375 * advert_interval) + (count - len(last)),
    }


def idle_run(stack: Stack, count: int, window: float, settle: float, budget: float,
             timers: bool = False, interval: float = 1.0) -> dict:
    """``interval`` below 1 s: VRRPv3 instances at that advert interval (both stacks)."""
    with Lab() as lab:
        with deadline(budget, f"{stack.name} idle run with {count} instance(s) at {interval:g} s"):
            br, hosts = build_pair(lab, hosts=("r1",))
            t_start = time.monotonic()
            d = stack.start(hosts["r1"], 100, count, interval=interval)
            wait_for(lambda: stack.masters(d) == count, timeout=30 + count, interval=0.5,
                     what=f"all {count} {stack.name} instance(s) to become master")
            startup_s = time.monotonic() - t_start
            time.sleep(settle)
            pids = sorted(d.proc.group_pids())
            r0 = _runtime(pids)
            # tcpdump runs in the switch namespace, on another core if there is one
            cap = lab.capture(br, None, "adverts.pcap", bpf="vrrp") if timers else None
            c0, t0 = sum(cpu_ticks(p) for p in pids), time.monotonic()
            time.sleep(window)
            c1, t1 = sum(cpu_ticks(p) for p in pids), time.monotonic()
            if cap is not None:
                cap.stop()
                timer_check = advert_timers(cap.path, count, interval)
                # an advert tcpdump lost would look like a late one
                timer_check["capture_dropped"] = cap.stats.get("dropped", 0)
            r1 = _runtime(pids)
            rss = sum(rss_kib(p) for p in pids)
            nthreads = sum(threads(p) for p in pids)
            if sorted(d.proc.group_pids()) != pids:
                raise RuntimeError(f"{stack.name} processes changed during the window")
            still = stack.masters(d)
            if still != count:
                raise RuntimeError(f"only {still} of {count} {stack.name} instances master after the window")
    cpu_s = (c1 - c0) / CLK_TCK
    elapsed = t1 - t0
    # Threads that exist at both ends; a thread born or gone in the window is
    # counted from 0 / up to its last reading (it shows in threads_changed).
    sched_ns = sum(ns - r0.get(k, 0) for k, ns in r1.items())
    changed = len(set(r0) ^ set(r1))
    out = {
        "instances": count,
        "advert_interval_s": interval,
        "window_s": round(elapsed, 3),
        "cpu_seconds": cpu_s,
        "cpu_percent": 100.0 * cpu_s / elapsed,
        "cpu_resolution_percent": 100.0 / CLK_TCK / elapsed,
        "sched_cpu_seconds": sched_ns / 1e9,
        "sched_cpu_percent": 100.0 * sched_ns / 1e9 / elapsed,
        "threads_changed": changed,
        "rss_kib": rss,
        "processes": len(pids),
        "threads": nthreads,
        "startup_to_all_master_s": round(startup_s, 2),
    }
    if timers:
        out.update(timer_check)
    return out


def ha_idle_run(stack, window: float, settle: float, budget: float) -> dict:
    """Idle cost of every daemon of an HA stack in the full pair (figure 6):
    r1 master, r2 backup, in sync, no traffic; CPU over ``window`` after
    ``settle``, RSS at the end, per daemon and router."""
    from halab.hapair import build_hapair
    with Lab() as lab:
        with deadline(budget, f"{stack.name} HA idle run"):
            p = build_hapair(lab)
            r1, r2 = stack.start_pair(p)
            time.sleep(settle)
            procs = {(role, kind): getattr(r, kind) for role, r in (("master", r1), ("backup", r2))
                     for kind in ("vrrp", "sync")}
            pids = {k: sorted(pr.group_pids()) for k, pr in procs.items()}
            c0 = {k: sum(cpu_ticks(x) for x in v) for k, v in pids.items()}
            s0 = {k: _runtime(v) for k, v in pids.items()}
            t0 = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - t0
            c1 = {k: sum(cpu_ticks(x) for x in v) for k, v in pids.items()}
            s1 = {k: _runtime(v) for k, v in pids.items()}
            rows = []
            for (role, kind), v in pids.items():
                name = stack.vrrp_name if kind == "vrrp" else stack.sync_name
                sched = sum(ns - s0[(role, kind)].get(t, 0) for t, ns in s1[(role, kind)].items())
                cpu_s = (c1[(role, kind)] - c0[(role, kind)]) / CLK_TCK
                rows.append({"daemon": name, "role": role, "window_s": round(elapsed, 3),
                             "cpu_seconds": cpu_s, "cpu_percent": 100.0 * cpu_s / elapsed,
                             "sched_cpu_percent": 100.0 * sched / 1e9 / elapsed,
                             "rss_kib": sum(rss_kib(x) for x in v), "processes": len(v)})
            stack.check_start(r1)
            stack.check_start(r2)
    return {"stack": stack.name, "daemons": rows}
