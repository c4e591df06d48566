"""The daemon's receive path without sockets: a datagram goes to the instance of its
interface, family and VRID and is parsed by that instance's codec (VRRPv2, v3 over IPv4,
v3 over IPv6), every rejection counted where RFC 5798 §7.1 says; and a backup whose
Master_Down timer fires with adverts already queued hears them first."""

from __future__ import annotations

import functools
import ipaddress
import struct
import textwrap

import trio
import trio.testing

from vrrpd import config as C
from vrrpd.daemon import Daemon
from vrrpd.instance import AdvertIn, InstanceDriver
from vrrpd.io.vrrp_socket import Datagram
from vrrpd.machine import State
from vrrpd.packet import Advert, build_advert, build_ip_packet
from vrrpd.packet_v3 import AdvertV3, build_advert_v3
from vrrpd.timers import TIMER_EVENT

A4, A6 = ipaddress.IPv4Address, ipaddress.IPv6Address
CONFIG = """
[vrrpd]
[vrrpd.instance.V2]
interface = "eth0"
vrid = 1
virtual_addresses = ["10.0.0.101/24"]

[vrrpd.instance.V3]
interface = "eth0"
vrid = 7
version = 3
advert_interval = 0.05
virtual_addresses = ["10.0.0.107/24"]

[vrrpd.instance.V6]
interface = "eth0"
vrid = 7
version = 3
advert_interval = 0.05
virtual_addresses = ["fe80::7/64", "2001:db8::7/64"]
"""
PEER4, PEER6 = A4("10.0.0.9"), A6("fe80::9")


def daemon(tmp_path) -> Daemon:
    p = tmp_path / "v.toml"
    p.write_text(textwrap.dedent(CONFIG))
    cfg = C.load(p)
    d = Daemon(cfg)
    for icfg in cfg.instances.values():
        d.instances[icfg.name] = InstanceDriver(icfg, d)
    return d


def in_trio(fn):
    """Run a synchronous test body inside trio (log rate limiting reads trio's clock)."""
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        async def main():
            fn(*args, **kw)
        trio.run(main)
    return wrapper


def inbox(inst: InstanceDriver) -> list:
    out = []
    while True:
        try:
            out.append(inst._recv_in.receive_nowait())
        except trio.WouldBlock:
            return out


def errors(inst: InstanceDriver) -> dict:
    c = inst.machine.counters
    return {k: v for k, v in vars(c).items() if v and k.endswith(("errors", "failures", "discards"))}


def v4(payload: bytes, ttl: int = 255) -> Datagram:
    pkt = bytearray(build_ip_packet(payload, PEER4))
    pkt[8] = ttl  # the parser does not check the IP header checksum (the kernel did)
    return Datagram(bytes(pkt))


def v6(payload: bytes, hop: int | None = 255) -> Datagram:
    return Datagram(payload, PEER6, A6("ff02::12"), hop)


@in_trio
def test_each_family_and_version_reaches_its_instance(tmp_path):
    d = daemon(tmp_path)
    i2, i3, i6 = (d.instances[n] for n in ("V2", "V3", "V6"))
    d._dispatch("eth0", 4, v4(build_advert(Advert(1, 50, (A4("10.0.0.101"),), 1))), 1.0)
    d._dispatch("eth0", 4, v4(build_advert_v3(AdvertV3(7, 50, (A4("10.0.0.107"),), 5), PEER4)), 2.0)
    d._dispatch("eth0", 6, v6(build_advert_v3(AdvertV3(7, 50, (A6("fe80::7"), A6("2001:db8::7")), 5), PEER6)), 3.0)
    (a2,), (a3,), (a6,) = inbox(i2), inbox(i3), inbox(i6)
    assert isinstance(a2, AdvertIn) and a2.advert.version == 2 and a2.now == 1.0
    assert a3.advert.version == 3 and a3.advert.src == PEER4 and a3.now == 2.0
    assert a6.advert.src == PEER6 and a6.advert.interval == 0.05 and a6.now == 3.0
    assert not any(errors(i) for i in (i2, i3, i6))


