"""vrrpd.probes (debounced probe health) and vrrpd.uplinks (one switch per real change)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrpd.config import InstanceConfig
from vrrpd.probes import ProbeHealth
from vrrpd.tracking import Tracker
from vrrpd.uplink_config import TrackProbe
from vrrpd.uplinks import Flush, Switch, UplinkSelector

# ---- ProbeHealth ----------------------------------------------------------------------


def test_unknown_until_rise_or_fall_consecutive_results():
    h = ProbeHealth(rise=3, fall=2)
    assert h.up is None and h.state == "unknown"
    assert h.record(True) is None
    assert h.record(True) is None
    assert h.record(True) is True
    assert h.state == "up"
    assert h.record(False, "timeout") is None
    assert h.record(False, "timeout") is False
    assert h.state == "down" and h.last_error == "timeout"
    assert (h.results, h.failures, h.transitions) == (5, 2, 2)


def test_one_lost_ping_does_not_flap():
    h = ProbeHealth(rise=2, fall=3)
    for ok in (True, True):
        h.record(ok)
    assert h.up is True
    changes = [h.record(ok) for ok in (False, True, False, False, True, True, False)]
    assert changes == [None] * 7
    assert h.up is True and h.transitions == 1


def test_alternating_loss_never_changes_state():
    h = ProbeHealth(rise=3, fall=3)
    for _ in range(3):
        h.record(True)
    for i in range(200):
        assert h.record(i % 2 == 0) is None
    assert h.up is True


def test_rise_fall_of_one_follows_every_result():
    h = ProbeHealth(rise=1, fall=1)
    assert [h.record(x) for x in (True, False, False, True)] == [True, False, None, True]


def test_bad_thresholds_refused():
    with pytest.raises(ValueError):
        ProbeHealth(rise=0)


@given(st.lists(st.booleans(), max_size=300), st.integers(1, 5), st.integers(1, 5))
def test_state_changes_only_after_full_runs(results, rise, fall):
    h = ProbeHealth(rise=rise, fall=fall)
    run_value, run_len = None, 0
    for ok in results:
        run_len = run_len + 1 if ok == run_value else 1
        run_value = ok
        before = h.up
        change = h.record(ok)
        if change is not None:
            assert change == ok and before != ok
            assert run_len >= (rise if ok else fall)
        if h.up is not None:
            assert h.up == before or change is not None


# ---- UplinkSelector -------------------------------------------------------------------


def sel(**kw):
    return UplinkSelector({"ISP1": 200, "ISP2": 100}, **kw)


def test_nothing_moves_until_every_uplink_is_known():
    s = sel()
    assert s.update("ISP2", True) == []  # the backup answered first: no switch to it
    assert s.active is None
    acts = s.update("ISP1", True)
    assert acts == [Switch(None, "ISP1", "ISP1 is the best healthy uplink")]
    assert s.switches == 1


def test_switch_once_and_flush_the_dead_uplink():
    s = sel()
    s.update("ISP1", True)
    s.update("ISP2", True)
    acts = s.update("ISP1", False)
    assert acts == [Switch("ISP1", "ISP2", "ISP1 is down"), Flush("ISP1", "ISP1 is down")]
    assert s.update("ISP1", False) == []  # repeated report: no second trigger
    assert s.update("ISP2", True) == []
    back = s.update("ISP1", True)
    assert back == [Switch("ISP2", "ISP1", "ISP1 is preferred and back up")]  # ISP2 is alive: no flush
    assert s.switches == 3


def test_flush_on_return_and_no_flush():
    s = sel(flush_on_return=True)
    s.update("ISP1", True), s.update("ISP2", True), s.update("ISP1", False)
    assert Flush("ISP2", "ISP1 is preferred and back up") in s.update("ISP1", True)
    s = sel(flush=False)
    s.update("ISP1", True), s.update("ISP2", True)
    assert s.update("ISP1", False) == [Switch("ISP1", "ISP2", "ISP1 is down")]


def test_all_down_keeps_the_last_choice():
    s = sel()
    s.update("ISP1", True), s.update("ISP2", True)
    s.update("ISP2", False)  # the backup dies: nothing to do
    assert s.update("ISP1", False) == []
    assert s.all_down and s.active == "ISP1"
    acts = s.update("ISP2", True)
    assert acts[0] == Switch("ISP1", "ISP2", "ISP1 is down")


def test_equal_preference_keeps_configuration_order_and_does_not_preempt_each_other():
    s = UplinkSelector({"A": 100, "B": 100})
    s.update("B", True)
    assert s.update("A", True)[0].new == "A"
    s.update("A", False)
    assert s.active == "B"
    assert s.update("A", True)[0].new == "A"  # equal preference: order decides, documented


def test_unknown_uplink_refused():
    with pytest.raises(KeyError):
        sel().update("ISP3", True)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["ISP1", "ISP2", "ISP3"]), st.booleans()), max_size=200),
       st.integers(1, 4), st.integers(1, 4))
def test_flapping_probes_never_switch_more_than_real_changes(reports, rise, fall):
    """Raw probe results through ProbeHealth into the selector: every switch is caused by a
    debounced health change, and a switch always lands on the best healthy uplink."""
    prefs = {"ISP1": 300, "ISP2": 200, "ISP3": 100}
    s = UplinkSelector(prefs)
    health = {n: ProbeHealth(rise, fall) for n in prefs}
    real_changes = 0
    for name, ok in reports:
        change = health[name].record(ok)
        if change is None:
            continue
        real_changes += 1
        acts = s.update(name, change)
        switches = [a for a in acts if isinstance(a, Switch)]
        assert len(switches) <= 1
        if switches:
            new = switches[0].new
            assert s.healthy[new] is True
            assert prefs[new] == max(prefs[n] for n, v in s.healthy.items() if v)
        for a in acts:
            if isinstance(a, Flush):
                assert a.uplink == switches[0].old and s.healthy[a.uplink] is False
    assert s.switches <= real_changes


@given(st.integers(4, 60))
def test_alternating_loss_on_the_active_uplink_never_switches(n):
    s = sel()
    h1, h2 = ProbeHealth(3, 3), ProbeHealth(3, 3)
    for _ in range(3):
        for name, h in (("ISP1", h1), ("ISP2", h2)):
            c = h.record(True)
            if c is not None:
                s.update(name, c)
    assert s.active == "ISP1" and s.switches == 1
    for i in range(n):
        c = h1.record(i % 2 == 0)
        if c is not None:
            s.update("ISP1", c)
    assert s.switches == 1


# ---- tracking probes ------------------------------------------------------------------


def inst(tracks):
    return InstanceConfig(name="LAN", interface="eth1", vrid=2, priority=150,
                          virtual_addresses=(ipaddress.IPv4Interface("10.0.0.1/24"),), track_probes=tuple(tracks))


def test_tracked_probe_weight_and_fault():
    t = Tracker(inst([TrackProbe("ISP1", -60), TrackProbe("ISP2")]))
    t.update("eth1", True)
    assert t.effective_priority() == 90  # unknown counts as not up
    assert t.fault_reason() == "tracked probe ISP2 has no result yet"
    assert t.update_probe("ISP1", True) and t.update_probe("ISP2", True)
    assert t.effective_priority() == 150 and t.fault_reason() is None
    assert t.update_probe("ISP1", True) is False  # no change
    assert t.update_probe("ISP9", False) is False  # not tracked
    t.update_probe("ISP2", False)
    assert t.fault_reason() == "tracked probe ISP2 is down"
