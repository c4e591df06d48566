"""Parking, sans-IO: which packets wait for a takeover's commit, and for how long.

While a router takes over and its commit is still running, a packet of a connection the
kernel does not know yet would be dropped as INVALID by a strict ruleset, or answered
with a RST by a permissive one. OpenBSD's pfsync "defer" holds such packets instead; this
is the same idea on Linux: the driver (ctsync/nfqueue.py) queues the packets that arrive
on the virtual addresses' interfaces (NFQUEUE, before conntrack), hands each to
:meth:`ParkingLot.arrive`, and carries out the verdicts: a parked packet is released
(re-injected before conntrack, so it meets the committed entry) as soon as the commit is
done, or after ``max_hold`` whatever happens; past ``max_packets`` or ``max_bytes`` new
arrivals are dropped (the sender retransmits), so nothing is ever held without bound.

The lot knows nothing of sockets or clocks: packets are opaque handles, time is ``now``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    PARK = "park"  # keep it: released later by committed() or handle_timer()
    RELEASE = "release"  # let it go on now (to conntrack and the ruleset)
    DROP = "drop"  # over a bound: the sender will retransmit


@dataclass
class ParkingCounters:
    parked: int = 0
    released_after_commit: int = 0
    released_on_timeout: int = 0
    dropped_over_bound: int = 0
    passed: int = 0  # arrived while no commit was running: released at once
    takeovers: int = 0
    longest_wait: float = 0.0  # seconds, over all takeovers


@dataclass
class TakeoverReport:
    """What one takeover's parking did (for the log line and the status)."""

    parked: int = 0
    released_after_commit: int = 0
    released_on_timeout: int = 0
    dropped_over_bound: int = 0
    longest_wait: float = 0.0

    def describe(self) -> str:
        return (f"{self.parked} packets parked, {self.released_after_commit} released after the commit, "
                f"{self.released_on_timeout} released on timeout, {self.dropped_over_bound} dropped over bound; "
                f"longest wait {self.longest_wait * 1000:.0f} ms")


@dataclass
class ParkingLot:
    max_hold: float = 1.0
    max_packets: int = 10000
    max_bytes: int = 16 << 20
    counters: ParkingCounters = field(default_factory=ParkingCounters)

    def __post_init__(self) -> None:
        self._waiting = False  # a takeover commit is running: arrivals wait for it
        self._lot: deque[tuple[float, object, int]] = deque()  # (arrival, handle, size), oldest first
        self._bytes = 0
        self.current: TakeoverReport | None = None
        self.last: TakeoverReport | None = None

    @property
    def waiting(self) -> bool:
        return self._waiting

    def __len__(self) -> int:
        return len(self._lot)

    def takeover(self, now: float) -> None:
        """A takeover's commit starts: from now on arrivals wait for committed()."""
        if not self._waiting:
            self._waiting = True
            self.counters.takeovers += 1
            self.current = TakeoverReport()

    def arrive(self, handle: object, size: int, now: float) -> Verdict:
        if not self._waiting:
            self.counters.passed += 1
            return Verdict.RELEASE
        if len(self._lot) >= self.max_packets or self._bytes + size > self.max_bytes:
            self.counters.dropped_over_bound += 1
            self.current.dropped_over_bound += 1
            return Verdict.DROP
        self._lot.append((now, handle, size))
        self._bytes += size
        self.counters.parked += 1
        self.current.parked += 1
        return Verdict.PARK

    def committed(self, now: float) -> list[object]:
        """The commit is done: every parked packet goes, oldest first; later arrivals pass."""
        out = self._take(len(self._lot), now)
        self.counters.released_after_commit += len(out)
        if self.current is not None:
            self.current.released_after_commit += len(out)
            self.last, self.current = self.current, None
        self._waiting = False
        return out

    def handle_timer(self, now: float) -> list[object]:
        """Packets parked ``max_hold`` ago or more go on to the ruleset, commit or not."""
        n = 0
        for arrived, _, _ in self._lot:
            if now < arrived + self.max_hold:  # the same sum as next_deadline(): no float disagreement
                break
            n += 1
        out = self._take(n, now)
        self.counters.released_on_timeout += len(out)
        if self.current is not None:
            self.current.released_on_timeout += len(out)
        return out

    def next_deadline(self) -> float | None:
        return self._lot[0][0] + self.max_hold if self._lot else None

    def _take(self, n: int, now: float) -> list[object]:
        out = []
        for _ in range(n):
            arrived, handle, size = self._lot.popleft()
            self._bytes -= size
            wait = now - arrived
            if wait > self.counters.longest_wait:
                self.counters.longest_wait = wait
            if self.current is not None and wait > self.current.longest_wait:
                self.current.longest_wait = wait
            out.append(handle)
        return out
