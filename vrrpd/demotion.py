"""Priority demotions asked for by event subscribers, sans-IO.

A subscriber of the control socket (ctsync) can ask vrrpd to lower the priority of the
instances of its sync groups while it is not fit to be master: a backup ctsync that has
not received its peer's whole table yet would commit a partial state, so it asks for a
demotion until its bulk resync is done (as pfsync demotes CARP). It works like a tracked
interface with a weight: while the demotion stands, the instance advertises (and
compares against the master) priority minus the weight. The demotion ends when the
subscriber withdraws it or goes away. The request itself is hacommon.handshake.Demote.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Demotion:
    source: str  # who asks, e.g. "ctsync"
    weight: int  # 1..254, subtracted from the priority
    scope: frozenset[str]  # sync group or instance names it applies to ("*": all)
    reason: str

    def applies(self, instance: str, group: str | None) -> bool:
        return "*" in self.scope or instance in self.scope or (group is not None and group in self.scope)

    def describe(self) -> str:
        return f"-{self.weight} {self.source}: {self.reason}"


class Demotions:
    """The demotions in force, by key (one per subscriber)."""

    def __init__(self) -> None:
        self._by_key: dict[object, Demotion] = {}

    def set(self, key: object, demotion: Demotion | None) -> bool:
        """Set, replace or (None) withdraw the demotion of one subscriber; True if
        something changed."""
        if demotion is None:
            return self._by_key.pop(key, None) is not None
        if self._by_key.get(key) == demotion:
            return False
        self._by_key[key] = demotion
        return True

    def get(self, key: object) -> Demotion | None:
        return self._by_key.get(key)

    def applying(self, instance: str, group: str | None) -> list[Demotion]:
        return [d for d in self._by_key.values() if d.applies(instance, group)]

    def weight(self, instance: str, group: str | None) -> int:
        return sum(d.weight for d in self.applying(instance, group))

    def reasons(self, instance: str, group: str | None) -> list[str]:
        return [d.describe() for d in self.applying(instance, group)]
