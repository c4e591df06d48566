"""A prepared preemption's move to master (vrrpd/prepared_move.py): the adverts of a sync
group's members go out in one burst once every member is ready, or at the deadline; the
daemon opens one move per group and lets the followers join it (Daemon.prepared_move)."""

from __future__ import annotations

from types import SimpleNamespace

import trio
import trio.testing

from vrrpd.config import SyncGroupConfig
from vrrpd.daemon import Daemon
from vrrpd.machine import State
from vrrpd.prepared_move import PreparedMove


def member(name: str, sent: list, state: State = State.MASTER, group: str | None = "G"):
    inst = SimpleNamespace(name=name, group=group, cfg=SimpleNamespace(name=name),
                           machine=SimpleNamespace(state=state, params=SimpleNamespace(advert_interval=1.0)))
    inst.send_advert = lambda priority: sent.append((name, priority, trio.current_time()))
    return inst


def test_no_advert_until_every_member_is_ready_then_all_at_once():
    async def main():
        sent: list = []
        lan, wan = member("LAN", sent), member("WAN", sent)
        move = PreparedMove("G", frozenset({"LAN", "WAN"}), deadline=trio.current_time() + 1, started=trio.current_time())
        move.join(lan, 200)
        move.join(wan, 200)
        move.arrive(lan)
        assert sent == [] and not move.released.is_set()  # LAN ready, WAN not: nothing on the wire
        move.arrive(wan)
        assert move.released.is_set()
        assert [(n, p) for n, p, _ in sent] == [("LAN", 200), ("WAN", 200)]
        assert sent[0][2] == sent[1][2]  # one synchronous burst
        move.release()  # a second release (the deadline task) sends nothing more
        assert len(sent) == 2
    trio.run(main, clock=trio.testing.MockClock())


def test_the_deadline_sends_the_adverts_of_every_member_still_master():
    async def main():
        sent: list = []
        lan, wan, dmz = member("LAN", sent), member("WAN", sent), member("DMZ", sent)
        t0 = trio.current_time()
        move = PreparedMove("G", frozenset({"LAN", "WAN", "DMZ"}), deadline=t0 + 1.0, started=t0)
        for m in (lan, wan, dmz):
            move.join(m, 150)
        move.arrive(lan)  # WAN's hold is late; DMZ fell back to backup meanwhile
        dmz.machine.state = State.BACKUP
        async with trio.open_nursery() as n:
            n.start_soon(move.release_at_deadline)
            await trio.sleep(0.5)
            assert sent == []
        assert move.released.is_set()
        assert [n for n, _, _ in sent] == ["LAN", "WAN"]
        assert sent[0][2] == t0 + 1.0
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def fake_daemon(instances: dict, groups: dict, hold_timeout: float = 2.0):
    spawned: list = []
    return SimpleNamespace(
        cfg=SimpleNamespace(sync_groups=groups, transition_hold_timeout=hold_timeout),
        instances=instances, prepared_moves={}, nursery=SimpleNamespace(start_soon=lambda fn, *a: spawned.append(fn)),
        spawned=spawned)


def test_the_daemon_opens_one_move_per_group_and_the_followers_join_it():
    async def main():
        sent: list = []
        lan = member("LAN", sent)  # the preempting one: master already
        wan = member("WAN", sent, State.BACKUP)
        dmz = member("DMZ", sent, State.FAULT)  # will not follow the group
        solo = member("SOLO", sent, State.MASTER, group=None)
        d = fake_daemon({"LAN": lan, "WAN": wan, "DMZ": dmz, "SOLO": solo},
                        {"G": SyncGroupConfig("G", ("LAN", "WAN", "DMZ"))}, hold_timeout=0.5)
        assert Daemon.prepared_move(d, lan, False) is None  # an ordinary move: no move at all
        move = Daemon.prepared_move(d, lan, True)
        assert move.key == "G" and move.expected == {"LAN", "WAN"}
        assert move.deadline == trio.current_time() + 0.5  # capped by transition_hold_timeout
        assert d.spawned == [move.release_at_deadline]
        assert Daemon.prepared_move(d, wan, False) is move  # forced by the group: joins
        move.release()
        assert Daemon.prepared_move(d, wan, False) is None  # after the burst: ordinary path
        own = Daemon.prepared_move(d, solo, True)
        assert own.key == "SOLO" and own.expected == {"SOLO"} and own.deadline == trio.current_time() + 0.5
    trio.run(main, clock=trio.testing.MockClock())
