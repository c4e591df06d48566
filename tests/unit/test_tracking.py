"""vrrpd.tracking: link states in, effective priority and fault reason out."""

from __future__ import annotations

import ipaddress

from vrrpd.config import InstanceConfig, TrackInterface
from vrrpd.tracking import Tracker


def inst(priority=100, tracks=()):
    return InstanceConfig(
        name="WAN", interface="eth0", vrid=1, priority=priority,
        virtual_addresses=(ipaddress.IPv4Interface("10.0.0.1/24"),), track_interfaces=tuple(tracks),
    )


def test_watched_interfaces():
    t = Tracker(inst(tracks=[TrackInterface("eth2", -60), TrackInterface("eth3")]))
    assert t.watched == {"eth0", "eth2", "eth3"}


def test_update_reports_only_relevant_changes():
    t = Tracker(inst(tracks=[TrackInterface("eth2", -60)]))
    assert t.update("eth0", True) is True
    assert t.update("eth0", True) is False  # no change
    assert t.update("eth0", False) is True
    assert t.update("eth9", False) is False  # not ours
    assert "eth9" not in t.links
    assert t.update("eth2", False) is True
    assert t.links == {"eth0": False, "eth2": False}


def test_own_interface_unknown_then_down_then_up():
    t = Tracker(inst())
    assert t.fault_reason() == "interface eth0 not found"
    t.update("eth0", False)
    assert t.fault_reason() == "interface eth0 is down"
    t.update("eth0", True)
    assert t.fault_reason() is None
    assert t.effective_priority() == 100


def test_weights_change_priority_not_fault():
    t = Tracker(inst(priority=200, tracks=[TrackInterface("eth2", -60), TrackInterface("eth3", -30)]))
    t.update("eth0", True)
    # tracked links not reported yet count as down
    assert t.effective_priority() == 110
    t.update("eth2", True)
    assert t.effective_priority() == 170
    t.update("eth3", True)
    assert t.effective_priority() == 200
    t.update("eth2", False)
    assert t.effective_priority() == 140
    assert t.fault_reason() is None


def test_positive_weight():
    t = Tracker(inst(priority=100, tracks=[TrackInterface("eth2", 50)]))
    t.update("eth0", True)
    t.update("eth2", False)
    assert t.effective_priority() == 150  # the machine clamps, not the tracker
    t.update("eth2", True)
    assert t.effective_priority() == 100


def test_unweighted_track_is_a_fault():
    t = Tracker(inst(tracks=[TrackInterface("eth2"), TrackInterface("eth3", -10)]))
    t.update("eth0", True)
    t.update("eth3", True)
    assert t.fault_reason() == "tracked interface eth2 is down"  # unknown counts as down
    t.update("eth2", True)
    assert t.fault_reason() is None
    t.update("eth2", False)
    assert t.fault_reason() == "tracked interface eth2 is down"
    assert t.effective_priority() == 100  # weight 0 never changes the priority


def test_own_interface_fault_is_reported_first():
    t = Tracker(inst(tracks=[TrackInterface("eth2")]))
    t.update("eth0", False)
    t.update("eth2", False)
    assert t.fault_reason() == "interface eth0 is down"


def test_own_interface_also_tracked_with_weight():
    t = Tracker(inst(tracks=[TrackInterface("eth0", -20)]))
    t.update("eth0", False)
    assert t.fault_reason() == "interface eth0 is down"
    assert t.effective_priority() == 80
