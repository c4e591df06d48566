"""vrrpd's control socket: a Unix stream socket speaking JSON lines (hacommon.control).

Request: one JSON object per line, e.g. {"cmd": "status"}. Replies:
- status:  {"ok": true, "daemon": {...}, "instances": [InstanceStatus.to_dict(), ...]}
- metrics: {"ok": true, "text": "<Prometheus exposition>"} (vrrpd/metrics.py, the registry
           metrics_listen serves too)
- events:  a subscription (hacommon.handshake): {"ok": true, "subscribed": true}, then one
           JSON object per transition, until the client closes. A reader that falls 256
           events behind is disconnected rather than slowing the daemon down.
           With {"cmd": "events", "name": "ctsync", "hold": ["MAIN-GW"]} the subscriber
           also *holds* transitions to master of the instances of those sync groups (or
           instance names; "*" for all): such an event carries "hold_id": N, and vrrpd
           sends its adverts at once but adds the virtual addresses and sends gratuitous
           ARP only once the subscriber has written {"ack": N} back on the same socket,
           or transition_hold_timeout has passed (logged, counted as hold_timeouts).
           This is how ctsync commits the replicated state before the VIPs move.
           With "prepare": true it also gets {"prepare": N, ...} when a held instance
           is about to preempt a live lower-priority master, and vrrpd sends the
           preempting advert only after {"ack": N} (or preempt_prepare_timeout): ctsync
           commits the master's table first (make-before-break failback).
           On the same socket a subscriber may write {"demote": W, "reason": "..."}
           (optionally "scope": [names]; default: the groups it holds): the priority of
           those instances is lowered by W (1..254) until it writes {"demote": 0} or
           goes away (vrrpd.demotion; ctsync asks for it while not ready). A bad demote
           line is answered with {"ok": false, "error": "..."} on the stream.
           With "uplinks": true the stream also carries probe and uplink events
           ({"kind": "probe"|"uplink"|"uplink_flush", ...}; see docs/uplinks.md).
Anything else gets {"ok": false, "error": "..."}.

status, metrics and events are open to whoever can connect (the socket is 0660, see
hacommon.control); holding transitions and demoting need uid 0 or a member of
``control_group`` ({"ok": false, "error": "permission denied: ..."} otherwise).
"""

from __future__ import annotations

import logging
import os

import trio

from hacommon import handshake as hs
from hacommon.control import (
    BadRequest,
    LineReader,
    LineTooLong,
    Peer,
    UnixControlServer,
    parse_json_object,
    send_json,
)

from .demotion import Demotion
from .publisher import Subscriber

log = logging.getLogger("vrrpd")

#: Events a subscriber may fall behind before it is dropped.
SUBSCRIBER_BACKLOG = 256


class ControlServer(UnixControlServer):
    prog = "vrrpd"

    async def _serve(self, stream: trio.SocketStream, peer: Peer) -> None:
        reader = LineReader(stream)
        try:
            line = await reader.next_line()
        except LineTooLong as e:
            await send_json(stream, self.bad_request(f"request too long: {e}"))
            return
        try:
            req = parse_json_object(line or b"")
        except BadRequest as e:
            await send_json(stream, self.bad_request(f"bad request: {e}; try status, metrics, events"))
            return
        cmd = req.get("cmd")
        if cmd == "status":
            await send_json(stream, self._status())
        elif cmd == "metrics":
            from .metrics import render

            await send_json(stream, {"ok": True, "text": render(self.daemon.metrics_registry())})
        elif cmd == "events":
            await self._events(stream, req, reader, peer)
        else:
            shown = (line or b"")[:80].decode(errors="replace")
            await send_json(stream, self.bad_request(f"unknown request {shown!r}; try status, metrics, events"))

    def _status(self) -> dict:
        d = self.daemon
        reply = {
            "ok": True,
            "daemon": {"pid": os.getpid(), "config": d.cfg.path, "started_at": d.started_at, "control": self.stats.to_dict()},
            "instances": [s.to_dict() for s in d.status()],
        }
        if getattr(d, "uplinkd", None) is not None:
            reply["uplinks"] = d.uplinkd.status().to_dict()
        return reply

    async def _events(self, stream: trio.SocketStream, req: dict, reader: LineReader, peer: Peer) -> None:
        try:
            sub_req = hs.parse_subscribe(req)
        except hs.HandshakeError as e:
            self.stats.bad_requests += 1
            await stream.send_all(hs.encode(hs.Refused(str(e))))
            return
        if sub_req.hold and not self.allowed(peer):  # holding delays the VIPs of a move to master
            await send_json(stream, self.refuse(peer, f"events holding {', '.join(sub_req.hold)}"))
            return
        send, recv = trio.open_memory_channel(SUBSCRIBER_BACKLOG)
        sub = Subscriber(sub_req.name, send, frozenset(sub_req.hold), uplink_events=sub_req.uplinks,
                         prepares=sub_req.prepare)
        publisher = self.daemon.publisher
        publisher.add(sub)
        try:
            await stream.send_all(hs.encode(hs.Subscribed(sub_req.hold)))
            async with trio.open_nursery() as n:
                n.start_soon(self._read_subscriber, reader, sub, n.cancel_scope, self.allowed(peer), peer)
                async with recv:
                    async for msg in recv:
                        await stream.send_all(hs.encode(msg))
        finally:
            publisher.remove(sub)
            self.daemon.set_demotion(sub, None)  # a subscriber that is gone demotes nothing

    async def _read_subscriber(self, reader: LineReader, sub: Subscriber, scope: trio.CancelScope,
                               allowed: bool, peer: Peer) -> None:
        """Acks and demotions the subscriber writes after subscribing."""
        try:
            while (line := await reader.next_line()) is not None:
                try:
                    msg = hs.parse_from_subscriber(parse_json_object(line), sub.hold_on)
                except BadRequest:
                    self.stats.bad_requests += 1
                    continue
                if isinstance(msg, hs.Ack):
                    sub.ack(msg.hold_id)
                elif isinstance(msg, hs.Demote) and not allowed:  # lowers priorities: a state change
                    sub.offer(hs.Refused(self.refuse(peer, "demote")["error"]))
                elif isinstance(msg, hs.Demote):
                    self.daemon.set_demotion(sub, Demotion(sub.name, msg.weight, msg.scope, msg.reason or "no reason given")
                                             if msg.weight else None)
                elif isinstance(msg, str):
                    log.warning("subscriber %s: demote request refused: %s", sub.name, msg)
                    sub.offer(hs.Refused(f"demote: {msg}"))
        except LineTooLong as e:
            log.warning("subscriber %s: %s; disconnected", sub.name, e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        scope.cancel()  # the client closed: stop streaming to it
