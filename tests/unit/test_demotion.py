"""vrrpd.demotion: subscribers' demotions (ctsync not ready) -> priority, in virtual time."""

from __future__ import annotations

import pytest

from hacommon.handshake import MAX_DEMOTE_WEIGHT as MAX_WEIGHT
from hacommon.handshake import parse_demote as parse_request
from vrrpd.demotion import Demotion, Demotions
from vrrpd.machine import State

from .sim import Segment

GROUP = frozenset({"MAIN-GW"})


def test_weights_add_up_per_scope_and_withdraw():
    d = Demotions()
    ctsync, other = object(), object()
    assert d.set(ctsync, Demotion("ctsync", 50, GROUP, "not ready")) is True
    assert d.set(ctsync, Demotion("ctsync", 50, GROUP, "not ready")) is False  # unchanged
    assert d.weight("WAN", "MAIN-GW") == 50
    assert d.weight("WAN", None) == 0  # not in the group
    assert d.weight("DMZ", "OTHER") == 0
    assert d.set(other, Demotion("x", 20, frozenset({"WAN"}), "by name")) is True
    assert d.weight("WAN", "MAIN-GW") == 70
    assert d.weight("LAN", "MAIN-GW") == 50
    assert d.reasons("WAN", "MAIN-GW") == ["-50 ctsync: not ready", "-20 x: by name"]
    assert d.set(ctsync, None) is True
    assert d.set(ctsync, None) is False  # already gone
    assert d.weight("WAN", "MAIN-GW") == 20
    assert d.set(other, Demotion("x", 5, frozenset({"*"}), "all")) is True  # replaced
    assert d.weight("anything", None) == 5
    assert d.get(other).weight == 5


def test_parse_request():
    assert parse_request({"demote": 50, "reason": "not ready"}, GROUP) == (50, GROUP, "not ready")
    assert parse_request({"demote": 0}, GROUP) == (0, GROUP, "")
    assert parse_request({"demote": 10, "scope": ["WAN"]}, GROUP) == (10, frozenset({"WAN"}), "")
    for bad in (-1, MAX_WEIGHT + 1, "50", 1.5, True, None):
        assert "integer 0..254" in parse_request({"demote": bad}, GROUP)
    assert "scope must be" in parse_request({"demote": 5, "scope": "WAN"}, GROUP)
    assert "reason must be" in parse_request({"demote": 5, "reason": 7}, GROUP)
    assert "nothing to demote" in parse_request({"demote": 5}, frozenset())
    assert parse_request({"demote": 0}, frozenset()) == (0, frozenset(), "")


def test_demotion_through_the_machine_is_clamped():
    seg = Segment.build([{"name": "a", "ip": "10.0.0.2", "priority": 100}])
    a = seg.routers["a"]
    a.set_effective_priority(100 - 200, 0.0)
    assert a.effective_priority == 1  # never 0 (that means "leaving")


@pytest.mark.parametrize("demoted", [True, False])
def test_a_returning_router_does_not_preempt_while_demoted(demoted):
    """pfsync/CARP style: r1 (200) comes back while r2 (100) is master. Demoted by 150
    while its ctsync resyncs, r1 stays backup; once the demotion is withdrawn it
    preempts within Master_Down_Interval."""
    seg = Segment.build([{"name": "r1", "ip": "10.0.0.2", "priority": 200},
                         {"name": "r2", "ip": "10.0.0.3", "priority": 100}])
    seg.start("r2", 0.0)
    seg.run_until(5.0)
    assert seg.masters() == ["r2"]
    r1 = seg.routers["r1"]
    if demoted:
        seg.call("r1", 5.0, "set_effective_priority", 200 - 150)  # before its startup
    seg.start("r1", 5.0)
    seg.run_until(20.0)
    if not demoted:
        assert seg.masters() == ["r1"]  # the control: without the demotion it preempts at once
        return
    assert seg.masters() == ["r2"] and r1.state == State.BACKUP
    assert all(p == 100 for _, who, p in seg.sent if who == "r2")
    seg.call("r1", 20.0, "set_effective_priority", 200)  # ready: demotion withdrawn
    seg.run_until(20.0 + 3 * 1 + 1.0)
    assert seg.masters() == ["r1"]
    took_over = [t for t, name, _o, new, _ in seg.transitions if name == "r1" and new == State.MASTER]
    # The timer set by r2's last advert (before 20.0) runs out: at most Master_Down_Interval
    # as computed with the demoted priority (its skew) after the withdrawal.
    assert took_over and took_over[0] - 20.0 <= 3 + (256 - 50) / 256 + 0.01
    assert [p for t, who, p in seg.sent if who == "r1"][0] == 200
