"""vrrpd.machine with version = 3: RFC 5798 §6 timers from the learned
Master_Adver_Interval, centisecond intervals, the §7.1 instance checks, Accept_Mode,
IPv6 instances. The v2 rows are test_machine.py; everything here runs in virtual time."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from vrrpd.codec import V3Codec, parse_frame_with
from vrrpd.machine import (
    AddAddresses,
    Dropped,
    Noticed,
    RemoveAddresses,
    RouterParams,
    SendAdvert,
    SendGarp,
    State,
    Transition,
    VirtualRouter,
    master_down_interval,
    master_down_interval_v3,
    skew_time,
    skew_time_v3,
)
from vrrpd.packet import Advert, Reason
from vrrpd.packet_v3 import AdvertV3

A4, A6 = ipaddress.IPv4Address, ipaddress.IPv6Address
VIP = A4("10.0.0.100")
VIP2 = A4("10.0.0.101")
MY_IP = A4("10.0.0.5")
PEER_LOW = A4("10.0.0.2")
PEER_HIGH = A4("10.0.0.9")
VIPS6 = (A6("fe80::1"), A6("2001:db8::1"))
MY_LL = A6("fe80::5")
PEER_LL_LOW = A6("fe80::2")
PEER_LL_HIGH = A6("fe80::9")

INIT, BACKUP, MASTER, FAULT = State.INIT, State.BACKUP, State.MASTER, State.FAULT


def router(priority: int = 100, interval: float = 1.0, ip=MY_IP, **kw) -> VirtualRouter:
    kw.setdefault("virtual_addresses", (VIP,))
    params = RouterParams(name="vr", vrid=1, priority=priority, advert_interval=interval, version=3, **kw)
    return VirtualRouter(params, primary_ip=ip)


def backup(priority: int = 100, interval: float = 1.0, now: float = 0.0, **kw) -> VirtualRouter:
    vr = router(priority, interval, **kw)
    vr.start(now)
    assert vr.state == BACKUP
    return vr


def master(priority: int = 100, interval: float = 1.0, now: float = 0.0, **kw) -> VirtualRouter:
    vr = backup(priority, interval, now, **kw)
    vr.handle_timer(vr.master_down_at)
    assert vr.state == MASTER
    return vr


def advert(priority: int, cs: int = 100, src=PEER_HIGH, addresses=(VIP,)) -> AdvertV3:
    return AdvertV3(vrid=1, priority=priority, addresses=addresses, max_adver_int=cs, src=src)


def norm(actions):
    out = []
    for a in actions:
        if isinstance(a, Transition):
            out.append(("Transition", a.old, a.new))
        elif isinstance(a, (Dropped, Noticed)):
            out.append((type(a).__name__, a.reason))
        else:
            out.append(a)
    return out


def counts(vr: VirtualRouter) -> dict:
    return {k: v for k, v in dataclasses.asdict(vr.counters).items() if v}


def to_master_actions(prio: int, accept: bool = False, old: State = BACKUP):
    return [("Transition", old, MASTER), SendAdvert(prio), AddAddresses(accept), SendGarp(5)]


# ---- the numbers (RFC 5798 §6.1) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "prio,mai,skew,mdi",
    [
        (100, 1.0, 0.609375, 3.609375),  # at 1 s, v3 and v2 agree
        (100, 0.01, 0.00609375, 0.03609375),
        (200, 2.5, 0.546875, 8.046875),
        (254, 0.01, 0.000078125, 0.030078125),
        (1, 40.95, 40.790039062, 163.640039062),
    ],
)
def test_skew_and_master_down_interval(prio, mai, skew, mdi):
    assert skew_time_v3(prio, mai) == pytest.approx(skew, abs=1e-9)
    assert master_down_interval_v3(mai, prio) == pytest.approx(mdi, abs=1e-9)
    vr = router(prio, mai)
    assert vr.master_adver_interval == mai
    assert vr.skew_time == pytest.approx(skew, abs=1e-9)
    assert vr.master_down_interval == pytest.approx(mdi, abs=1e-9)


def test_v3_skew_scales_with_the_interval_v2_does_not():
    v2 = VirtualRouter(RouterParams(name="v", vrid=1, priority=200, virtual_addresses=(VIP,), advert_interval=3))
    assert v2.skew_time == skew_time(200) == 0.21875
    assert v2.master_down_interval == master_down_interval(3, 200) == 9.21875
    v3 = router(200, 3.0)
    assert v3.skew_time == 0.65625
    assert v3.master_down_interval == 9.65625


# ---- parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval,cs", [(0.01, 1), (0.07, 7), (0.1, 10), (1, 100), (2.5, 250), (40.95, 4095)])
def test_v3_intervals_in_centiseconds(interval, cs):
    p = RouterParams(name="x", vrid=1, priority=100, virtual_addresses=(VIP,), advert_interval=interval, version=3)
    assert p.advert_interval_cs == cs
    vr = VirtualRouter(p, primary_ip=MY_IP)
    assert vr.advert(100) == AdvertV3(1, 100, (VIP,), cs)


@pytest.mark.parametrize(
    "kw",
    [
        dict(version=1),
        dict(version=4),
        dict(version=3, advert_interval=0),
        dict(version=3, advert_interval=0.005),
        dict(version=3, advert_interval=0.015),
        dict(version=3, advert_interval=41),
        dict(version=2, advert_interval=0.5),
        dict(version=2, advert_interval=256),
        dict(version=2, virtual_addresses=VIPS6),
        dict(version=3, virtual_addresses=(VIP, VIPS6[1])),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())[:40],
)
def test_params_refuse_what_the_protocol_cannot_carry(kw):
    kw.setdefault("virtual_addresses", (VIP,))
    with pytest.raises(ValueError):
        RouterParams(name="x", vrid=1, priority=100, **kw)


def test_params_family_and_ipv6_scope():
    p = RouterParams(name="x", vrid=1, priority=100, version=3,
                     virtual_addresses=(A6("fe80::1%eth0"), A6("2001:db8::1")))
    assert p.family == 6
    assert p.virtual_addresses == VIPS6  # the scope is the interface's business, not the wire's
    assert RouterParams(name="x", vrid=1, priority=100, virtual_addresses=()).family == 4


@pytest.mark.parametrize(
    "version,accept_mode,priority,accept",
    [
        (2, None, 100, True),  # v2: what vrrpd has always done
        (2, False, 100, False),
        (3, None, 100, False),  # RFC 5798 §6.1: Accept_Mode defaults to False
        (3, True, 100, True),
        (3, False, 255, True),  # the owner accepts whatever the mode says (§6.4.3)
        (3, None, 255, True),
    ],
)
def test_accept_mode(version, accept_mode, priority, accept):
    p = RouterParams(name="x", vrid=1, priority=priority, virtual_addresses=(VIP,), version=version,
                     accept_mode=accept_mode)
    assert p.accept is accept
    vr = VirtualRouter(p, primary_ip=MY_IP)
    acts = vr.start(0.0)  # the owner is master at once
    if vr.state == BACKUP:
        acts = vr.handle_timer(vr.master_down_at)
    assert vr.state == MASTER
    assert AddAddresses(accept) in acts
    # a backup holds no addresses, so it accepts nothing (§6.4.2): the move back removes them
    assert RemoveAddresses() in vr.force(BACKUP, 10.0, "test")


# ---- startup and the master (§6.4.1, §6.4.3) ----------------------------------------------------------------


def test_startup_uses_our_interval():
    vr = router(100, 0.01)
    assert norm(vr.start(5.0)) == [("Transition", INIT, BACKUP)]
    assert vr.master_down_at == pytest.approx(5.0 + 0.03609375, abs=1e-12)
    assert vr.handle_timer(5.0 + 0.036) == []
    assert norm(vr.handle_timer(vr.master_down_at)) == to_master_actions(100)


def test_master_sends_its_configured_interval_every_centisecond():
    vr = master(100, 0.01)
    t0 = vr.adver_at - 0.01
    assert vr.advert(100) == AdvertV3(1, 100, (VIP,), 1)
    sent = 0
    t = t0
    while t < t0 + 1.0 - 1e-9:
        t = vr.next_deadline()
        acts = vr.handle_timer(t)
        assert acts == [SendAdvert(100)]
        sent += 1
    assert sent == 100  # one advert per 0.01 s for a second of virtual time
    assert t == pytest.approx(t0 + 1.0, abs=1e-9)


def test_master_advert_carries_its_own_interval_even_after_learning_another():
    vr = backup(100, 1.0)
    vr.receive(advert(200, cs=25), 1.0)
    assert vr.master_adver_interval == 0.25
    took_over = vr.master_down_at
    assert took_over == 1.0 + 0.75 + 156 * 0.25 / 256
    vr.handle_timer(took_over)
    assert vr.state == MASTER
    assert vr.master_adver_interval == 1.0  # the master's interval is ours now
    assert vr.advert(100).max_adver_int == 100
    assert vr.adver_at == took_over + 1.0


def test_master_answers_a_lower_priority_advert_at_most_once_per_its_interval():
    vr = master(200, 0.05)
    t = vr.adver_at - 0.05 + 0.01
    assert vr.receive(advert(100, cs=5, src=PEER_LOW), t) == [SendAdvert(200), SendGarp(5)]
    assert vr.receive(advert(100, cs=5, src=PEER_LOW), t + 0.049) == []
    assert vr.receive(advert(100, cs=5, src=PEER_LOW), t + 0.0501) == [SendAdvert(200), SendGarp(5)]


# ---- learning Master_Adver_Interval (§6.4.2, §6.4.3) -------------------------------------------------------------


def test_backup_learns_the_masters_interval_and_times_out_by_it():
    vr = backup(100, 1.0)
    acts = vr.receive(advert(200, cs=50), 2.0)
    assert norm(acts) == [("Noticed", Reason.INTERVAL)]  # logged and counted, not dropped
    assert "0.5s from 10.0.0.9, configured 1s (accepted)" in acts[0].detail
    assert counts(vr) == {"adverts_rx": 1, "interval_errors": 1}
    assert vr.master_adver_interval == 0.5
    mdi = 3 * 0.5 + 156 * 0.5 / 256  # 1.8046875, not our own 3.609375
    assert vr.master_down_interval == mdi
    assert vr.master_down_at == 2.0 + mdi
    assert vr.handle_timer(2.0 + mdi - 0.001) == []
    assert norm(vr.handle_timer(2.0 + mdi)) == to_master_actions(100)


def test_backup_follows_every_change_of_the_masters_interval():
    vr = backup(100, 1.0)
    t = 0.5
    for cs in (100, 10, 10, 400, 1, 4095, 100):
        vr.receive(advert(200, cs=cs), t)
        mai = cs / 100
        assert vr.master_adver_interval == mai
        assert vr.master_down_at == pytest.approx(t + 3 * mai + 156 * mai / 256, abs=1e-12)
        t += mai
    assert vr.counters.interval_errors == 5  # every advert whose interval is not ours


def test_priority_0_takes_over_after_the_learned_skew():
    vr = backup(100, 1.0)
    vr.receive(advert(200, cs=20), 1.0)
    assert norm(vr.receive(advert(0, cs=20), 1.1)) == [("Noticed", Reason.INTERVAL)]
    assert vr.master_down_at == pytest.approx(1.1 + 156 * 0.2 / 256, abs=1e-12)  # Skew_Time of 0.2 s
    assert norm(vr.handle_timer(vr.master_down_at)) == to_master_actions(100)


def test_priority_0_does_not_teach_an_interval():
    vr = backup(100, 1.0)
    vr.receive(advert(200, cs=20), 1.0)
    vr.receive(advert(0, cs=300), 1.1)
    assert vr.master_adver_interval == 0.2


def test_lower_priority_advert_discarded_with_preempt_teaches_nothing():
    vr = backup(200, 1.0)
    vr.receive(advert(250, cs=100), 1.0)
    deadline = vr.master_down_at
    vr.receive(advert(100, cs=10, src=PEER_LOW), 1.5)
    assert vr.master_adver_interval == 1.0
    assert vr.master_down_at == deadline


def test_lower_priority_advert_without_preempt_is_learned():
    vr = backup(200, 1.0, preempt=False)
    vr.receive(advert(100, cs=10, src=PEER_LOW), 1.5)
    assert vr.master_adver_interval == 0.1
    assert vr.master_down_at == pytest.approx(1.5 + 0.3 + 56 * 0.1 / 256, abs=1e-12)


def test_preempt_delay_times_the_lower_master_by_its_interval():
    vr = backup(200, 1.0, preempt_delay=30.0)
    # the lower master advertises every 5 s: with our 1 s it would look dead between adverts
    for t in (1.0, 6.0, 11.0, 16.0):
        vr.receive(advert(100, cs=500, src=PEER_LOW), t)
        assert vr.master_adver_interval == 5.0
        assert vr.next_deadline() == pytest.approx(min(31.0, t + 15 + 56 * 5 / 256), abs=1e-9)
        assert vr.handle_timer(t + 4.9) == []
    assert vr.state == BACKUP
    assert norm(vr.handle_timer(31.0)) == to_master_actions(200)  # first lower advert + preempt_delay


def test_master_yielding_learns_the_new_masters_interval():
    vr = master(100, 1.0)
    acts = vr.receive(advert(200, cs=4095), 10.0)
    assert norm(acts) == [("Noticed", Reason.INTERVAL), ("Transition", MASTER, BACKUP), RemoveAddresses()]
    assert vr.master_adver_interval == 40.95
    assert vr.master_down_at == pytest.approx(10.0 + 3 * 40.95 + 156 * 40.95 / 256, abs=1e-9)


def test_learned_interval_is_forgotten_on_restart_and_after_a_fault():
    vr = backup(100, 1.0)
    vr.receive(advert(200, cs=10), 1.0)
    vr.set_fault("link", "down", 2.0)
    vr.set_fault("link", None, 3.0)
    assert vr.state == BACKUP and vr.master_adver_interval == 1.0
    assert vr.master_down_at == 3.0 + 3.609375
    vr.receive(advert(200, cs=10), 4.0)
    vr.shutdown(5.0)
    vr.start(6.0)
    assert vr.master_adver_interval == 1.0


def test_priority_change_recomputes_skew_with_the_learned_interval():
    vr = backup(100, 1.0)
    vr.receive(advert(200, cs=200), 1.0)
    vr.set_effective_priority(250, 1.5)
    assert vr.skew_time == 6 * 2.0 / 256
    vr.receive(advert(254, cs=200), 2.0)
    assert vr.master_down_at == 2.0 + 6.0 + 6 * 2.0 / 256


# ---- §7.1 instance checks ---------------------------------------------------------------------------------


def test_no_authentication_in_v3():
    vr = backup(100, 1.0, auth_type=1, auth_data=b"ignored!")  # v2 fields, meaningless in v3
    assert vr.receive(advert(200), 1.0) == []
    assert vr.advert(100) == AdvertV3(1, 100, (VIP,), 100)


def test_interval_and_address_list_mismatch_are_both_noticed_and_counted():
    vr = backup(100, 1.0)
    acts = vr.receive(advert(200, cs=7, addresses=(VIP2,)), 1.0)
    assert norm(acts) == [("Noticed", Reason.ADDRESS_LIST), ("Noticed", Reason.INTERVAL)]
    assert counts(vr) == {"adverts_rx": 1, "address_list_errors": 1, "interval_errors": 1}
    assert vr.master_adver_interval == 0.07


def test_zero_interval_is_dropped():
    vr = backup(100, 1.0)
    deadline = vr.master_down_at
    acts = vr.receive(advert(200, cs=0), 1.0)
    assert norm(acts) == [("Dropped", Reason.INTERVAL)]
    assert counts(vr) == {"interval_errors": 1}
    assert vr.master_down_at == deadline and vr.master_adver_interval == 1.0


@pytest.mark.parametrize("make", [backup, master], ids=["backup", "master"])
def test_strict_address_list_drops_except_from_the_owner(make):
    vr = make(100, 1.0, strict=True)
    state = vr.state
    assert norm(vr.receive(advert(200, addresses=(VIP2,)), 9.0)) == [("Dropped", Reason.ADDRESS_LIST)]
    assert vr.state == state and counts(vr).get("address_list_errors") == 1
    acts = vr.receive(advert(255, addresses=(VIP2,)), 9.5)
    assert norm(acts)[0] == ("Noticed", Reason.ADDRESS_LIST)


def test_owner_discards_v3_adverts():
    vr = router(255, 0.5)
    assert norm(vr.start(0.0)) == to_master_actions(255, accept=True, old=INIT)
    assert norm(vr.receive(advert(254, cs=50), 0.2)) == [("Dropped", Reason.OWNER)]
    assert counts(vr) == {"became_master": 1, "adverts_tx": 1, "owner_discards": 1}


@pytest.mark.parametrize("version", [2, 3])
def test_an_advert_of_the_other_version_is_a_version_error(version):
    p = RouterParams(name="x", vrid=1, priority=100, virtual_addresses=(VIP,), version=version)
    vr = VirtualRouter(p, primary_ip=MY_IP)
    vr.start(0.0)
    other = Advert(1, 200, (VIP,), src=PEER_HIGH) if version == 3 else advert(200)
    assert norm(vr.receive(other, 1.0)) == [("Dropped", Reason.VERSION)]
    assert counts(vr) == {"version_errors": 1}


# ---- IPv6 instances ---------------------------------------------------------------------------------


def v6_router(priority=100, interval=1.0, ip=MY_LL, **kw):
    return router(priority, interval, ip=ip, virtual_addresses=VIPS6, **kw)


def test_ipv6_instance_elects_by_link_local_address():
    vr = v6_router()
    vr.start(0.0)
    vr.handle_timer(vr.master_down_at)
    assert vr.state == MASTER
    # equal priority, lower link-local: answered; higher: we yield
    assert vr.receive(advert(100, src=PEER_LL_LOW, addresses=VIPS6), 4.0) == [SendAdvert(100), SendGarp(5)]
    acts = vr.receive(advert(100, src=PEER_LL_HIGH, addresses=VIPS6), 4.5)
    assert norm(acts) == [("Transition", MASTER, BACKUP), RemoveAddresses()]
    assert vr.master_ip == PEER_LL_HIGH


def test_ipv6_own_advert_with_a_scoped_source_is_ignored():
    vr = v6_router(ip=A6("fe80::5%eth0"))
    vr.start(0.0)
    acts = vr.receive(advert(100, src=MY_LL, addresses=VIPS6), 1.0)
    assert [a.reason.value for a in acts] == ["own_address_adverts"]
    assert counts(vr) == {"own_address_adverts": 1}


def test_ipv6_instance_without_link_local_is_in_fault():
    vr = v6_router(ip=None)
    assert norm(vr.start(0.0)) == [("Transition", INIT, FAULT)]
    assert vr.fault_reasons == {"no-address": "no IPv6 link-local address on the interface"}
    assert norm(vr.set_primary_ip(MY_LL, 1.0)) == [("Transition", FAULT, BACKUP)]


def test_ipv6_advert_goes_through_the_codec():
    vr = v6_router(interval=0.05)
    codec = V3Codec(6)
    frame = codec.build_frame(vr.advert(100), MY_LL, codec.vmac(1))
    got = parse_frame_with(frame, codec)
    assert got == AdvertV3(1, 100, VIPS6, 5, src=MY_LL)
    peer = v6_router(priority=50, ip=PEER_LL_LOW)
    peer.start(0.0)
    peer.receive(got, 1.0)
    assert peer.master_ip == MY_LL and peer.master_adver_interval == 0.05
