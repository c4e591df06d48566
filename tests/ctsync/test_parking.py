"""ctsync.parking: what waits for a takeover's commit, and for how long (virtual time)."""

from __future__ import annotations

from ctsync.nfqueue import rule_lines
from ctsync.parking import ParkingLot, Verdict


def test_packets_wait_for_the_commit_then_go_oldest_first():
    lot = ParkingLot(max_hold=1.0)
    assert lot.arrive("before", 100, 0.0) is Verdict.RELEASE  # no takeover: nothing waits
    lot.takeover(1.0)
    assert [lot.arrive(i, 100, 1.0 + i / 100) for i in range(3)] == [Verdict.PARK] * 3
    assert lot.next_deadline() == 2.0
    assert lot.committed(1.5) == [0, 1, 2]
    assert lot.arrive("after", 100, 1.6) is Verdict.RELEASE
    c = lot.counters
    assert (c.parked, c.released_after_commit, c.released_on_timeout, c.passed, c.takeovers) == (3, 3, 0, 2, 1)
    assert abs(c.longest_wait - 0.5) < 1e-9
    assert "3 packets parked, 3 released after the commit" in lot.last.describe()


def test_nothing_waits_longer_than_max_hold():
    lot = ParkingLot(max_hold=1.0)
    lot.takeover(0.0)
    lot.arrive("a", 10, 0.0)
    lot.arrive("b", 10, 0.4)
    assert lot.handle_timer(0.99) == []
    assert lot.handle_timer(1.0) == ["a"]
    assert lot.next_deadline() == 1.4
    assert lot.handle_timer(1.4) == ["b"]
    assert lot.next_deadline() is None
    assert lot.waiting  # still the same takeover: later arrivals wait too
    assert lot.arrive("c", 10, 1.5) is Verdict.PARK
    assert lot.committed(1.6) == ["c"]
    assert lot.counters.released_on_timeout == 2 and lot.counters.released_after_commit == 1


def test_bounds_drop_new_arrivals_never_hold_without_end():
    lot = ParkingLot(max_hold=1.0, max_packets=2, max_bytes=250)
    lot.takeover(0.0)
    assert lot.arrive(1, 100, 0.0) is Verdict.PARK
    assert lot.arrive(2, 100, 0.0) is Verdict.PARK
    assert lot.arrive(3, 10, 0.0) is Verdict.DROP  # over max_packets
    assert lot.committed(0.1) == [1, 2]
    lot.takeover(1.0)
    assert lot.arrive(4, 200, 1.0) is Verdict.PARK
    assert lot.arrive(5, 100, 1.0) is Verdict.DROP  # over max_bytes
    assert lot.counters.dropped_over_bound == 2 and lot.counters.takeovers == 2


def test_rules_queue_tcp_and_udp_before_conntrack_and_let_released_packets_through():
    rules = rule_lines(3780, 0x10000000, ("vrrp+",))
    assert rules[0] == ["-A", "CTSYNC-PARK", "-m", "mark", "--mark", "0x10000000/0x10000000", "-g", "CTSYNC-PARKED"]
    assert rules[1] == ["-A", "CTSYNC-PARKED", "-j", "MARK", "--set-xmark", "0x0/0x10000000"]
    queued = [r for r in rules if "NFQUEUE" in r]
    assert {r[r.index("-p") + 1] for r in queued} == {"tcp", "udp"}
    assert all("--queue-bypass" in r and r[r.index("-i") + 1] == "vrrp+" for r in queued)
