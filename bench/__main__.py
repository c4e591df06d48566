"""python -m bench [--runs N] [--quick] [--out FILE.json] [--md FILE.md]

Runs, in lab network namespaces (root needed), for vrrpd and for keepalived:

* takeover delay beyond the protocol bound, N runs each of a hard failure
  (kill -9) and a graceful stop (SIGTERM), see bench/takeover.py;
* idle CPU and RSS with 1 and with 50 instances, see bench/idle.py.

``--quick`` (CI smoke test): 1 run, 1 and 5 instances, a 3 s CPU window; the
whole thing takes about 80 s.  Every run has a time budget, and the whole
benchmark too (``--budget``); a run that fails or overruns is reported in
``errors`` and its figure is missing (exit code 1).  Every lab is torn down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import traceback

from halab import require_root_and_netns

from . import idle, takeover
from .report import render_markdown
from .stacks import STACKS


def _meta(args, counts, window, settle) -> dict:
    def first_line(argv):
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (cp.stdout or cp.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return None

    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        vrrpd_version = version("hapair")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        vrrpd_version = None
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = first_line(["git", "-C", here, "rev-parse", "--short", "HEAD"]) if shutil.which("git") else None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "keepalived": first_line(["keepalived", "--version"]),
        "vrrpd": vrrpd_version,
        "commit": commit,
        "quick": args.quick,
        "runs": args.runs,
        "idle_instance_counts": list(counts),
        "window_s": window,
        "settle_s": settle,
        "clk_tck": idle.CLK_TCK,
        "seed": args.seed,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _summary(excess_ms: list[float], bound_s: float | None) -> dict:
    if not excess_ms:
        return {"median_ms": None, "min_ms": None, "max_ms": None, "n": 0, "bound_s": bound_s, "samples_ms": []}
    return {
        "median_ms": statistics.median(excess_ms),
        "min_ms": min(excess_ms),
        "max_ms": max(excess_ms),
        "n": len(excess_ms),
        "bound_s": bound_s,
        "samples_ms": [round(x, 3) for x in excess_ms],
    }


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description="Takeover delay and idle cost of vrrpd and keepalived, measured in lab network namespaces (needs root and keepalived).")
    ap.add_argument("--runs", type=int, default=5, help="runs per takeover figure (default 5)")
    ap.add_argument("--quick", action="store_true", help="CI mode: 1 run, small instance counts, short windows")
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--md", help="write the Markdown table to this file")
    ap.add_argument("--budget", type=float, help="overall time budget in seconds (default 150 quick, 1800 full)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random failure phase")
    ap.add_argument("--stacks", default="vrrpd,keepalived", help="comma-separated: vrrpd,keepalived")
    ap.add_argument("--only", choices=("takeover", "idle"), help="run only one part")
    ap.add_argument("--window", type=float, help="idle CPU window in seconds (default 20, quick 3)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = 1
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    # settle: both stacks send a second GARP burst 5 s after becoming master, and
    # trio retires idle worker threads after 10 s; the window starts after both.
    counts, window, settle = ((1, 5), 3.0, 1.0) if args.quick else ((1, 50), 20.0, 12.0)
    window = args.window or window
    budget = args.budget or (150.0 if args.quick else 1800.0)
    if args.seed is None:
        args.seed = int(time.time())
    stacks = [STACKS[s] for s in args.stacks.split(",") if s]
    require_root_and_netns()

    rng = random.Random(args.seed)
    t_begin = time.monotonic()
    results: dict = {"meta": _meta(args, counts, window, settle), "takeover": {}, "idle": [], "errors": []}

    def remaining() -> float:
        return budget - (time.monotonic() - t_begin)

    def attempt(what: str, fn, *a):
        left = remaining()
        if left < 5:
            results["errors"].append(f"{what}: skipped, overall budget of {budget:.0f} s spent")
            _log(results["errors"][-1])
            return None
        t0 = time.monotonic()
        try:
            out = fn(*a)
        except Exception as e:  # noqa: BLE001 - record, tear down (done by Lab), go on
            results["errors"].append(f"{what}: {type(e).__name__}: {e}")
            _log(results["errors"][-1])
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            return None
        _log(f"{what}: done in {time.monotonic() - t0:.1f} s")
        return out

    # --- takeover
    for stack in stacks if args.only != "idle" else ():
        hard, grace = [], []
        for i in range(args.runs):
            r = attempt(f"{stack.name} hard failure run {i + 1}/{args.runs}", takeover.hard_run, stack, rng)
            if r:
                hard.append(r)
            r = attempt(f"{stack.name} graceful stop run {i + 1}/{args.runs}", takeover.graceful_run, stack, rng)
            if r:
                grace.append(r)
        mdi = hard[0]["bound_s"] if hard else None
        skew = grace[0]["bound_s"] if grace else None
        results["takeover"][stack.name] = {
            "hard_advert": _summary([(r["advert_delay_s"] - r["bound_s"]) * 1000 for r in hard], mdi),
            "hard_garp": _summary([(r["garp_delay_s"] - r["bound_s"]) * 1000 for r in hard], mdi),
            "graceful_advert": _summary([(r["advert_delay_s"] - r["bound_s"]) * 1000 for r in grace], skew),
        }

    # --- idle cost
    for stack in stacks if args.only != "takeover" else ():
        for n in counts:
            run_budget = min(window + settle + 90, max(remaining(), 0))
            r = attempt(f"{stack.name} idle with {n} instance(s)", idle.idle_run, stack, n, window, settle, run_budget)
            row = {"daemon": stack.name, "instances": n}
            row.update(r or {"cpu_percent": None, "cpu_seconds": None, "rss_kib": None})
            results["idle"].append(row)

    results["meta"]["duration_s"] = round(time.monotonic() - t_begin, 1)
    results["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    md = render_markdown(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)
    sys.stdout.write(md)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
