"""A discrete-event simulator of VirtualRouters sharing one Ethernet segment, in virtual time.

Every SendAdvert a router emits is encoded to an Ethernet frame with the router's real
codec (VRRPv2, or VRRPv3 over IPv4 or IPv6), and each copy for every other router is
either lost (the loss function says so) or decoded with the receiver's codec and
delivered after `delay` seconds; a copy the receiver rejects is counted on it, as the
daemon does, and in `rejected`. The loop advances to the
earliest of: the next pending event (a delivery, a start, a scripted call) and the
earliest `next_deadline()` of any router. Nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

from vrrpd.codec import codec_for, parse_frame_with
from vrrpd.machine import RouterParams, SendAdvert, State, Transition, VirtualRouter
from vrrpd.packet import Rejected

# loss(now, sender, receiver) -> True to drop that copy
Loss = Callable[[float, str, str], bool]


def no_loss(now: float, sender: str, receiver: str) -> bool:
    return False


@dataclass
class Segment:
    routers: dict[str, VirtualRouter]
    delay: float = 0.001
    loss: Loss = no_loss
    now: float = 0.0
    # (time, name, old, new, reason) for every transition, in order
    transitions: list[tuple[float, str, State, State, str]] = field(default_factory=list)
    # (send time, sender, priority) for every advert sent
    sent: list[tuple[float, str, int]] = field(default_factory=list)
    # (time, name, action) for every action any router asked for
    actions: list[tuple[float, str, object]] = field(default_factory=list)
    delivered: int = 0
    lost: int = 0
    rejected: int = 0
    max_steps: int = 1_000_000
    _queue: list = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)
    _ident: itertools.count = field(default_factory=itertools.count)

    @classmethod
    def build(cls, specs: list[dict], **kw) -> "Segment":
        """specs: dicts with name, ip and any RouterParams field (vrid/addresses defaulted;
        an IPv6 ip, its link-local address, makes IPv6 instances, which need version 3)."""
        routers = {}
        for spec in specs:
            spec = dict(spec)
            name, ip = spec.pop("name"), ipaddress.ip_address(spec.pop("ip"))
            spec.setdefault("vrid", 1)
            default = ("10.0.0.254",) if ip.version == 4 else ("fe80::254", "2001:db8::254")
            spec.setdefault("virtual_addresses", tuple(map(ipaddress.ip_address, default)))
            routers[name] = VirtualRouter(RouterParams(name=name, **spec), primary_ip=ip)
        return cls(routers, **kw)

    @staticmethod
    def codec(r: VirtualRouter):
        return codec_for(r.params.version, r.params.family)

    # ---- scheduling --------------------------------------------------------------------

    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def start(self, name: str, when: float) -> None:
        self.at(when, lambda: self.apply(name, self.routers[name].start(self.now)))

    def call(self, name: str, when: float, method: str, *args) -> None:
        """Schedule e.g. call("r1", 5.0, "shutdown") or call("r1", 5.0, "set_fault", "link", "down")."""
        def run():
            self.apply(name, getattr(self.routers[name], method)(*args, self.now))
        self.at(when, run)

    # ---- the wire ----------------------------------------------------------------------

    def apply(self, name: str, actions) -> None:
        for a in actions:
            self.actions.append((self.now, name, a))
            if isinstance(a, Transition):
                self.transitions.append((self.now, name, a.old, a.new, a.reason))
            elif isinstance(a, SendAdvert):
                self.send(name, a.priority)

    def send(self, name: str, priority: int) -> None:
        r = self.routers[name]
        self.sent.append((self.now, name, priority))
        codec = self.codec(r)
        wire = codec.build_frame(r.advert(priority), r.primary_ip, codec.vmac(r.params.vrid), next(self._ident))
        for other in self.routers:
            if other == name:
                continue
            if self.loss(self.now, name, other):
                self.lost += 1
                continue
            self.at(self.now + self.delay, lambda other=other: self.deliver(other, wire))

    def deliver(self, name: str, wire: bytes) -> None:
        r = self.routers[name]
        parsed = parse_frame_with(wire, self.codec(r))
        self.delivered += 1
        if isinstance(parsed, Rejected):
            self.rejected += 1
            r.count_rejected(parsed)
            return
        if parsed.vrid == r.params.vrid:
            self.apply(name, r.receive(parsed, self.now))

    # ---- the loop ----------------------------------------------------------------------

    def next_timer(self) -> tuple[float, str | None]:
        best, who = math.inf, None
        for name, r in self.routers.items():
            d = r.next_deadline()
            if d is not None and d < best:
                best, who = d, name
        return best, who

    def run_until(self, end: float) -> None:
        for _ in range(self.max_steps):
            t_timer, who = self.next_timer()
            t_event = self._queue[0][0] if self._queue else math.inf
            t = min(t_timer, t_event)
            if t > end:
                self.now = end
                return
            self.now = t
            if t_event <= t_timer:  # deliveries first on a tie
                _, _, fn = heapq.heappop(self._queue)
                fn()
            else:
                self.apply(who, self.routers[who].handle_timer(t))
        raise AssertionError("simulation did not progress (a timer that never advances?)")

    # ---- observations -------------------------------------------------------------------

    def masters(self) -> list[str]:
        return [n for n, r in self.routers.items() if r.state == State.MASTER]

    def states(self) -> dict[str, State]:
        return {n: r.state for n, r in self.routers.items()}

    def masters_at(self, t: float) -> set[str]:
        """Who was master just after time t, rebuilt from the transition log."""
        state = {n: State.INIT for n in self.routers}
        for when, name, _old, new, _ in self.transitions:
            if when > t:
                break
            state[name] = new
        return {n for n, s in state.items() if s == State.MASTER}

    def transitions_after(self, t: float) -> list[tuple[float, str, State, State, str]]:
        return [x for x in self.transitions if x[0] > t]
