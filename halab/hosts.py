"""Handles on a lab's namespaces: :class:`Host` (run commands in it, query its links,
addresses and neighbours, start daemons through the lab's launcher) and :class:`Bridge` (a
bridge in the lab's switch namespace).  Only :class:`halab.lab.Lab` creates them, and every
command goes through its guard (``Lab._check_target``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hacommon.labenv import LAB_ENV

from ._ns import run_cmd
from .errors import LabCommandError, LabError, lab_cmd

if TYPE_CHECKING:
    from .lab import Lab
    from .procs import Proc


def child_env(env: dict[str, str] | None) -> dict[str, str]:
    """Environment for children: ours, with the venv's bin dir on PATH (so
    console scripts such as ``vrrpd`` are found even if the venv is not
    activated), overlaid with ``env``."""
    out = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    path = out.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if bindir and bindir not in path.split(os.pathsep):
        path = bindir + os.pathsep + path
    out["PATH"] = path
    if env:
        out.update({k: str(v) for k, v in env.items()})
    return out


class Host:
    """A network namespace of a lab.  Created only by :meth:`Lab.add_host`."""

    __slots__ = ("_lab", "_name", "_netns")

    def __init__(self, lab: "Lab", name: str, netns: str):
        self._lab = lab
        self._name = name
        self._netns = netns

    lab = property(lambda self: self._lab, doc="The owning Lab.")
    name = property(lambda self: self._name, doc="Short name (e.g. 'r1').")
    netns = property(lambda self: self._netns, doc="Full namespace name.")

    def __repr__(self) -> str:
        return f"Host({self._netns!r})"

    # -- commands
    def run(self, argv: Sequence[str], *, check: bool = False, timeout: float = 30,
            input: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """Run a short command inside the namespace (``ip netns exec``).

        Returns a CompletedProcess with text stdout/stderr.  With check=True a
        non-zero exit raises LabCommandError (includes stderr).  A timeout
        raises subprocess.TimeoutExpired (the child is killed).
        """
        if isinstance(argv, str):
            raise TypeError("Host.run takes an argv list; use Host.sh for a shell string")
        self._lab._check_target(self)
        argv = [str(a) for a in argv]
        cp = subprocess.run(["ip", "netns", "exec", self._netns, *argv],
                            capture_output=True, text=True, timeout=timeout,
                            input=input, env=child_env({LAB_ENV: self._lab.id, **(env or {})}),
                            stdin=None if input is not None else subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise LabCommandError(cp.returncode, argv, cp.stdout, cp.stderr, netns=self._netns)
        return cp

    def sh(self, script: str, *, check: bool = False, timeout: float = 30,
           input: str | None = None, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess:
        """Run a shell string (``sh -c``) inside the namespace."""
        return self.run(["sh", "-c", script], check=check, timeout=timeout, input=input, env=env)

    def ip(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """``ip -n <netns> ARGS`` (convenience; raises LabError on failure)."""
        argv = ["ip", "-n", self._netns, *map(str, args)]
        if check:
            return lab_cmd(argv, timeout)
        return run_cmd(argv, check=False, timeout=timeout)

    def _ip_json(self, *args: str):
        out = self.ip("-j", *args).stdout.strip()
        return json.loads(out) if out else []

    def sysctl(self, key: str, value) -> None:
        """Set a sysctl inside the namespace (net.* keys are per namespace)."""
        self.run(["sysctl", "-q", "-w", f"{key}={value}"], check=True, timeout=10)

    def sysctl_get(self, key: str) -> str:
        return self.run(["sysctl", "-n", key], check=True, timeout=10).stdout.strip()

    def start(self, argv: Sequence[str], name: str | None = None, log: str | None = None,
              env: dict[str, str] | None = None) -> "Proc":
        """Start a long-running process here; see :meth:`Lab.start`."""
        return self._lab.start(self, argv, name=name, log=log, env=env)

    # -- state queries
    def ipv4_addrs(self, ifname: str) -> list[str]:
        """IPv4 addresses on ``ifname`` as CIDR strings, e.g. ['10.0.0.2/24']."""
        out = []
        for link in self._ip_json("-4", "addr", "show", "dev", ifname):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    def has_addr(self, ifname: str, addr: str) -> bool:
        """True if ``addr`` (with or without /prefix) is on ``ifname``."""
        bare = addr.split("/")[0]
        return any(a == addr or a.split("/")[0] == bare for a in self.ipv4_addrs(ifname))

    def link_mac(self, ifname: str) -> str:
        links = self._ip_json("link", "show", "dev", ifname)
        if not links:
            raise LabError(f"{self._netns}: no link {ifname}")
        return links[0]["address"]

    def link_up(self, ifname: str) -> bool:
        """Administrative state of ``ifname`` (flag UP)."""
        links = self._ip_json("link", "show", "dev", ifname)
        return bool(links) and "UP" in links[0].get("flags", [])

    def neigh(self, addr: str, dev: str | None = None) -> tuple[str | None, str | None]:
        """(lladdr or None, state) of the neighbour entry for ``addr``.

        State is e.g. 'REACHABLE', 'STALE', 'FAILED' (several flags joined by
        ','), or None if there is no entry.
        """
        args = ["neigh", "show", "to", addr]
        if dev:
            args += ["dev", dev]
        entries = self._ip_json(*args)
        if not entries:
            return None, None
        e = entries[0]
        state = e.get("state") or []
        return e.get("lladdr"), ",".join(state) if state else None

    def ping(self, dst: str, count: int = 1, timeout: float = 2, interval: float = 0.2) -> bool:
        """True if ``ping -c count`` to ``dst`` succeeds from this namespace."""
        cp = self.run(["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                       "-W", str(timeout), dst], timeout=count * (interval + timeout) + 10)
        return cp.returncode == 0


class Bridge:
    """A Linux bridge inside the lab's switch namespace."""

    __slots__ = ("_lab", "_name", "_switch")

    def __init__(self, lab: "Lab", name: str, switch: Host):
        self._lab = lab
        self._name = name
        self._switch = switch

    lab = property(lambda self: self._lab)
    name = property(lambda self: self._name, doc="Bridge device name in the switch ns.")
    switch = property(lambda self: self._switch, doc="The switch namespace as a Host.")
    netns = property(lambda self: self._switch.netns, doc="The switch namespace name.")

    def __repr__(self) -> str:
        return f"Bridge({self._name!r} in {self._switch.netns!r})"

    def ports(self) -> list[str]:
        """Names of the ports enslaved to this bridge."""
        links = self._switch._ip_json("link", "show", "master", self._name)
        return [link["ifname"] for link in links]
