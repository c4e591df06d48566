"""The control socket: a Unix stream socket speaking JSON lines.

Request: one JSON object per line, e.g. {"cmd": "status"}. Replies:
- status:  {"ok": true, "daemon": {...}, "instances": [InstanceStatus.to_dict(), ...]}
- metrics: {"ok": true, "text": "<Prometheus exposition>"}
- events:  {"ok": true, "subscribed": true}, then one JSON object per transition, until
           the client closes. A reader that falls 256 events behind is disconnected
           rather than slowing the daemon down.
           With {"cmd": "events", "name": "ctsync", "hold": ["MAIN-GW"]} the subscriber
           also *holds* transitions to master of the instances of those sync groups (or
           instance names; "*" for all): such an event carries "hold_id": N, and vrrpd
           sends its adverts at once but adds the virtual addresses and sends gratuitous
           ARP only once the subscriber has written {"ack": N} back on the same socket,
           or transition_hold_timeout has passed (logged, counted as hold_timeouts).
           This is how ctsync commits the replicated state before the VIPs move.
           On the same socket a subscriber may write {"demote": W, "reason": "..."}
           (optionally "scope": [names]; default: the groups it holds): the priority of
           those instances is lowered by W (1..254) until it writes {"demote": 0} or
           goes away (vrrpd.demotion; ctsync asks for it while not ready). A bad demote
           line is answered with {"ok": false, "error": "..."} on the stream.
           With "uplinks": true the stream also carries probe and uplink events
           ({"kind": "probe"|"uplink"|"uplink_flush", ...}; see docs/uplinks.md).
Anything else gets {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .demotion import Demotion, parse_request
from .status import render_metrics, render_uplinks_metrics

log = logging.getLogger("vrrpd")


@dataclass(eq=False)
class Subscriber:
    """One `events` client; with hold groups, it gates moves to master (see above)."""

    name: str
    send: trio.MemorySendChannel
    hold_on: frozenset[str] = frozenset()
    pending: dict[int, trio.Event] = field(default_factory=dict)
    uplink_events: bool = False  # also probe/uplink events (asked with "uplinks": true)

    def holds(self, instance: str, group: str | None) -> bool:
        return bool(self.hold_on) and ("*" in self.hold_on or instance in self.hold_on or (group is not None and group in self.hold_on))

    def hold(self, hold_id: int) -> trio.Event:
        ev = self.pending[hold_id] = trio.Event()
        return ev

    def ack(self, hold_id: int) -> None:
        ev = self.pending.pop(hold_id, None)
        if ev is not None:
            ev.set()

    def offer(self, event: dict) -> bool:
        try:
            self.send.send_nowait(event)
            return True
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.release_all()
            return False

    def release_all(self) -> None:
        """A subscriber that is gone must not hold anything up."""
        for ev in self.pending.values():
            ev.set()
        self.pending.clear()


async def bind_unix_socket(path: str, prog: str) -> trio.socket.SocketType:
    """Listen on a Unix socket for a control protocol; refuse if a live daemon has it,
    take it over if it is a stale leftover of a crash."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            raise SystemExit(f"{prog}: another {prog} is already listening on {path}")
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale socket from a crash
        finally:
            probe.close()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o660)
    sock.listen(16)
    return sock


