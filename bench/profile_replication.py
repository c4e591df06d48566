"""Profile the sync daemons during one run of figures 4-5 (replication burst, commit).

    flock /tmp/hapair-lab.lock .venv/bin/python -m bench.profile_replication \\
        --stack ours --entries 50000 --tools pyspy,perfstat --out reports/profile/ours-50k

One run of :func:`bench.replication.replication_run` (a fresh HA pair, N flows created
in the master's kernel, until the backup holds them all, then the commit on the backup),
with profilers attached to both sync daemons (by pid, from the host) from just before
the first creation until the backup holds every entry, and to the backup's daemon
during the commit.  Tools (``--tools``, comma-separated):

* ``pyspy``    py-spy record, raw (collapsed) stacks, ``--rate`` Hz, non-blocking
  (ctsync only); summarised per function and per step of the replication path;
* ``cprofile`` ctsync started under bench/cprofile_daemon.py, profiling switched on
  for the burst only (ctsync only; cProfile slows the daemon down: shape, not time);
* ``perfstat`` ``perf stat``: task-clock, context switches, system calls (all, and the
  send/receive ones) -- cheap, so the run's figures stay meaningful;
* ``trace``    ``perf trace -s``: count and time of every system call (costs more);
* ``perfrec``  ``perf record -g`` (cpu-clock, 999 Hz), summarised with ``perf report``
  (for conntrackd, which is C: where its CPU goes, user space and kernel).

``--commit-experiments`` then, in the same lab: the backup's runtime statistics after the
commit, and ``--repeat`` further commits each after flushing the backup's kernel table,
by the command line a failover runs (``conntrackd -C CONF -c`` / ``ctsyncctl -c CONF
commit``, wall time and the daemon's own figure), plus the bare start-up of that command
line (``conntrackd -C CONF -s`` / ``ctsyncctl --help``).

Writes ``OUT.json`` (the run's figures, CPU seconds of each daemon over each window,
tool summaries) and the tools' raw files next to it (``OUT-<role>.pyspy.txt``, ...).
Measurement only: nothing here changes what the daemons do.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from halab import require_root_and_netns

from . import replication
from .idle import CLK_TCK, cpu_ticks
from .stacks import HA_STACKS

SYSCALLS = ("recvfrom", "recvmsg", "sendto", "sendmsg", "epoll_wait", "read", "write")


def _cpu_s(pid: int) -> float:
    try:
        return cpu_ticks(pid) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return float("nan")


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (the tools write their output on it), then wait."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------------------------------
# py-spy's collapsed stacks -> functions and steps of the replication path

#: (step, predicate on one frame "function (file)"): the first step, walking a sample's
#: stack from the leaf to the root, whose predicate matches a frame names that sample.
def _func(fr: str) -> str:
    """'CtSocket._recv_nowait (ctnetlink/socket.py)' -> '_recv_nowait'."""
    return fr.split(" (", 1)[0].rsplit(".", 1)[-1]


def _f(*names):
    return lambda fr: _func(fr) in names


def _file(*parts):
    return lambda fr: any(p in fr for p in parts)


STEPS = [
    ("netlink receive (recv syscall)", _f("_recv_nowait", "_recv", "_recv_reply")),
    ("HMAC (hmac.py)", _file("(hmac.py", "hmac.py)")),
    ("decode event (parse_message, iter_messages, Event)",
     _f("parse_message", "parse_entry", "_parse_tuple", "_is_fast_v4_tuple", "iter_messages", "_queue_datagram",
        "_queue_events", "_messages", "address", "_parse_nat", "_parse_protoinfo", "_apply_nat")),
    ("filter (_filtered)", _f("_filtered")),
    ("key (entry_key)", _f("entry_key", "key_of")),
    ("encode commit form (encode_new)", _f("encode_new", "_tuple_attr", "_nat_attr", "_commit_status", "_addr_bytes",
                                          "_family", "inverse")),
    ("backup: key_and_timeout", _f("key_and_timeout")),
    ("backup: cache.put", _f("put")),
    ("wire encode (framing)", lambda fr: _func(fr) == "encode" and "wire.py" in fr),
    ("wire decode (parse)", lambda fr: _func(fr) == "decode" and "wire.py" in fr),
    ("replay window", _f("check")),
    ("channel: queue message (Channel.send)", lambda fr: _func(fr) == "send" and "channel.py" in fr),
    ("channel: pack datagrams (datagrams_to_send, _datagram)", _f("datagrams_to_send", "_datagram")),
    ("channel: receive (receive_datagram, _on_ack, delivery)", _f("receive_datagram", "_on_ack", "_deliver", "_drain",
                                                                  "_gaps")),
    ("replicator: per message (_message)", _f("_message")),
    ("replicator: per event (kernel_event, _send_entry)", _f("kernel_event", "_send_entry")),
    ("sendto (sync datagrams)", _f("_send_datagrams")),
    ("udp receive loop (recvfrom, source check)", _f("_udp_receive")),
    ("pump (handle_timer, poll, not_ready, next_deadline)", _f("_pump", "poll", "handle_timer", "not_ready",
                                                                "next_deadline", "has_output", "ready", "stalled",
                                                                "peer_alive")),
    ("event loop (_kernel_events batch, read_queued)", _f("_kernel_events", "read_queued", "next_event")),
    ("control socket (status polls)", _file("control.py", "_serve", "status (ctsync/daemon.py")),
    # trio's frames between a ctsync frame and the leaf are that step's cost (its socket
    # wrappers, checkpoints); only a sample with no ctsync step at all is trio's own.
]
TRIO = ("trio scheduler / epoll (no ctsync frame)", _file("trio/", "(ctsync)", "vrrpd/entry.py", "ctsync/cli.py"))


def parse_collapsed(path: str) -> list[tuple[list[str], int]]:
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            try:
                out.append((stack.split(";"), int(n)))
            except ValueError:
                continue
    return out


def summarise_pyspy(path: str, top: int = 25) -> dict:
    samples = parse_collapsed(path)
    total = sum(n for _, n in samples) or 1
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    steps: collections.Counter[str] = collections.Counter()
    for frames, n in samples:
        frames = [fr for fr in frames if not fr.startswith(("process ", "thread "))]
        if not frames:
            continue
        self_t[frames[-1]] += n
        for fr in set(frames):
            incl[fr] += n
        for fr in reversed(frames):
            step = next((name for name, pred in STEPS if pred(fr)), None)
            if step:
                steps[step] += n
                break
        else:
            steps[TRIO[0] if all(TRIO[1](fr) for fr in frames) else "other"] += n
    pct = lambda c: round(100.0 * c / total, 2)  # noqa: E731
    return {"samples": total,
            "steps_pct": {k: pct(v) for k, v in steps.most_common()},
            "self_pct": [(k, pct(v)) for k, v in self_t.most_common(top)],
            "inclusive_pct": [(k, pct(v)) for k, v in incl.most_common(top)]}


# ---------------------------------------------------------------------------------------
# perf output


def parse_perf_stat(path: str) -> dict:
    """``perf stat -x,`` output -> {event: value}."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) >= 3 and parts[0] and not line.startswith("#"):
                    try:
                        out[parts[2]] = float(parts[0])
                    except ValueError:
                        out[parts[2]] = parts[0]
    except FileNotFoundError:
        pass
    return out


