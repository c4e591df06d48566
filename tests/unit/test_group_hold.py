"""A subscriber that holds a sync group commits once per move of the group to master:
the members after the first wait for the first member's hold (vrrpd.publisher)."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from hacommon import handshake as hs
from vrrpd.machine import State, Transition
from vrrpd.publisher import Publisher, Subscriber


def inst(name: str, group: str | None = "G"):
    return SimpleNamespace(name=name, group=group, since=None, cfg=SimpleNamespace(interface="eth0", vrid=1, notify=None),
                           machine=SimpleNamespace(effective_priority=100, state=State.BACKUP),
                           hook_env=lambda reason, old="": {})


def subscriber(hold):
    send, recv = trio.open_memory_channel(100)
    return Subscriber("t", send, hold_on=frozenset(hold)), recv


def drain(recv) -> list:
    out = []
    while True:
        try:
            out.append(recv.receive_nowait())
        except trio.WouldBlock:
            return out


def move(pub, i, old, new):
    return pub.transition(i, Transition(old, new, "test"), False, [])


def test_members_share_the_first_members_hold():
    async def main():
        pub = Publisher(lambda *a: None, lambda *a: None)
        sub, recv = subscriber({"G"})
        pub.add(sub)
        lan, wan = inst("LAN"), inst("WAN")
        first = move(pub, lan, State.BACKUP, State.MASTER)
        second = move(pub, wan, State.BACKUP, State.MASTER)
        msgs = [m for m in drain(recv) if isinstance(m, hs.Transition)]
        assert [m.instance for m in msgs] == ["LAN", "WAN"]
        assert msgs[0].hold_id is not None and msgs[1].hold_id is None  # one commit, one ack
        assert len(first) == 1 and second == first  # the same event
        assert not first[0].is_set()
        sub.ack(msgs[0].hold_id)
        assert second[0].is_set()
        # The group leaves master: its next move is held anew, for each first member.
        move(pub, lan, State.MASTER, State.BACKUP)
        move(pub, wan, State.MASTER, State.BACKUP)
        again = move(pub, wan, State.BACKUP, State.MASTER)
        m = [m for m in drain(recv) if isinstance(m, hs.Transition)][-1]
        assert m.hold_id is not None and len(again) == 1 and not again[0].is_set()
    trio.run(main)


def test_a_subscriber_holding_instances_holds_each_one():
    async def main():
        pub = Publisher(lambda *a: None, lambda *a: None)
        sub, recv = subscriber({"LAN", "WAN"})
        pub.add(sub)
        a = move(pub, inst("LAN"), State.BACKUP, State.MASTER)
        b = move(pub, inst("WAN"), State.BACKUP, State.MASTER)
        msgs = [m for m in drain(recv) if isinstance(m, hs.Transition)]
        assert all(m.hold_id is not None for m in msgs) and msgs[0].hold_id != msgs[1].hold_id
        assert a[0] is not b[0]
    trio.run(main)


def test_a_group_member_that_leaves_master_ends_the_shared_hold():
    """WAN faults while LAN stays master, then comes back: its move is held on its own."""
    async def main():
        pub = Publisher(lambda *a: None, lambda *a: None)
        sub, recv = subscriber({"G"})
        pub.add(sub)
        lan, wan = inst("LAN"), inst("WAN")
        first = move(pub, lan, State.BACKUP, State.MASTER)
        move(pub, wan, State.BACKUP, State.MASTER)
        move(pub, wan, State.MASTER, State.FAULT)
        back = move(pub, wan, State.FAULT, State.MASTER)
        msgs = [m for m in drain(recv) if isinstance(m, hs.Transition)]
        assert msgs[-1].hold_id is not None and back[0] is not first[0]
    trio.run(main)
