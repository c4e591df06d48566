"""Figure 10: failover under sustained churn (issue 12), both HA stacks.

One run = one fresh HA pair (halab.hapair, strict ruleset), one stack on both routers as
in figures 4-6: r1 master (priority 200), r2 backup (priority 100), the sync daemons in
their failover mode (ctsync ``commit`` mode, vrrpd holding the takeover until ctsync has
committed; conntrackd FTFW with its external cache, committed by keepalived's notify
script).  Once r2 is in sync (and a second has passed):

* **churn**: a generator creates new SNATed UDP flows in r1's kernel at a steady rate R.
  The flows are figure 4's (bench/replication.py ``lan_udp_flows``) and are created the
  same way, with ctnetlink: each creation is a NEW event for the master's sync daemon, as
  a real flow's first packet would be, at rates a Python packet generator cannot reach.
  The creation messages are encoded before the lab is built and sent with
  ``CtSocket.commit_raw`` (figure 4 encodes as it goes, ``commit_batch``), so that the
  generator's own Python work does not cap R.  Every ``TICK`` (10 ms) it creates the
  flows due since its start (R/100 a tick when on time; if it fell behind, more, in
  batches of up to ``CATCHUP_BATCH``, and ``behind_max_s`` says by how much); R = "max":
  batches of ``MAX_BATCH`` back to back, the generator's limit.  A flow's creation time
  is the end of its batch's ``send`` (the kernel creates a batch's entries and queues
  their events inside that system call): ages and lags have batch granularity,
  ``batch_s_max`` is the longest batch.  "Kept alive": the flows are created with a 600 s
  timeout (UDP timeout 600 s on both routers too); no packet refreshes them and none
  expires during a run.
* **lag**: every ``POLL`` (20 ms), in a thread of its own (the failure never waits for
  an answer), the backup's replica count (ctsync's status; conntrackd's ``-s`` request
  sent on its UNIX socket, not a process per poll: halab.conntrackd ``Conntrackd.request``).  Flow i (in creation order) reached the
  backup at the first sample whose count, minus the count before the churn, exceeds i
  (both daemons send in event order; a reordering only swaps which flow gets which
  arrival).  Its lag = that sample's time (taken when the answer is in: an upper bound,
  resolution the poll interval, ``poll_interval_s``) minus its creation time.
  Percentiles over the flows created more than ``LAG_HORIZON`` before the failure
  (younger ones cannot show a longer lag); one of them not at the backup by the last
  sample has a lag beyond any measured ("censored"): a percentile that falls on the
  censored ones is None.
* **CPU** of each daemon (vrrpd/keepalived, ctsync/conntrackd, master and backup) over
  the churn: utime + stime from /proc/PID/stat (``cpu_percent``, 1/100 s resolution) and
  the scheduler's run time of every thread (``sched_cpu_percent``, ns; the table's).  The
  polls cost the backup's daemon CPU too: ``poll_cost`` measures it on the idle pair
  before the churn (1 s without polls, 1 s with).
* **failure**: ``fail_after_s`` after the churn's start, drawn at random in a window
  (2-4 s; the benchmark's seeded generator: ``--seed`` repeats it), the generator is
  stopped (a batch in flight completes, so the flows created before the failure are
  exactly known) and r1 fails hard (``HaPair.hard_fail``, as in figure 2).  If the
  kernel's table would fill first (``MAX_FLOWS``, at most 90 % of nf_conntrack_max), the
  failure comes when the generator has created them all (``fail_reason`` "cap").
* **survivors**: on r2, once master, its failover commit done (ctsync's last commit;
  the notify script's ``conntrackd -c``) and its kernel's entry count stable, its table
  is dumped (ctnetlink) and the created flows found by their original tuple.  Counted by
  age at the failure: older than 1 s, 100-1000 ms, 10-100 ms, younger than 10 ms;
  created and survived in each.

The bookkeeping (lags, buckets, the target) and the tables are in bench/churn_results.py.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import threading
import time

import trio

from ctnetlink.constants import AF_INET, NLM_F_CREATE, NLM_F_EXCL
from ctnetlink.encode import encode_new
from ctnetlink.socket import CtSocket
from halab import Lab
from halab.hapair import build_hapair

from .churn_results import age_buckets, arrival_times, creation_times, flow_index, lag_stats
from .idle import CLK_TCK, _runtime, cpu_ticks
from .replication import kernel_count, lan_udp_flows
from .stacks import HaStack, deadline

TICK = 0.01
MAX_BATCH = 250  # R = "max": flows per batch, back to back
CATCHUP_BATCH = 1000  # a generator behind its schedule catches up in batches of this size at most
POLL = 0.02
LAG_HORIZON = 0.5
MAX_FLOWS = 240_000  # nf_conntrack_max is 262144 here: room for the rest
WINDOW = (2.0, 4.0)


# ---------------------------------------------------------------------------
# the generator


_MESSAGES: list[bytes] = []


def flow_messages(n: int) -> list[bytes]:
    """Creation messages of the first ``n`` flows (kept between runs: the flows are
    the same in every run, the encoding costs about 27 us a flow)."""
    if len(_MESSAGES) < n:
        flags = NLM_F_CREATE | NLM_F_EXCL  # commit_raw asks for the acks it needs
        _MESSAGES.extend(encode_new(e, 0, flags)
                         for e in lan_udp_flows(n - len(_MESSAGES), first=len(_MESSAGES)))
    return _MESSAGES[:n]


class Generator:
    """Creates ``messages`` in ``host``'s kernel at ``rate`` flows/s (None: as fast as
    it goes), in a thread with its own trio loop and ctnetlink socket, until stopped or
    out of messages (``ended``; ``capped``).  ``batches``: (first index, count, end
    time) of every batch sent; ``failed``: indices the kernel refused."""

    def __init__(self, host, messages: list[bytes], rate: int | None):
        self.host, self.messages, self.rate = host, messages, rate
        self.batches: list[tuple[int, int, float]] = []
        self.failed: list[int] = []
        self.t0: float | None = None
        self.behind_max_s = 0.0
        self.batch_s_max = 0.0
        self.capped = False
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.ended = threading.Event()
        self._token = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="churn-generator", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.started.wait(15)
        if self.error is not None:
            raise RuntimeError(f"flow generator: {self.error!r}") from self.error
        if self.t0 is None:
            raise RuntimeError("flow generator did not start")

    def stop(self) -> None:
        """Stop now: a batch in flight completes; returns when the thread is done."""
        if self._token is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("flow generator did not stop")
        if self.error is not None:
            raise RuntimeError(f"flow generator: {self.error!r}") from self.error

    @property
    def created(self) -> int:
        return sum(n for _f, n, _t in self.batches) - len(self.failed)

    def _main(self) -> None:
        try:
            trio.run(self._go)
        except BaseException as e:  # noqa: BLE001 - reported to the caller by start()/stop()
            self.error = e
        finally:
            self.ended.set()
            self.started.set()

    async def _go(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        msgs, total = self.messages, len(self.messages)
        with CtSocket.open(netns=self.host.netns, sndbuf=4 << 20, rcvbuf=4 << 20) as s:
            self.t0 = t0 = time.monotonic()
            self.started.set()
            k = 0
            while not self._stop.is_set():
                now = time.monotonic()
                if self.rate is None:
                    n = MAX_BATCH
                else:
                    due = int(self.rate * (now - t0 + TICK))  # the current tick's flows included
                    self.behind_max_s = max(self.behind_max_s, (due - k) / self.rate - TICK)
                    n = min(due - k, CATCHUP_BATCH)
                n = min(n, total - k)
                if n > 0:
                    results = await s.commit_raw(msgs[k:k + n])
                    t_end = time.monotonic()
                    self.batches.append((k, n, t_end))
                    self.failed += [k + j for j, err in enumerate(results) if err]
                    self.batch_s_max = max(self.batch_s_max, t_end - now)
                    k += n
                if k >= total:
                    self.capped = True
                    return
                if self.rate is None:
                    await trio.lowlevel.checkpoint()
                    continue
                wake = t0 + TICK * (math.floor((time.monotonic() - t0) / TICK) + 1)
                with trio.move_on_after(max(0.0, wake - time.monotonic())):
                    await self._stop.wait()


class Poller:
    """Calls ``count()`` every POLL seconds in a thread (after a slow answer, POLL after
    it: no burst) and keeps ``samples``: (asked, answered, count).  In a thread of its
    own so that the failure never waits for an answer (ctsync's took up to 0.23 s at
    "max")."""

    def __init__(self, count):
        self.count = count
        self.samples: list[tuple[float, float, int]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="churn-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("replica poller did not stop")
        if self.error is not None:
            raise RuntimeError(f"replica poller: {self.error!r}") from self.error

    def _main(self) -> None:
        next_poll = time.monotonic()
        try:
            while not self._stop.is_set():
                t_send = time.monotonic()
                count = self.count()
                self.samples.append((t_send, time.monotonic(), count))
                next_poll = max(next_poll + POLL, time.monotonic())
                self._stop.wait(max(0.0, next_poll - time.monotonic()))
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e


def kernel_flows(host, n: int) -> tuple[set[int], int]:
    """Indices (< n) of the generator's flows in ``host``'s kernel, and how many other
    entries there are (a ctnetlink dump, keys only)."""
    async def go():
        found: set[int] = set()
        other = 0
        with CtSocket.open(netns=host.netns, rcvbuf=8 << 20) as s:
            async with contextlib.aclosing(s.dump_records(None, family=AF_INET)) as parts:
                async for part in parts:
                    for key, _body in part:
                        i = flow_index(key)
                        if i is None or i >= n:
                            other += 1
                        else:
                            found.add(i)
        return found, other
    return trio.run(go)


def _wait_stable(host, timeout: float = 30.0, interval: float = 0.3) -> int:
    """The kernel's entry count once two reads ``interval`` apart agree."""
    t_end = time.monotonic() + timeout
    last = kernel_count(host)
    while time.monotonic() < t_end:
        time.sleep(interval)
        cur = kernel_count(host)
        if cur == last:
            return cur
        last = cur
    raise RuntimeError(f"{host.name}: the conntrack table kept changing for {timeout:.0f} s after the commit")


