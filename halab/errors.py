"""The lab's errors: :class:`LabError` for any failure of the lab itself, and
:class:`LabCommandError` for a command run in a lab namespace that failed; :func:`lab_cmd`
runs an ``ip -n ...`` command and turns its failure into a LabError."""

from __future__ import annotations

import subprocess

from ._ns import NetnsError, run_cmd

__all__ = ["LabCommandError", "LabError", "lab_cmd"]


class LabError(NetnsError):
    """Any failure of the lab itself (bad arguments, refused launch, a failed
    ``ip`` command, an incomplete teardown)."""


class LabCommandError(LabError, subprocess.CalledProcessError):
    """``Host.run(..., check=True)`` failed.  Is both a :class:`LabError` and a
    :class:`subprocess.CalledProcessError`; ``str()`` includes stderr."""

    def __init__(self, returncode, cmd, output=None, stderr=None, netns=""):
        subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.netns = netns

    def __str__(self) -> str:
        cmd = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        msg = f"[{self.netns}] command failed (rc={self.returncode}): {cmd}"
        if self.stderr:
            msg += "\n" + str(self.stderr).strip()
        return msg


def lab_cmd(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run an ``ip -n ...``-style command, turning failures into LabError."""
    try:
        return run_cmd(argv, timeout=timeout)
    except NetnsError as e:
        if isinstance(e, LabError):
            raise
        raise LabError(str(e)) from e
