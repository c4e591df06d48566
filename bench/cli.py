"""Figure 8: start-up of the command-line tools, what a notify script or a monitoring
probe pays per call: ``vrrpctl status``, ``ctsyncctl status`` and ``ctsyncctl commit``
against a vrrpd and a ctsync running in a lab router (r1 of the HA pair; its peer is not
started, so the commit writes an empty cache: the daemon's work is nil, the time is the
tool's). Each command runs ``runs`` times as a fresh process (fork, exec, interpreter
start, imports, one request on the control socket, output); the figure is the median
wall time (and min, max). The lean client (hacommon.client) imports no trio and no
protocol core; the goal is 50 ms or less per call.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from halab import Lab
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair

GOAL_MS = 50.0


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def time_command(argv: list[str], runs: int) -> dict:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        cp = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
        if cp.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {cp.returncode}: {cp.stderr.decode()[-300:]}")
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples), "n": runs,
            "samples_ms": [round(x, 2) for x in samples]}


def cli_run(runs: int) -> dict:
    with Lab() as lab:
        p = build_hapair(lab, ruleset="strict")
        d = p.start_vrrpd("r1", 200)
        c = start_ctsync(p.r1, "commit", d.socket)
        p.wait_master("r1")
        commands = {
            "vrrpctl status": [tool("vrrpctl"), "-s", d.socket, "status"],
            "ctsyncctl status": [tool("ctsyncctl"), "-s", c.socket, "status"],
            "ctsyncctl commit": [tool("ctsyncctl"), "-s", c.socket, "commit"],
        }
        baseline = {"python -c pass": [sys.executable, "-c", "pass"]}
        out = {name: time_command(argv, runs) for name, argv in {**baseline, **commands}.items()}
    return {"commands": out, "goal_ms": GOAL_MS}


def cli_table(res: dict) -> str:
    lines = ["| Command | median ms | min-max ms | runs | goal |", "|---|---:|---:|---:|---|"]
    for name, r in res.get("commands", {}).items():
        goal = ("interpreter alone" if name.startswith("python") else
                "met" if r["median_ms"] <= res.get("goal_ms", GOAL_MS) else "**not met**")
        lines.append(f"| `{name}` | {r['median_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} | {r['n']} | {goal} |")
    return "\n".join(lines)