def _sched_s(r0: dict, r1: dict) -> float:
    """CPU seconds from two schedstat readings (bench.idle._runtime: ns per thread; a
    thread gone by the second reading is lost, one born since counts from 0)."""
    return sum(ns - r0.get(k, 0) for k, ns in r1.items()) / 1e9


def poll_cost(stack: HaStack, backup, pids: list[int], seconds: float = 1.0) -> dict:
    """What the 20 ms polls cost the backup's sync daemon: its CPU (schedstat) over
    ``seconds`` without polls, then over ``seconds`` of polls, on the idle pair
    before the churn (a status answer costs about the same whatever the load)."""
    s0 = _runtime(pids)
    time.sleep(seconds)
    quiet = _sched_s(s0, _runtime(pids)) / seconds
    s0, t0 = _runtime(pids), time.monotonic()
    n, next_poll = 0, t0
    while time.monotonic() - t0 < seconds:
        stack.poll_replica(backup)
        n += 1
        next_poll = max(next_poll + POLL, time.monotonic())  # after a slow answer: no burst
        time.sleep(max(0.0, next_poll - time.monotonic()))
    elapsed = time.monotonic() - t0
    polled = _sched_s(s0, _runtime(pids)) / elapsed
    return {"quiet_percent": 100 * quiet, "polled_percent": 100 * polled, "polls": n,
            "per_poll_ms": 1000 * (polled - quiet) * elapsed / max(n, 1)}


