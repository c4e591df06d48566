"""Merge the figures of a partial benchmark run into a full run's JSON.

    python -m bench --figures 4,5,6 --out /tmp/rerun.json --md /tmp/rerun.md
    python -m bench.merge docs/benchmarks.json /tmp/rerun.json   # rewrites the first
    python -m bench --render docs/benchmarks.json                 # the doc's results section

The rerun's results replace the base's for the figures it ran; its conditions (date,
commit, duration, machine, load) are recorded in ``meta.reruns`` and printed under the
tables, so a reader sees which numbers come from which run.
"""

from __future__ import annotations

import json
import sys

#: Which top-level result keys each figure writes (bench/__main__.py).
FIGURE_KEYS = {1: ("takeover",), 2: ("failover",), 3: ("race", "slow_race"), 4: ("replication",),
               5: ("replication",), 6: ("replication", "ha_idle"), 7: ("idle",), 8: ("cli",), 9: ("fast",),
               10: ("churn",)}


def merge(base: dict, rerun: dict) -> dict:
    figs = sorted(rerun.get("figures") or [])
    for f in figs:
        for key in FIGURE_KEYS.get(f, ()):
            if key in rerun:
                base[key] = rerun[key]
    base["errors"] = (base.get("errors") or []) + [f"rerun of figure(s) {figs}: {e}" for e in rerun.get("errors") or []]
    m = rerun.get("meta", {})
    meta = base.setdefault("meta", {})
    # An earlier rerun no longer describes the figures this one measures again (and, once
    # it describes none, goes).
    kept = []
    for r in meta.get("reruns") or []:
        left = [f for f in r.get("figures", []) if f not in figs]
        if left:
            kept.append({**r, "figures": left})
    meta["reruns"] = kept
    if 7 in figs:
        meta.pop("figure_7_rerun", None)  # the first rerun's record, before meta.reruns existed
    meta["reruns"].append({
        "figures": figs, **{k: m.get(k) for k in ("date", "commit", "duration_s", "machine",
                                                   "loadavg_start", "loadavg_end")}})
    return base


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        base = json.load(f)
    with open(argv[1]) as f:
        rerun = json.load(f)
    merged = merge(base, rerun)
    with open(argv[0], "w") as f:
        json.dump(merged, f, indent=1)
        f.write("\n")
    print(f"{argv[0]}: figure(s) {sorted(rerun.get('figures') or [])} replaced from {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
