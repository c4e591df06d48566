"""Sync groups: instances that move together, sans-IO (Vyatta's `sync-group MAIN-GW`).

When one member becomes master on its own (its timer, a preemption), the others are
forced to master; when one falls from master to backup, the others follow; while any
member is in FAULT on its own account, the others are held in FAULT so the peer router
takes every address of the group, not only the broken side's.

Forced moves never propagate again: the driver tells `on_transition` whether the move
it reports was caused by this group, which keeps one event from echoing around. Faults
are followed separately (`on_fault`), from each member's own fault causes rather than
from its transitions, since a member already held in FAULT makes no transition when a
fault of its own appears.
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
    held: dict[str, str | None] = field(default_factory=dict)  # hold reason last sent to each member

    def on_transition(self, member: str, old: State, new: State, *, forced: bool) -> list[tuple[str, GroupCommand]]:
        """A member moved between BACKUP and MASTER: the others follow (unless forced)."""
        if forced:
            return []
        others = [m for m in self.members if m != member]
        if new == State.MASTER:
            why = f"sync group {self.name}: {member} became master"
            return [(m, Force(State.MASTER, why)) for m in others]
        if old == State.MASTER and new == State.BACKUP:
            why = f"sync group {self.name}: {member} fell back to backup"
            return [(m, Force(State.BACKUP, why)) for m in others]
        return []

    def on_fault(self, member: str, own_fault: bool) -> list[tuple[str, GroupCommand]]:
        """A member's own fault appeared or cleared (whatever its state: a member already
        held in FAULT by the group can get a fault of its own, and must then hold the
        others when the first one recovers). Returns the hold changes for every member."""
        if own_fault == (member in self.faulty):
            return []
        if own_fault:
            self.faulty.add(member)
        else:
            self.faulty.discard(member)
        cmds: list[tuple[str, GroupCommand]] = []
        for m in self.members:
            culprits = [x for x in self.members if x in self.faulty and x != m]
            reason = f"sync group {self.name}: {', '.join(culprits)} in fault" if culprits else None
            if self.held.get(m) != reason:
                self.held[m] = reason
                cmds.append((m, HoldFault(reason)))
        return cmds
