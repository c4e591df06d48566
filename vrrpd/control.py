"""The control socket: a Unix stream socket speaking JSON lines.

Request: one JSON object per line, e.g. {"cmd": "status"}. Replies:
- status:  {"ok": true, "daemon": {...}, "instances": [InstanceStatus.to_dict(), ...]}
- metrics: {"ok": true, "text": "<Prometheus exposition>"}
- events:  {"ok": true, "subscribed": true}, then one JSON object per transition, until
           the client closes. A reader that falls 256 events behind is disconnected
           rather than slowing the daemon down.
Anything else gets {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import trio

from .status import render_metrics

log = logging.getLogger("vrrpd")


class ControlServer:
    def __init__(self, daemon, path: str):
        self.daemon = daemon
        self.path = path
        self.sock: trio.socket.SocketType | None = None
        self._scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                raise SystemExit(f"vrrpd: another vrrpd is already listening on {self.path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.path)  # stale socket from a crash
            finally:
                probe.close()
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await self.sock.bind(self.path)
        os.chmod(self.path, 0o660)
        self.sock.listen(16)
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
        async with stream:
            try:
                line = await _read_line(stream)
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
                    await _send(stream, reply)
                elif cmd == "metrics":
                    await _send(stream, {"ok": True, "text": render_metrics(self.daemon.status())})
                elif cmd == "events":
                    await self._events(stream)
                else:
                    await _send(stream, {"ok": False, "error": f"unknown request {line[:80]!r}; try status, metrics, events"})
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass

    async def _events(self, stream: trio.SocketStream) -> None:
        send, recv = trio.open_memory_channel(256)
        self.daemon.subscribers.add(send)
        try:
            await _send(stream, {"ok": True, "subscribed": True})
            async with recv:
                async for event in recv:
                    await _send(stream, event)
        finally:
            self.daemon.subscribers.discard(send)


async def _read_line(stream: trio.SocketStream, limit: int = 65536) -> str:
    buf = b""
    while b"\n" not in buf:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            break
    return buf.split(b"\n", 1)[0].decode(errors="replace")


async def _send(stream: trio.SocketStream, obj: dict) -> None:
    await stream.send_all(json.dumps(obj).encode() + b"\n")


def request(path: str, cmd: str, timeout: float = 5.0):
    """Blocking client used by vrrpctl: returns the reply object, or an iterator for events."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
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
