"""Notify hooks: run the configured command on each transition, in the background.

argv = the configured command + [instance, sync group or "", new state]; the same facts
are in the environment (VRRP_INSTANCE, VRRP_GROUP, VRRP_STATE, VRRP_VRID, VRRP_REASON,
VRRP_OLD_STATE). A sync group's own hook gets "" as the instance, when every member has
reached the same state.

Hooks run in the daemon's nursery, so a slow script never delays an advert, but the
hooks of one instance (or one group) run one after the other, in the order of the
transitions: a flap's "backup" can never finish before its "master". A hook runs in a
process group of its own; one that runs longer than `notify_timeout` is killed with its
whole group (a shell script's children too). Its output is read as it comes and only the
last few KiB are kept, for the log line: a chatty script cannot fill the daemon's memory.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections import deque
from typing import Awaitable, Callable

import trio

log = logging.getLogger("vrrpd")

#: Bytes of a hook's output (stdout and stderr, merged) kept for the log line.
OUTPUT_TAIL = 4096
DEFAULT_TIMEOUT = 60.0


async def run_hook(cmd: tuple[str, ...], instance: str, group: str | None, state: str, extra_env: dict[str, str],
                   timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run one hook; never raises (but trio's cancellation): a hook fails alone, logged."""
    try:
        await _run_hook(cmd, instance, group, state, extra_env, timeout)
    except Exception:  # noqa: BLE001 - hooks run in the daemon's task group: nothing may escape
        log.exception("notify %r for %s %s: failed", cmd[:1], instance, state)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _run_hook(cmd: tuple[str, ...], instance: str, group: str | None, state: str, extra_env: dict[str, str],
                    timeout: float) -> None:
    argv = [*cmd, instance, group or "", state]
    who = instance or group or ""
    try:
        env = dict(os.environ, VRRP_INSTANCE=instance, VRRP_GROUP=group or "", VRRP_STATE=state, **extra_env)
        proc = await trio.lowlevel.open_process(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, start_new_session=True)
    except (OSError, ValueError) as e:  # ValueError: a NUL or '=' where exec cannot take it
        log.warning("notify %r for %r %s: cannot run: %s", cmd[0], who, state, getattr(e, "strerror", None) or e)
        return
    tail = bytearray()
    killed = False
    try:
        with trio.move_on_after(timeout) as scope:
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(65536):
                    tail += chunk
                    del tail[:-OUTPUT_TAIL]
            await proc.wait()
        if scope.cancelled_caught:
            killed = True
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)  # the whole group: a script's children must not outlive it
            with trio.CancelScope(shield=True):
                await proc.wait()
    out = tail.decode(errors="replace").strip()
    if killed:
        log.warning("notify %s for %s %s: killed (with its process group) after %.0fs", cmd[0], who, state, timeout)
    elif proc.returncode != 0:
        log.warning("notify %s for %s %s: exit %d %s", cmd[0], who, state, proc.returncode, out[-300:])
    else:
        log.info("notify %s for %s %s: ok%s", cmd[0], who, state, f" ({out[-200:]})" if out else "")


class HookQueue:
    """Hooks of one key (an instance, a group) run one at a time, in submission order."""

    def __init__(self, spawn: Callable[[Callable[[], Awaitable[None]]], None]):
        self._spawn = spawn
        self._queues: dict[str, deque] = {}

    def submit(self, key: str, hook: Callable[[], Awaitable[None]]) -> None:
        q = self._queues.get(key)
        if q is not None:
            q.append(hook)  # the worker of this key takes it after the ones before it
            return
        self._queues[key] = deque([hook])
        self._spawn(lambda: self._work(key))

    async def _work(self, key: str) -> None:
        q = self._queues[key]
        try:
            while q:
                await q[0]()
                q.popleft()
        finally:
            del self._queues[key]