class UnixControlServer:
    """Lifecycle shared by vrrpd's and ctsync's control sockets: bind (refusing a live
    owner), accept connections into the daemon's nursery, close and unlink. Subclasses
    implement `_serve(stream)`."""

    prog = "daemon"

    def __init__(self, daemon, path: str):
        self.daemon = daemon
        self.path = path
        self.sock: trio.socket.SocketType | None = None
        self._scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> None:
        self.sock = await bind_unix_socket(self.path, self.prog)
        nursery.start_soon(self._accept_loop, nursery)

    def close(self) -> None:
        self._scope.cancel()  # stop accepting before the socket goes away
        if self.sock is not None:
            self.sock.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        with self._scope:
            while True:
                try:
                    conn, _ = await self.sock.accept()
                except OSError as e:
                    log.warning("control socket: accept failed: %s", e)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._serve, trio.SocketStream(conn))

    async def _serve(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError


class ControlServer(UnixControlServer):
    prog = "vrrpd"

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                line, rest = await _read_line(stream)
                try:
                    req = json.loads(line)
                    cmd = req.get("cmd") if isinstance(req, dict) else None
                except ValueError:
                    cmd = None
                if cmd == "status":
                    reply = {
                        "ok": True,
                        "daemon": {"pid": os.getpid(), "config": self.daemon.cfg.path, "started_at": self.daemon.started_at},
                        "instances": [s.to_dict() for s in self.daemon.status()],
                    }
                    if getattr(self.daemon, "uplinkd", None) is not None:
                        reply["uplinks"] = self.daemon.uplinkd.status().to_dict()
                    await _send(stream, reply)
                elif cmd == "metrics":
                    text = render_metrics(self.daemon.status())
                    if getattr(self.daemon, "uplinkd", None) is not None:
                        text += render_uplinks_metrics(self.daemon.uplinkd.status())
                    await _send(stream, {"ok": True, "text": text})
                elif cmd == "events":
                    await self._events(stream, req, rest)
                else:
                    await _send(stream, {"ok": False, "error": f"unknown request {line[:80]!r}; try status, metrics, events"})
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass

    async def _events(self, stream: trio.SocketStream, req: dict, rest: bytes) -> None:
        hold = req.get("hold") or []
        if isinstance(hold, str):
            hold = [hold]
        if not isinstance(hold, list) or not all(isinstance(h, str) for h in hold):
            await _send(stream, {"ok": False, "error": "hold must be a list of sync group or instance names"})
            return
        send, recv = trio.open_memory_channel(256)
        sub = Subscriber(str(req.get("name") or "anonymous"), send, frozenset(hold), uplink_events=req.get("uplinks") is True)
        self.daemon.subscribers.add(sub)
        if hold:
            log.info("subscriber %s holds moves to master of %s", sub.name, ", ".join(hold))
        try:
            await _send(stream, {"ok": True, "subscribed": True, "hold": sorted(hold)})
            async with trio.open_nursery() as n:
                n.start_soon(self._read_acks, stream, sub, rest, n.cancel_scope)
                async with recv:
                    async for event in recv:
                        await _send(stream, event)
        finally:
            self.daemon.subscribers.discard(sub)
            sub.release_all()
            self.daemon.set_demotion(sub, None)  # a subscriber that is gone demotes nothing
            if hold:
                log.info("subscriber %s went away", sub.name)

    async def _read_acks(self, stream: trio.SocketStream, sub: Subscriber, buf: bytes, scope: trio.CancelScope) -> None:
        try:
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        msg = json.loads(line)
                        if isinstance(msg, dict) and isinstance(msg.get("ack"), int):
                            sub.ack(msg["ack"])
                        elif isinstance(msg, dict) and "demote" in msg:
                            self._demote(sub, msg)
                    except ValueError:
                        pass
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                buf += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        scope.cancel()  # the client closed: stop streaming to it

    def _demote(self, sub: Subscriber, msg: dict) -> None:
        req = parse_request(msg, sub.hold_on)
        if isinstance(req, str):
            log.warning("subscriber %s: demote request refused: %s", sub.name, req)
            sub.offer({"ok": False, "error": f"demote: {req}"})
            return
        weight, scope, reason = req
        self.daemon.set_demotion(sub, Demotion(sub.name, weight, scope, reason or "no reason given") if weight else None)


async def _read_line(stream: trio.SocketStream, limit: int = 65536) -> tuple[str, bytes]:
    """The first line, and whatever arrived after it (acks may follow at once)."""
    buf = b""
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            break
    line, _, rest = buf.partition(b"\n")
    return line.decode(errors="replace"), rest


async def _send(stream: trio.SocketStream, obj: dict) -> None:
    await stream.send_all(json.dumps(obj).encode() + b"\n")


def request(path: str, cmd: str, timeout: float = 5.0, **params):
    """Blocking client used by vrrpctl: returns the reply object, or an iterator for events."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
    f = s.makefile("rb")
    if cmd == "events":
        s.settimeout(None)

        def stream():
            try:
                for line in f:
                    yield json.loads(line)
            finally:
                s.close()

        return stream()
    try:
        return json.loads(f.readline() or b"{}")
    finally:
        s.close()
