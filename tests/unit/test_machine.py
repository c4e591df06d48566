"""vrrpd.machine: every row of RFC 3768 §6.4, the §7.1 instance checks, and the extras."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from vrrpd.group import GROUP_FAULT_KEY, Force, HoldFault, SyncGroup
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
    skew_time,
)
from vrrpd.packet import AUTH_NONE, AUTH_SIMPLE, Advert, Reason, Rejected, encode_auth

A = ipaddress.IPv4Address
VIP = A("10.0.0.100")
VIP2 = A("10.0.0.101")
MY_IP = A("10.0.0.5")
PEER_LOW = A("10.0.0.2")  # numerically below MY_IP
PEER_HIGH = A("10.0.0.9")  # numerically above MY_IP

INIT, BACKUP, MASTER, FAULT = State.INIT, State.BACKUP, State.MASTER, State.FAULT


def params(priority: int = 100, **kw) -> RouterParams:
    kw.setdefault("virtual_addresses", (VIP,))
    return RouterParams(name="vr", vrid=1, priority=priority, **kw)


def router(priority: int = 100, ip: A | None = MY_IP, **kw) -> VirtualRouter:
    return VirtualRouter(params(priority, **kw), primary_ip=ip)


def advert(priority: int, src: A = PEER_HIGH, **kw) -> Advert:
    kw.setdefault("addresses", (VIP,))
    return Advert(vrid=1, priority=priority, src=src, **kw)


def norm(actions):
    """Actions with the free-text parts left out, for exact comparison."""
    out = []
    for a in actions:
        if isinstance(a, Transition):
            out.append(("Transition", a.old, a.new))
        elif isinstance(a, (Dropped, Noticed)):
            out.append((type(a).__name__, a.reason))
        else:
            out.append(a)
    return out


def snapshot(vr: VirtualRouter) -> dict:
    return dataclasses.asdict(vr.counters)


def delta(before: dict, vr: VirtualRouter) -> dict:
    after = snapshot(vr)
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def timers(vr: VirtualRouter):
    return (vr.adver_at, vr.master_down_at, vr.garp_repeat_at)


def to_master_actions(prio: int, garp: int = 5, old: State = BACKUP):
    return [("Transition", old, MASTER), SendAdvert(prio), AddAddresses(), SendGarp(garp)]


def backup(priority: int = 100, now: float = 0.0, **kw) -> VirtualRouter:
    vr = router(priority, **kw)
    vr.start(now)
    assert vr.state == BACKUP
    return vr


def master(priority: int = 100, now: float = 0.0, **kw) -> VirtualRouter:
    vr = backup(priority, now, **kw)
    vr.handle_timer(vr.master_down_at)
    assert vr.state == MASTER
    return vr


# ---- the numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prio,interval,skew,mdi",
    [
        (100, 1, 0.609375, 3.609375),
        (1, 1, 0.99609375, 3.99609375),
        (254, 1, 0.0078125, 3.0078125),
        (255, 1, 0.00390625, 3.00390625),
        (200, 3, 0.21875, 9.21875),
    ],
)
def test_skew_and_master_down_interval(prio, interval, skew, mdi):
    assert skew_time(prio) == skew
    assert master_down_interval(interval, prio) == mdi
    vr = router(prio, advert_interval=interval)
    assert vr.skew_time == skew
    assert vr.master_down_interval == mdi


# ---- §6.4.1 Initialize -------------------------------------------------------------------


def test_initialize_startup_owner_goes_master_at_once():
    vr = router(255)
    before = snapshot(vr)
    acts = vr.start(10.0)
    assert norm(acts) == to_master_actions(255, old=INIT)
    assert vr.state == MASTER
    assert vr.adver_at == 11.0
    assert vr.master_down_at is None
    assert vr.garp_repeat_at == 15.0
    assert vr.next_deadline() == 11.0
    assert vr.master_ip == MY_IP
    assert delta(before, vr) == {"became_master": 1, "adverts_tx": 1}


def test_initialize_startup_non_owner_waits_master_down_interval():
    vr = router(100)
    before = snapshot(vr)
    acts = vr.start(10.0)
    assert norm(acts) == [("Transition", INIT, BACKUP)]
    assert vr.state == BACKUP
    assert timers(vr) == (None, 13.609375, None)
    assert vr.next_deadline() == 13.609375
    assert delta(before, vr) == {}


def test_initialize_startup_priority_254_is_not_owner():
    vr = router(254)
    assert norm(vr.start(0.0)) == [("Transition", INIT, BACKUP)]


def test_start_without_address_goes_to_fault():
    vr = router(100, ip=None)
    acts = vr.start(0.0)
    assert norm(acts) == [("Transition", INIT, FAULT)]
    assert vr.state == FAULT
    assert vr.next_deadline() is None
    assert "no-address" in vr.fault_reasons
    # the address appears: leave FAULT the way startup does
    acts = vr.set_primary_ip(MY_IP, 2.0)
    assert norm(acts) == [("Transition", FAULT, BACKUP)]
    assert vr.master_down_at == 2.0 + 3.609375


def test_start_twice_is_a_no_op():
    vr = backup()
    md = vr.master_down_at
    assert vr.start(1.0) == []
    assert vr.master_down_at == md


def test_not_started_router_has_no_deadline_and_timer_does_nothing():
    vr = router()
    assert vr.next_deadline() is None
    assert vr.handle_timer(100.0) == []
    assert vr.state == INIT


def test_init_receives_advert_without_effect():
    vr = router()
    before = snapshot(vr)
    assert vr.receive(advert(200), 1.0) == []
    assert vr.state == INIT
    assert timers(vr) == (None, None, None)
    assert delta(before, vr) == {"adverts_rx": 1}


# ---- §6.4.2 Backup -----------------------------------------------------------------------


def test_backup_shutdown():
    vr = backup()
    before = snapshot(vr)
    acts = vr.shutdown(1.0)
    assert norm(acts) == [("Transition", BACKUP, INIT)]
    assert vr.state == INIT
    assert timers(vr) == (None, None, None)
    assert delta(before, vr) == {}


def test_backup_master_down_timer_fires_to_the_millisecond():
    vr = backup(100, now=0.0)
    vr.receive(advert(200), 5.0)
    assert vr.master_down_at == 5.0 + 3.609375
    before = snapshot(vr)
    assert vr.handle_timer(5.0 + 3.609375 - 0.001) == []
    assert vr.state == BACKUP
    acts = vr.handle_timer(5.0 + 3.609375)
    assert norm(acts) == to_master_actions(100)
    assert vr.state == MASTER
    assert vr.adver_at == 5.0 + 3.609375 + 1
    assert vr.master_down_at is None
    assert vr.garp_repeat_at == 5.0 + 3.609375 + 5.0
    assert delta(before, vr) == {"became_master": 1, "adverts_tx": 1}
    assert "no advert" in acts[0].reason


def test_backup_startup_takeover_exactly_at_mdi():
    vr = backup(100, now=2.0)
    assert vr.handle_timer(2.0 + 3.608) == []
    assert vr.handle_timer(2.0 + 3.609) == []
    assert norm(vr.handle_timer(2.0 + 3.609375)) == to_master_actions(100)


def test_backup_receives_priority_0_takes_over_after_skew():
    vr = backup(100)
    vr.receive(advert(200), 1.0)
    before = snapshot(vr)
    acts = vr.receive(advert(0), 2.0)
    assert acts == []
    assert vr.state == BACKUP
    assert vr.master_down_at == 2.0 + 0.609375
    assert delta(before, vr) == {"adverts_rx": 1, "prio0_rx": 1}
    assert vr.handle_timer(2.0 + 0.608) == []
    acts = vr.handle_timer(2.0 + 0.609375)
    assert norm(acts) == to_master_actions(100)
    assert "priority 0" in acts[0].reason


@pytest.mark.parametrize("their", [101, 200, 255])
@pytest.mark.parametrize("preempt", [True, False])
def test_backup_receives_higher_priority_resets_timer(their, preempt):
    vr = backup(100, preempt=preempt)
    before = snapshot(vr)
    acts = vr.receive(advert(their), 3.0)
    assert acts == []
    assert vr.state == BACKUP
    assert vr.master_down_at == 3.0 + 3.609375
    assert vr.master_ip == PEER_HIGH
    assert vr.master_priority == their
    assert delta(before, vr) == {"adverts_rx": 1}


@pytest.mark.parametrize("src", [PEER_LOW, PEER_HIGH])
def test_backup_receives_equal_priority_resets_timer_whatever_the_ip(src):
    vr = backup(100)
    assert vr.receive(advert(100, src=src), 3.0) == []
    assert vr.state == BACKUP
    assert vr.master_down_at == 3.0 + 3.609375


def test_backup_receives_lower_priority_with_preempt_discards():
    vr = backup(100, preempt=True)
    vr.receive(advert(200), 1.0)
    before = snapshot(vr)
    acts = vr.receive(advert(50, src=PEER_LOW), 2.0)
    assert acts == []
    assert vr.state == BACKUP
    assert vr.master_down_at == 1.0 + 3.609375  # not reset: the timer runs on
    assert delta(before, vr) == {"adverts_rx": 1}
    # and it fires as if the lower advert had not been there
    acts = vr.handle_timer(1.0 + 3.609375)
    assert norm(acts) == to_master_actions(100)
    assert "preempting" in acts[0].reason


def test_backup_receives_lower_priority_without_preempt_resets_timer():
    vr = backup(100, preempt=False)
    before = snapshot(vr)
    acts = vr.receive(advert(50, src=PEER_LOW), 2.0)
    assert acts == []
    assert vr.master_down_at == 2.0 + 3.609375
    assert vr.master_ip == PEER_LOW
    assert delta(before, vr) == {"adverts_rx": 1}


def test_preempt_off_keeps_a_lower_priority_master():
    vr = backup(200, preempt=False)
    t = 0.5
    while t < 60:
        assert vr.receive(advert(100, src=PEER_LOW), t) == []
        t += 1.0
        assert vr.handle_timer(t - 0.001) == []  # never reaches the deadline
        assert vr.state == BACKUP
    assert vr.counters.became_master == 0


def test_preempt_on_replaces_a_lower_priority_master_after_mdi():
    vr = backup(200, preempt=True, now=0.0)  # MDI 3.21875
    for t in (0.5, 1.5, 2.5):
        assert vr.receive(advert(100, src=PEER_LOW), t) == []
        assert vr.next_deadline() == 3.21875  # the lower adverts never reset the timer
    assert vr.handle_timer(3.21875 - 0.001) == []
    acts = vr.handle_timer(3.21875)
    assert norm(acts) == to_master_actions(200)
    assert "preempting lower-priority master 10.0.0.2" in acts[0].reason


def test_preempt_delay_takeover_at_first_lower_advert_plus_delay():
    vr = backup(200, preempt=True, preempt_delay=10.0, now=0.0)  # MDI 3.21875
    first = 0.5
    t = first
    while t < first + 10.0:
        assert vr.receive(advert(100, src=PEER_LOW), t) == []
        # the lower master's adverts keep it alive until the delay is over
        assert vr.next_deadline() == min(first + 10.0, t + 3.21875)
        t += 1.0
    assert vr.handle_timer(first + 10.0 - 0.001) == []
    assert vr.state == BACKUP
    acts = vr.handle_timer(first + 10.0)
    assert norm(acts) == to_master_actions(200)
    assert "preempting lower-priority master 10.0.0.2" in acts[0].reason


def test_preempt_delay_lower_master_dies_during_the_delay():
    """Waiting to preempt must not leave the segment masterless until the delay ends."""
    vr = backup(200, preempt=True, preempt_delay=60.0, now=0.0)
    for t in (0.5, 1.5, 2.5, 3.5, 4.5):
        vr.receive(advert(100, src=PEER_LOW), t)
    # the lower master falls silent after 4.5: take over Master_Down_Interval later
    assert vr.next_deadline() == 4.5 + 3.21875
    assert vr.handle_timer(4.5 + 3.21875 - 0.001) == []
    acts = vr.handle_timer(4.5 + 3.21875)
    assert norm(acts) == to_master_actions(200)
    assert "no advert from lower-priority master 10.0.0.2" in acts[0].reason


def test_preempt_delay_restarts_after_a_higher_advert():
    vr = backup(200, preempt=True, preempt_delay=10.0, now=0.0)
    vr.receive(advert(100, src=PEER_LOW), 1.0)
    assert vr.next_deadline() == 1.0 + 3.21875
    vr.receive(advert(250), 2.0)  # a higher master shows up: plain MDI again
    assert vr.next_deadline() == 2.0 + 3.21875
    t = 4.0  # lower again: the delay counts from here
    while t < 14.0:
        vr.receive(advert(100, src=PEER_LOW), t)
        assert vr.next_deadline() == min(14.0, t + 3.21875)
        t += 1.0
    assert norm(vr.handle_timer(14.0)) == to_master_actions(200)


def test_preempt_delay_never_shortens_the_timer():
    vr = backup(200, preempt=True, preempt_delay=1.0, now=0.0)
    vr.receive(advert(100, src=PEER_LOW), 0.5)
    assert vr.next_deadline() == 3.21875


def test_backup_ignores_its_own_looped_advert_and_counts_it():
    """Issue: adverts with our own source address were dropped uncounted (a spoofer
    using our address went unseen)."""
    vr = backup(100)
    before = snapshot(vr)
    assert norm(vr.receive(advert(100, src=MY_IP), 1.0)) == [("Dropped", Reason.OWN_ADDRESS)]
    assert vr.master_down_at == 3.609375
    assert delta(before, vr) == {"own_address_adverts": 1}


def test_priority_zero_is_accepted_only_from_the_master_we_know():
    """Issue: one spoofed priority-0 advert from any source made a backup take over after
    Skew_Time (VIPs, GARPs, a commit) and fall back."""
    vr = backup(100)
    before = snapshot(vr)
    # no master heard yet: a priority 0 means nothing
    assert norm(vr.receive(advert(0, src=PEER_HIGH), 0.5)) == [("Dropped", Reason.PRIO0_NOT_MASTER)]
    assert vr.receive(advert(200, src=PEER_HIGH), 1.0) == []  # the master
    spoofed = A("10.0.0.66")
    assert norm(vr.receive(advert(0, src=spoofed), 1.5)) == [("Dropped", Reason.PRIO0_NOT_MASTER)]
    assert vr.master_down_at == 1.0 + vr.master_down_interval  # not moved up to Skew_Time
    assert vr.handle_timer(1.5 + vr.skew_time) == [] and vr.state == BACKUP
    assert delta(before, vr) == {"prio0_ignored": 2, "prio0_rx": 2, "adverts_rx": 3}
    # the real master leaving still hands over after Skew_Time
    assert vr.receive(advert(0, src=PEER_HIGH), 2.0) == []
    assert vr.master_down_at == 2.0 + vr.skew_time


def test_a_master_answers_priority_zero_at_most_once_per_interval():
    """Issue: a master answered every priority-0 advert at once: a flood made it flood."""
    vr = master(200, now=0.0)
    t0 = 10.0
    assert vr.receive(advert(0, src=PEER_LOW), t0) == [SendAdvert(200)]
    before = snapshot(vr)
    for i in range(1, 50):
        assert vr.receive(advert(0, src=PEER_LOW), t0 + i * 0.01) == []
    assert delta(before, vr) == {"prio0_answers_limited": 49, "prio0_rx": 49, "adverts_rx": 49}
    assert vr.receive(advert(0, src=PEER_LOW), t0 + 1.0) == [SendAdvert(200)]


# ---- §6.4.3 Master -----------------------------------------------------------------------


def test_master_shutdown_sends_priority_0():
    vr = master(100)
    before = snapshot(vr)
    acts = vr.shutdown(10.0)
    assert norm(acts) == [SendAdvert(0), RemoveAddresses(), ("Transition", MASTER, INIT)]
    assert vr.state == INIT
    assert timers(vr) == (None, None, None)
    assert vr.next_deadline() is None
    assert delta(before, vr) == {"adverts_tx": 1, "prio0_tx": 1, "released_master": 1}


def test_master_adver_timer():
    vr = master(100)  # became master at 3.609375
    t0 = 3.609375
    assert vr.adver_at == t0 + 1
    before = snapshot(vr)
    assert vr.handle_timer(t0 + 1 - 0.001) == []
    assert vr.handle_timer(t0 + 1) == [SendAdvert(100)]
    assert vr.adver_at == t0 + 2
    assert vr.handle_timer(t0 + 2) == [SendAdvert(100)]
    assert vr.state == MASTER
    assert delta(before, vr) == {"adverts_tx": 2}


def test_master_adver_interval_3():
    vr = master(100, advert_interval=3)
    t0 = 9.609375
    assert vr.adver_at == t0 + 3
    assert vr.handle_timer(t0 + 2.999) == []
    assert vr.handle_timer(t0 + 3) == [SendAdvert(100)]
    assert vr.adver_at == t0 + 6


def test_master_receives_priority_0_advertises_at_once():
    vr = master(100)
    before = snapshot(vr)
    acts = vr.receive(advert(0), 4.0)
    assert acts == [SendAdvert(100)]
    assert vr.adver_at == 5.0
    assert vr.state == MASTER
    assert delta(before, vr) == {"adverts_rx": 1, "prio0_rx": 1, "adverts_tx": 1}


@pytest.mark.parametrize("their,src", [(101, PEER_LOW), (255, PEER_LOW), (100, PEER_HIGH)])
def test_master_yields_to_higher_priority_or_equal_with_higher_ip(their, src):
    vr = master(100)
    before = snapshot(vr)
    acts = vr.receive(advert(their, src=src), 4.0)
    assert norm(acts) == [("Transition", MASTER, BACKUP), RemoveAddresses()]
    assert vr.state == BACKUP
    assert timers(vr) == (None, 4.0 + 3.609375, None)
    assert vr.master_ip == src
    assert vr.master_priority == their
    assert delta(before, vr) == {"adverts_rx": 1, "released_master": 1}


def test_master_equal_priority_lower_ip_is_answered():
    vr = master(100)
    before = snapshot(vr)
    acts = vr.receive(advert(100, src=PEER_LOW), 4.0)
    assert acts == [SendAdvert(100), SendGarp(5)]
    assert vr.state == MASTER
    assert vr.adver_at == 5.0
    assert delta(before, vr) == {"adverts_rx": 1, "adverts_tx": 1}


def test_master_answers_lower_priority_at_most_once_per_interval():
    vr = master(100, garp_count=3)
    before = snapshot(vr)
    assert vr.receive(advert(50, src=PEER_LOW), 4.0) == [SendAdvert(100), SendGarp(3)]
    assert vr.adver_at == 5.0
    assert vr.receive(advert(50, src=PEER_LOW), 4.5) == []
    assert vr.receive(advert(50, src=PEER_LOW), 4.999) == []
    assert vr.adver_at == 5.0
    assert vr.handle_timer(5.0) == [SendAdvert(100)]
    assert vr.receive(advert(50, src=PEER_LOW), 5.0) == [SendAdvert(100), SendGarp(3)]
    assert vr.adver_at == 6.0
    assert vr.state == MASTER
    assert delta(before, vr) == {"adverts_rx": 4, "adverts_tx": 3}


def test_garp_repeat_after_delay():
    vr = master(100, garp_repeat_delay=2.5)
    t0 = 3.609375
    assert vr.garp_repeat_at == t0 + 2.5
    assert vr.handle_timer(t0 + 1) == [SendAdvert(100)]
    assert vr.handle_timer(t0 + 2) == [SendAdvert(100)]
    assert vr.next_deadline() == t0 + 2.5
    assert vr.handle_timer(t0 + 2.499) == []
    assert vr.handle_timer(t0 + 2.5) == [SendGarp(5)]
    assert vr.garp_repeat_at is None
    assert vr.handle_timer(t0 + 3) == [SendAdvert(100)]
    for k in range(4, 20):
        assert vr.handle_timer(t0 + k) == [SendAdvert(100)]  # once only


def test_garp_repeat_coinciding_with_advert():
    vr = master(100)  # garp_repeat_delay 5 = a multiple of the interval
    t0 = 3.609375
    for k in range(1, 5):
        assert vr.handle_timer(t0 + k) == [SendAdvert(100)]
    assert vr.handle_timer(t0 + 5) == [SendAdvert(100), SendGarp(5)]


def test_garp_repeat_disabled():
    vr = master(100, garp_repeat_delay=0.0)
    assert vr.garp_repeat_at is None
    for k in range(1, 8):
        assert vr.handle_timer(3.609375 + k) == [SendAdvert(100)]


def test_master_ignores_its_own_looped_advert():
    vr = master(100)
    before = snapshot(vr)
    assert norm(vr.receive(advert(100, src=MY_IP), 4.0)) == [("Dropped", Reason.OWN_ADDRESS)]
    assert vr.state == MASTER
    assert delta(before, vr) == {"own_address_adverts": 1}


# ---- §7.1 instance checks ----------------------------------------------------------------


def test_owner_discards_every_advert():
    vr = router(255)
    vr.start(0.0)
    assert vr.state == MASTER
    for adv in (advert(254), advert(255, src=PEER_HIGH), advert(0), advert(10, src=PEER_LOW)):
        before, t = snapshot(vr), timers(vr)
        acts = vr.receive(adv, 0.5)
        assert norm(acts) == [("Dropped", Reason.OWNER)]
        assert vr.state == MASTER
        assert timers(vr) == t
        assert delta(before, vr) == {"owner_discards": 1}


def _assert_dropped(vr, adv, reason, counter):
    state, t, before = vr.state, timers(vr), snapshot(vr)
    acts = vr.receive(adv, 2.0)
    assert norm(acts) == [("Dropped", reason)]
    assert vr.state == state
    assert timers(vr) == t
    assert delta(before, vr) == {counter: 1}
    return acts


@pytest.mark.parametrize("make", [backup, master], ids=["backup", "master"])
def test_auth_type_mismatch(make):
    vr = make(100)
    _assert_dropped(vr, advert(200, auth_type=AUTH_SIMPLE), Reason.AUTH_TYPE, "auth_type_errors")
    vr2 = make(100, auth_type=AUTH_SIMPLE, auth_data=encode_auth("secret"))
    _assert_dropped(vr2, advert(200, auth_type=AUTH_NONE), Reason.AUTH_TYPE, "auth_type_errors")


@pytest.mark.parametrize("make", [backup, master], ids=["backup", "master"])
def test_auth_password_mismatch(make):
    vr = make(100, auth_type=AUTH_SIMPLE, auth_data=encode_auth("secret"))
    _assert_dropped(
        vr, advert(200, auth_type=AUTH_SIMPLE, auth_data=encode_auth("Secret")), Reason.AUTH, "auth_failures"
    )
    _assert_dropped(vr, advert(200, auth_type=AUTH_SIMPLE, auth_data=bytes(8)), Reason.AUTH, "auth_failures")


def test_auth_password_match_is_accepted():
    vr = backup(100, auth_type=AUTH_SIMPLE, auth_data=encode_auth("secret"))
    before = snapshot(vr)
    assert vr.receive(advert(200, auth_type=AUTH_SIMPLE, auth_data=b"secret\0\0"), 2.0) == []
    assert vr.master_down_at == 2.0 + 3.609375
    assert delta(before, vr) == {"adverts_rx": 1}


def test_auth_data_ignored_without_auth():
    vr = backup(100)
    assert vr.receive(advert(200, auth_data=b"garbage!"), 2.0) == []
    assert vr.master_down_at == 2.0 + 3.609375


@pytest.mark.parametrize(
    "addrs", [(VIP2,), (VIP, VIP2), ()], ids=["other", "superset", "empty"]
)
def test_address_list_mismatch_accepted_and_counted_by_default(addrs):
    vr = backup(100)
    before = snapshot(vr)
    acts = vr.receive(advert(200, addresses=addrs), 2.0)
    assert norm(acts) == [("Noticed", Reason.ADDRESS_LIST)]
    assert vr.master_down_at == 2.0 + 3.609375  # processed as usual
    assert delta(before, vr) == {"adverts_rx": 1, "address_list_errors": 1}


def test_address_list_order_does_not_matter():
    vr = backup(100, virtual_addresses=(VIP, VIP2))
    before = snapshot(vr)
    assert vr.receive(advert(200, addresses=(VIP2, VIP)), 2.0) == []
    assert delta(before, vr) == {"adverts_rx": 1}


def test_address_list_mismatch_accepted_by_master_then_yields():
    vr = master(100)
    acts = vr.receive(advert(200, addresses=(VIP2,)), 4.0)
    assert norm(acts) == [("Noticed", Reason.ADDRESS_LIST), ("Transition", MASTER, BACKUP), RemoveAddresses()]


@pytest.mark.parametrize("make", [backup, master], ids=["backup", "master"])
def test_address_list_mismatch_strict_dropped(make):
    vr = make(100, strict=True)
    _assert_dropped(vr, advert(200, addresses=(VIP2,)), Reason.ADDRESS_LIST, "address_list_errors")


def test_address_list_mismatch_strict_accepts_the_owner():
    vr = master(100, strict=True)
    before = snapshot(vr)
    acts = vr.receive(advert(255, addresses=(VIP2,)), 4.0)
    assert norm(acts) == [("Noticed", Reason.ADDRESS_LIST), ("Transition", MASTER, BACKUP), RemoveAddresses()]
    assert delta(before, vr) == {"adverts_rx": 1, "address_list_errors": 1, "released_master": 1}


@pytest.mark.parametrize("make", [backup, master], ids=["backup", "master"])
def test_interval_mismatch(make):
    vr = make(100)
    _assert_dropped(vr, advert(200, advert_interval=2), Reason.INTERVAL, "interval_errors")
    vr = make(100, advert_interval=3)
    _assert_dropped(vr, advert(200, advert_interval=1), Reason.INTERVAL, "interval_errors")


def test_check_order_owner_before_auth():
    vr = router(255)
    vr.start(0.0)
    _assert_dropped(vr, advert(200, auth_type=AUTH_SIMPLE, advert_interval=9), Reason.OWNER, "owner_discards")


def test_check_order_auth_type_before_interval():
    vr = backup(100)
    _assert_dropped(vr, advert(200, auth_type=AUTH_SIMPLE, advert_interval=9), Reason.AUTH_TYPE, "auth_type_errors")


def test_check_order_password_before_address_list():
    vr = backup(100, auth_type=AUTH_SIMPLE, auth_data=encode_auth("a"), strict=True)
    _assert_dropped(
        vr, advert(200, auth_type=AUTH_SIMPLE, auth_data=encode_auth("b"), addresses=(VIP2,)),
        Reason.AUTH, "auth_failures",
    )


def test_check_order_strict_address_list_before_interval():
    vr = backup(100, strict=True)
    _assert_dropped(vr, advert(200, addresses=(VIP2,), advert_interval=9), Reason.ADDRESS_LIST, "address_list_errors")


def test_count_rejected_uses_reason_as_counter():
    vr = backup(100)
    for reason in Reason:
        before = snapshot(vr)
        vr.count_rejected(Rejected(reason, "x"))
        assert delta(before, vr) == {reason.value: 1}
    assert vr.state == BACKUP


# ---- fault -----------------------------------------------------------------------------


def test_fault_while_master():
    vr = master(100)
    before = snapshot(vr)
    acts = vr.set_fault("link", "interface eth0 is down", 5.0)
    assert norm(acts) == [("Transition", MASTER, FAULT), SendAdvert(0), RemoveAddresses()]
    assert vr.state == FAULT
    assert timers(vr) == (None, None, None)
    assert vr.next_deadline() is None
    assert vr.master_ip is None
    assert "interface eth0 is down" in vr.master_reason
    assert delta(before, vr) == {"adverts_tx": 1, "prio0_tx": 1, "released_master": 1}
    # clearing it: back to BACKUP through the startup path
    acts = vr.set_fault("link", None, 7.0)
    assert norm(acts) == [("Transition", FAULT, BACKUP)]
    assert vr.master_down_at == 7.0 + 3.609375
    assert vr.fault_reasons == {}


def test_fault_while_backup_and_in_fault_nothing_happens():
    vr = backup(100)
    vr.receive(advert(200), 1.0)
    acts = vr.set_fault("link", "down", 2.0)
    assert norm(acts) == [("Transition", BACKUP, FAULT)]
    before = snapshot(vr)
    assert vr.handle_timer(100.0) == []
    assert vr.receive(advert(0), 3.0) == []
    assert vr.state == FAULT
    assert delta(before, vr) == {"adverts_rx": 1, "prio0_rx": 1}


def test_fault_owner_clears_straight_to_master():
    vr = router(255)
    vr.start(0.0)
    vr.set_fault("link", "down", 1.0)
    acts = vr.set_fault("link", None, 2.0)
    assert norm(acts) == to_master_actions(255, old=FAULT)


def test_two_fault_causes_must_both_clear():
    vr = master(100)
    vr.set_fault("link", "down", 5.0)
    assert vr.set_fault("track", "eth2 down", 5.5) == []  # already in FAULT
    assert vr.set_fault("link", "down again", 5.6) == []  # same cause again
    assert vr.set_fault("link", None, 6.0) == []
    assert vr.state == FAULT
    assert vr.set_fault("nothing", None, 6.5) == []  # clearing an unknown cause
    assert norm(vr.set_fault("track", None, 7.0)) == [("Transition", FAULT, BACKUP)]


def test_fault_before_start_then_start():
    vr = router(100)
    assert vr.set_fault("link", "interface eth0 not found", 0.0) == []
    assert vr.state == INIT
    assert norm(vr.start(1.0)) == [("Transition", INIT, FAULT)]
    assert norm(vr.set_fault("link", None, 2.0)) == [("Transition", FAULT, BACKUP)]


def test_fault_cleared_after_shutdown_does_not_restart():
    vr = router(100)
    vr.start(0.0)
    vr.set_fault("link", "down", 1.0)
    vr.shutdown(2.0)
    assert vr.state == INIT
    assert vr.set_fault("link", None, 3.0) == []
    assert vr.state == INIT


def test_shutdown_from_fault():
    vr = router(100)
    vr.start(0.0)
    vr.set_fault("link", "down", 1.0)
    assert norm(vr.shutdown(2.0)) == [("Transition", FAULT, INIT)]
    assert vr.shutdown(3.0) == []  # already down


def test_restart_after_shutdown():
    vr = master(100)
    vr.shutdown(5.0)
    assert norm(vr.start(6.0)) == [("Transition", INIT, BACKUP)]
    assert vr.master_down_at == 6.0 + 3.609375


def test_losing_primary_address_is_a_fault():
    vr = master(100)
    acts = vr.set_primary_ip(None, 5.0)
    assert norm(acts) == [("Transition", MASTER, FAULT), SendAdvert(0), RemoveAddresses()]


# ---- effective priority ----------------------------------------------------------------


@pytest.mark.parametrize(
    "configured,asked,got",
    [(100, 0, 1), (100, -50, 1), (100, 254, 254), (100, 255, 254), (100, 300, 254), (255, 300, 255), (255, 195, 195)],
)
def test_set_effective_priority_clamps(configured, asked, got):
    vr = router(configured)
    vr.set_effective_priority(asked, 0.0)
    assert vr.effective_priority == got


def test_master_readvertises_new_priority_at_once():
    vr = master(200)
    before = snapshot(vr)
    assert vr.set_effective_priority(140, 4.2) == [SendAdvert(140)]
    assert vr.adver_at == 5.2
    assert vr.state == MASTER
    assert vr.set_effective_priority(140, 4.3) == []  # unchanged: nothing to say
    assert vr.handle_timer(5.2) == [SendAdvert(140)]
    assert delta(before, vr) == {"adverts_tx": 2}


def test_backup_priority_change_is_silent_and_changes_mdi():
    vr = backup(100)
    assert vr.set_effective_priority(200, 1.0) == []
    assert vr.state == BACKUP
    assert vr.master_down_interval == 3.21875
    vr.receive(advert(250), 2.0)
    assert vr.master_down_at == 2.0 + 3.21875


def test_lowered_priority_lets_a_preempting_backup_take_over():
    a = master(200, ip=PEER_HIGH)  # master at 3.21875
    b = backup(150, now=0.0)
    assert a.handle_timer(4.21875) == [SendAdvert(200)]
    b.receive(advert(200, src=PEER_HIGH), 4.21875)
    assert a.set_effective_priority(140, 4.5) == [SendAdvert(140)]
    assert b.receive(advert(140, src=PEER_HIGH), 4.5) == []
    assert b.master_down_at == 4.21875 + 3.4140625
    assert norm(b.handle_timer(b.master_down_at)) == to_master_actions(150)


def test_owner_demoted_by_tracking_is_no_longer_owner():
    vr = router(255)
    vr.start(0.0)
    vr.set_effective_priority(195, 1.0)
    assert not vr.owner
    acts = vr.receive(advert(200), 2.0)
    assert norm(acts) == [("Transition", MASTER, BACKUP), RemoveAddresses()]


# ---- force (sync groups) ----------------------------------------------------------------


def test_force_master_and_backup():
    vr = backup(100)
    acts = vr.force(MASTER, 1.0, "sync group G: x became master")
    assert norm(acts) == to_master_actions(100)
    assert acts[0].reason == "sync group G: x became master"
    assert vr.force(MASTER, 1.5, "again") == []
    acts = vr.force(BACKUP, 2.0, "sync group G: x fell back")
    assert norm(acts) == [("Transition", MASTER, BACKUP), RemoveAddresses()]
    assert vr.master_down_at == 2.0 + 3.609375
    assert vr.force(BACKUP, 2.5, "again") == []


def test_force_ignores_init_and_fault():
    vr = router(100)
    assert vr.force(MASTER, 0.0, "x") == []
    vr.start(0.0)
    vr.set_fault("group", "held", 0.5)
    assert vr.force(MASTER, 1.0, "x") == []
    assert vr.force(BACKUP, 1.0, "x") == []
    assert vr.state == FAULT


# ---- sync groups -----------------------------------------------------------------------


class Pair:
    """Two VirtualRouters in one SyncGroup, wired the way a driver would."""

    def __init__(self):
        self.vr = {"LAN": router(100), "WAN": router(100)}
        self.group = SyncGroup("G", ("LAN", "WAN"))
        self.commands: list = []

    def apply(self, name, actions, now, forced=False):
        for a in actions:
            if isinstance(a, Transition):
                self.run(self.group.on_transition(name, a.old, a.new, forced=forced), now)
        own = bool(set(self.vr[name].fault_reasons) - {GROUP_FAULT_KEY})
        self.run(self.group.on_fault(name, own), now)

    def run(self, cmds, now):
        self.commands += cmds
        for target, cmd in cmds:
            if isinstance(cmd, Force):
                self.apply(target, self.vr[target].force(cmd.state, now, cmd.reason), now, forced=True)
            else:
                self.apply(target, self.vr[target].set_fault(GROUP_FAULT_KEY, cmd.reason, now), now, forced=True)


def test_group_member_going_master_forces_the_others():
    g = SyncGroup("G", ("LAN", "WAN", "DMZ"))
    cmds = g.on_transition("LAN", BACKUP, MASTER, forced=False)
    assert cmds == [
        ("WAN", Force(MASTER, "sync group G: LAN became master")),
        ("DMZ", Force(MASTER, "sync group G: LAN became master")),
    ]


def test_group_member_falling_to_backup_forces_the_others():
    g = SyncGroup("G", ("LAN", "WAN"))
    assert g.on_transition("WAN", MASTER, BACKUP, forced=False) == [
        ("LAN", Force(BACKUP, "sync group G: WAN fell back to backup"))
    ]


def test_group_forced_moves_do_not_echo():
    g = SyncGroup("G", ("LAN", "WAN"))
    assert g.on_transition("WAN", BACKUP, MASTER, forced=True) == []
    assert g.on_transition("WAN", MASTER, BACKUP, forced=True) == []


def test_group_other_moves_are_not_propagated():
    g = SyncGroup("G", ("LAN", "WAN"))
    assert g.on_transition("WAN", INIT, BACKUP, forced=False) == []
    assert g.on_transition("WAN", MASTER, INIT, forced=False) == []


def test_group_fault_holds_the_others_and_release_restores():
    g = SyncGroup("G", ("LAN", "WAN", "DMZ"))
    why = "sync group G: LAN in fault"
    assert g.on_fault("LAN", True) == [("WAN", HoldFault(why)), ("DMZ", HoldFault(why))]
    assert g.faulty == {"LAN"}
    assert g.on_fault("LAN", True) == []  # no change, no command
    assert g.on_fault("WAN", False) == []
    # releasing the one faulty member releases every other
    assert g.on_fault("LAN", False) == [("WAN", HoldFault(None)), ("DMZ", HoldFault(None))]
    assert g.faulty == set()
    # fault moves are not master/backup moves: on_transition ignores them
    assert g.on_transition("WAN", FAULT, BACKUP, forced=False) == []
    assert g.on_transition("LAN", MASTER, FAULT, forced=False) == []


def test_group_two_own_faults_release_only_when_both_clear():
    g = SyncGroup("G", ("LAN", "WAN", "DMZ"))
    g.on_fault("LAN", True)
    # WAN (already held by the group) gets a fault of its own: LAN is now held too.
    assert g.on_fault("WAN", True) == [
        ("LAN", HoldFault("sync group G: WAN in fault")),
        ("DMZ", HoldFault("sync group G: LAN, WAN in fault")),
    ]
    assert g.faulty == {"LAN", "WAN"}
    # LAN recovers while WAN is still broken: LAN stays held, by WAN.
    assert g.on_fault("LAN", False) == [("WAN", HoldFault(None)), ("DMZ", HoldFault("sync group G: WAN in fault"))]
    assert g.faulty == {"WAN"}
    assert g.on_fault("WAN", False) == [("LAN", HoldFault(None)), ("DMZ", HoldFault(None))]
    assert g.faulty == set()


def test_group_member_held_then_own_fault_keeps_group_down():
    """The case a transition-driven group missed: a member held in FAULT by the group
    gets its own fault (no transition happens); when the first culprit recovers the
    group must stay down."""
    p = Pair()
    for name in ("LAN", "WAN"):
        p.apply(name, p.vr[name].start(0.0), 0.0)
    p.apply("LAN", p.vr["LAN"].set_fault("link", "eth1 down", 1.0), 1.0)
    assert p.vr["WAN"].state == FAULT
    p.apply("WAN", p.vr["WAN"].set_fault("link", "eth0 down", 2.0), 2.0)  # no transition: already FAULT
    p.apply("LAN", p.vr["LAN"].set_fault("link", None, 3.0), 3.0)
    assert p.vr["LAN"].state == FAULT and p.vr["WAN"].state == FAULT
    assert "WAN in fault" in p.vr["LAN"].fault_reasons[GROUP_FAULT_KEY]
    p.apply("WAN", p.vr["WAN"].set_fault("link", None, 4.0), 4.0)
    assert p.vr["LAN"].state == BACKUP and p.vr["WAN"].state == BACKUP


def test_group_end_to_end_with_routers():
    p = Pair()
    for name in ("LAN", "WAN"):
        p.apply(name, p.vr[name].start(0.0), 0.0)
    # LAN's timer fires first: WAN is forced along, and it does not echo back
    lan, wan = p.vr["LAN"], p.vr["WAN"]
    p.apply("LAN", lan.handle_timer(lan.master_down_at), 3.609375)
    assert (lan.state, wan.state) == (MASTER, MASTER)
    assert [c for _, c in p.commands] == [Force(MASTER, "sync group G: LAN became master")]
    assert wan.counters.became_master == 1 and lan.counters.became_master == 1
    # WAN hears a higher master: it falls back and LAN follows
    p.commands.clear()
    p.apply("WAN", wan.receive(advert(200), 5.0), 5.0)
    assert (lan.state, wan.state) == (BACKUP, BACKUP)
    assert [c for _, c in p.commands] == [Force(BACKUP, "sync group G: WAN fell back to backup")]
    # LAN gets a fault: WAN is held in FAULT too
    p.commands.clear()
    p.apply("LAN", lan.set_fault("link", "eth1 down", 6.0), 6.0)
    assert (lan.state, wan.state) == (FAULT, FAULT)
    assert wan.fault_reasons == {GROUP_FAULT_KEY: "sync group G: LAN in fault"}
    # releasing LAN releases WAN
    p.commands.clear()
    p.apply("LAN", lan.set_fault("link", None, 8.0), 8.0)
    assert (lan.state, wan.state) == (BACKUP, BACKUP)
    assert wan.fault_reasons == {}
    assert [c for _, c in p.commands] == [HoldFault(None)]


def test_one_packet_one_count_address_list_and_interval():
    """A packet with both a foreign address list and a wrong interval is dropped for the
    interval and counted once, under interval_errors only."""
    vr = backup(100)
    before = snapshot(vr)
    acts = vr.receive(advert(200, addresses=(VIP2,), advert_interval=3), 2.0)
    assert norm(acts) == [("Dropped", Reason.INTERVAL)]
    assert delta(before, vr) == {"interval_errors": 1}


def test_garp_refresh_while_master():
    """garp_refresh (keepalived's garp_master_refresh): one announcement per address every
    N seconds while master, besides the burst and its repeat; stops on leaving master."""
    vr = master(100, garp_repeat_delay=0.0, garp_refresh=2.5)
    t0 = 3.609375
    assert vr.garp_refresh_at == t0 + 2.5
    assert vr.handle_timer(t0 + 1) == [SendAdvert(100)]
    assert vr.handle_timer(t0 + 2) == [SendAdvert(100)]
    assert vr.next_deadline() == t0 + 2.5
    assert vr.handle_timer(t0 + 2.5) == [SendGarp(1)]
    assert vr.garp_refresh_at == t0 + 5.0
    assert vr.handle_timer(t0 + 5) == [SendAdvert(100), SendGarp(1)]
    vr.receive(advert(200), t0 + 5.5)  # a higher priority: backup
    assert vr.state == BACKUP and vr.garp_refresh_at is None


def test_garp_refresh_off_by_default():
    vr = master(100)
    assert vr.garp_refresh_at is None
    assert all(SendGarp(1) not in vr.handle_timer(3.609375 + k) for k in range(1, 12))


def test_advert_cadence_survives_a_late_driver():
    """Each advert is due one interval after the previous one was *due*: a driver that
    runs 3 ms late every time still sends 100 adverts/s at 0.01 s, and one that is more
    than an interval late starts afresh rather than sending a burst."""
    vr = router(100, version=3, advert_interval=0.01, virtual_addresses=(A("10.0.0.1"),))
    vr.start(0.0)
    vr.handle_timer(vr.master_down_at)
    assert vr.state == MASTER
    due = vr.adver_at
    for _ in range(100):
        assert vr.handle_timer(due + 0.003) == [SendAdvert(100)]
        assert vr.adver_at == pytest.approx(due + 0.01)
        due = vr.adver_at
    vr.handle_timer(due + 0.025)  # 2.5 intervals late
    assert vr.adver_at == pytest.approx(due + 0.035)