_TRACE_LINE = re.compile(r"^\s+(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")


def parse_perf_trace(path: str) -> dict:
    """``perf trace -s`` summary -> {syscall: {calls, errors, total_ms}} (all threads)."""
    out: dict[str, dict] = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _TRACE_LINE.match(line)
                if m:
                    d = out.setdefault(m.group(1), {"calls": 0, "errors": 0, "total_ms": 0.0})
                    d["calls"] += int(m.group(2))
                    d["errors"] += int(m.group(3))
                    d["total_ms"] += float(m.group(4))
    except FileNotFoundError:
        pass
    return out


def perf_report(path: str, limit: int = 30) -> str:
    cp = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "--sort", "dso,sym",
                         "--percent-limit", "0.5", "-g", "none"], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in cp.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return "\n".join(lines[:limit])


# ---------------------------------------------------------------------------------------


class Probe:
    """Called by replication_run at "burst", "burst_end", "commit", "commit_end"."""

    def __init__(self, stack, n: int, out: str, tools: set[str], rate: int, native: bool,
                 commit_experiments: bool, repeat: int, commit_tools: set[str] = frozenset()):
        self.stack, self.n, self.out, self.tools = stack, n, out, tools
        self.commit_tools = set(commit_tools)
        self.rate, self.native = rate, native
        self.commit_experiments, self.repeat = commit_experiments, repeat
        self.running: list[tuple[str, str, subprocess.Popen, str]] = []  # (role, tool, proc, file)
        self.result: dict = {"windows": {}, "tools": {}}
        self.pids: dict[str, int] = {}
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0

    # -- tools
    def _start(self, role: str, pid: int, window: str) -> None:
        base = f"{self.out}-{window}-{role}"
        is_py = self.stack.name == "ours"
        if "pyspy" in self.tools and is_py:
            f = base + ".pyspy.txt"
            argv = [shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy"),
                    "record", "-p", str(pid), "-r", str(self.rate), "-f", "raw", "--nolineno", "--nonblocking",
                    "-o", f]
            if self.native:
                argv.append("--native")
            self.running.append((role, "pyspy", subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                                 stderr=subprocess.DEVNULL), f))
        if "cprofile" in self.tools and is_py:
            os.kill(pid, signal.SIGUSR1)
            self.running.append((role, "cprofile", None, self._pstats(role)))
        if "perfstat" in self.tools:
            f = base + ".perfstat.csv"
            ev = "task-clock,context-switches,raw_syscalls:sys_enter," + ",".join(
                f"syscalls:sys_enter_{s}" for s in SYSCALLS)
            self.running.append((role, "perfstat", subprocess.Popen(
                ["perf", "stat", "-x,", "-e", ev, "-p", str(pid), "-o", f],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f))
        if "trace" in self.tools:
            f = base + ".trace.txt"
            self.running.append((role, "trace", subprocess.Popen(
                ["perf", "trace", "-s", "-p", str(pid), "-o", f],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f))
        if "perfrec" in self.tools:
            f = base + ".perf.data"
            self.running.append((role, "perfrec", subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(pid), "-o", f],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), f))

    def _pstats(self, role: str) -> str:
        return os.path.abspath(f"{self.out}-{role}.pstats")

    def _stop_all(self, window: str) -> None:
        for role, tool, proc, f in self.running:
            if tool == "cprofile":
                os.kill(self.pids[role], signal.SIGUSR2)
                continue
            _stop(proc)
        time.sleep(0.5)
        for role, tool, proc, f in self.running:
            key = f"{window}-{role}-{tool}"
            if tool == "pyspy":
                self.result["tools"][key] = {"file": f, **(summarise_pyspy(f) if os.path.exists(f) else {})}
            elif tool == "perfstat":
                self.result["tools"][key] = {"file": f, **parse_perf_stat(f)}
            elif tool == "trace":
                self.result["tools"][key] = {"file": f, "syscalls": parse_perf_trace(f)}
            elif tool == "perfrec":
                self.result["tools"][key] = {"file": f, "report": perf_report(f) if os.path.exists(f) else ""}
            elif tool == "cprofile":
                self.result["tools"][key] = {"file": f}
        self.running = []

    # -- phases
    def __call__(self, phase: str, pair, r1, r2) -> None:
        roles = {"master": r1, "backup": r2}
        if phase == "burst":
            self.pids = {role: sorted(r.sync.group_pids())[0] for role, r in roles.items()}
            self._cpu0 = {role: _cpu_s(pid) for role, pid in self.pids.items()}
            for role, pid in self.pids.items():
                self._start(role, pid, "burst")
            time.sleep(1.0 if self.running else 0)  # let the tools attach
            self._cpu0 = {role: _cpu_s(pid) for role, pid in self.pids.items()}
            self._t0 = time.monotonic()
        elif phase == "burst_end":
            cpu1 = {role: _cpu_s(pid) for role, pid in self.pids.items()}
            self.result["windows"]["burst"] = {"seconds": time.monotonic() - self._t0,
                                               "cpu_s": {k: cpu1[k] - self._cpu0[k] for k in cpu1}}
            self._stop_all("burst")
        elif phase == "commit":
            # By default exactly the benchmark's timing (its commit follows the burst after
            # its status reads); --commit-tools attach tools first, after a quiet second.
            if self.commit_tools:
                wait_quiet([self.pids["master"], self.pids["backup"]])
                saved, self.tools = self.tools, self.commit_tools
                self._start("backup", self.pids["backup"], "commit")
                self.tools = saved
                time.sleep(1.0)
            self._cpu0 = {"backup": _cpu_s(self.pids["backup"])}
            self._t0 = time.monotonic()
        elif phase == "commit_end":
            self.result["windows"]["commit"] = {"seconds": time.monotonic() - self._t0,
                                                "cpu_s": {"backup": _cpu_s(self.pids["backup"]) - self._cpu0["backup"]}}
            self._stop_all("commit")
            if self.commit_experiments:
                self.result["commit_experiments"] = commit_experiments(self.stack, pair, r1, r2, self.repeat)


