"""python -m bench [--quick] [--runs N] [--figures 1,2,...] [--out FILE.json] [--md FILE.md]

Issue 5's benchmark: our stack (vrrpd + ctsync) side by side with keepalived +
conntrackd, in lab network namespaces (root needed), the same topology and
traffic for both, only the daemons swapped.  Figures:

1. VRRP takeover (hard failure, graceful stop): vrrpd vs keepalived, on the wire
   (bench/takeover.py);
2. stateful NAT failover and failback with N TCP connections and a UDP flow
   (bench/failover.py);
3. the takeover race: every connection sending every 5 ms (bench/failover.py);
4. replication rate, 5. commit time, 6. memory per entry (bench/replication.py)
   and idle cost of every daemon (bench/idle.py);
7. vrrpd vs keepalived with 1, 50, 200 instances: CPU, RSS, advert timers, with
   1 s adverts (VRRPv2) and 0.05 s and 0.01 s adverts (VRRPv3) (bench/idle.py);
8. start-up of the command-line tools: vrrpctl status, ctsyncctl status and
   commit against daemons in the lab (bench/cli.py);
9. fast stateful failover: VRRPv3 with 0.05 s adverts, hard failure, commit and inject
   mode, IPv4 and IPv6: takeover against Master_Down_Interval, UDP and TCP gaps,
   connections kept (bench/fast.py);
10. failover under sustained churn: new flows at a steady rate until a hard failure,
   survivors on the new master by age, replication lag, CPU (bench/churn.py).

By default the results replace docs/benchmarks.json and the "Results" section
of docs/benchmarks.md (between the ``<!-- bench:results -->`` markers);
``--out``/``--md`` write elsewhere instead.  ``--quick`` (CI): one run of every
figure with small N, about 5 minutes.  Every run has a time budget and so has
the whole benchmark (``--budget``); a failed run is listed in ``errors`` (exit
code 1) and its figure is missing.  Every lab is torn down.
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

from . import churn, cli, failover, fast, idle, parking_race, replication, takeover
from .report import MARK_BEGIN, MARK_END, render_markdown
from .stacks import HA_STACKS, STACKS

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(HERE, "docs", "benchmarks.json")
DEFAULT_MD = os.path.join(HERE, "docs", "benchmarks.md")
FIGURES = {1: "takeover", 2: "failover", 3: "race", 4: "replication", 5: "commit", 6: "memory", 7: "scale",
           8: "cli", 9: "fast", 10: "churn"}


class Plan:
    """What one mode measures (full, or --quick for CI)."""

    def __init__(self, quick: bool, runs: int | None):
        self.quick = quick
        self.runs = runs or (1 if quick else 3)
        self.takeover_runs = runs or (1 if quick else 3)
        self.failover_runs = runs or (1 if quick else 2)  # the slowest figure: ~40 s a run
        self.phase = 9.0 if quick else 11.0
        self.failover_conns = (10,) if quick else (1, 100, 1000)
        self.race_conns = 10 if quick else 50
        self.race_interval = 0.005
        # figure 3b: the race with a slow commit (bench/parking_race.py), one run per cell
        self.slow_race_entries = 10000 if quick else 100000
        self.slow_race_rulesets = ("strict",) if quick else ("strict", "permissive")
        self.slow_race_variants = (("keepalived + conntrackd", "vrrpd + ctsync, late commit, parking") if quick
                                   else tuple(parking_race.VARIANTS))
        # figures 4-6: table sizes (200k only in the full run: ~1 min per run and stack)
        self.entries = (2000,) if quick else (10000, 50000, 100000, 200000)
        self.scale_counts = (20,) if quick else (1, 50, 200)
        self.window, self.settle = (3.0, 1.0) if quick else (15.0, 12.0)
        # Figure 7 with VRRPv3's fast adverts too; shorter windows (hundreds of adverts
        # per instance already), the settle still past the 5 s GARP repeat.
        self.scale_intervals = (1.0, 0.05) if quick else (1.0, 0.05, 0.01)
        self.fast_window, self.fast_settle = (3.0, 1.0) if quick else (6.0, 6.0)
        self.cli_runs = runs if runs and runs >= 5 else (5 if quick else 21)
        # Figure 9: (family, mode) combinations, connections, seconds of traffic.
        self.fast_combos = ((6, "commit"),) if quick else ((4, "commit"), (4, "inject"), (6, "commit"), (6, "inject"))
        self.fast_conns = 10 if quick else 100
        self.fast_phase = 5.0 if quick else 8.0
        # Figure 10: flows/s ("max": the generator's limit), runs per rate (each has its own
        # random failure moment), the window of the failure after the churn's start.
        self.churn_rates = (1000,) if quick else (1000, 10000, 30000, "max")
        self.churn_runs = runs or (1 if quick else 2)
        self.churn_window = (1.2, 2.0) if quick else churn.WINDOW
        self.budget = 600.0 if quick else 2700.0


def failover_interval(conns: int) -> float:
    """Figure 2's message interval per connection: 50 ms, slower beyond 100
    connections so that the client (one Python process) sends at most 5000
    messages/s and measures the network, not its own backlog."""
    return max(0.05, conns / 5000)


def _first_line(argv):
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (cp.stdout or cp.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _meta(args, plan: Plan) -> dict:
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
        ours = version("hapair")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        ours = None
    commit = _first_line(["git", "-C", HERE, "rev-parse", "--short", "HEAD"]) if shutil.which("git") else None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "keepalived": _first_line(["keepalived", "--version"]),
        "conntrackd": _first_line(["conntrackd", "-v"]),
        "vrrpd": ours,
        "commit": commit,
        "quick": plan.quick,
        "runs": plan.runs,
        "takeover_runs": plan.takeover_runs,
        "failover_runs": plan.failover_runs,
        "phase_s": plan.phase,
        "failover_conns": list(plan.failover_conns),
        "race_conns": plan.race_conns,
        "race_interval_s": plan.race_interval,
        "slow_race_entries": plan.slow_race_entries,
        "entries": list(plan.entries),
        "idle_instance_counts": list(plan.scale_counts),
        "idle_advert_intervals": list(plan.scale_intervals),
        "fast_combos": [list(c) for c in plan.fast_combos],
        "fast_conns": plan.fast_conns,
        "churn_rates": list(plan.churn_rates),
        "churn_runs": plan.churn_runs,
        "churn_window_s": list(plan.churn_window),
        "fast_advert_interval_s": fast.ADVERT_INTERVAL,
        "window_s": plan.window,
        "settle_s": plan.settle,
        "clk_tck": idle.CLK_TCK,
        "seed": args.seed,
        "machine": args.machine,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def summarize(values: list) -> dict | None:
    """median/min/max of the numbers in ``values`` (None entries skipped);
    booleans: how many runs were true."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if all(isinstance(v, bool) for v in vals):
        return {"true": sum(vals), "n": len(vals)}
    if not all(isinstance(v, (int, float)) for v in vals):
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "samples": [round(v, 6) if isinstance(v, float) else v for v in vals]}


