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


def idle_table(results: dict) -> str:
    lines = [
        "| Daemon | Instances | CPU % of one core (stat) | CPU s in window (stat) | CPU % (schedstat) "
        "| window s | RSS MiB | processes / threads |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results.get("idle", []):
        if row.get("cpu_percent") is None:
            lines.append(f"| {row['daemon']} | {row['instances']} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        lines.append(
            f"| {row['daemon']} | {row['instances']} | {row['cpu_percent']:.2f} | {row['cpu_seconds']:.2f} | "
            f"{row.get('sched_cpu_percent', float('nan')):.3f} | {row['window_s']:.1f} | {row['rss_kib'] / 1024:.1f} | {row['processes']} / {row['threads']} |")
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    m = results.get("meta", {})
    out = [
        f"Measured {m.get('date', '?')} on Linux {m.get('kernel', '?')}, {m.get('cpus', '?')} CPUs "
        f"({m.get('cpu_model', '?')}), {m.get('keepalived', 'keepalived ?')}, vrrpd {m.get('vrrpd', '?')} "
        f"(commit {m.get('commit', '?')}), Python {m.get('python', '?')}; "
        f"{'quick mode' if m.get('quick') else 'full mode'}, {m.get('runs', '?')} run(s) per takeover figure, "
        f"{m.get('duration_s', '?')} s in all; load average (1/5/15 min) {_load(m.get('loadavg_start'))} at the "
        f"start, {_load(m.get('loadavg_end'))} at the end.",
    ]
    if results.get("takeover"):
        out += [
            "",
            "**Takeover delay beyond the protocol bound** (measured on the bridge; positive = later than "
            "the bound; priority 200 master, priority 100 backup, advert interval 1 s):",
            "",
            takeover_table(results),
        ]
    if results.get("idle"):
        out += [
            "",
            f"**Idle cost** (every instance master, 1 advert/s each; CPU = utime+stime over a "
            f"{m.get('window_s', '?')} s window after a {m.get('settle_s', '?')} s settle, from /proc/PID/stat, "
            f"resolution 1/{m.get('clk_tck', '?')} s; schedstat = the scheduler's run time of every thread, "
            f"ns resolution; RSS summed over the daemon's processes):",
            "",
            idle_table(results),
        ]
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
