"""Probe result bookkeeping, sans-IO: single results in, debounced up/down out.

A probe (ICMP echo or TCP connect through one uplink, see vrrpd/io/probe.py) reports
one success or failure per interval. `ProbeHealth` turns that stream into a health
state with hysteresis: the state becomes *up* only after `rise` consecutive successes
and *down* only after `fall` consecutive failures, so one lost ping (or a target that
loses every other one) never flaps anything. Until the first `rise`/`fall` run the
state is unknown (None): consumers treat unknown as "not up" for priorities, and the
uplink selector waits for a known state before it moves any route.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ProbeHealth:
    rise: int = 3
    fall: int = 3
    up: bool | None = None  # None: not enough results yet
    streak: int = 0  # consecutive results equal to `last`
    last: bool | None = None
    results: int = 0
    failures: int = 0
    transitions: int = 0
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall must be at least 1")

    def record(self, ok: bool, error: str = "") -> bool | None:
        """Count one result; returns the new state if it changed, else None."""
        self.results += 1
        if not ok:
            self.failures += 1
            self.last_error = error
        self.streak = self.streak + 1 if ok == self.last else 1
        self.last = ok
        needed = self.rise if ok else self.fall
        if self.up != ok and self.streak >= needed:
            self.up = ok
            self.transitions += 1
            return ok
        return None

    @property
    def state(self) -> str:
        return "unknown" if self.up is None else ("up" if self.up else "down")
