"""ctsync's SIGHUP, sans IO: which keys change at run time (reload_plan), the key rotation
in the channel (the previous key accepted for a grace period; both routers reloaded one
after the other lose nothing), and the replicator taking new filters."""

from __future__ import annotations

import ipaddress

from ctsync.channel import Channel
from ctsync.config import RELOADABLE, parse, reload_plan
from ctsync.replicator import DumpKernel, Replicator
from ctsync.wire import Message, MsgType

from test_channel import Link

OLD, NEW = b"o" * 32, b"n" * 32


def cfg(**kw):
    t = {"sync_interface": "sync0", "local_address": "172.16.0.1", "peer_address": "172.16.0.2",
         "key": "0123456789abcdef0123"}
    t.update(kw)
    return parse({"ctsync": t}, "r1.toml")


def test_reloadable_keys_change_the_others_are_refused_by_name():
    old = cfg()
    new = cfg(key="a-brand-new-secret-0123", heartbeat_interval=0.5, ignore_protocols=["icmp"], port=3781,
              mode="inject", multicast_group="225.0.0.50")
    running, applied, refused = reload_plan(old, new)
    assert applied == ["ctsync.key (or key_file)", "ctsync.ignore_protocols", "ctsync.heartbeat_interval"]
    assert running.key == new.key and running.heartbeat_interval == 0.5 and running.ignore_protocols == new.ignore_protocols
    assert running.port == 3780 and running.mode == "commit" and running.multicast_group is None
    assert refused == [
        "ctsync.port: cannot change while ctsync runs (running 3780, the file now says 3781); restart ctsync to apply it",
        "ctsync.mode: cannot change while ctsync runs (running commit, the file now says inject); restart ctsync to apply it",
        "ctsync.multicast_group: cannot change while ctsync runs (running None, the file now says 225.0.0.50); "
        "restart ctsync to apply it",
    ]
    assert all("secret" not in line for line in refused)


def test_nothing_changed_nothing_applied():
    running, applied, refused = reload_plan(cfg(), cfg())
    assert (applied, refused) == ([], []) and running == cfg()


def test_failover_keys_are_refused_with_their_dotted_name():
    _, _, refused = reload_plan(cfg(), cfg(failover={"vrrp_sync_group": "OTHER"}))
    assert refused and refused[0].startswith("ctsync.failover.vrrp_sync_group: cannot change")


def test_every_reloadable_key_is_a_setting():
    c = cfg()
    for k in RELOADABLE:
        assert hasattr(c, k)


def pair() -> tuple[Channel, Channel, Link]:
    a, b = Channel(node=1, epoch=10, key=OLD), Channel(node=2, epoch=20, key=OLD)
    return a, b, Link(a, b)


def stream(link: Link, ch: Channel, start: int, n: int, t0: float, dt: float = 0.05) -> None:
    """Entries numbered start.. sent one every dt from t0, the link run along."""
    for i in range(start, start + n):
        ch.send(Message(MsgType.ENTRY, i.to_bytes(4, "big")), t0 + (i - start) * dt)
        link.run(t0 + (i - start + 1) * dt)


def test_rotation_within_half_the_grace_refuses_nothing():
    a, b, link = pair()
    stream(link, a, 0, 20, 0.0)
    a.rotate_key(NEW, link.now, grace=10.0)  # r1 reloaded
    stream(link, a, 20, 40, link.now)  # 2 s later ...
    b.rotate_key(NEW, link.now, grace=10.0)  # ... r2 reloaded
    stream(link, a, 60, 200, link.now)  # 10 s of traffic: past both graces
    link.run(link.now + 2)
    got = [int.from_bytes(x, "big") for x in link.got["b"]]
    assert got == list(range(260))
    assert a.stats.auth_failures == b.stats.auth_failures == 0
    assert b.stats.old_key_rx > 0  # a kept sending the old key until b had the new one
    assert not a.rotating(link.now) and not b.rotating(link.now)
    # both now speak the new key only
    assert a._send_key(link.now) == NEW and b._send_key(link.now) == NEW


def test_second_router_reloaded_late_loses_nothing_the_stream_waits():
    a, b, link = pair()
    a.rotate_key(NEW, 0.0, grace=2.0)
    stream(link, a, 0, 100, 0.0)  # 5 s: a switched to the new key at 1 s; b refuses it
    assert b.stats.auth_failures > 0
    b.rotate_key(NEW, link.now, grace=2.0)  # late: a's resends now get through
    link.run(link.now + 5)
    assert [int.from_bytes(x, "big") for x in link.got["b"]] == list(range(100))
    assert not link.lost["b"]


def test_old_key_is_refused_after_the_grace():
    a, b, _ = pair()
    a.rotate_key(NEW, 0.0, grace=1.0)
    old_sender = Channel(node=2, epoch=20, key=OLD)
    old_sender.send_unreliable(Message(MsgType.HEARTBEAT, b"x"), 0.0)
    early = old_sender.datagrams_to_send(0.0)[0]
    old_sender.send_unreliable(Message(MsgType.HEARTBEAT, b"y"), 5.0)
    late = old_sender.datagrams_to_send(5.0)[0]
    a.receive_datagram(early, 0.5)
    assert a.stats.old_key_rx == 1 and a.stats.auth_failures == 0
    a.receive_datagram(late, 5.0)
    assert a.stats.auth_failures == 1


def test_replicator_takes_new_filters_and_pushes_its_table():
    rep = Replicator(cfg(), epoch=1)
    rep.start(0.0)
    rep.poll(0.0)
    rep.reconfigure(cfg(ignore_addresses=["10.9.0.0/16"]), 1.0)
    assert rep.cfg.ignore_addresses == (ipaddress.ip_network("10.9.0.0/16"),)
    assert any(isinstance(a, DumpKernel) and a.reason == "filters changed" for a in rep.poll(1.0))
    rep.reconfigure(cfg(ignore_addresses=["10.9.0.0/16"], peer_timeout=9.0, key="another-secret-of-20b"), 2.0)
    assert rep.channel.peer_timeout == 9.0 and rep.channel.rotating(2.5)
    assert not any(isinstance(a, DumpKernel) for a in rep.poll(2.0))
