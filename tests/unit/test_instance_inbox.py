"""vrrpd.instance: an advert flood never crowds a sync group's command out of the inbox
(issue: a full inbox dropped sync-group commands, which could split a sync group)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import trio

from vrrpd.config import InstanceConfig
from vrrpd.group import Force
from vrrpd.instance import ADVERT_ROOM, AdvertIn, GroupCommand, InstanceDriver, LinksChanged
from vrrpd.machine import State
from vrrpd.packet import Advert


def test_commands_have_room_when_adverts_fill_the_inbox():
    async def main():
        cfg = InstanceConfig("WAN", "eth0", 1, virtual_addresses=(ipaddress.IPv4Interface("10.0.0.100/24"),))
        daemon = SimpleNamespace(cfg=SimpleNamespace(preempt_prepare_timeout=10.0),
                                 limiter=SimpleNamespace(allow=lambda key, now: (False, 0)))
        inst = InstanceDriver(cfg, daemon)
        adv = AdvertIn(Advert(1, 100, (ipaddress.IPv4Address("10.0.0.100"),)), 0.0)
        assert all(inst.post(adv) for _ in range(ADVERT_ROOM))
        assert inst.post(adv) is False  # the flood is cut here...
        assert inst.post(GroupCommand(Force(State.MASTER, "sync group"))) is True  # ...not the group
        assert inst.post(LinksChanged(None)) is True

    trio.run(main)
