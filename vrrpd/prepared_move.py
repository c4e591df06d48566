"""A prepared preemption's move to master: ready first, then every member's advert at once.

In a preemption the subscribers prepared (make-before-break, docs/ctsync.md) the old
master's state is in our kernel before we move, and the old master keeps forwarding until
our advert. So the move does everything it can *before* that advert: each moving instance
waits for its hold (the subscribers' go for this move: milliseconds, the commit is done)
and brings its macvlan up, without VIPs, and only then do the adverts go out. A frame the
advert sends our way is forwarded at once instead of dropped until the VIPs are added. (An
IPv6 macvlan comes up right after the burst instead: coming up, it sends an MLD report from
the virtual MAC, which would move its side ahead of the others.)

For a sync group the adverts of all its members go out in one synchronous burst, once
every member is ready. Each advert moves the switch's entry for one side (one virtual
MAC). If we forwarded on the LAN side while the WAN side's frames still went to the old
master, the old master's TCP window tracking would see replies that acknowledge data it
never forwarded: INVALID, so not de-NATed, delivered to the VIP it still holds until it
hears us, and answered by its own stack with a RST. The lab's failback showed exactly
that (one connection in ten reset) when the members' links came up and advertised one
after the other, 20 ms apart on a loaded machine.

The VIPs and the GARPs come after the burst, as in any move to master. A member that is
not ready by the move's deadline (its hold, bounded by transition_hold_timeout, is late)
still has its advert sent in the burst: it then adds its link with its VIPs after its
hold, the order of an unprepared takeover. A member whose move to master comes after the
burst takes the ordinary path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .instance import InstanceDriver

log = logging.getLogger("vrrpd")


@dataclass(eq=False)
class PreparedMove:
    """One prepared move to master of an instance, or of its whole sync group."""

    key: str  # the group's name, or the instance's when it has none
    expected: frozenset[str]  # the members that will move (those in BACKUP when it began)
    deadline: float  # trio time: the burst goes out by then, whoever is ready
    started: float
    joined: dict[str, tuple["InstanceDriver", int]] = field(default_factory=dict)  # name -> (driver, advert priority)
    ready: set[str] = field(default_factory=set)
    released: trio.Event = field(default_factory=trio.Event)

    def join(self, inst: "InstanceDriver", priority: int) -> None:
        """A member moved to master: its advert waits for the burst."""
        self.joined[inst.cfg.name] = (inst, priority)

    def arrive(self, inst: "InstanceDriver") -> None:
        """A member is ready (hold over, link up): the burst goes once all are."""
        self.ready.add(inst.cfg.name)
        if self.expected <= self.ready:
            self.release()

    def release(self) -> None:
        """Every joined member that is still master sends its advert, back to back with no
        await between them, so no side is forwarded by us while another still goes to the
        old master (see the module doc)."""
        if self.released.is_set():
            return
        from .machine import State

        sent = []
        for name, (inst, priority) in self.joined.items():
            if inst.machine.state == State.MASTER:
                inst.send_advert(priority)
                sent.append(name)
        self.released.set()
        late = sorted(self.expected - self.ready)
        log.info("%s: prepared move to master, adverts of %s sent %.3fs after the move%s", self.key,
                 ", ".join(sent) or "none", trio.current_time() - self.started,
                 f" (not ready by the deadline: {', '.join(late)})" if late else "")

    async def release_at_deadline(self) -> None:
        with trio.move_on_at(self.deadline):
            await self.released.wait()
        self.release()
