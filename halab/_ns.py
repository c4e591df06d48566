"""Low-level network-namespace helpers shared by the lab (:mod:`halab.lab` and the modules
it is made of) and the CLI.

Everything here works on *named* namespaces (``/run/netns/NAME``) whose name
starts with :data:`LAB_PREFIX`.  The functions that destroy things (killing
the processes of a namespace, deleting it) refuse to act on a namespace that
is actually the machine's own network namespace: a stray name that points at
the host namespace (``ip netns attach``) must never make us kill every process
on the machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

#: Every namespace made by halab has a name starting with this.  The CLI only
#: ever touches names with this prefix.
LAB_PREFIX = "hl-"

NETNS_DIR = "/run/netns"

#: ``hl-<creator pid>-<n>-<name>`` (lab namespaces) or ``hl-<pid>-<anything>``
#: (e.g. the probe namespace of :func:`halab.require_root_and_netns`).
_LAB_NS_RE = re.compile(r"^(hl-(\d+)-(\d+))-(.+)$")
_ANY_NS_RE = re.compile(r"^hl-(\d+)-")

# The netns of this process when halab was imported.  /proc/1/ns/net may be
# unreadable (e.g. in some containers/VMs PID 1 is not dumpable), so the
# importing process's own namespace is always treated as "the host" too.
_IMPORT_NETNS: tuple[int, int] | None
try:
    _st = os.stat("/proc/self/ns/net")
    _IMPORT_NETNS = (_st.st_dev, _st.st_ino)
except OSError:  # pragma: no cover - /proc always there on Linux
    _IMPORT_NETNS = None


class NetnsError(RuntimeError):
    """A namespace operation failed (base of :class:`halab.LabError`)."""


def run_cmd(argv: list[str], *, timeout: float = 30, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run a short command (in the *current* namespace) with a timeout.

    Used for ``ip -n NS ...``/``ip netns ...`` which select the target
    namespace themselves.  Raises :class:`NetnsError` with stderr on failure so
    that errors carry the real reason.
    """
    try:
        cp = subprocess.run(argv, capture_output=True, text=True,
                            timeout=timeout, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"timeout after {timeout}s: {' '.join(argv)}") from e
    except FileNotFoundError as e:
        raise NetnsError(f"command not found: {argv[0]}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"command failed (rc={cp.returncode}): {' '.join(argv)}\n"
                         f"{cp.stderr.strip()}")
    return cp


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def netns_id(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the named namespace, or None if it does not exist."""
    try:
        st = os.stat(netns_path(name))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def host_netns_ids() -> set[tuple[int, int]]:
    """Identities of namespaces that must be treated as "the host".

    That is PID 1's namespace (if readable), this process's current one, and
    the one it had when halab was imported.  A daemon or a kill sweep must
    never target any of them.
    """
    ids: set[tuple[int, int]] = set()
    for p in ("/proc/1/ns/net", "/proc/self/ns/net"):
        try:
            st = os.stat(p)
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    if _IMPORT_NETNS is not None:
        ids.add(_IMPORT_NETNS)
    return ids


def is_host_netns(name: str) -> bool:
    """True if the named namespace is (or resolves to) a host namespace.

    A missing namespace is *not* the host namespace; callers check existence
    separately.
    """
    ident = netns_id(name)
    return ident is not None and ident in host_netns_ids()


def list_netns(prefix: str = LAB_PREFIX) -> list[str]:
    """Names in /run/netns starting with ``prefix`` (sorted)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def parse_lab_ns(name: str) -> tuple[str, int] | None:
    """Map a namespace name to (lab id, creator pid), or None if not ours.

    ``hl-123-0-r1`` -> ("hl-123-0", 123); a name like ``hl-123-probe`` maps to
    itself as the lab id.
    """
    m = _LAB_NS_RE.match(name)
    if m:
        return m.group(1), int(m.group(2))
    m = _ANY_NS_RE.match(name)
    if m:
        return name, int(m.group(1))
    return None


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    try:
        state = data[data.rindex(b")") + 2:].split()[0]
    except (ValueError, IndexError):
        return True
    return state not in (b"Z", b"X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid`` (scans /proc)."""
    out = []
    for ent in os.listdir("/proc"):
        if not ent.isdigit():
            continue
        try:
            with open(f"/proc/{ent}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rindex(b")") + 2:].split()
        except (OSError, ValueError):
            continue
        if len(fields) < 3 or fields[0] in (b"Z", b"X"):
            continue
        if int(fields[2]) == pgid:
            out.append(int(ent))
    return out


def ns_pids(name: str) -> list[int]:
    """Pids of live processes in the named namespace (``ip netns pids``)."""
    if netns_id(name) is None:
        return []
    cp = run_cmd(["ip", "netns", "pids", name], check=False, timeout=15)
    pids = []
    for tok in cp.stdout.split():
        if tok.isdigit():
            pid = int(tok)
            if pid != os.getpid() and pid_alive(pid):
                pids.append(pid)
    return pids


def kill_ns_processes(name: str, *, grace: float = 0.0, timeout: float = 5.0) -> list[int]:
    """Kill every process in the named namespace; return the pids still alive.

    With ``grace`` > 0 a SIGTERM is sent first and given that long.  Refuses
    (NetnsError) if the name resolves to the host namespace: that would kill
    the whole machine.
    """
    if netns_id(name) is None:
        return []
    if is_host_netns(name):
        raise NetnsError(f"refusing to kill processes in {name!r}: it is the host network namespace")
    pids = ns_pids(name)
    if not pids:
        return []
    if grace > 0:
        for pid in pids:
            _safe_kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        pids = ns_pids(name)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        for pid in pids:
            _safe_kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        pids = [p for p in ns_pids(name)]
    return pids


def delete_ns(name: str) -> None:
    """``ip netns del`` the name if it exists (tolerates it being gone)."""
    if netns_id(name) is None and not os.path.lexists(netns_path(name)):
        return
    cp = run_cmd(["ip", "netns", "del", name], check=False, timeout=15)
    if cp.returncode != 0 and os.path.lexists(netns_path(name)):
        raise NetnsError(f"ip netns del {name} failed: {cp.stderr.strip()}")


def _safe_kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
