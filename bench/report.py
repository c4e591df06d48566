"""Render benchmark results (the JSON ``python -m bench --out`` writes) as Markdown.

    python -m bench.report results.json > table.md
"""

from __future__ import annotations

import json
import sys

FIGURE_TEXT = {
    "hard_advert": ("kill -9 of the master", "first advert", "Master_Down_Interval"),
    "hard_garp": ("kill -9 of the master", "first GARP", "Master_Down_Interval"),
    "graceful_advert": ("SIGTERM (priority 0)", "first advert", "Skew_Time"),
}


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:+.1f}"


def _load(v) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "?"


def takeover_table(results: dict) -> str:
    lines = [
        "| Backup (both routers) | Failure | Measured | Bound | median ms | min ms | max ms | runs |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for stack, figs in results.get("takeover", {}).items():
        for key, (failure, what, bound) in FIGURE_TEXT.items():
            f = figs.get(key) or {}
            b = f.get("bound_s")
            bound_txt = f"{bound} {b:.6f} s" if b is not None else bound
            lines.append(f"| {stack} | {failure} | {what} | {bound_txt} | {_ms(f.get('median_ms'))} | "
                         f"{_ms(f.get('min_ms'))} | {_ms(f.get('max_ms'))} | {f.get('n', 0)} |")
    return "\n".join(lines)


MARK_BEGIN = "<!-- bench:results (python -m bench writes between these markers) -->"
MARK_END = "<!-- /bench:results -->"
HA_LABEL = {"ours": "vrrpd + ctsync", "theirs": "keepalived + conntrackd"}


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def cell(s: dict | None, fmt: str = ".2f", scale: float = 1.0) -> str:
    """A summary (python -m bench's median/min/max) as "median (min-max)"."""
    if not s:
        return "n/a"
    if "true" in s:
        return f"{s['true']}/{s['n']}"
    m = format(s["median"] * scale, fmt)
    if s["n"] > 1 and s["min"] != s["max"]:
        return f"{m} ({format(s['min'] * scale, fmt)}-{format(s['max'] * scale, fmt)})"
    return m


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "median" not in a or "median" not in b:
        return "n/a"
    if b["median"] == 0:
        return "=" if a["median"] == 0 else "inf"
    return f"{a['median'] / b['median']:.2f}"


def _get(d: dict | None, *path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


FAILOVER_COLS = [
    # (header, path, fmt, in ratio row)
    ("kept %", ("kept_percent",), ".0f", False),
    ("RSTs", ("rsts",), ".0f", False),
    ("public port unchanged (runs)", ("public_port_unchanged",), "", False),
    ("longest gap per conn, median s", ("gap_median_s",), ".2f", True),
    ("longest gap, worst conn s", ("gap_max_s",), ".2f", True),
    ("UDP gap s", ("udp_gap_s",), ".2f", True),
    ("UDP lost", ("udp_lost",), ".0f", False),
    ("INVALID at new master", ("router", "invalid"), ".0f", False),
    ("server pkts NEW at new master", ("router", "wan_new"), ".0f", False),
    ("RSTs sent by new master", ("router", "rst_out"), ".0f", False),
    ("ICMP errors sent (port/host unreach)", ("router", "icmp_err_out"), ".0f", False),
]


def failover_table(per_stack: dict, phases=("failover", "failback"), key_n: bool = True) -> str:
    head = "| N | transition | stack | " + " | ".join(c[0] for c in FAILOVER_COLS) + " |"
    lines = [head, "|" + "---|" * 3 + "---:|" * len(FAILOVER_COLS)]
    ns = []
    for st in per_stack.values():
        ns += [n for n in (st if key_n else {"": st}) if n not in ns]
    for n in ns:
        for ph in phases:
            rows = {}
            for stack in ("ours", "theirs"):
                agg = per_stack.get(stack, {})
                agg = agg.get(n) if key_n else agg
                rows[stack] = _get(agg, ph)
                if rows[stack] is None:
                    continue
                cells = []
                for _, path, fmt, _r in FAILOVER_COLS:
                    c = cell(_get(rows[stack], *path), fmt)
                    if path == ("router", "icmp_err_out"):
                        c += f" ({cell(_get(rows[stack], 'router', 'icmp_port_unreach_out'), '.0f')}/" \
                             f"{cell(_get(rows[stack], 'router', 'icmp_host_unreach_out'), '.0f')})"
                    cells.append(c)
                nn = n if key_n else _num(_get(rows[stack], "conns", "median"), ".0f")
                lines.append(f"| {nn} | {ph} | {HA_LABEL[stack]} | " + " | ".join(cells) + " |")
            if rows.get("ours") and rows.get("theirs"):
                rc = [ratio(_get(rows["ours"], *p), _get(rows["theirs"], *p)) if r else ""
                      for _, p, _f, r in FAILOVER_COLS]
                lines.append("| | | ours/theirs | " + " | ".join(rc) + " |")
    return "\n".join(lines)


def replication_table(rep: dict) -> str:
    lines = ["| entries | stack | generator flows/s | replicated | missing | all in backup after s "
             "| replication rate entries/s | lag after last flow s | overruns master/backup "
             "| CPU s master | CPU s backup |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for n in _entry_counts(rep):
        for stack in ("ours", "theirs"):
            a = _get(rep, stack, n)
            if not a:
                continue
            lines.append(
                f"| {int(n):,} | {HA_LABEL[stack]} | {cell(a.get('generator_rate'), ',.0f')} | "
                f"{cell(a.get('replicated'), ',.0f')} | {cell(a.get('missing'), ',.0f')} | "
                f"{cell(a.get('all_replicated_s'), '.2f')} | {cell(a.get('rate'), ',.0f')} | "
                f"{cell(a.get('lag_after_last_s'), '.3f')} | {cell(a.get('overruns_master'), '.0f')}/"
                f"{cell(a.get('overruns_backup'), '.0f')} | {cell(a.get('cpu_s_master'), '.2f')} | "
                f"{cell(a.get('cpu_s_backup'), '.2f')} |")
        o, t = _get(rep, "ours", n), _get(rep, "theirs", n)
        if o and t:
            lines.append(f"| | ours/theirs | | | | {ratio(o.get('all_replicated_s'), t.get('all_replicated_s'))} | "
                         f"{ratio(o.get('rate'), t.get('rate'))} | {ratio(o.get('lag_after_last_s'), t.get('lag_after_last_s'))} "
                         f"| | {ratio(o.get('cpu_s_master'), t.get('cpu_s_master'))} | "
                         f"{ratio(o.get('cpu_s_backup'), t.get('cpu_s_backup'))} |")
    return "\n".join(lines)


def _entry_counts(rep: dict) -> list[str]:
    """The N of every run in a replication result, in first-seen order."""
    ns: list[str] = []
    for st in rep.values():
        ns += [n for n in st if n not in ns]
    return ns


def commit_table(rep: dict) -> str:
    lines = ["| entries in the backup | stack | commit command, wall s | daemon's own figure s "
             "| entries/s (wall) | committed | new in the backup's kernel |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for n in _entry_counts(rep):
        for stack in ("ours", "theirs"):
            a = _get(rep, stack, n)
            if not a or not a.get("commit_wall_s"):
                continue
            w = a["commit_wall_s"]
            eps = {"median": a["commit_committed"]["median"] / w["median"], "n": 1} if a.get("commit_committed") else None
            lines.append(f"| {int(n):,} | {HA_LABEL[stack]} | {cell(w, '.3f')} | {cell(a.get('commit_reported_s'), '.3f')} | "
                         f"{cell(eps, ',.0f')} | {cell(a.get('commit_committed'), ',.0f')} | "
                         f"{cell(a.get('commit_kernel_entries'), ',.0f')} |")
        o, t = _get(rep, "ours", n, "commit_wall_s"), _get(rep, "theirs", n, "commit_wall_s")
        if o and t:
            lines.append(f"| | ours/theirs | {ratio(o, t)} | "
                         f"{ratio(_get(rep, 'ours', n, 'commit_reported_s'), _get(rep, 'theirs', n, 'commit_reported_s'))} | | | |")
    return "\n".join(lines)


def memory_table(rep: dict) -> str:
    lines = ["| entries | stack | backup: RSS growth / entry, bytes | master: RSS growth / entry, bytes "
             "| backup RSS MiB, before -> after |",
             "|---:|---|---:|---:|---|"]
    for n in _entry_counts(rep):
        for stack in ("ours", "theirs"):
            a = _get(rep, stack, n)
            if not a:
                continue
            b0 = [x["backup"] for x in a.get("rss_kib_before", [])]
            b1 = [x["backup"] for x in a.get("rss_kib_after", [])]
            rss = (f"{statistics_median(b0) / 1024:.1f} -> {statistics_median(b1) / 1024:.1f}" if b0 and b1 else "n/a")
            lines.append(f"| {int(n):,} | {HA_LABEL[stack]} | {cell(a.get('bytes_per_entry_backup'), '.0f')} | "
                         f"{cell(a.get('bytes_per_entry_master'), '.0f')} | {rss} |")
        o, t = _get(rep, "ours", n), _get(rep, "theirs", n)
        if o and t:
            lines.append(f"| | ours/theirs | {ratio(o.get('bytes_per_entry_backup'), t.get('bytes_per_entry_backup'))} | "
                         f"{ratio(o.get('bytes_per_entry_master'), t.get('bytes_per_entry_master'))} | |")
    return "\n".join(lines)


def statistics_median(v):
    import statistics
    return statistics.median(v)


def ha_idle_table(ha: dict) -> str:
    lines = ["| stack | daemon | role | CPU % of one core (stat) | CPU % (schedstat) | window s | RSS MiB | processes |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for stack in ("ours", "theirs"):
        for r in ha.get(stack, []):
            lines.append(f"| {HA_LABEL[stack]} | {r['daemon']} | {r['role']} | {r['cpu_percent']:.2f} | "
                         f"{r['sched_cpu_percent']:.3f} | {r['window_s']:.1f} | {r['rss_kib'] / 1024:.1f} | {r['processes']} |")
    return "\n".join(lines)


def idle_table(results: dict) -> str:
    lines = [
        "| Daemon | Advert interval s | Instances | CPU % of one core (stat) | CPU s in window (stat) | CPU % (schedstat) "
        "| window s | RSS MiB | processes / threads | timer jitter ms, median / worst instance / p99 of all intervals "
        "| instances late (jitter > 10 % of the interval) / missed (an interval >= 3.61 intervals) "
        "| adverts missing from the capture / packets tcpdump dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    rows = sorted(results.get("idle", []), key=lambda r: (-r.get("advert_interval_s", 1.0), r["daemon"] != "vrrpd"))
    for row in rows:
        iv = f"{row.get('advert_interval_s', 1.0):g}"
        if row.get("cpu_percent") is None:
            lines.append(f"| {row['daemon']} | {iv} | {row['instances']} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        if row.get("advert_jitter_max_s") is not None:
            p99 = row.get("advert_jitter_p99_s")
            timers = (f"{row['advert_jitter_median_s'] * 1000:.1f} / {row['advert_jitter_max_s'] * 1000:.1f}"
                      + (f" / {p99 * 1000:.1f}" if p99 is not None else ""),
                      f"{row['instances_late']} / {row['instances_missed']}",
                      f"{row['intervals_missing']} / {row.get('capture_dropped', '?')}")
        elif row.get("advert_interval_max_s") is not None:  # results of an older run
            timers = (f"longest interval {row['advert_interval_max_s']:.3f} s",
                      f"{row['instances_late']} / {row['instances_missed']}", f"? / {row.get('capture_dropped', '?')}")
        else:
            timers = ("n/a (one instance)", "", "")
        lines.append(
            f"| {row['daemon']} | {iv} | {row['instances']} | {row['cpu_percent']:.2f} | {row['cpu_seconds']:.2f} | "
            f"{row.get('sched_cpu_percent', float('nan')):.3f} | {row['window_s']:.1f} | {row['rss_kib'] / 1024:.1f} | "
            f"{row['processes']} / {row['threads']} | {timers[0]} | {timers[1]} | {timers[2]} |")
    return "\n".join(lines)


FAST_COLS = [
    # (header, path, fmt, in ratio row)
    ("takeover s (bound: Master_Down_Interval 0.1805 s)", ("takeover_s",), ".4f", True),
    ("beyond the bound ms", ("takeover_excess_ms",), "+.1f", False),
    ("first GARP/NA s", ("announce_s",), ".4f", True),
    ("UDP gap s", ("udp_gap_s",), ".3f", True),
    ("TCP longest gap per conn, median s", ("gap_median_s",), ".3f", True),
    ("TCP longest gap, worst conn s", ("gap_max_s",), ".3f", True),
    ("kept %", ("kept_percent",), ".0f", False),
    ("RSTs", ("rsts",), ".0f", False),
    ("public port unchanged (runs)", ("public_port_unchanged",), "", False),
    ("INVALID at new master", ("router", "invalid"), ".0f", False),
]


def fast_table(fast: dict) -> str:
    head = "| traffic, sync mode | stack | " + " | ".join(c[0] for c in FAST_COLS) + " |"
    lines = [head, "|---|---|" + "---:|" * len(FAST_COLS)]
    combos: list[str] = []
    for st in fast.values():
        combos += [c for c in st if c not in combos]
    for combo in combos:
        fam, mode = combo.split("-", 1)
        rows = {}
        for stack in ("ours", "theirs"):
            rows[stack] = _get(fast, stack, combo, "failover")
            if rows[stack] is None:
                continue
            cells = [cell(_get(rows[stack], *path), fmt) for _, path, fmt, _r in FAST_COLS]
            lines.append(f"| {fam.replace('ipv', 'IPv')}, {mode} | {HA_LABEL[stack]} | " + " | ".join(cells) + " |")
        if rows.get("ours") and rows.get("theirs"):
            rc = [ratio(_get(rows["ours"], *p), _get(rows["theirs"], *p)) if r else "" for _, p, _f, r in FAST_COLS]
            lines.append("| | ours/theirs | " + " | ".join(rc) + " |")
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    m = results.get("meta", {})
    out = [
        f"Measured {m.get('date', '?')} on Linux {m.get('kernel', '?')}, {m.get('cpus', '?')} CPUs "
        f"({m.get('cpu_model', '?')}), machine **{m.get('machine', '?')}** (other work running meanwhile: "
        f"{'yes' if m.get('machine') != 'idle' else 'no'}); {m.get('keepalived', 'keepalived ?')}; "
        f"{m.get('conntrackd', 'conntrackd ?')}; vrrpd/ctsync {m.get('vrrpd', '?')} (commit {m.get('commit', '?')}), "
        f"Python {m.get('python', '?')}; {'quick mode' if m.get('quick') else 'full mode'}: "
        f"{m.get('runs', '?')} run(s) per figure ({m.get('takeover_runs', '?')} per takeover figure, "
        f"{m.get('failover_runs', '?')} per failover figure), "
        f"{m.get('duration_s', '?')} s in all; load average (1/5/15 min) {_load(m.get('loadavg_start'))} at the "
        f"start, {_load(m.get('loadavg_end'))} at the end.  Cells: median (min-max) over the runs.",
    ]
    if results.get("takeover"):
        out += ["", "### 1. VRRP takeover", "",
                "Delay beyond the protocol bound, measured on the bridge; positive = later than the bound; "
                "priority 200 master, priority 100 backup, advert interval 1 s:", "", takeover_table(results)]
    if results.get("failover"):
        out += ["", "### 2. Stateful NAT failover and failback", "",
                "N TCP connections (a message every 50 ms each; every 200 ms with 1000) and one UDP flow (every 20 ms); hard failure of "
                "r1, then (new connections) r1 returns and preempts.  Router counters on the new master "
                "(ICMP: errors the router itself sent to the client or server):", "",
                failover_table(results["failover"])]
    if results.get("race"):
        out += ["", "### 3. The takeover race", "",
                f"{m.get('race_conns', '?')} TCP connections and the UDP flow, each sending every "
                f"{(m.get('race_interval_s') or 0) * 1000:.0f} ms, hard failure of the master:", "",
                failover_table(results["race"], phases=("failover",), key_n=False)]
    if results.get("slow_race"):
        from .parking_race import slow_race_table
        sizes = {r["entries"] for per in results["slow_race"].values() for r in per.values() if r}
        out += ["", "### 3b. The race with a slow commit, and parking", "",
                f"The same race with {'/'.join(f'{n:,}' for n in sorted(sizes)) or '?'} more entries replicated to the backup "
                "before the failure, so its commit takes about a second; one run per row (bench/parking_race.py). "
                "\"late commit\": `transition_hold_timeout` 0.05 s, so the VIPs move before the commit ends, "
                "as with a commit longer than the hold; \"parking\": `[ctsync.parking]` on. "
                "Strict ruleset: the forward chain drops INVALID; permissive: it forwards it.", "",
                slow_race_table(results["slow_race"])]
    rep = results.get("replication") or {}
    if rep:
        out += ["", "### 4. Replication", "",
                "N SNATed UDP flows created in the master's kernel (ctnetlink, batches of 5000) as fast as the "
                "generator goes; until all are in the backup's external cache:", "", replication_table(rep),
                "", "### 5. Commit", "",
                "The backup's external cache (N entries) written into its kernel: `conntrackd -c` / "
                "`ctsyncctl commit` (ctsync in `commit` mode):", "", commit_table(rep),
                "", "### 6. Memory per replicated entry and idle cost", "", memory_table(rep)]
    if results.get("ha_idle"):
        m6 = "" if rep else "\n### 6. Idle cost\n"
        out += [m6, "", f"Idle HA pair (in sync, no traffic), every daemon; CPU over {m.get('window_s', '?')} s "
                f"after a {m.get('settle_s', '?')} s settle:", "", ha_idle_table(results["ha_idle"])]
    if results.get("idle"):
        out += [
            "",
            "### 7. Scale of the VRRP daemon",
            "",
            f"One daemon, N instances all master (1 advert/s each with VRRPv2; 20 or 100/s each with VRRPv3 at "
            f"0.05 or 0.01 s); CPU = utime+stime over a "
            f"{m.get('window_s', '?')} s window after a {m.get('settle_s', '?')} s settle (6 s and 6 s at 0.05 and "
            f"0.01 s), from /proc/PID/stat, "
            f"resolution 1/{m.get('clk_tck', '?')} s; schedstat = the scheduler's run time of every thread, "
            f"ns resolution; RSS summed over the daemon's processes; advert intervals from a capture of the window:",
            "",
            idle_table(results),
        ]
    if results.get("cli"):
        from .cli import cli_table

        out += ["", "### 8. Start-up of the command-line tools", "",
                "Each command as a fresh process against a vrrpd and a ctsync in the lab (fork, exec, interpreter, "
                "imports, one request on the control socket); `python -c pass` is the interpreter alone:", "",
                cli_table(results["cli"])]
    if results.get("fast"):
        out += [
            "",
            "### 9. Fast stateful failover (VRRPv3, 0.05 s adverts)",
            "",
            f"{m.get('fast_conns', '?')} TCP connections (a message every 50 ms each) and one UDP flow (every 20 ms) "
            "through the pair, VRRPv3 with adverts every 0.05 s on both routers, hard failure of r1 at a random "
            "phase of the advert cycle; takeover (r2's first advert) and first GARP/NA for the LAN VIP, on the "
            "bridges, after r1's last advert of the instance that times out first (the sync group moves then); "
            "INVALID: packets the new master's conntrack did not know:",
            "",
            fast_table(results["fast"]),
        ]
    if results.get("churn"):
        from .churn_results import churn_tables

        window = m.get("churn_window_s") or [2, 4]
        out += [
            "",
            "### 10. Failover under sustained churn",
            "",
            f"New SNATed UDP flows created in the master's kernel (ctnetlink, as in figure 4) at a steady rate R "
            f"(every 10 ms the flows due; \"max\": back to back, the generator's limit), 600 s timeouts, until r1 "
            f"fails hard {window[0]:g}-{window[1]:g} s after the start (random, seeded); on the new master, per age "
            f"at the failure, the flows kept / created. Lag: replica count of the backup polled every 20 ms, "
            f"p50/p99 over the flows older than 0.5 s at the failure, each as lower-upper bound (a flow first "
            f"counted by a poll arrived after the previous poll was sent and before this one was answered; "
            f"\"> x\": more than 1 % / half of them had not arrived, x ms old at the last poll). Takeover: from "
            f"the failure to r2 master with its VIPs (vrrpd waits for ctsync's commit, keepalived commits after). "
            f"CPU: % of one core over the churn (schedstat). One row per run:",
            "",
            churn_tables(results["churn"]),
        ]
    # Figures re-run on their own (python -m bench --figures ... --out X.json, then merged
    # into the main JSON by bench.merge) say so under the tables.
    reruns = list(m.get("reruns") or [])
    if m.get("figure_7_rerun"):
        reruns.insert(0, {"figures": [7], **m["figure_7_rerun"]})
    for rr in reruns:
        figs = ", ".join(str(f) for f in rr.get("figures", []))
        out += ["", f"Figure(s) {figs} come from a separate run ({rr.get('date')}, commit {rr.get('commit')}, "
                f"{rr.get('duration_s')} s, machine {rr.get('machine')}, load average "
                f"{_load(rr.get('loadavg_start'))} -> {_load(rr.get('loadavg_end'))}), merged into this JSON."]
    errors = results.get("errors") or []
    if errors:
        out += ["", "Errors:", ""] + [f"- {e}" for e in errors]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        sys.stdout.write(render_markdown(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
