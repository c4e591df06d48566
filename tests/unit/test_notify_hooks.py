"""Notify hooks as an operator relies on them: one instance's hooks run in the order of
its transitions, a sync group's own hook runs once its members agree, a hook past
notify_timeout is killed with everything it started, and a chatty hook's output is
bounded. (Real processes; no network.)"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import trio

from vrrpd.config import SyncGroupConfig
from vrrpd.machine import State, Transition
from vrrpd.notify import OUTPUT_TAIL, HookQueue, run_hook
from vrrpd.publisher import Publisher


def test_hooks_of_one_key_run_in_submission_order_even_when_the_first_is_slow():
    done: list[str] = []

    def hook(name: str, delay: float):
        async def run():
            await trio.sleep(delay)
            done.append(name)
        return run

    async def main():
        async with trio.open_nursery() as n:
            q = HookQueue(n.start_soon)
            q.submit("WAN", hook("master", 0.2))
            q.submit("WAN", hook("backup", 0.0))
            q.submit("LAN", hook("lan-master", 0.05))  # another key does not wait for WAN's
            q.submit("WAN", hook("fault", 0.0))

    trio.run(main)
    assert done == ["lan-master", "master", "backup", "fault"]


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path, caplog):
    pidfile = tmp_path / "child"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="vrrpd"):
        trio.run(run_hook, ("/bin/sh", "-c", script, "sh"), "WAN", None, "master", {}, 0.5)
    assert time.monotonic() - t0 < 30
    assert any("killed (with its process group)" in r.getMessage() for r in caplog.records)
    child = int(pidfile.read_text())
    for _ in range(100):  # SIGKILL is delivered at once; reaping by init may lag a little
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child), "the hook's background child outlived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_chatty_hook_keeps_only_the_tail_of_its_output(caplog):
    # 20 MB of output, then a marker and a failure: the log line holds the marker,
    # the daemon never held the 20 MB.
    script = "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo THE-END; exit 3"
    with caplog.at_level(logging.WARNING, logger="vrrpd"):
        trio.run(run_hook, ("/bin/sh", "-c", script, "sh"), "WAN", None, "master", {}, 60)
    [rec] = [r for r in caplog.records if "exit 3" in r.getMessage()]
    assert "THE-END" in rec.getMessage() and len(rec.getMessage()) < OUTPUT_TAIL


# ---- a sync group's own hook ----------------------------------------------------------

@dataclass
class FakeInstance:
    name: str
    group: str | None
    state: State = State.BACKUP
    cfg: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(notify=(), interface="eth0", vrid=1))

    @property
    def machine(self):
        return SimpleNamespace(state=self.state, effective_priority=100, fault_reasons=())

    def hook_env(self, reason, old=""):
        return {"VRRP_REASON": reason}


def test_a_sync_groups_hook_runs_once_all_members_share_a_state(tmp_path):
    log_file = tmp_path / "group.log"
    cmd = ("/bin/sh", "-c", f'echo "[$1] $2 $3 $VRRP_MEMBERS" >> {log_file}', "sh")
    members = {"WAN": FakeInstance("WAN", "G"), "LAN": FakeInstance("LAN", "G")}

    async def main():
        async with trio.open_nursery() as n:
            pub = Publisher(lambda member, command: None, n.start_soon, members.get)
            pub.rebuild_groups([SyncGroupConfig("G", ("WAN", "LAN"), cmd)], set(members))

            def move(name, new):
                old, members[name].state = members[name].state, new
                pub.transition(members[name], Transition(old, new, "test"), forced=False, hooks=None)

            move("WAN", State.MASTER)  # LAN still backup: the group is not master yet
            await trio.sleep(0.3)
            assert not log_file.exists()
            move("LAN", State.MASTER)  # now it is
            move("LAN", State.MASTER)  # announced once per state, not per member event
            await trio.sleep(0.3)
            move("WAN", State.BACKUP)
            move("LAN", State.BACKUP)

    trio.run(main)
    assert log_file.read_text().splitlines() == ["[] G master WAN,LAN", "[] G backup WAN,LAN"]


def test_hook_queue_survives_nothing_left_behind():
    # the per-key queue is dropped once drained: a long-lived daemon does not collect keys
    async def main():
        async with trio.open_nursery() as n:
            q = HookQueue(n.start_soon)
            for i in range(50):
                q.submit(f"probe {i}", trio.lowlevel.checkpoint)
        return q

    q = trio.run(main)
    assert q._queues == {}
