"""`python -m bench --quick` still runs and still produces every figure.

Keeps the benchmark (bench/, numbers in docs/benchmarks.md) from rotting: it runs
vrrpd and keepalived in lab namespaces, so it needs root and keepalived.  The figures
themselves are not judged here (that is what the benchmark is for), only that each
one is there and numeric, that the run stays within its time budget and that it
leaves no namespace behind.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import halab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("vrrpd", "keepalived")
TAKEOVER_FIGURES = ("hard_advert", "hard_garp", "graceful_advert")


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_bench_quick_produces_every_figure(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--md", str(md)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        log, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the bench's labs tear themselves down
        log, _ = proc.communicate(timeout=60)
        pytest.fail(f"python -m bench --quick ran over 240 s:\n{log[-4000:]}")
    finally:
        assert halab.lab_namespaces(proc.pid) == [], "the benchmark left namespaces behind"
    assert proc.returncode == 0, log[-4000:]

    res = json.loads(out.read_text())
    assert res["errors"] == []
    meta = res["meta"]
    assert meta["quick"] is True and meta["runs"] == 1
    assert meta["duration_s"] < 150, f"--quick took {meta['duration_s']} s"
    for key in ("date", "kernel", "cpus", "keepalived", "window_s"):
        assert meta[key], key

    for stack in STACKS:
        for fig in TAKEOVER_FIGURES:
            f = res["takeover"][stack][fig]
            assert f["n"] == 1, (stack, fig)
            for stat in ("median_ms", "min_ms", "max_ms", "bound_s"):
                assert number(f[stat]), (stack, fig, stat, f[stat])
            # A takeover is never earlier than the protocol bound allows, nor
            # wildly later; the tolerance is the netns tests' +/- 150 ms.
            assert -150 <= f["median_ms"] <= 150, (stack, fig, f)

    rows = {(r["daemon"], r["instances"]): r for r in res["idle"]}
    counts = meta["idle_instance_counts"]
    assert len(counts) == 2 and counts[0] == 1 and counts[1] > 1
    assert set(rows) == {(s, n) for s in STACKS for n in counts}
    for row in rows.values():
        for key in ("cpu_percent", "cpu_seconds", "sched_cpu_percent", "rss_kib", "window_s"):
            assert number(row[key]), (row["daemon"], row["instances"], key, row[key])
        assert row["rss_kib"] > 1000 and 0 <= row["cpu_percent"] < 100

    text = md.read_text()
    assert "| vrrpd | kill -9 of the master | first advert |" in text
    assert f"| keepalived | {counts[1]} |" in text
