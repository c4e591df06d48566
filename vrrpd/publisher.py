"""What vrrpd tells the world when an instance changes state: the transition goes to the
event subscribers (hacommon.handshake, with the hold that lets ctsync commit before the
VIPs move), to the instance's notify hook, and to its sync group, whose commands go to
the other members. Probe and uplink events go to the subscribers that asked for them.

The instance drivers (vrrpd/instance.py) call :meth:`Publisher.transition` for every
transition their machine reports, and wait for what it returns before adding the VIPs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import trio

from hacommon import handshake as hs

from .group import GROUP_FAULT_KEY, SyncGroup
from .machine import State, Transition
from .notify import DEFAULT_TIMEOUT, HookQueue, run_hook

log = logging.getLogger("vrrpd")


@dataclass(eq=False)
class Subscriber:
    """One `events` client; with hold groups, it gates moves to master."""

    name: str
    send: trio.MemorySendChannel
    hold_on: frozenset[str] = frozenset()
    pending: dict[int, trio.Event] = field(default_factory=dict)
    uplink_events: bool = False  # also probe/uplink events (asked with "uplinks": true)
    prepares: bool = False  # prepares preemptions of the instances it holds ("prepare": true)
    # group -> the hold of the group's current move to master, which every member shares
    # (only for a group the subscriber named: its one commit covers the whole group)
    group_moves: dict[str, trio.Event] = field(default_factory=dict)

    def holds(self, instance: str, group: str | None) -> bool:
        return bool(self.hold_on) and ("*" in self.hold_on or instance in self.hold_on or (group is not None and group in self.hold_on))

    def holds_group(self, group: str | None) -> bool:
        return group is not None and group in self.hold_on

    def hold(self, hold_id: int) -> trio.Event:
        ev = self.pending[hold_id] = trio.Event()
        return ev

    def ack(self, hold_id: int) -> None:
        ev = self.pending.pop(hold_id, None)
        if ev is not None:
            ev.set()

    def offer(self, msg: hs.Message) -> bool:
        try:
            self.send.send_nowait(msg)
            return True
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.release_all()
            return False

    def release_all(self) -> None:
        """A subscriber that is gone must not hold anything up."""
        for ev in self.pending.values():
            ev.set()
        self.pending.clear()


class Publisher:
    """Subscribers, hooks and sync groups of one daemon.

    ``deliver(member, command)`` hands a sync-group command to a member instance's
    driver; ``spawn(async_fn)`` runs a task in the daemon's nursery; ``instance(name)``
    is a member's driver (or None)."""

    def __init__(self, deliver: Callable[[str, object], None], spawn: Callable,
                 instance: Callable[[str], object] = lambda name: None, instances: Callable = lambda: ()):
        self.subscribers: set[Subscriber] = set()
        self.groups: dict[str, SyncGroup] = {}
        self._deliver = deliver
        self._instance = instance
        self._instances = instances  # the instance drivers, for the state a new subscriber starts from
        self.hooks = HookQueue(spawn)  # one queue per instance and group: hooks run in order
        self.notify_timeout = DEFAULT_TIMEOUT
        self._group_notify: dict[str, tuple[str, ...]] = {}  # group -> its own notify command
        self._group_state: dict[str, State] = {}  # the state its hook last announced
        self._hold_ids = 0

    # ---- subscribers -------------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        """A new subscriber; its stream starts with every instance's current state (a
        Transition with ``current`` set), so one that comes after a move to master (ctsync
        started after vrrpd, or reconnecting) knows where the group stands."""
        self.subscribers.add(sub)
        if sub.hold_on:
            log.info("subscriber %s holds moves to master of %s", sub.name, ", ".join(sorted(sub.hold_on)))
        for inst in self._instances():
            st = inst.machine.state.value
            self._offer(sub, hs.Transition(inst.since or time.time(), inst.name, inst.group, inst.cfg.interface,
                                           inst.cfg.vrid, st, st, "current state when subscribed",
                                           inst.machine.effective_priority, None, current=True))

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.release_all()
        if sub.hold_on:
            log.info("subscriber %s went away", sub.name)

    def _offer(self, sub: Subscriber, msg: hs.Message) -> bool:
        if sub.offer(msg):
            return True
        self.subscribers.discard(sub)  # a stuck reader is dropped, never waited for
        log.warning("event subscriber %s dropped: it fell too far behind", sub.name)
        return False

    def notice(self, body: dict) -> None:
        """A probe or uplink event, to the subscribers that asked for them."""
        for sub in list(self.subscribers):
            if sub.uplink_events:
                self._offer(sub, hs.Notice(body))

    # ---- transitions -------------------------------------------------------------------

    def transition(self, inst, t: Transition, forced: bool, hooks: list | None) -> list[trio.Event]:
        """Publish a transition of instance driver ``inst``; returns what a move to
        master must wait for before its VIPs are added. A hook is appended to ``hooks``
        when given (the caller runs them: shutdown), else started at once."""
        inst.since = time.time()
        log.info(
            "%s: %s -> %s (%s)", inst.name, t.old.value, t.new.value, t.reason,
            extra={"fields": {"event": "transition", "instance": inst.name, "old": t.old.value, "new": t.new.value, "reason": t.reason}},
        )
        holders = [s for s in self.subscribers if t.new == State.MASTER and s.holds(inst.name, inst.group)]
        # A subscriber that holds a group commits once for the group's move to master: the
        # members that follow the first one wait for that same hold (no hold of their own,
        # so no second round trip after the commit: in the lab's failback timeline the
        # second member's VIPs came 11-14 ms after the first's for it).
        shared = {s: s.group_moves[inst.group] for s in holders if s.holds_group(inst.group) and inst.group in s.group_moves}
        hold_id = None
        if len(shared) < len(holders):
            self._hold_ids += 1
            hold_id = self._hold_ids
        if t.new != State.MASTER:
            for sub in self.subscribers:
                sub.group_moves.pop(inst.group, None)  # the group's next move to master is held anew
        msg = hs.Transition(inst.since, inst.name, inst.group, inst.cfg.interface, inst.cfg.vrid, t.old.value, t.new.value,
                            t.reason, inst.machine.effective_priority, hold_id)
        held: list[trio.Event] = []
        for sub in list(self.subscribers):
            waiter = None
            if sub in shared:
                waiter = shared[sub]
            elif sub in holders:
                waiter = sub.hold(hold_id)
                if sub.holds_group(inst.group):
                    sub.group_moves[inst.group] = waiter
            if self._offer(sub, msg) and waiter is not None:
                held.append(waiter)
        if inst.cfg.notify and t.new != State.INIT:
            timeout = self.notify_timeout
            hook = lambda: run_hook(inst.cfg.notify, inst.name, inst.group, t.new.value, inst.hook_env(t.reason, t.old.value),
                                    timeout)
            if hooks is not None:
                hooks.append(hook)
            else:
                self.hooks.submit(inst.name, hook)
        if inst.group in self.groups:
            self._group_commands(self.groups[inst.group].on_transition(inst.name, t.old, t.new, forced=forced))
            if hooks is None:
                self._maybe_group_hook(inst.group, t.reason)
        return held

    def _maybe_group_hook(self, group: str, reason: str) -> None:
        """A sync group's own notify runs once all its members have reached one state
        (master, backup or fault), once per such state."""
        cmd = self._group_notify.get(group)
        if not cmd:
            return
        states = set()
        for name in self.groups[group].members:
            member = self._instance(name)
            if member is None:
                return
            states.add(member.machine.state)
        if len(states) != 1:
            return
        state = states.pop()
        if state == State.INIT or self._group_state.get(group) == state:
            return
        self._group_state[group] = state
        timeout = self.notify_timeout
        env = {"VRRP_REASON": reason, "VRRP_MEMBERS": ",".join(self.groups[group].members)}
        self.hooks.submit(f"group {group}", lambda: run_hook(cmd, "", group, state.value, env, timeout))

    # ---- make-before-break preemption ---------------------------------------------------

    def prepare(self, inst, reason: str) -> list[trio.Event]:
        """``inst`` is about to preempt a live lower-priority master: ask the subscribers
        that hold it and prepare preemptions; returns what to wait for (nothing: go)."""
        preparers = [s for s in self.subscribers if s.prepares and s.holds(inst.name, inst.group)]
        if not preparers:
            return []
        self._hold_ids += 1
        msg = hs.Prepare(self._hold_ids, inst.name, inst.group, reason)
        log.info("%s: about to preempt (%s); asking %s to prepare", inst.name, reason, ", ".join(s.name for s in preparers))
        held = []
        for sub in preparers:
            waiter = sub.hold(self._hold_ids)
            if self._offer(sub, msg):
                held.append(waiter)
        return held

    def prepare_cancelled(self, inst, reason: str) -> None:
        log.info("%s: preemption cancelled: %s", inst.name, reason)
        msg = hs.PrepareCancelled(inst.name, inst.group, reason)
        for sub in list(self.subscribers):
            if sub.prepares and sub.holds(inst.name, inst.group):
                self._offer(sub, msg)

    # ---- sync groups -------------------------------------------------------------------

    def rebuild_groups(self, configs, members: set[str]) -> None:
        """New sync groups from the configuration; a group whose members did not change
        keeps which of them are faulty."""
        old = self.groups
        self.groups = {}
        self._group_notify = {g.name: g.notify for g in configs}
        for g in configs:
            grp = SyncGroup(g.name, g.instances)
            if g.name in old and old[g.name].members == g.instances:
                grp.faulty = {m for m in old[g.name].faulty if m in members}
            self.groups[g.name] = grp

    def member_fault(self, inst) -> None:
        """Tell the sync group whether this member has a fault of its own."""
        if inst.group in self.groups:
            own = bool(set(inst.machine.fault_reasons) - {GROUP_FAULT_KEY})
            self._group_commands(self.groups[inst.group].on_fault(inst.name, own))

    def _group_commands(self, commands: list) -> None:
        for member, cmd in commands:
            self._deliver(member, cmd)
