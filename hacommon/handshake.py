"""The hand-shake between vrrpd and its event subscribers (ctsync), as typed messages.

It runs over vrrpd's control socket, one JSON object per line. This module is the only
place that knows the field names: vrrpd's control server and ctsync's follower build and
read these classes, never dicts.

    subscriber -> vrrpd   Subscribe    first line: {"cmd": "events", "name": "ctsync",
                                       "hold": ["MAIN-GW"], "uplinks": false, "prepare": true}
    vrrpd -> subscriber   Subscribed   {"ok": true, "subscribed": true, "hold": [...]}
    vrrpd -> subscriber   Transition   one per state change of an instance; a move to master
                                       of an instance the subscriber holds carries "hold_id".
                                       The stream starts with one per instance, "current": true,
                                       old = new = its state then (a subscriber that comes after
                                       the move to master, e.g. ctsync started after vrrpd with
                                       0.05 s adverts, learns that the group is master)
    vrrpd -> subscriber   Prepare      {"prepare": HOLD_ID, "instance", "group", "reason"}: a held
                                       instance is about to preempt a live lower-priority
                                       master (to subscribers that asked "prepare": true)
    vrrpd -> subscriber   PrepareCancelled  {"prepare_cancelled": true, ...}: it will not after all
    subscriber -> vrrpd   Ack          {"ack": HOLD_ID}: done, the held transition (or the
                                       preemption being prepared) may go on
    subscriber -> vrrpd   Demote       {"demote": W, "reason": "...", "scope": [...]}: lower
                                       the priority of those instances by W (0 withdraws)
    vrrpd -> subscriber   Refused      {"ok": false, "error": "..."}
    vrrpd -> subscriber   Notice       any other event object (probe and uplink events,
                                       {"kind": ...}: docs/uplinks.md), passed through

The hold: vrrpd sends the advert of a move to master at once, but adds the virtual
addresses and sends gratuitous ARP only when every holding subscriber has acked, or
``transition_hold_timeout`` has passed. That is how ctsync commits the replicated state
before the addresses move (docs/ctsync.md). The preparation: a backup about to preempt
a live master (make-before-break failback) asks its preparing subscribers first and sends
the advert that preempts only once they have acked (or ``preempt_prepare_timeout``): ctsync
commits the master's table while the master still forwards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

MAX_DEMOTE_WEIGHT = 254


class HandshakeError(Exception):
    """A line of the hand-shake that does not make sense; the text says why."""


@dataclass(frozen=True)
class Subscribe:
    name: str = "anonymous"
    hold: tuple[str, ...] = ()  # sync group or instance names whose moves to master wait for us ("*": all)
    uplinks: bool = False  # also probe and uplink events
    prepare: bool = False  # also Prepare for preemptions of held instances (make-before-break)

    def to_dict(self) -> dict:
        return {"cmd": "events", "name": self.name, "hold": list(self.hold), "uplinks": self.uplinks,
                "prepare": self.prepare}


@dataclass(frozen=True)
class Subscribed:
    hold: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"ok": True, "subscribed": True, "hold": sorted(self.hold)}


@dataclass(frozen=True)
class Transition:
    time: float
    instance: str
    group: str | None
    interface: str
    vrid: int
    old: str
    new: str
    reason: str
    priority: int
    hold_id: int | None = None
    current: bool = False  # not a change: the state at subscription (old == new)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.hold_id is None:
            del d["hold_id"]
        if not self.current:
            del d["current"]
        return d

    def concerns(self, name: str) -> bool:
        """Is this a transition of instance or sync group ``name``?"""
        return name in (self.group, self.instance)


@dataclass(frozen=True)
class Prepare:
    hold_id: int
    instance: str
    group: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"prepare": self.hold_id, "instance": self.instance, "group": self.group, "reason": self.reason}

    def concerns(self, name: str) -> bool:
        return name in (self.group, self.instance)


@dataclass(frozen=True)
class PrepareCancelled:
    instance: str
    group: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"prepare_cancelled": True, "instance": self.instance, "group": self.group, "reason": self.reason}

    def concerns(self, name: str) -> bool:
        return name in (self.group, self.instance)


@dataclass(frozen=True)
class Ack:
    hold_id: int

    def to_dict(self) -> dict:
        return {"ack": self.hold_id}


class Demote(NamedTuple):
    """Lower the priority of the instances in ``scope`` by ``weight`` (0: withdraw)."""

    weight: int
    scope: frozenset[str]
    reason: str = ""

    def to_dict(self) -> dict:
        return {"demote": self.weight, "reason": self.reason, "scope": sorted(self.scope)}


@dataclass(frozen=True)
class Refused:
    error: str

    def to_dict(self) -> dict:
        return {"ok": False, "error": self.error}


@dataclass(frozen=True)
class Notice:
    """Any other event vrrpd streams (probe and uplink events); kept as its object."""

    body: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.body


Message = Subscribe | Subscribed | Transition | Prepare | PrepareCancelled | Ack | Demote | Refused | Notice


def encode(msg: Message) -> bytes:
    """One message as a JSON line."""
    return json.dumps(msg.to_dict(), default=str).encode() + b"\n"


def _str_list(v, what: str) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise HandshakeError(f"{what} must be a list of sync group or instance names")
    return tuple(v)


def parse_subscribe(req: dict) -> Subscribe:
    """The first line of a subscriber (its ``cmd`` already known to be "events")."""
    hold = _str_list(req.get("hold") or [], "hold")
    name = req.get("name")
    return Subscribe(str(name) if name else "anonymous", hold, req.get("uplinks") is True, req.get("prepare") is True)


def parse_demote(msg: dict, default_scope: frozenset[str]) -> Demote | str:
    """A subscriber's demote line -> :class:`Demote`, or an error text. The weight is
    0..254 (0 withdraws); the scope defaults to the sync groups the subscriber holds."""
    w = msg.get("demote")
    if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= MAX_DEMOTE_WEIGHT:
        return f"demote must be an integer 0..{MAX_DEMOTE_WEIGHT}, got {w!r}"
    reason = msg.get("reason", "")
    if not isinstance(reason, str):
        return "reason must be a string"
    scope = msg.get("scope")
    if scope is None:
        scope = default_scope
    elif not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
        return "scope must be a list of sync group or instance names"
    scope = frozenset(scope)
    if w and not scope:
        return "nothing to demote: give a scope or hold a sync group"
    return Demote(w, scope, reason[:200])


def parse_from_subscriber(msg: dict, default_scope: frozenset[str]) -> Ack | Demote | str | None:
    """A line a subscriber writes after subscribing: :class:`Ack`, :class:`Demote`, an
    error text for a bad demote line, or None for anything else (ignored)."""
    ack = msg.get("ack")
    if isinstance(ack, int) and not isinstance(ack, bool):
        return Ack(ack)
    if "demote" in msg:
        return parse_demote(msg, default_scope)
    return None


def parse_from_vrrpd(line: bytes) -> Subscribed | Transition | Prepare | PrepareCancelled | Refused | Notice:
    """A line vrrpd writes to a subscriber; :class:`HandshakeError` if it is not one."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise HandshakeError(f"not JSON: {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise HandshakeError("not a JSON object")
    if obj.get("ok") is False:
        return Refused(str(obj.get("error", "")))
    if obj.get("subscribed") is True:
        return Subscribed(_str_list(obj.get("hold") or [], "hold"))
    group = obj.get("group")
    if group is not None and not isinstance(group, str):
        raise HandshakeError("group must be a name or null")
    prep = obj.get("prepare")
    if isinstance(prep, int) and not isinstance(prep, bool) and "instance" in obj:
        return Prepare(prep, str(obj["instance"]), group, str(obj.get("reason", "")))
    if obj.get("prepare_cancelled") is True and "instance" in obj:
        return PrepareCancelled(str(obj["instance"]), group, str(obj.get("reason", "")))
    if "new" in obj and "instance" in obj:
        try:
            hold_id = obj.get("hold_id")
            return Transition(float(obj.get("time", 0.0)), str(obj["instance"]), group,
                              str(obj.get("interface", "")), int(obj.get("vrid", 0)), str(obj.get("old", "")),
                              str(obj["new"]), str(obj.get("reason", "")), int(obj.get("priority", 0)),
                              hold_id if isinstance(hold_id, int) and not isinstance(hold_id, bool) else None,
                              obj.get("current") is True)
        except (TypeError, ValueError) as e:
            raise HandshakeError(f"bad transition: {e}") from None
    return Notice(obj)