def _ticks(pids: list[int]) -> int:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            total += cpu_ticks(p)
    return total


# ---------------------------------------------------------------------------
# one run


def churn_run(stack: HaStack, rate: int | str, budget: float, window: tuple[float, float] = WINDOW,
              rng: random.Random | None = None) -> dict:
    """One run at ``rate`` flows/s ("max": the generator's limit); the failure
    ``window`` seconds after the churn's start, drawn with ``rng``."""
    rng = rng or random.Random()
    fail_after = rng.uniform(*window)
    per_s = None if rate == "max" else int(rate)
    wanted = MAX_FLOWS if per_s is None else min(MAX_FLOWS, int(per_s * window[1] * 1.2) + CATCHUP_BATCH)
    messages = flow_messages(wanted)  # before the lab: not on its clock
    out: dict = {"rate": rate, "fail_after_s": round(fail_after, 4), "window_s": list(window),
                 "poll_s": POLL, "tick_s": TICK, "lag_horizon_s": LAG_HORIZON}
    with Lab() as lab:
        with deadline(budget, f"{stack.name} churn run at {rate} flows/s"):
            p = build_hapair(lab)
            for r in p.routers:
                r.sysctl("net.netfilter.nf_conntrack_udp_timeout", 600)
            ct_max = int(p.r1.sysctl_get("net.netfilter.nf_conntrack_max"))
            cap = min(len(messages), int(0.9 * ct_max))
            r1, r2 = stack.start_pair(p)
            time.sleep(1.0)
            stack.check_start(r1)
            stack.check_start(r2)
            base = stack.poll_replica(r2)
            r2_before = kernel_count(p.r2)
            procs = {"sync_master": r1.sync, "sync_backup": r2.sync, "vrrp_master": r1.vrrp, "vrrp_backup": r2.vrrp}
            pids = {k: sorted(pr.group_pids()) for k, pr in procs.items()}
            out["poll_cost"] = poll_cost(stack, r2, pids["sync_backup"])
            gen = Generator(p.r1, messages[:cap], per_s)
            poller = Poller(lambda: stack.poll_replica(r2) - base)
            cpu0 = {k: _ticks(v) for k, v in pids.items()}
            sched0 = {k: _runtime(v) for k, v in pids.items()}
            try:
                gen.start()
                poller.start()
                # until the moment, or at once when the generator runs out; never waits for a poll
                gen.ended.wait(max(0.0, gen.t0 + fail_after - time.monotonic()))
            finally:
                gen.stop()
            cpu1 = {k: _ticks(v) for k, v in pids.items()}
            sched1 = {k: _runtime(v) for k, v in pids.items()}
            t_fail, t_fail_epoch = time.monotonic(), time.time()
            try:
                p.hard_fail("r1")
            finally:
                poller.stop()  # a poll in flight (to r2) ends first
            # the polls asked before the failure (one answered after it may count flows that
            # were on their way: they arrived, and survive)
            samples = [x for x in poller.samples if x[0] < t_fail]
            stack.wait_master(p, r2, timeout=20)
            t_master = time.monotonic()
            commit = stack.wait_failover_commit(r2, t_fail_epoch, timeout=max(30.0, cap / 20000))
            r2_after = _wait_stable(p.r2)
            survivors, other = kernel_flows(p.r2, cap)
            out["counters_backup"] = stack.counters(r2)
            # The master is gone; its log says whether its kernel events overran during the churn.
            master_log = r1.sync.read_log() + (r1.conntrackd.daemon_log() if r1.conntrackd is not None else "")
            out["master_overrun_log_lines"] = sum(1 for ln in master_log.splitlines() if "overrun" in ln.lower())
    churn_s = t_fail - gen.t0
    created = creation_times(gen.batches, gen.failed)
    # A flow first counted by sample j arrived after sample j-1 was asked and before
    # sample j was answered: upper bound (the figure) and lower bound of its lag.
    arrivals = arrival_times([(t_recv, c) for _a, t_recv, c in samples], len(created))
    arrivals_lo = arrival_times([(a[0], b[2]) for a, b in zip([(gen.t0, 0, 0)] + samples, samples)], len(created))
    last_end = gen.batches[-1][2] if gen.batches else gen.t0
    spacing = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
    rtts = [t_recv - t_send for t_send, t_recv, _c in samples]
    out.update({
        "fail_reason": "cap" if gen.capped else "random",
        "churn_s": churn_s,
        "created": gen.created,
        "created_failed": len(gen.failed),
        "generator_rate": gen.created / max(last_end - gen.t0, 1e-9),
        "behind_max_s": gen.behind_max_s,
        "batch_s_max": gen.batch_s_max,
        "batches": len(gen.batches),
        "quiet_before_fail_s": t_fail - last_end,
        "replicated_at_failure": max((c for _a, t_recv, c in samples if t_recv <= t_fail), default=0),
        "buckets": age_buckets(created, survivors, t_fail),
        "survived": len(survivors),
        "lag": lag_stats(created, arrivals, t_fail - LAG_HORIZON, samples[-1][1] if samples else None),
        "lag_lower": lag_stats(created, arrivals_lo, t_fail - LAG_HORIZON, samples[-1][0] if samples else None),
        "poll_samples": len(samples),
        "poll_interval_s": statistics.median(spacing) if spacing else None,
        "poll_rtt_s": {"median": statistics.median(rtts), "max": max(rtts)} if rtts else None,
        "cpu_s": {k: (cpu1[k] - cpu0[k]) / CLK_TCK for k in pids},
        "cpu_percent": {k: 100.0 * (cpu1[k] - cpu0[k]) / CLK_TCK / churn_s for k in pids},
        "sched_cpu_percent": {k: 100.0 * _sched_s(sched0[k], sched1[k]) / churn_s for k in pids},
        "takeover_s": t_master - t_fail,
        "commit": commit,
        "r2_kernel_before": r2_before,
        "r2_kernel_after": r2_after,
        "r2_other_entries": other,
        "nf_conntrack_max": ct_max,
    })
    return out
