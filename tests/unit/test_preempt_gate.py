"""Make-before-break preemption in vrrpd.machine: a backup about to preempt a live
lower-priority master prepares first (ctsync commits), in virtual time."""

from __future__ import annotations

from vrrpd.machine import PreemptCancelled, PreparePreempt, SendAdvert, State

from .test_machine import PEER_HIGH, PEER_LOW, advert, backup, norm, to_master_actions

MDI = 3.21875  # priority 200, 1 s adverts


def gated(**kw):
    vr = backup(200, preempt=True, now=0.0, **kw)
    vr.preempt_gate = True
    return vr


def lower_adverts(vr, times):
    for t in times:
        assert vr.receive(advert(100, src=PEER_LOW), t) == []


def test_a_live_lower_master_is_preempted_only_once_prepared():
    vr = gated()
    lower_adverts(vr, (0.5, 1.5, 2.5))
    acts = vr.handle_timer(MDI)
    assert len(acts) == 1 and isinstance(acts[0], PreparePreempt)
    assert "preempting lower-priority master 10.0.0.2" in acts[0].reason
    assert vr.state == State.BACKUP and not any(isinstance(a, SendAdvert) for a in acts)
    # the lower master keeps forwarding (and advertising) while we prepare
    lower_adverts(vr, (3.5, 4.5))
    assert vr.handle_timer(4.6) == []
    acts = vr.preempt_ready(4.7)
    assert norm(acts) == to_master_actions(200)
    assert "prepared in 1.48" in acts[0].reason
    assert vr.preempt_pending_since is None and vr.preempt_ready(4.8) == []


def test_preparation_that_never_ends_is_bounded():
    vr = gated(preempt_prepare_timeout=5.0)
    lower_adverts(vr, (0.5, 1.5, 2.5))
    vr.handle_timer(MDI)
    t = 3.5
    while t < MDI + 5.0:
        lower_adverts(vr, (t,))
        assert vr.handle_timer(t) == []
        t += 1.0
    assert vr.next_deadline() == MDI + 5.0
    acts = vr.handle_timer(MDI + 5.0)
    assert norm(acts) == to_master_actions(200)
    assert "not prepared after 5.0s" in acts[0].reason


def test_the_lower_master_dying_while_we_prepare_is_still_noticed():
    vr = gated()
    lower_adverts(vr, (0.5, 1.5, 2.5))
    vr.handle_timer(MDI)
    lower_adverts(vr, (3.5,))  # its last advert
    assert vr.next_deadline() == 3.5 + MDI
    acts = vr.handle_timer(3.5 + MDI)
    assert norm(acts) == to_master_actions(200)


def test_a_higher_master_cancels_the_preparation():
    vr = gated()
    lower_adverts(vr, (0.5, 1.5, 2.5))
    vr.handle_timer(MDI)
    acts = vr.receive(advert(250, src=PEER_HIGH), 3.4)
    assert len(acts) == 1 and isinstance(acts[0], PreemptCancelled) and "priority 250" in acts[0].reason
    assert vr.state == State.BACKUP and vr.preempt_pending_since is None
    assert vr.preempt_ready(3.5) == []  # a late "ready" changes nothing
    assert vr.next_deadline() == 3.4 + MDI


def test_a_dead_master_is_taken_over_at_once_even_when_gated():
    vr = gated()  # no advert heard at all: startup's Master_Down
    assert norm(vr.handle_timer(MDI)) == to_master_actions(200)
    vr2 = gated()
    lower_adverts(vr2, (0.5,))  # heard once, then silent: alive when we start preparing...
    assert isinstance(vr2.handle_timer(MDI)[0], PreparePreempt)
    # ... and dead Master_Down_Interval after its advert: no waiting for the preparation
    assert norm(vr2.handle_timer(0.5 + MDI)) == to_master_actions(200)


def test_without_the_gate_nothing_changes():
    vr = backup(200, preempt=True, now=0.0)
    lower_adverts(vr, (0.5, 1.5, 2.5))
    assert norm(vr.handle_timer(MDI)) == to_master_actions(200)