def wait_quiet(pids: list[int], quiet: float = 1.0, limit: float = 30.0) -> float:
    """Until the processes used (almost) no CPU for ``quiet`` seconds; returns the wait."""
    t0 = time.monotonic()
    last = sum(_cpu_s(p) for p in pids)
    calm_since = time.monotonic()
    while time.monotonic() - t0 < limit:
        time.sleep(0.2)
        cur = sum(_cpu_s(p) for p in pids)
        if cur - last > 0.02:
            calm_since = time.monotonic()
        last = cur
        if time.monotonic() - calm_since >= quiet:
            break
    return time.monotonic() - t0


def _timed(host, argv: list[str], timeout: float = 120) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    cp = host.run(argv, timeout=timeout)
    return time.monotonic() - t0, cp


def _flush_kernel(host) -> None:
    host.run(["conntrack", "-F"], timeout=60)


def commit_experiments(stack, pair, r1, r2, repeat: int) -> dict:
    """After the benchmark's commit, in the same lab: statistics, then repeated commits by
    the failover's own command line, each after emptying the backup's kernel table."""
    host = r2.host
    pids = [sorted(r1.sync.group_pids())[0], sorted(r2.sync.group_pids())[0]]
    res: dict = {"runs": []}
    if stack.name == "theirs":
        ct = r2.conntrackd
        conf = ct.conf
        res["after_bench_commit_runtime"] = ct.ctl("-s", "runtime").stdout
        res["after_bench_commit_stats"] = ct.stats()
        res["daemon_log_tail"] = ct.daemon_log()[-3000:]
        # the client alone: start-up of `conntrackd -C CONF` + `ip netns exec`
        res["client_only_s"] = [_timed(host, ["conntrackd", "-C", conf, "-s", "runtime"])[0] for _ in range(3)]
        for i in range(repeat):
            _flush_kernel(host)
            res.setdefault("settle_s", []).append(wait_quiet(pids))
            log_len = len(ct.daemon_log())
            cpu0 = _cpu_s(pids[1])
            wall, cp = _timed(host, ["conntrackd", "-C", conf, "-c"])
            cpu = _cpu_s(pids[1]) - cpu0
            new = ct.daemon_log()[log_len:]
            took = re.findall(r"commit has taken ([0-9.]+) seconds", new)
            done = re.findall(r"Committed (\d+) new entries", new)
            res["runs"].append({"wall_s": wall, "rc": cp.returncode, "reported_s": float(took[-1]) if took else None,
                                "committed": int(done[-1]) if done else None, "daemon_cpu_s": cpu,
                                "kernel_entries": replication.kernel_count(host),
                                "runtime_after": ct.ctl("-s", "runtime").stdout})
    else:
        c = r2.ctsync
        cfg = str(c.config_path)
        ctl = os.path.join(os.path.dirname(sys.executable), "ctsyncctl")
        res["client_help_s"] = [_timed(host, [ctl, "--help"])[0] for _ in range(3)]
        res["client_status_s"] = [_timed(host, [ctl, "-c", cfg, "status"])[0] for _ in range(3)]
        res["python_startup_s"] = [_timed(host, [sys.executable, "-c", "pass"])[0] for _ in range(3)]
        res["ip_netns_exec_true_s"] = [_timed(host, ["true"])[0] for _ in range(3)]
        for i in range(repeat):
            _flush_kernel(host)
            res.setdefault("settle_s", []).append(wait_quiet(pids))
            cpu0 = _cpu_s(pids[1])
            wall, cp = _timed(host, [ctl, "-c", cfg, "commit"])
            cpu = _cpu_s(pids[1]) - cpu0
            lc = c.status()["last_commit"] or {}
            res["runs"].append({"wall_s": wall, "rc": cp.returncode, "reported_s": lc.get("duration"),
                                "committed": lc.get("committed"), "output": cp.stdout.strip(),
                                "daemon_cpu_s": cpu, "kernel_entries": replication.kernel_count(host)})
            # the same, through the control socket from this process (as the benchmark does)
            _flush_kernel(host)
            wait_quiet(pids)
            t0 = time.monotonic()
            lc2 = c.commit()
            res["runs"].append({"via": "control socket in-process (bench)", "wall_s": time.monotonic() - t0,
                                "reported_s": lc2.get("duration"), "committed": lc2.get("committed")})
    return res


