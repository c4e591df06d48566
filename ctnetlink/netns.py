"""Run a bit of setup code inside another network namespace.

A socket belongs to the network namespace of the thread that *created* it,
for its whole life.  :func:`run_in_netns` runs a function in a fresh,
short-lived thread that first joins the target namespace with setns(2): the
calling thread (and trio's worker threads, which are reused and so must never
change namespace) stay where they are, and the namespace change dies with the
helper thread.  Sockets created there keep working from any thread.

Used by :meth:`ctnetlink.socket.CtSocket.open` and the sysctl helpers
when given ``netns=``; with ``netns=None`` everything happens in the caller's
namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Callable, TypeVar

__all__ = ["run_in_netns", "netns_path"]

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

T = TypeVar("T")

_libc = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, nstype)
        return
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(netns: str) -> str:
    """A name (``ip netns`` style, under /run/netns) or a path (contains '/')."""
    if "/" in netns:
        return netns
    return os.path.join(NETNS_DIR, netns)


def run_in_netns(netns: str | None, fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn(*args, **kwargs)`` inside network namespace ``netns`` (name or
    path) and return its result (or raise its exception).  ``None``: call it
    right here, in the caller's namespace."""
    if netns is None:
        return fn(*args, **kwargs)
    path = netns_path(netns)
    # Open the namespace file here so that a missing namespace fails before
    # any thread exists, with a clear error.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            _setns(fd, CLONE_NEWNET)
        except BaseException as e:  # pragma: no cover - needs a broken ns
            box["exc"] = e
            return
        try:
            box["ret"] = fn(*args, **kwargs)
        except BaseException as e:
            box["exc"] = e

    try:
        t = threading.Thread(target=target, name=f"netns:{os.path.basename(path)}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(fd)
    if "exc" in box:
        raise box["exc"]  # type: ignore[misc]
    return box["ret"]  # type: ignore[return-value]
