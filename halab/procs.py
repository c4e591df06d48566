"""What a lab starts in its namespaces: :class:`Proc`, a long-running process (its own
process group, stopped gracefully or killed as a hard failure), and :class:`Capture`, a
running ``tcpdump -w``.  Both are made by :meth:`halab.lab.Lab.start` / :meth:`Lab.capture`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from ._ns import group_members, run_cmd
from .errors import LabError

if TYPE_CHECKING:
    from .hosts import Host
    from .lab import Lab


class Proc:
    """A long-running process started by :meth:`Lab.start`.

    It leads its own session/process group (``start_new_session``), so a
    terminal Ctrl-C does not hit it before the lab can stop it in order, and
    so :meth:`kill`/:meth:`terminate` reach its children too (e.g.
    keepalived's VRRP child).
    """

    def __init__(self, lab: "Lab", host: Host, name: str, argv: list[str],
                 popen: subprocess.Popen, log_path: str, log_offset: int):
        self.lab = lab
        self.host = host
        self.name = name
        self.argv = argv
        self._popen = popen
        self.pid = popen.pid  # ip netns exec / setpriv exec(), so this is the daemon's pid
        self.pgid = popen.pid
        self.log_path = log_path
        self._log_offset = log_offset

    def __repr__(self) -> str:
        return f"Proc({self.name!r} pid={self.pid} in {self.host.netns!r} rc={self._popen.returncode})"

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        """True while the main process has not exited."""
        return self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the main process; raises subprocess.TimeoutExpired."""
        return self._popen.wait(timeout)

    def group_pids(self) -> list[int]:
        """Live pids in this process group (main process and its children)."""
        return group_members(self.pgid)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only (e.g. SIGHUP to reload)."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._popen.poll()
            if not group_members(self.pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _reap(self) -> int:
        try:
            return self._popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            return self._popen.wait(5)

    def terminate(self, timeout: float = 5.0) -> int:
        """Graceful stop: SIGTERM to the whole group, wait up to ``timeout``,
        then SIGKILL what is left.  Returns the main process's returncode."""
        if group_members(self.pgid):
            self._killpg(signal.SIGTERM)
            if not self._wait_group_gone(timeout):
                self._killpg(signal.SIGKILL)
                self._wait_group_gone(5)
        return self._reap()

    def kill(self) -> int:
        """Hard failure: SIGKILL the whole process group (no cleanup by the
        daemon: e.g. a VIP stays configured), wait for it, reap."""
        self._killpg(signal.SIGKILL)
        self._wait_group_gone(5)
        return self._reap()

    def read_log(self) -> str:
        """Output of this run (a restarted daemon appends to the same file;
        only what this Proc wrote is returned)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class Capture:
    """A running ``tcpdump -w`` in a lab namespace (see :meth:`Lab.capture`)."""

    def __init__(self, lab: "Lab", netns: str, ifname: str, path: str, bpf: str | None,
                 popen: subprocess.Popen, err_path: str):
        self.lab = lab
        self.netns = netns
        self.ifname = ifname
        self.path = path
        self.bpf = bpf
        self._popen = popen
        self.err_path = err_path
        self.stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Capture({self.path!r} on {self.netns}:{self.ifname})"

    def running(self) -> bool:
        return self._popen.poll() is None

    def _stderr(self) -> str:
        try:
            with open(self.err_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0, settle: float = 0.1) -> int | None:
        """Stop tcpdump with SIGINT (so it flushes and closes the pcap) and
        wait; SIGKILL if it hangs.  Returns the number of packets captured as
        reported by tcpdump (also in ``self.stats``), or None.  Idempotent."""
        if self._popen.poll() is None:
            if settle:
                time.sleep(settle)  # let packets already in flight reach tcpdump
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGINT)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(5)
        for m in re.finditer(r"^(\d+) packets? (captured|received by filter|dropped by kernel)",
                             self._stderr(), re.M):
            self.stats[m.group(2).split()[0]] = int(m.group(1))
        return self.stats.get("captured")

    def lines(self, bpf: str | None = None) -> list[str]:
        """The capture decoded by ``tcpdump -nn -r`` (one line per packet),
        optionally filtered by ``bpf``.  Readable while running (-U)."""
        argv = ["tcpdump", "-nn", "-r", self.path]
        if bpf:
            argv.append(bpf)
        cp = run_cmd(argv, check=False, timeout=60)
        if cp.returncode != 0 and "truncated" not in cp.stderr:
            raise LabError(f"tcpdump -r {self.path} failed: {cp.stderr.strip()}")
        return [ln for ln in cp.stdout.splitlines() if ln.strip()]

    def count(self, bpf: str | None = None) -> int:
        return len(self.lines(bpf))
