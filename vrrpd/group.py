"""Sync groups: instances that move together, sans-IO (Vyatta's `sync-group MAIN-GW`).

When one member becomes master on its own (its timer, a preemption), the others are
forced to master; when one falls from master to backup, the others follow; while any
member is in FAULT on its own account, the others are held in FAULT so the peer router
takes every address of the group, not only the broken side's.

Forced moves never propagate again: the driver tells `on_transition` whether the move
it reports was caused by this group, which keeps one event from echoing around.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .machine import State

GROUP_FAULT_KEY = "group"


@dataclass(frozen=True)
class Force:
    state: State
    reason: str


@dataclass(frozen=True)
class HoldFault:
    reason: str | None  # None releases the hold


GroupCommand = Force | HoldFault


@dataclass
class SyncGroup:
    name: str
    members: tuple[str, ...]
    faulty: set[str] = field(default_factory=set)  # members in FAULT on their own account

    def on_transition(
        self, member: str, old: State, new: State, *, forced: bool, own_fault: bool = True
    ) -> list[tuple[str, GroupCommand]]:
        others = [m for m in self.members if m != member]
        if new == State.FAULT and own_fault:
            self.faulty.add(member)
            why = f"sync group {self.name}: {member} is in fault"
            return [(m, HoldFault(why)) for m in others if m not in self.faulty]
        if old == State.FAULT and member in self.faulty and new != State.FAULT:
            self.faulty.discard(member)
            if not self.faulty:
                return [(m, HoldFault(None)) for m in others]
            return []
        if forced:
            return []
        if new == State.MASTER:
            why = f"sync group {self.name}: {member} became master"
            return [(m, Force(State.MASTER, why)) for m in others]
        if old == State.MASTER and new == State.BACKUP:
            why = f"sync group {self.name}: {member} fell back to backup"
            return [(m, Force(State.BACKUP, why)) for m in others]
        return []