def capture_kernel_events(n: int, path: str) -> dict:
    """Create ``n`` flows of figure 4 in a lab namespace and save the kernel's NEW event
    datagrams as they arrive (JSON list of hex strings): the real input for
    bench/replicator_micro.py --events."""
    from ctnetlink.socket import ALL_GROUPS, CtSocket
    from halab import Lab

    with Lab() as lab:
        h = lab.add_host("ev")
        ev = CtSocket.open(ALL_GROUPS, rcvbuf=64 << 20, netns=h.netns)
        try:
            replication.create_in_kernel(h, replication.lan_udp_flows(n))
            got = []
            while True:
                try:
                    got.append(ev._raw.recv(1 << 16))
                except BlockingIOError:
                    break
        finally:
            ev._raw.close()  # outside trio: the plain socket
    with open(path, "w") as f:
        json.dump([g.hex() for g in got], f)
    sizes = collections.Counter(len(g) for g in got)
    return {"datagrams": len(got), "sizes": dict(sizes)}


def render(paths: list[str]) -> str:
    """Markdown tables of saved runs (OUT.json): per-entry CPU by step (py-spy shares x
    the daemon's CPU seconds over the burst / N), system calls per entry (perf stat)."""
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append((os.path.basename(p)[:-5], json.load(f)))
    out = ["### Runs", "", "| run | stack | N | load (1 min) start/end | rate entries/s | lag s | overruns m/b | "
           "CPU s master / backup (burst) | µs CPU/entry master / backup | commit daemon s |", "|---|---|---:|---|---:|---:|---|---|---|---:|"]
    for name, r in runs:
        fg, n = r["figures"], r["entries"]
        w = r.get("windows", {}).get("burst", {}).get("cpu_s", {})
        cm, cb = w.get("master", fg["cpu_s_master"]), w.get("backup", fg["cpu_s_backup"])
        out.append(f"| {name} | {r['stack']} | {n:,} | {r['loadavg_start'][0]:.1f} / {r['loadavg_end'][0]:.1f} | "
                   f"{fg['rate']:,.0f} | {fg['lag_after_last_s']:.3f} | {fg['overruns_master']}/{fg['overruns_backup']} | "
                   f"{cm:.2f} / {cb:.2f} | {cm / n * 1e6:.1f} / {cb / n * 1e6:.1f} | {fg.get('commit_reported_s') or 0:.3f} |")
    steps: dict[str, dict[str, float]] = {}
    cols = []
    for name, r in runs:
        n = r["entries"]
        w = r.get("windows", {}).get("burst", {}).get("cpu_s", {})
        for key, t in r.get("tools", {}).items():
            if "steps_pct" not in t or not key.startswith("burst-"):
                continue
            role = key.split("-")[1]
            col = f"{name} {role}"
            cols.append(col)
            for step, pct in t["steps_pct"].items():
                steps.setdefault(step, {})[col] = pct / 100 * w.get(role, 0) / n * 1e6
    if cols:
        out += ["", "### Where the CPU goes, µs per entry (py-spy share of samples x CPU seconds / N)", "",
                "| step | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        order = sorted(steps, key=lambda s: -max(steps[s].values()))
        for st in order:
            out.append(f"| {st} | " + " | ".join(f"{steps[st].get(c, 0):.2f}" for c in cols) + " |")
        out.append("| **total** | " + " | ".join(f"**{sum(steps[s].get(c, 0) for s in steps):.2f}**" for c in cols) + " |")
    sc = []
    for name, r in runs:
        n = r["entries"]
        for key, t in r.get("tools", {}).items():
            if "raw_syscalls:sys_enter" in t:
                sc.append((f"{name} {key.rsplit('-', 1)[0]}", n, t))
    if sc:
        out += ["", "### System calls per replicated entry (perf stat, the daemon's threads)", "",
                "| run window-role | all | recvfrom | sendto | epoll_wait | read | write | CPU ms (task-clock) | context switches |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for label, n, t in sc:
            g = lambda e: t.get(e, 0) / n  # noqa: E731
            out.append(f"| {label} | {g('raw_syscalls:sys_enter'):.2f} | {g('syscalls:sys_enter_recvfrom'):.2f} | "
                       f"{g('syscalls:sys_enter_sendto'):.2f} | {g('syscalls:sys_enter_epoll_wait'):.2f} | "
                       f"{g('syscalls:sys_enter_read'):.3f} | {g('syscalls:sys_enter_write'):.3f} | "
                       f"{t.get('task-clock', 0):.0f} | {t.get('context-switches', 0):.0f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_replication", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", choices=("ours", "theirs"), default="ours")
    ap.add_argument("--entries", type=int, default=50000)
    ap.add_argument("--tools", default="pyspy,perfstat", help="pyspy,cprofile,perfstat,trace,perfrec (default pyspy,perfstat)")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second (default 250)")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too; costs more)")
    ap.add_argument("--commit-tools", default="", help="tools on the backup during the benchmark's commit "
                    "(perfstat,trace,perfrec; default none: the benchmark's exact timing)")
    ap.add_argument("--commit-experiments", action="store_true", help="repeat the commit by its command line afterwards")
    ap.add_argument("--repeat", type=int, default=2, help="commits of --commit-experiments (default 2)")
    ap.add_argument("--ct-conf-sub", action="append", default=[], metavar="OLD=>NEW",
                    help="edit the generated conntrackd.conf (text substitution; repeatable), "
                    "e.g. 'NetlinkEventsReliable On=>NetlinkEventsReliable Off'")
    ap.add_argument("--out", help="path prefix of the output files (OUT.json, OUT-*.txt ...)")
    ap.add_argument("--budget", type=float, default=240.0)
    ap.add_argument("--capture-events", metavar="FILE", help="only save N real kernel events to FILE "
                    "(for bench/replicator_micro.py --events) and exit")
    ap.add_argument("--render", nargs="+", metavar="OUT.json", help="only print Markdown tables of saved runs")
    args = ap.parse_args(argv)
    if args.render:
        sys.stdout.write(render(args.render))
        return 0
    if args.capture_events:
        require_root_and_netns()
        print(capture_kernel_events(args.entries, args.capture_events))
        return 0
    tools = {t.strip() for t in args.tools.split(",") if t.strip()}
    commit_tools = {t.strip() for t in args.commit_tools.split(",") if t.strip()}
    unknown = (tools - {"pyspy", "cprofile", "perfstat", "trace", "perfrec"}) | (commit_tools - {"perfstat", "trace", "perfrec"})
    if unknown:
        ap.error(f"unknown tool(s) {sorted(unknown)}")
    if not args.out:
        ap.error("--out is required")
    require_root_and_netns()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    stack = HA_STACKS[args.stack]
    probe = Probe(stack, args.entries, args.out, tools, args.rate, args.native, args.commit_experiments, args.repeat,
                  commit_tools)
    if "cprofile" in tools and stack.name == "ours":
        import halab.ctsync as hc
        roles = iter(("master", "backup"))  # r1 starts first
        hc.ctsync_binary = lambda: [sys.executable, "-m", "bench.cprofile_daemon", probe._pstats(next(roles))]
    if args.ct_conf_sub:
        import halab.conntrackd as hcd
        subs = [x.split("=>", 1) for x in args.ct_conf_sub]
        if any(len(x) != 2 for x in subs):
            ap.error("--ct-conf-sub takes OLD=>NEW")
        orig_conf = hcd.conntrackd_conf

        def edited_conf(host, **kw):
            text = orig_conf(host, **kw)
            for old, new in subs:
                if old not in text:
                    raise SystemExit(f"--ct-conf-sub: {old!r} is not in the generated conntrackd.conf")
                text = text.replace(old, new.replace("\\n", "\n").replace("\\t", "\t"))
            return text
        hcd.conntrackd_conf = edited_conf
    loadavg0 = os.getloadavg()
    t0 = time.monotonic()
    fig = replication.replication_run(stack, args.entries, args.budget, probe=probe)
    res = {"stack": stack.name, "entries": args.entries, "ct_conf_sub": args.ct_conf_sub, "tools": sorted(tools), "rate": args.rate,
           "native": args.native, "loadavg_start": loadavg0, "loadavg_end": os.getloadavg(),
           "duration_s": time.monotonic() - t0, "figures": fig, **probe.result}
    with open(args.out + ".json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    fg = fig
    print(f"{stack.name} {args.entries}: rate {fg['rate']:.0f}/s, lag {fg['lag_after_last_s']:.3f} s, "
          f"CPU master {fg['cpu_s_master']:.2f} s backup {fg['cpu_s_backup']:.2f} s, overruns "
          f"{fg['overruns_master']}/{fg['overruns_backup']}, commit wall {fg.get('commit_wall_s', 0):.3f} s "
          f"(daemon {fg.get('commit_reported_s')})")
    for k, v in probe.result.get("tools", {}).items():
        if "steps_pct" in v:
            print(f"  {k}: {v['samples']} samples; steps: " + ", ".join(f"{s} {p}%" for s, p in v["steps_pct"].items()))
        elif "task-clock" in v:
            print(f"  {k}: " + ", ".join(f"{e}={val}" for e, val in v.items() if e != "file"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