@in_trio
def test_rejections_are_counted_on_the_right_instances(tmp_path):
    d = daemon(tmp_path)
    i2, i3, i6 = (d.instances[n] for n in ("V2", "V3", "V6"))
    good6 = build_advert_v3(AdvertV3(7, 50, (A6("fe80::7"),), 5), PEER6)
    good4 = build_advert_v3(AdvertV3(7, 50, (A4("10.0.0.107"),), 5), PEER4)
    # a v2 advert for the v3 instance's VRID: its version error (RFC 5798 §7.1)
    d._dispatch("eth0", 4, v4(build_advert(Advert(7, 50, (A4("10.0.0.107"),), 1))), 0.0)
    assert errors(i3) == {"version_errors": 1} and not errors(i2) and not errors(i6)
    # hop limit, missing hop limit, bad checksum over IPv6: the IPv6 instance only
    d._dispatch("eth0", 6, v6(good6, hop=254), 0.0)
    d._dispatch("eth0", 6, v6(good6, hop=None), 0.0)
    d._dispatch("eth0", 6, v6(good6[:6] + b"\0\0" + good6[8:]), 0.0)
    assert errors(i6) == {"ttl_errors": 2, "checksum_errors": 1}
    # an unknown VRID, well formed: vrid_errors on every instance of that family
    d._dispatch("eth0", 6, v6(build_advert_v3(AdvertV3(9, 50, (A6("fe80::7"),), 5), PEER6)), 0.0)
    assert errors(i6)["vrid_errors"] == 1 and "vrid_errors" not in errors(i3)
    d._dispatch("eth0", 4, v4(build_advert_v3(AdvertV3(9, 50, (A4("10.0.0.107"),), 5), PEER4)), 0.0)
    assert errors(i2) == {"vrid_errors": 1} and errors(i3)["vrid_errors"] == 1
    # an unknown VRID with a broken checksum: the packet's own error, on the family's instances
    bad = build_advert_v3(AdvertV3(9, 50, (A4("10.0.0.107"),), 5), PEER4)
    d._dispatch("eth0", 4, v4(bad[:6] + b"\xff\xff" + bad[8:]), 0.0)
    assert errors(i3)["checksum_errors"] == 1
    # TTL 1 over IPv4 for the v3 instance; a truncated IPv4 header: every IPv4 instance
    d._dispatch("eth0", 4, v4(good4, ttl=1), 0.0)
    assert errors(i3)["ttl_errors"] == 1
    d._dispatch("eth0", 4, Datagram(b"\x45\x00"), 0.0)
    assert errors(i2)["length_errors"] == 1 and errors(i3)["length_errors"] == 1
    assert not inbox(i2) and not inbox(i3) and not inbox(i6)


@in_trio
def test_garbage_never_raises(tmp_path):
    import random
    d = daemon(tmp_path)
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 60)))
        d._dispatch("eth0", rng.choice((4, 6)), Datagram(data, PEER6, None, rng.choice((255, 1, None))), 0.0)
        d._dispatch("eth0", 4, Datagram(b"\x45" + data), 0.0)
    d._dispatch("eth9", 4, v4(b"\x31\x07"), 0.0)  # an interface with no instance


class _Publisher:
    def __init__(self):
        self.transitions = []

    def transition(self, inst, t, forced, hooks):
        self.transitions.append((t.old, t.new))
        return []


def test_backup_hears_queued_adverts_before_declaring_the_master_dead(tmp_path):
    """The timer fires after Master_Down_Interval; adverts that arrived meanwhile (in the
    socket, or in the inbox behind the timer event) keep the backup backup, each counted
    from its arrival; an advert older than Master_Down_Interval does not."""
    d = daemon(tmp_path)
    inst = d.instances["V3"]
    pub = d.publisher = _Publisher()
    adv = AdvertV3(7, 200, (A4("10.0.0.107"),), 5, src=PEER4)
    queued_in_socket: list = []
    d.drain = lambda ifname, family: [inst.post(e) for e in queued_in_socket]

    async def main():
        m = inst.machine
        m.primary_ip = A4("10.0.0.2")
        await inst.execute(m.start(trio.current_time()))
        assert m.state == State.BACKUP and pub.transitions == [(State.INIT, State.BACKUP)]
        mdi = m.master_down_interval
        # 1. late process: the timer event comes first, an advert from before is in the inbox
        clock.jump(mdi + 0.2)
        now = trio.current_time()
        inst.post(AdvertIn(adv, now - 0.05))
        await inst.handle(TIMER_EVENT)
        assert m.state == State.BACKUP and m.master_down_at == (now - 0.05) + m.master_down_interval
        # 2. the advert is still in the socket: drained first
        clock.jump(m.master_down_at - trio.current_time() + 0.1)
        queued_in_socket.append(AdvertIn(adv, trio.current_time() - 0.01))
        await inst.handle(TIMER_EVENT)
        assert m.state == State.BACKUP
        # 3. the master really stopped: the last advert is older than Master_Down_Interval
        queued_in_socket.clear()
        clock.jump(m.master_down_at - trio.current_time() + 0.001)
        inst.post(AdvertIn(adv, trio.current_time() - 2 * m.master_down_interval))
        await inst.handle(TIMER_EVENT)
        assert m.state == State.MASTER

    clock = trio.testing.MockClock()
    d.send_advert = None
    inst.send_advert = lambda prio: None
    inst.addresses = _noop
    trio.run(main, clock=clock)
    assert pub.transitions[-1] == (State.BACKUP, State.MASTER)


async def _noop(*args, **kw):
    return None


def test_datagram_of_ipv4_has_no_separate_fields():
    # (the IPv4 header carries source, destination and TTL)
    assert Datagram(b"x") == Datagram(b"x", None, None, None, None)
    assert struct.calcsize("@qq") == 16
