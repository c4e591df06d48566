"""Network-namespace lab: hosts, bridges, links, daemons and captures.

Design rules (why the code looks the way it does):

* **Nothing in the host namespace.**  Every veth is created with
  ``ip -n <lab ns> link add ... peer name X netns <other lab ns>``, so neither
  end ever exists in the machine's own namespace, and bridges live in a
  per-lab "switch" namespace (``<lab id>-sw``).  All ``ip`` commands carry
  ``-n``: a missing namespace makes them fail, never fall back to the host.
* **Daemons only in our namespaces.**  :meth:`Lab.start` (and captures) go
  through one launcher that refuses any target that is not a :class:`Host`
  object created by *this* lab, whose namespace still has the identity
  (device, inode) recorded at creation, and which is not the host namespace
  (``/proc/1/ns/net``, and this process's own namespace because PID 1's may be
  unreadable in containers/VMs).  Processes are started through
  ``ip netns exec``, which exits with an error instead of running the command
  if it cannot enter the namespace.
* **Teardown on every path.**  ``with Lab()`` tears down on exceptions and
  Ctrl-C; ``atexit`` covers labs that were never torn down; SIGTERM/SIGHUP
  (when they have their default disposition) tear all labs down before the
  process dies; while tearing down, SIGINT/SIGTERM/SIGHUP are deferred so a
  second Ctrl-C cannot leave a half-deleted lab; long-running children get a
  parent-death signal (``setpriv --pdeathsig KILL``) so a SIGKILLed test
  runner does not leave daemons behind; and everything left in the lab's
  namespaces is killed (``ip netns pids``) before they are deleted.  What a
  SIGKILLed creator leaves is removed by ``hapair-lab clean``.

Where things are: this module is the :class:`Lab` (construction, the guard and the launcher,
teardown) and its helpers; :mod:`halab.hosts` the handles on its namespaces (:class:`Host`,
:class:`Bridge`), :mod:`halab.procs` what it starts (:class:`Proc`, :class:`Capture`),
:mod:`halab.lifecycle` the registry of live labs and teardown at exit and on signals,
:mod:`halab.errors` :class:`LabError`; :mod:`halab._ns` the low-level namespace helpers it
shares with ``hapair-lab``.  All of these names are importable from here and from
:mod:`halab`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Sequence

from hacommon.labenv import LAB_ENV

from . import _ns, lifecycle
from ._ns import NetnsError, run_cmd
from .errors import LabCommandError, LabError, lab_cmd
from .hosts import Bridge, Host, child_env
from .lifecycle import live_labs, teardown_all
from .procs import Capture, Proc

__all__ = [
    "Lab", "LabError", "LabCommandError", "Host", "Bridge", "Proc", "Capture",
    "require_root_and_netns", "wait_for", "live_labs", "teardown_all",
]

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_SWITCH = "sw"

_SETPRIV = shutil.which("setpriv")


def _pdeathsig_prefix() -> list[str]:
    # The parent-death signal fires when the *thread* that forked exits, so
    # only use it from the main thread (which lives as long as the process).
    if _SETPRIV and threading.current_thread() is threading.main_thread():
        return [_SETPRIV, "--pdeathsig", "KILL", "--"]
    return []


# --------------------------------------------------------------------------
# helpers

_ROOT_CHECK: tuple[bool, str] | None = None


def require_root_and_netns() -> None:
    """Skip (under pytest) or raise LabError unless we can build labs.

    Checks euid 0, the needed tools, and that ``ip netns add`` really works
    (it may not in an unprivileged container).  The result is cached.
    """
    global _ROOT_CHECK
    if _ROOT_CHECK is None:
        _ROOT_CHECK = _probe_root_and_netns()
    ok, reason = _ROOT_CHECK
    if ok:
        return
    if "pytest" in sys.modules:
        import pytest
        pytest.skip(reason)
    raise LabError(reason)


def _probe_root_and_netns() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "needs root (network namespaces)"
    for tool in ("ip", "bridge"):
        if shutil.which(tool) is None:
            return False, f"{tool} (iproute2) not installed"
    name = f"hl-{os.getpid()}-probe"
    try:
        cp = run_cmd(["ip", "netns", "add", name], check=False, timeout=15)
        if cp.returncode != 0:
            return False, f"ip netns add impossible: {cp.stderr.strip()}"
        cp = run_cmd(["ip", "-n", name, "link", "set", "lo", "up"], check=False, timeout=15)
        if cp.returncode != 0:
            return False, f"cannot configure a new namespace: {cp.stderr.strip()}"
    except NetnsError as e:
        return False, str(e)
    finally:
        with contextlib.suppress(NetnsError):
            _ns.delete_ns(name)
    return True, ""


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (which is returned);
    raise LabError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _check_ifname(ifname: str) -> None:
    if not isinstance(ifname, str) or not _IFNAME_RE.match(ifname) or ifname in (".", ".."):
        raise LabError(f"invalid interface name {ifname!r} (1-15 chars of [A-Za-z0-9_.-])")


def _as_addr_list(addr) -> list[str]:
    if addr is None:
        return []
    if isinstance(addr, str):
        return [addr]
    return list(addr)


class Lab:
    """A set of network namespaces wired with veths and bridges.

    Use as a context manager, or call :meth:`teardown` (idempotent; also run
    at exit).  ``keep_workdir`` (or env ``HALAB_KEEP=1``) keeps
    :attr:`workdir` (configs, logs, pcaps) after teardown for post-mortems;
    ``workdir_base`` is where it is created (default: the temp dir).
    ``stop_timeout`` is how long teardown gives each Proc after SIGTERM
    before SIGKILL.
    """

    def __init__(self, keep_workdir: bool | None = None, workdir_base: str | None = None,
                 stop_timeout: float = 5.0):
        self._creator_pid = os.getpid()
        self.keep_workdir = (os.environ.get("HALAB_KEEP", "") not in ("", "0")
                             if keep_workdir is None else bool(keep_workdir))
        self.stop_timeout = stop_timeout
        self._namespaces: list[str] = []          # every name we (tried to) create
        self._ns_ids: dict[str, tuple[int, int]] = {}
        self._hosts: dict[str, Host] = {}
        self._switch: Host | None = None
        self._bridges: dict[str, Bridge] = {}
        self._procs: list[Proc] = []
        self._captures: list[Capture] = []
        self._port_names: set[str] = set()
        self._torn_down = False
        self._tearing_down = False
        self.workdir = ""
        self.id = lifecycle.register(self)  # registered before anything exists
        lifecycle.install_signal_handlers()
        try:
            self.workdir = tempfile.mkdtemp(prefix=f"{self.id}-", dir=workdir_base)
        except BaseException:
            lifecycle.unregister(self.id)
            raise

    def __repr__(self) -> str:
        state = "torn down" if self._torn_down else f"{len(self._namespaces)} ns"
        return f"Lab({self.id!r}, {state})"

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.teardown()
            return
        # Do not mask the original error; a leak is still reported loudly.
        try:
            self.teardown()
        except Exception as e:
            print(f"halab: teardown of {self.id} failed: {e}", file=sys.stderr)

    # -- read-only views
    @property
    def hosts(self) -> dict[str, Host]:
        return dict(self._hosts)

    @property
    def bridges(self) -> dict[str, Bridge]:
        return dict(self._bridges)

    @property
    def procs(self) -> list[Proc]:
        return list(self._procs)

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    @property
    def switch(self) -> Host | None:
        """The switch namespace (holds the bridges), once a bridge exists."""
        return self._switch

    @property
    def torn_down(self) -> bool:
        return self._torn_down

    # -- construction
    def _alive_check(self) -> None:
        if self._torn_down or self._tearing_down:
            raise LabError(f"lab {self.id} is torn down")
        if os.getpid() != self._creator_pid:
            raise LabError(f"lab {self.id} belongs to process {self._creator_pid}")

    def _create_ns(self, short: str) -> str:
        self._alive_check()
        full = f"{self.id}-{short}"
        if full in self._namespaces or _ns.netns_id(full) is not None:
            raise LabError(f"namespace {full} already exists")
        self._namespaces.append(full)  # recorded first: teardown handles partial creation
        lab_cmd(["ip", "netns", "add", full])
        ident = _ns.netns_id(full)
        if ident is None:
            raise LabError(f"namespace {full} vanished right after creation")
        if ident in _ns.host_netns_ids():
            raise LabError(f"namespace {full} is the host namespace?!")
        self._ns_ids[full] = ident
        lab_cmd(["ip", "-n", full, "link", "set", "lo", "up"])
        return full

    def add_host(self, name: str, ipv6: bool = True) -> Host:
        """New namespace ``<lab id>-<name>`` with lo up.  ``ipv6=False``
        disables IPv6 in it (less noise in captures)."""
        if not isinstance(name, str) or not _HOSTNAME_RE.match(name) or name == _SWITCH:
            raise LabError(f"invalid host name {name!r} ([A-Za-z0-9_.-], max 32, not 'sw')")
        if name in self._hosts:
            raise LabError(f"host {name!r} already exists in {self.id}")
        netns = self._create_ns(name)
        host = Host(self, name, netns)
        self._hosts[name] = host
        if not ipv6:
            self._disable_ipv6(host)
        return host

    def _disable_ipv6(self, host: Host) -> None:
        if os.path.isdir("/proc/sys/net/ipv6"):
            host.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                      "net.ipv6.conf.default.disable_ipv6=1"], timeout=10)

    def _ensure_switch(self) -> Host:
        if self._switch is None:
            netns = self._create_ns(_SWITCH)
            self._switch = Host(self, _SWITCH, netns)
            # Bridge ports need no IPv6: avoids RS/MLD/DAD noise on the wire.
            self._disable_ipv6(self._switch)
        return self._switch

    def add_bridge(self, name: str) -> Bridge:
        """A bridge in the switch namespace: STP off, forward delay 0,
        multicast snooping off (VRRP adverts are multicast), up."""
        _check_ifname(name)
        self._alive_check()
        if name in self._bridges:
            raise LabError(f"bridge {name!r} already exists in {self.id}")
        sw = self._ensure_switch()
        sw.ip("link", "add", "name", name, "type", "bridge", "stp_state", "0",
              "forward_delay", "0", "mcast_snooping", "0")
        sw.ip("link", "set", "dev", name, "up")
        br = Bridge(self, name, sw)
        self._bridges[name] = br
        return br

    def _owns_host(self, host) -> bool:
        return (isinstance(host, Host) and host._lab is self and
                (self._hosts.get(host._name) is host or
                 (host is self._switch and self._switch is not None)))

    def _owns_bridge(self, br) -> bool:
        return isinstance(br, Bridge) and self._bridges.get(br._name) is br

    def _check_target(self, host) -> str:
        """Guard for anything run in a namespace: return its netns name or
        raise LabError.  The host must be a Host object created by this lab,
        its namespace must still be the one we created (same dev/inode), and
        must not be the host's namespace."""
        if not self._owns_host(host):
            raise LabError(f"refusing: {host!r} is not a host of lab {self.id}")
        self._alive_check()
        netns = host._netns
        ident = _ns.netns_id(netns)
        if ident is None:
            raise LabError(f"refusing: namespace {netns} does not exist")
        if ident != self._ns_ids.get(netns):
            raise LabError(f"refusing: namespace {netns} is not the one this lab created")
        if ident in _ns.host_netns_ids():
            raise LabError(f"refusing: namespace {netns} is the host network namespace")
        return netns

    def _port_name(self, host_name: str, ifname: str) -> str:
        base = f"{host_name}-{ifname}"[:15]
        name = base
        for i in itertools.count(1):
            if name not in self._port_names:
                break
            suffix = str(i)
            name = base[:15 - len(suffix)] + suffix
        self._port_names.add(name)
        return name

    def _resolve(self, target) -> Host:
        """Host for a Host or the switch for a Bridge, checked to be ours."""
        if self._owns_bridge(target):
            return target.switch
        if self._owns_host(target):
            return target
        raise LabError(f"{target!r} is not a host or bridge of lab {self.id}")

    def _config_if(self, host: Host, ifname: str, addr, mac: str | None) -> None:
        if mac:
            host.ip("link", "set", "dev", ifname, "address", mac)
        for a in _as_addr_list(addr):
            host.ip("addr", "add", a, "dev", ifname)
        host.ip("link", "set", "dev", ifname, "up")

    def connect(self, host: Host, bridge: Bridge, ifname: str, addr=None,
                mac: str | None = None) -> str:
        """Plug ``host`` into ``bridge`` with a veth: ``ifname`` inside the
        host (with addresses ``addr``: a CIDR, a list, or None; optional
        ``mac``), the peer ``<host>-<ifname>`` (≤15 chars, made unique) in the
        switch namespace, enslaved to the bridge.  Returns the port name."""
        _check_ifname(ifname)
        self._check_target(host)
        if not self._owns_bridge(bridge):
            raise LabError(f"{bridge!r} is not a bridge of lab {self.id}")
        sw = bridge.switch
        self._check_target(sw)
        port = self._port_name(host.name, ifname)
        # Both ends are created directly in lab namespaces, never in the host one.
        sw.ip("link", "add", "name", port, "type", "veth",
              "peer", "name", ifname, "netns", host.netns)
        sw.ip("link", "set", "dev", port, "master", bridge.name)
        sw.ip("link", "set", "dev", port, "up")
        self._config_if(host, ifname, addr, mac)
        return port

    def link(self, h1: Host, if1: str, addr1, h2: Host, if2: str, addr2,
             mac1: str | None = None, mac2: str | None = None) -> None:
        """A direct veth between two hosts (e.g. a sync link)."""
        _check_ifname(if1)
        _check_ifname(if2)
        self._check_target(h1)
        self._check_target(h2)
        h1.ip("link", "add", "name", if1, "type", "veth", "peer", "name", if2, "netns", h2.netns)
        self._config_if(h1, if1, addr1, mac1)
        self._config_if(h2, if2, addr2, mac2)

    def set_link(self, target, ifname: str, up: bool) -> None:
        """Set a link up/down in a host, or a bridge port (or the bridge
        itself) in the switch namespace when ``target`` is a Bridge."""
        host = self._resolve(target)
        self._check_target(host)
        host.ip("link", "set", "dev", ifname, "up" if up else "down")

    def fdb_port(self, bridge: Bridge, mac: str) -> str | None:
        """Bridge port that has *learned* ``mac`` (dynamic fdb entry), or None."""
        if not self._owns_bridge(bridge):
            raise LabError(f"{bridge!r} is not a bridge of lab {self.id}")
        sw = bridge.switch
        self._check_target(sw)
        out = lab_cmd(["bridge", "-n", sw.netns, "-j", "fdb", "show", "br", bridge.name]).stdout
        mac = mac.lower()
        for e in json.loads(out or "[]"):
            if (e.get("mac", "").lower() == mac and "self" not in e.get("flags", [])
                    and e.get("state") != "permanent" and e.get("ifname") != bridge.name):
                return e.get("ifname")
        return None

    # -- processes
    def _spawn(self, host: Host, argv: list[str], stdout, stderr,
               env: dict[str, str] | None) -> subprocess.Popen:
        """The single launcher for long-running processes (daemons, tcpdump)."""
        netns = self._check_target(host)
        full = ["ip", "netns", "exec", netns, *_pdeathsig_prefix(), *argv]
        # HAPAIR_LAB: with the namespace, how a daemon knows it runs in this lab (hacommon.labenv)
        return subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True, close_fds=True, env=child_env({LAB_ENV: self.id, **(env or {})}))

    def start(self, host: Host, argv: Sequence[str], name: str | None = None,
              log: str | None = None, env: dict[str, str] | None = None) -> Proc:
        """Start a long-running process in ``host``'s namespace.

        Refuses (LabError) unless ``host`` is a Host of this lab whose
        namespace is not the host's.  stdout+stderr go to ``log`` (relative
        paths are in :attr:`workdir`; default ``<name>-<host>.log``, appended
        to on restarts).  ``env`` is overlaid on our environment.
        """
        if isinstance(argv, str):
            raise TypeError("Lab.start takes an argv list")
        argv = [str(a) for a in argv]
        if not argv:
            raise LabError("empty argv")
        self._check_target(host)  # refuse before creating any file
        name = name or os.path.basename(argv[0])
        log_path = os.path.join(self.workdir, log or f"{name}-{host.name}.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "ab") as logf:
            offset = logf.tell()
            popen = self._spawn(host, argv, logf, subprocess.STDOUT, env)
        proc = Proc(self, host, name, argv, popen, log_path, offset)
        self._procs.append(proc)
        return proc

    def capture(self, target, ifname: str | None = None, filename: str | None = None,
                bpf: str | None = None, timeout: float = 10.0) -> Capture:
        """Start ``tcpdump -U -s 0 -w`` on ``ifname`` of a Host, or of the
        switch namespace for a Bridge (a port such as 'r1-eth0', or the
        bridge itself when ifname is None: note the bridge device only sees
        flooded/multicast frames and frames for itself, not unicast between
        ports).  Returns once tcpdump reports it is listening."""
        host = self._resolve(target)
        if ifname is None:
            if not isinstance(target, Bridge):
                raise LabError("capture on a Host needs an interface name")
            ifname = target.name
        filename = filename or f"{host.name}-{ifname}.pcap"
        path = os.path.join(self.workdir, filename)
        err_path = path + ".stderr"
        argv = ["tcpdump", "-Z", "root", "-U", "--immediate-mode", "-s", "0", "-n",
                "-i", ifname, "-w", path]
        if bpf:
            argv.append(bpf)
        with open(err_path, "wb") as errf:
            popen = self._spawn(host, argv, subprocess.DEVNULL, errf, None)
        cap = Capture(self, host.netns, ifname, path, bpf, popen, err_path)
        self._captures.append(cap)
        deadline = time.monotonic() + timeout
        while "listening on" not in cap._stderr():
            if popen.poll() is not None or time.monotonic() >= deadline:
                cap.stop(timeout=2, settle=0)
                raise LabError(f"tcpdump on {host.netns}:{ifname} did not start: "
                               f"{cap._stderr().strip()}")
            time.sleep(0.02)
        return cap

    # -- teardown
    def teardown(self) -> None:
        """Destroy everything; idempotent and safe on a partially built lab.

        Order: stop our Procs (group SIGTERM, then SIGKILL), stop captures
        (after the daemons, so their goodbye packets are captured), kill any
        other process left in our namespaces, delete the namespaces (hosts
        first, switch last), remove the workdir unless kept.  Raises LabError
        if something could not be removed (after trying everything).
        """
        if self._torn_down or self._tearing_down or os.getpid() != self._creator_pid:
            return
        self._tearing_down = True
        errors: list[str] = []
        try:
            with lifecycle.deferred_signals():
                for proc in reversed(self._procs):
                    try:
                        proc.terminate(timeout=self.stop_timeout)
                    except Exception as e:
                        errors.append(f"stopping {proc!r}: {e}")
                for cap in reversed(self._captures):
                    try:
                        cap.stop(settle=0)
                    except Exception as e:
                        errors.append(f"stopping {cap!r}: {e}")
                sw_ns = f"{self.id}-{_SWITCH}"
                order = [n for n in self._namespaces if n != sw_ns]
                order += [n for n in self._namespaces if n == sw_ns]
                for netns in order:
                    try:
                        left = _ns.kill_ns_processes(netns, timeout=5)
                        if left:
                            errors.append(f"processes survive in {netns}: {left}")
                    except Exception as e:
                        errors.append(f"killing processes in {netns}: {e}")
                for netns in order:
                    try:
                        _ns.delete_ns(netns)
                    except Exception as e:
                        errors.append(f"deleting {netns}: {e}")
                leftover = [n for n in order if os.path.lexists(_ns.netns_path(n))]
                if self.workdir and not self.keep_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                elif self.workdir:
                    print(f"halab: kept workdir of {self.id}: {self.workdir}", file=sys.stderr)
                if not leftover:
                    self._torn_down = True
                    lifecycle.unregister(self.id)
        finally:
            self._tearing_down = False
        if errors:
            raise LabError(f"teardown of {self.id} incomplete:\n  " + "\n  ".join(errors))
