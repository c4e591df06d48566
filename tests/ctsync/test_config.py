"""The [ctsync] table: multicast transport and the not-ready demotion (file, key, problem)."""

from __future__ import annotations

import ipaddress

import pytest

from ctsync.config import parse
from vrrpd.config import ConfigError

KEY = "0123456789abcdef0123"


def table(local="172.16.0.1", peer="172.16.0.2", **kw) -> dict:
    t = {"sync_interface": "sync0", "local_address": local, "peer_address": peer, "key": KEY}
    t.update(kw)
    return {"ctsync": t}


def problems(**kw) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(table(**kw), "r1.toml")
    return exc.value.problems


def test_unicast_by_default():
    c = parse(table(), "r1.toml")
    assert c.multicast_group is None and c.failover.demote_when_not_ready == 0


@pytest.mark.parametrize("local,peer,group", [("172.16.0.1", "172.16.0.2", "225.0.0.50"),
                                              ("fd00:16::1", "fd00:16::2", "ff02::3780")])
def test_multicast_group(local, peer, group):
    c = parse(table(local, peer, multicast_group=group), "r1.toml")
    assert c.multicast_group == ipaddress.ip_address(group)
    assert c.peer_address == ipaddress.ip_address(peer)  # still identifies the peer


@pytest.mark.parametrize("kw,expected", [
    ({"multicast_group": "172.16.0.9"},
     "r1.toml: ctsync.multicast_group: 172.16.0.9 is not a multicast address (IPv4 224.0.0.0/4, IPv6 ff00::/8; "
     "e.g. 225.0.0.50 or ff02::3780)"),
    ({"multicast_group": "225.0.0"}, "r1.toml: ctsync.multicast_group: not an IP address: '225.0.0'"),
    ({"multicast_group": "ff02::1:3"}, "r1.toml: ctsync.multicast_group: must be of the same IP version as local_address"),
    ({"multicast_group": 225}, "r1.toml: ctsync.multicast_group: must be a non-empty string, got 225"),
    ({"local": "fd00::1", "peer": "fd00::2", "multicast_group": "ff01::5"},
     "r1.toml: ctsync.multicast_group: ff01::5 is interface-local (ff01::/16): it never leaves this box; use ff02::/16"),
    ({"peer": "225.0.0.50"},
     "r1.toml: ctsync.peer_address: must be a unicast address of the sync link, got 225.0.0.50 "
     "(a multicast group goes in multicast_group)"),
    ({"peer": "172.16.0.1"}, "r1.toml: ctsync.peer_address: must differ from local_address"),
    ({"local": "0.0.0.0"}, "r1.toml: ctsync.local_address: must be a unicast address of the sync link, got 0.0.0.0"),
])
def test_bad_transport(kw, expected):
    assert problems(**kw) == [expected]


def test_demote_when_not_ready():
    c = parse(table(failover={"vrrp_sync_group": "MAIN-GW", "demote_when_not_ready": 50}), "r1.toml")
    assert c.failover.demote_when_not_ready == 50 and c.failover.vrrp_sync_group == "MAIN-GW"


@pytest.mark.parametrize("failover,expected", [
    ({"demote_when_not_ready": 50},
     "r1.toml: ctsync.failover.demote_when_not_ready: needs vrrp_sync_group (the group whose priority it lowers)"),
    ({"vrrp_sync_group": "MAIN-GW", "demote_when_not_ready": 255},
     "r1.toml: ctsync.failover.demote_when_not_ready: must be an integer from 0 to 254, got 255"),
    ({"vrrp_sync_group": "MAIN-GW", "demote_when_not_ready": True},
     "r1.toml: ctsync.failover.demote_when_not_ready: must be an integer from 0 to 254, got True"),
    ({"vrrp_sync_group": "MAIN-GW", "demote": 5}, "r1.toml: ctsync.failover.demote: unknown key"),
])
def test_bad_demotion(failover, expected):
    assert problems(failover=failover) == [expected]


def test_send_queue():
    assert parse(table(), "r1.toml").send_queue == 1 << 18
    assert parse(table(send_queue=4096), "r1.toml").send_queue == 4096
    assert problems(send_queue=100) == ["r1.toml: ctsync.send_queue: must be an integer from 1024 to 16777216, got 100"]