def aggregate(runs: list[dict]) -> dict:
    """Per key (recursively into dicts), the summary over the runs."""
    out: dict = {"runs": len(runs)}
    keys: list = []
    for r in runs:
        keys += [k for k in r if k not in keys]
    for k in keys:
        vals = [r.get(k) for r in runs]
        if any(isinstance(v, dict) for v in vals):
            dicts = [v for v in vals if isinstance(v, dict)]
            if k in ("counters", "rss_kib_before", "rss_kib_after", "errors"):
                out[k] = dicts  # kept as measured
            else:
                out[k] = aggregate(dicts)
        else:
            s = summarize(vals)
            if s is not None:
                out[k] = s
    return out


def _takeover_summary(excess_ms: list[float], bound_s: float | None) -> dict:
    if not excess_ms:
        return {"median_ms": None, "min_ms": None, "max_ms": None, "n": 0, "bound_s": bound_s, "samples_ms": []}
    return {"median_ms": statistics.median(excess_ms), "min_ms": min(excess_ms), "max_ms": max(excess_ms),
            "n": len(excess_ms), "bound_s": bound_s, "samples_ms": [round(x, 3) for x in excess_ms]}


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _write_md(path: str, md: str) -> None:
    """Replace the results section between the markers (or the whole file if
    it has none)."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if MARK_BEGIN in old and MARK_END in old:
        head, rest = old.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1]
        new = f"{head}{MARK_BEGIN}\n{md}{MARK_END}{tail}"
    else:
        new = f"{MARK_BEGIN}\n{md}{MARK_END}\n"
    with open(path, "w") as f:
        f.write(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    ap.add_argument("--quick", action="store_true", help="CI mode: one run of every figure, small N (~5 min)")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3, failover 2; quick 1)")
    ap.add_argument("--figures", default=",".join(map(str, FIGURES)), help="which figures (comma-separated numbers)")
    ap.add_argument("--out", help=f"JSON file (default {os.path.relpath(DEFAULT_JSON, HERE)}, or none with --md)")
    ap.add_argument("--md", help=f"Markdown file (default: the results section of {os.path.relpath(DEFAULT_MD, HERE)})")
    ap.add_argument("--budget", type=float, help="overall time budget in seconds (default 600 quick, 2700 full)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random failure phase")
    ap.add_argument("--entries", help="figures 4-6: table sizes instead of the plan's (comma-separated, e.g. 200000)")
    ap.add_argument("--churn-rates", help="figure 10: rates instead of the plan's (comma-separated flows/s, or max)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the Markdown (--md, default the doc's "
                    "results section) from a JSON written by an earlier run; measures nothing")
    ap.add_argument("--machine", default="shared",
                    help="say whether other work ran on the machine meanwhile (shared|idle), recorded in the doc")
    args = ap.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        ap.error("--runs must be at least 1")
    try:
        figs = {int(x) for x in args.figures.split(",") if x.strip()}
    except ValueError:
        ap.error(f"--figures takes numbers 1-{max(FIGURES)}, e.g. 1,4,5")
    if not figs <= set(FIGURES):
        ap.error(f"--figures: unknown figure(s) {sorted(figs - set(FIGURES))} (1-{max(FIGURES)})")
    if args.out is None and args.md is None:
        args.out, args.md = DEFAULT_JSON, DEFAULT_MD
    if args.render:
        with open(args.render) as f:
            _write_md(args.md or DEFAULT_MD, render_markdown(json.load(f)))
        return 0
    plan = Plan(args.quick, args.runs)
    if args.entries:
        try:
            plan.entries = tuple(int(x) for x in args.entries.split(",") if x.strip())
        except ValueError:
            ap.error("--entries takes numbers, e.g. 10000,200000")
        if not plan.entries or min(plan.entries) < 1:
            ap.error("--entries: at least one table size, each 1 or more")
    if args.churn_rates:
        try:
            plan.churn_rates = tuple(x.strip() if x.strip() == "max" else int(x) for x in args.churn_rates.split(",")
                                     if x.strip())
        except ValueError:
            ap.error("--churn-rates takes flows/s or max, e.g. 60000,90000,max")
        if not plan.churn_rates or any(r != "max" and r < 1 for r in plan.churn_rates):
            ap.error("--churn-rates: at least one rate, each 1 or more (or max)")
    budget = args.budget or plan.budget
    if args.seed is None:
        args.seed = int(time.time())
    require_root_and_netns()

    rng = random.Random(args.seed)
    t_begin = time.monotonic()
    res: dict = {"meta": _meta(args, plan), "figures": sorted(figs), "takeover": {}, "failover": {},
                 "race": {}, "slow_race": {}, "replication": {}, "ha_idle": {}, "idle": [], "cli": {}, "fast": {},
                 "churn": {}, "errors": []}

    def remaining() -> float:
        return budget - (time.monotonic() - t_begin)

    def attempt(what: str, fn, *a, **kw):
        if remaining() < 5:
            res["errors"].append(f"{what}: skipped, overall budget of {budget:.0f} s spent")
            _log(res["errors"][-1])
            return None
        t0 = time.monotonic()
        try:
            out = fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - record, tear down (done by Lab), go on
            res["errors"].append(f"{what}: {type(e).__name__}: {e}")
            _log(res["errors"][-1])
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            return None
        _log(f"{what}: done in {time.monotonic() - t0:.1f} s")
        return out

    def run_budget(nominal: float) -> float:
        return max(min(nominal, remaining()), 1.0)

    # --- 1: takeover, vrrpd vs keepalived
    if 1 in figs:
        for stack in STACKS.values():
            hard, grace = [], []
            for i in range(plan.takeover_runs):
                r = attempt(f"fig 1 {stack.name} hard failure run {i + 1}", takeover.hard_run, stack, rng)
                if r:
                    hard.append(r)
                r = attempt(f"fig 1 {stack.name} graceful stop run {i + 1}", takeover.graceful_run, stack, rng)
                if r:
                    grace.append(r)
            mdi = hard[0]["bound_s"] if hard else None
            skew = grace[0]["bound_s"] if grace else None
            res["takeover"][stack.name] = {
                "hard_advert": _takeover_summary([(r["advert_delay_s"] - r["bound_s"]) * 1000 for r in hard], mdi),
                "hard_garp": _takeover_summary([(r["garp_delay_s"] - r["bound_s"]) * 1000 for r in hard], mdi),
                "graceful_advert": _takeover_summary([(r["advert_delay_s"] - r["bound_s"]) * 1000 for r in grace], skew),
            }

    # --- 2 and 3: stateful failover (+ failback), the race
    if 2 in figs:
        for stack in HA_STACKS.values():
            res["failover"][stack.name] = {}
            for n in plan.failover_conns:
                runs = [attempt(f"fig 2 {stack.name} failover/failback N={n} run {i + 1}", failover.failover_run,
                                stack, n, run_budget(120 + n / 20), interval=failover_interval(n),
                                phase=plan.phase, rng=rng)
                        for i in range(plan.failover_runs)]
                res["failover"][stack.name][str(n)] = aggregate([r for r in runs if r])
    if 3 in figs:
        for stack in HA_STACKS.values():
            runs = [attempt(f"fig 3 {stack.name} race N={plan.race_conns} run {i + 1}", failover.failover_run,
                            stack, plan.race_conns, run_budget(90), interval=plan.race_interval,
                            udp_interval=plan.race_interval, failback=False, phase=plan.phase, rng=rng)
                    for i in range(plan.runs)]
            res["race"][stack.name] = aggregate([r for r in runs if r])
        for ruleset in plan.slow_race_rulesets:
            res["slow_race"][ruleset] = {
                v: attempt(f"fig 3b {v} slow-commit race ({ruleset}, {plan.slow_race_entries} entries)",
                           parking_race.slow_race_run, v, ruleset, plan.slow_race_entries, plan.race_conns,
                           run_budget(240), interval=plan.race_interval, rng=rng)
                for v in plan.slow_race_variants}

    # --- 4, 5, 6: replication, commit, memory (one run measures all three)
    if figs & {4, 5, 6}:
        for stack in HA_STACKS.values():
            res["replication"][stack.name] = {}
            for n in plan.entries:
                runs = [attempt(f"fig 4-6 {stack.name} {n} entries run {i + 1}", replication.replication_run,
                                stack, n, run_budget(90 + n / 1000))
                        for i in range(plan.runs)]
                res["replication"][stack.name][str(n)] = aggregate([r for r in runs if r])
    if 6 in figs:
        for stack in HA_STACKS.values():
            r = attempt(f"fig 6 {stack.name} idle HA pair", idle.ha_idle_run, stack, plan.window, plan.settle,
                        run_budget(plan.window + plan.settle + 60))
            if r:
                res["ha_idle"][stack.name] = r["daemons"]

    # --- 7: scale of the VRRP daemon
    if 7 in figs:
        for interval in plan.scale_intervals:
            window, settle = (plan.window, plan.settle) if interval >= 1 else (plan.fast_window, plan.fast_settle)
            for stack in STACKS.values():
                for n in plan.scale_counts:
                    r = attempt(f"fig 7 {stack.name} {n} instance(s) at {interval:g} s", idle.idle_run, stack, n,
                                window, settle, run_budget(window + settle + 60 + n / 2),
                                timers=n > 1 or interval < 1, interval=interval)
                    row = {"daemon": stack.name, "instances": n, "advert_interval_s": interval}
                    row.update(r or {"cpu_percent": None, "cpu_seconds": None, "rss_kib": None})
                    res["idle"].append(row)

    # --- 8: start-up of the command-line tools
    if 8 in figs:
        r = attempt(f"fig 8 CLI start-up, {plan.cli_runs} runs per command", cli.cli_run, plan.cli_runs)
        if r:
            res["cli"] = r

    # --- 9: fast stateful failover (VRRPv3, 0.05 s adverts), both stacks, IPv4 and IPv6
    if 9 in figs:
        for stack in HA_STACKS.values():
            res["fast"][stack.name] = {}
            for family, mode in plan.fast_combos:
                runs = [attempt(f"fig 9 {stack.name} IPv{family} {mode} run {i + 1}", fast.fast_run, stack, family,
                                mode, plan.fast_conns, run_budget(90), phase=plan.fast_phase, rng=rng)
                        for i in range(plan.failover_runs)]
                res["fast"][stack.name][f"ipv{family}-{mode}"] = aggregate([r for r in runs if r])

    # --- 10: failover under sustained churn, both stacks; every run kept (its failure
    # moment is random: medians of created/survived per age would mix different runs)
    if 10 in figs:
        for stack in HA_STACKS.values():
            res["churn"][stack.name] = {}
            for rate in plan.churn_rates:
                runs = [attempt(f"fig 10 {stack.name} churn at {rate} flows/s run {i + 1}", churn.churn_run,
                                stack, rate, run_budget(120), window=plan.churn_window, rng=rng)
                        for i in range(plan.churn_runs)]
                res["churn"][stack.name][str(rate)] = [r for r in runs if r]

    res["meta"]["duration_s"] = round(time.monotonic() - t_begin, 1)
    res["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:  # the measurements first: a rendering bug must not lose a long run
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    md = render_markdown(res)
    if args.md:
        _write_md(args.md, md)
    sys.stdout.write(md)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
