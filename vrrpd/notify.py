"""Notify hooks: run the configured command on each transition, in the background.

argv = the configured command + [instance, sync group or "", new state]; the same facts
are in the environment (VRRP_INSTANCE, VRRP_GROUP, VRRP_STATE, VRRP_VRID, VRRP_REASON,
VRRP_OLD_STATE). Hooks run in the daemon's nursery, so a slow script never delays an
advert; one that runs longer than `timeout` is killed and logged.
"""

from __future__ import annotations

import logging
import os
import subprocess

import trio

log = logging.getLogger("vrrpd")


async def run_hook(cmd: tuple[str, ...], instance: str, group: str | None, state: str, extra_env: dict[str, str], timeout: float = 60.0) -> None:
    """Run one hook; never raises (but trio's cancellation): a hook fails alone, logged."""
    try:
        await _run_hook(cmd, instance, group, state, extra_env, timeout)
    except Exception:  # noqa: BLE001 - hooks run in the daemon's task group: nothing may escape
        log.exception("notify %r for %s %s: failed", cmd[:1], instance, state)


async def _run_hook(cmd: tuple[str, ...], instance: str, group: str | None, state: str, extra_env: dict[str, str],
                    timeout: float) -> None:
    argv = [*cmd, instance, group or "", state]
    try:
        env = dict(os.environ, VRRP_INSTANCE=instance, VRRP_GROUP=group or "", VRRP_STATE=state, **extra_env)
        with trio.move_on_after(timeout) as scope:
            result = await trio.run_process(argv, env=env, check=False, capture_stdout=True, capture_stderr=True, stdin=subprocess.DEVNULL)
        if scope.cancelled_caught:
            log.warning("notify %s for %s %s: killed after %.0fs", cmd[0], instance, state, timeout)
            return
    except (OSError, ValueError) as e:  # ValueError: a NUL or '=' where exec cannot take it
        log.warning("notify %r for %r %s: cannot run: %s", cmd[0], instance, state, getattr(e, "strerror", None) or e)
        return
    out = (result.stdout + result.stderr).decode(errors="replace").strip()
    if result.returncode != 0:
        log.warning("notify %s for %s %s: exit %d %s", cmd[0], instance, state, result.returncode, out[-300:])
    else:
        log.info("notify %s for %s %s: ok%s", cmd[0], instance, state, f" ({out[-200:]})" if out else "")
