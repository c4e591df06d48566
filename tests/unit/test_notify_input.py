"""Notify hooks fail alone (issue #6): whatever the command, the instance name or the
environment hold, run_hook logs and returns; nothing reaches the daemon's task group.
(A NUL in argv or the environment used to raise ValueError out of it, which ended
vrrpd without its shutdown: the VIPs and the macvlan stayed.)"""

from __future__ import annotations

import logging

import pytest
import trio

from vrrpd.notify import run_hook


@pytest.mark.parametrize("cmd,instance,env", [
    (("/bin/true\0",), "WAN", {}),
    (("/bin/echo", "a\0b"), "WAN", {}),
    (("/bin/true",), "W\0AN", {}),
    (("/bin/true",), "WAN", {"VRRP_REASON": "x\0y"}),
    (("/bin/true",), "WAN", {"BAD=NAME": "x"}),
])
def test_a_hook_that_cannot_be_started_is_logged_not_raised(caplog, cmd, instance, env):
    with caplog.at_level(logging.WARNING, logger="vrrpd"):
        trio.run(run_hook, cmd, instance, None, "master", env)
    assert any("cannot run" in r.getMessage() for r in caplog.records)


def test_a_missing_command_is_logged():
    trio.run(run_hook, ("/nonexistent/hook",), "WAN", None, "master", {})


def test_a_hook_still_runs(tmp_path):
    out = tmp_path / "out"
    trio.run(run_hook, ("/bin/sh", "-c", f'echo "$1 $2 $3 $VRRP_VRID" > {out}', "sh"), "WAN", "G", "master", {"VRRP_VRID": "7"})
    assert out.read_text() == "WAN G master 7\n"
