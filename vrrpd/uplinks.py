"""Uplink selection, sans-IO: uplink health in, "switch" actions out, once per real change.

The active uplink is the healthy one with the highest preference (ties: the order of
the configuration). The selector emits `Switch` only when that choice changes, so a
health report that repeats, or one about an uplink that does not change the choice,
never moves the default route twice (the double trigger of up/down scripts that fire
around one switch). Rules:

* Nothing moves until every uplink's health is known (each probe had `rise` successes
  or `fall` failures): otherwise a start-up where the backup link answers first would
  switch twice (to the backup, then back).
* With no healthy uplink, the current choice stays (there is nothing better to move
  to; moving would only add a switch) and `all_down` is set for status.
* `Flush(uplink)` follows a switch away from an uplink that is down (its NATed flows
  are dead), and, with `flush_on_return`, a switch away from a healthy uplink to a
  preferred one that came back (the flows NATed to the backup move back too).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Switch:
    old: str | None  # None: the first choice after start-up
    new: str
    reason: str


@dataclass(frozen=True)
class Flush:
    uplink: str  # flush the conntrack entries NATed to this uplink's address
    reason: str


@dataclass
class UplinkSelector:
    preferences: dict[str, int]  # name -> preference (higher wins); order breaks ties
    flush_on_return: bool = False
    flush: bool = True
    healthy: dict[str, bool | None] = field(default_factory=dict)
    active: str | None = None
    switches: int = 0

    def __post_init__(self) -> None:
        if not self.preferences:
            raise ValueError("no uplinks")
        for name in self.preferences:
            self.healthy.setdefault(name, None)

    @property
    def all_known(self) -> bool:
        return all(v is not None for v in self.healthy.values())

    @property
    def all_down(self) -> bool:
        return self.all_known and not any(self.healthy.values())

    def best(self) -> str | None:
        order = list(self.preferences)
        up = [n for n in order if self.healthy.get(n)]
        if not up:
            return None
        return max(up, key=lambda n: (self.preferences[n], -order.index(n)))

    def update(self, name: str, healthy: bool) -> list[Switch | Flush]:
        """Record one uplink's health (debounced already: see probes.ProbeHealth)."""
        if name not in self.preferences:
            raise KeyError(name)
        self.healthy[name] = healthy
        return self._decide()

    def _decide(self) -> list[Switch | Flush]:
        if not self.all_known:
            return []
        new = self.best()
        if new is None or new == self.active:
            return []
        old = self.active
        self.active = new
        self.switches += 1
        if old is None:
            return [Switch(None, new, f"{new} is the best healthy uplink")]
        old_up = bool(self.healthy.get(old))
        reason = f"{new} is preferred and back up" if old_up else f"{old} is down"
        actions: list[Switch | Flush] = [Switch(old, new, reason)]
        if self.flush and (not old_up or self.flush_on_return):
            actions.append(Flush(old, reason))
        return actions
