"""Figure 10's bookkeeping and tables, pure (bench/churn.py measures): which made-up
flow an entry is, creation and arrival times, the replication lag with flows that had
not arrived (censored), survivors by age at the failure, issue 12's target, and the
Markdown tables of python -m bench."""

from __future__ import annotations

import math
import statistics
import struct

from ctnetlink.constants import AF_INET
from halab.hapair import CLIENT_IP, SERVER_IP

from .replication import A

#: (key, label, lower bound of the age in seconds), oldest first
BUCKETS = (("gt_1s", "older than 1 s", 1.0), ("100ms_1s", "100-1000 ms", 0.1),
           ("10_100ms", "10-100 ms", 0.01), ("lt_10ms", "younger than 10 ms", 0.0))

_CLIENT = int(A(CLIENT_IP))
_SERVER = A(SERVER_IP).packed
_PORTS = struct.Struct("!HH")


# ---------------------------------------------------------------------------
# the flows and their bookkeeping (pure)


def flow_index(key: bytes) -> int | None:
    """Which of ``lan_udp_flows`` an entry is, from its identity key
    (ctnetlink.key.key_of of the original tuple); None for any other entry."""
    if len(key) != 16 or key[0] != AF_INET or key[1] != 17 or key[8:12] != _SERVER:
        return None
    j = int.from_bytes(key[4:8], "big") - _CLIENT - 10
    sport, dport = _PORTS.unpack_from(key, 12)
    if j < 0 or dport != 5300 + j or not 10000 <= sport < 60000:
        return None
    return j * 50000 + sport - 10000


def creation_times(batches: list[tuple[int, int, float]], failed=()) -> list[float | None]:
    """Per flow index, its creation time from the generator's batches
    ``(first index, count, end time)``; None for a creation the kernel refused."""
    n = max((first + count for first, count, _ in batches), default=0)
    out: list[float | None] = [None] * n
    for first, count, t in batches:
        out[first:first + count] = [t] * count
    for i in failed:
        out[i] = None
    return out


def arrival_times(samples: list[tuple[float, int]], n: int) -> list[float | None]:
    """Per flow index (creation order), the time of the first sample whose count
    exceeds it: ``samples`` are (time, entries at the backup beyond the count before
    the churn), in time order.  None: not there by the last sample."""
    out: list[float | None] = [None] * n
    seen = 0
    for t, count in samples:
        count = min(count, n)
        if count > seen:
            out[seen:count] = [t] * (count - seen)
            seen = count
    return out


def percentile(sorted_values: list[float], censored: int, q: float) -> float | None:
    """Nearest-rank ``q`` percentile (0 < q <= 1) of the values plus ``censored``
    values larger than all of them; None if it falls on a censored one (or there is
    nothing)."""
    total = len(sorted_values) + censored
    if total == 0:
        return None
    k = max(1, math.ceil(q * total)) - 1
    return sorted_values[k] if k < len(sorted_values) else None


def lag_stats(created: list[float | None], arrivals: list[float | None], until: float,
              last_sample: float | None = None) -> dict:
    """Replication lag (arrival - creation) of the flows created up to ``until``:
    p50/p99/max, how many, how many had not arrived by the last sample (censored: their
    lag is over ``censored_over_s``, the least of last_sample - creation among them)."""
    lags = []
    censored = 0
    censored_over = None
    for tc, ta in zip(created, arrivals):
        if tc is None or tc > until:
            continue
        if ta is None:
            censored += 1
            if last_sample is not None:
                over = last_sample - tc
                censored_over = over if censored_over is None else min(censored_over, over)
        else:
            lags.append(max(0.0, ta - tc))  # a lower bound can fall before the creation
    lags.sort()
    return {"flows": len(lags) + censored, "censored": censored, "censored_over_s": censored_over,
            "p50_s": percentile(lags, censored, 0.50), "p99_s": percentile(lags, censored, 0.99),
            "max_s": lags[-1] if lags and not censored else None}


def bucket_of(age: float) -> str:
    for key, _label, low in BUCKETS:
        if age >= low:
            return key
    return BUCKETS[-1][0]  # a flow created after the failure cannot be: t_fail is taken after the last batch


def age_buckets(created: list[float | None], survivors: set[int], t_fail: float) -> dict[str, dict]:
    """Per age bucket at the failure: flows created, and of those in ``survivors``."""
    out = {key: {"created": 0, "survived": 0} for key, _l, _a in BUCKETS}
    for i, tc in enumerate(created):
        if tc is None:
            continue
        b = out[bucket_of(t_fail - tc)]
        b["created"] += 1
        if i in survivors:
            b["survived"] += 1
    return out


# ---------------------------------------------------------------------------
# the target and the tables (python -m bench's Markdown)

OLD = ("gt_1s", "100ms_1s")
YOUNG = ("10_100ms", "lt_10ms")
LABEL = {"ours": "vrrpd + ctsync", "theirs": "keepalived + conntrackd"}


def _total(runs: list[dict], keys, what: str) -> int:
    return sum(r["buckets"][k][what] for r in runs for k in keys)


def _rate_order(rate: str) -> float:
    return math.inf if rate == "max" else float(rate)


