"""The labs of this process and their teardown on every path: lab ids, the registry of live
labs, teardown at exit and on SIGTERM/SIGHUP, and signals deferred while a lab is being torn
down (the rules are in :mod:`halab.lab`'s docstring)."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from . import _ns

if TYPE_CHECKING:
    from .lab import Lab

_LIVE_LABS: dict[str, Lab] = {}
_REG_LOCK = threading.RLock()
_COUNTER = itertools.count()
_SIGNALS_INSTALLED = False
_FATAL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _new_lab_id() -> str:
    pid = os.getpid()
    existing = _ns.list_netns(f"hl-{pid}-")
    while True:
        n = next(_COUNTER)
        prefix = f"hl-{pid}-{n}-"
        # A previous process with the same pid may have left namespaces.
        if not any(name.startswith(prefix) for name in existing):
            return f"hl-{pid}-{n}"


def register(lab: Lab) -> str:
    """A new lab id for ``lab``, registered under it before anything of it exists (so that
    teardown at exit or on a signal covers a lab interrupted while being built)."""
    with _REG_LOCK:
        lab_id = _new_lab_id()
        _LIVE_LABS[lab_id] = lab
    return lab_id


def unregister(lab_id: str) -> None:
    """Forget a lab that is gone (or never got anything)."""
    with _REG_LOCK:
        _LIVE_LABS.pop(lab_id, None)


def live_labs() -> list[Lab]:
    """Labs of this process that have not been torn down yet."""
    with _REG_LOCK:
        return [lab for lab in _LIVE_LABS.values() if lab._creator_pid == os.getpid()]


def teardown_all() -> list[str]:
    """Tear down every live lab of this process; return error messages."""
    errors = []
    for lab in live_labs():
        try:
            lab.teardown()
        except Exception as e:  # keep going: every lab must get its chance
            errors.append(f"{lab.id}: {e}")
    return errors


def _atexit_teardown() -> None:
    for msg in teardown_all():
        print(f"halab: atexit teardown error: {msg}", file=sys.stderr)


atexit.register(_atexit_teardown)


def _on_fatal_signal(signum, frame) -> None:
    """SIGTERM/SIGHUP with default disposition would kill us without atexit:
    tear the labs down first, then die from the same signal."""
    for msg in teardown_all():
        print(f"halab: teardown error on signal {signum}: {msg}", file=sys.stderr)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    global _SIGNALS_INSTALLED
    if _SIGNALS_INSTALLED or os.environ.get("HALAB_NO_SIGNAL_HANDLERS") == "1":
        return
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _FATAL_SIGNALS:
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_fatal_signal)
    _SIGNALS_INSTALLED = True


@contextlib.contextmanager
def deferred_signals():
    """Defer SIGINT/SIGTERM/SIGHUP while tearing down (main thread only).

    A Ctrl-C in the middle of deleting namespaces would leave a half-torn-down
    lab; instead the signal is recorded and re-raised once teardown is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            saved[sig] = signal.signal(sig, lambda s, f: pending.append(s))
        except (ValueError, OSError):  # pragma: no cover
            pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)