def target_check(churn: dict) -> dict | None:
    """Issue 12's target from the runs of both stacks (``churn``: stack -> rate -> runs):
    (1) at every rate where keepalived + conntrackd kept every flow older than 100 ms in
    every run, vrrpd + ctsync did too; (2) at the highest rate, vrrpd + ctsync kept at
    least conntrackd's share of the younger flows (survived / created over the runs: the
    counts created differ between runs, the failure moment being random and "max" a
    different rate for each stack).  None if no rate has runs of both."""
    ours, theirs = churn.get("ours") or {}, churn.get("theirs") or {}
    rates = sorted((r for r in theirs if theirs[r] and ours.get(r)), key=_rate_order)
    if not rates:
        return None
    old = {}
    for r in rates:
        old[r] = {s: all(_total([x], OLD, "survived") == _total([x], OLD, "created") for x in runs[r])
                  for s, runs in (("ours", ours), ("theirs", theirs))}
    top = rates[-1]
    young = {s: {"survived": _total(runs[top], YOUNG, "survived"), "created": _total(runs[top], YOUNG, "created")}
             for s, runs in (("ours", ours), ("theirs", theirs))}
    for y in young.values():
        y["share"] = y["survived"] / y["created"] if y["created"] else None
    part1 = all(v["ours"] for v in old.values() if v["theirs"])
    shares = (young["ours"]["share"], young["theirs"]["share"])
    part2 = None if None in shares else shares[0] >= shares[1]
    return {"old_kept": old, "part1": part1, "top_rate": top, "young": young, "part2": part2,
            "reached": part1 and part2 is True}


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


def _lag(lag: dict, lower: dict | None = None) -> str:
    """p50 / p99 of the lag in ms, each as lower-upper bound when the lower bound is known."""
    def one(d, key):
        v = d.get(key)
        if v is not None:
            return _ms(v)
        if d.get("censored"):
            over = d.get("censored_over_s")
            return f"> {over * 1000:.0f}" if over is not None else "censored"
        return "-"

    def both(key):
        hi = one(lag, key)
        return hi if not lower or lower.get(key) is None else f"{one(lower, key)}-{hi}"
    return f"{both('p50_s')} / {both('p99_s')}"


def churn_tables(churn: dict) -> str:
    """One table per stack: a row per run."""
    out = []
    head = ("| R flows/s | run | generator flows/s | failure at s | created | "
            + " | ".join(f"kept, {label}" for _k, label, _a in BUCKETS)
            + " | at the backup at the failure | lag p50 / p99 ms (lower-upper bound) | takeover s | commit s "
            "| CPU % sync master / backup | CPU % VRRP master / backup |")
    for stack in ("ours", "theirs"):
        per_rate = churn.get(stack)
        if not per_rate:
            continue
        rule = "|" + "---:|" * (5 + len(BUCKETS) + 4) + "---|---|"
        lines = [f"**{LABEL[stack]}**", "", head, rule]
        for rate in sorted(per_rate, key=_rate_order):
            runs = per_rate[rate]
            if not runs:
                lines.append(f"| {rate} | run failed |" + " |" * (len(BUCKETS) + 9))
                continue
            for i, r in enumerate(runs, 1):
                b = r["buckets"]
                kept = " | ".join(f"{b[k]['survived']:,}/{b[k]['created']:,}" for k, _l, _a in BUCKETS)
                cpu, c = r.get("sched_cpu_percent") or r["cpu_percent"], r.get("commit") or {}
                fail = f"{r['churn_s']:.2f}" + (" (cap)" if r.get("fail_reason") == "cap" else "")
                lines.append(
                    f"| {rate} | {i} | {r['generator_rate']:,.0f} | {fail} | {r['created']:,} | {kept} | "
                    f"{r['replicated_at_failure']:,} | {_lag(r['lag'], r.get('lag_lower'))} | {r['takeover_s']:.2f} | "
                    f"{_num(c.get('reported_s'), '.3f')} | {cpu['sync_master']:.0f} / {cpu['sync_backup']:.0f} | "
                    f"{cpu['vrrp_master']:.1f} / {cpu['vrrp_backup']:.1f} |")
        polls = [r for runs in per_rate.values() for r in runs if r.get("poll_interval_s")]
        if polls:
            iv = statistics.median(r["poll_interval_s"] for r in polls)
            rtt = max(r["poll_rtt_s"]["max"] for r in polls)
            note = (f"Backup polled every {iv * 1000:.0f} ms (median; the slowest answer took "
                    f"{rtt * 1000:.0f} ms); longest generator batch {max(r['batch_s_max'] for r in polls) * 1000:.1f} ms.")
            costs = [r["poll_cost"] for r in polls if r.get("poll_cost")]
            if costs:
                extra = statistics.median(c["polled_percent"] - c["quiet_percent"] for c in costs)
                note += (f" The polls cost the backup's {'ctsync' if stack == 'ours' else 'conntrackd'} about "
                         f"{extra:.1f} % of a core ({statistics.median(c['per_poll_ms'] for c in costs):.2f} ms a poll, "
                         f"measured on the idle pair before each run): included in its CPU above.")
            lines += ["", note]
        out.append("\n".join(lines))
    t = target_check(churn)
    if t:
        old = ", ".join(f"{r}: {'yes' if v['theirs'] else 'no'} / {'yes' if v['ours'] else 'no'}"
                        for r, v in t["old_kept"].items())
        y = t["young"]

        def share(s):
            return (f"{y[s]['survived']:,}/{y[s]['created']:,}"
                    + (f" ({100 * y[s]['share']:.0f} %)" if y[s]["share"] is not None else ""))
        out.append(
            f"Target: every flow older than 100 ms kept (per R, in every run: conntrackd / ctsync): {old} -> "
            f"**{'met' if t['part1'] else 'not met'}**; younger than 100 ms at R = {t['top_rate']}: "
            f"ctsync {share('ours')}, conntrackd {share('theirs')} -> "
            f"**{ {True: 'met', False: 'not met', None: 'n/a'}[t['part2']] }**.")
    return "\n\n".join(out)


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)
