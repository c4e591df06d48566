"""Unix control sockets speaking JSON lines, shared by vrrpd and ctsync: the server's
life cycle (bind, refusing a live owner and taking over a stale socket; accept; close
and unlink), one line reader with a length limit for every stream the daemons read, and
re-exports the blocking client of the command-line tools (:mod:`hacommon.client`, which
imports no trio).

A request is one JSON object on one line; the reply is one JSON object on one line (or,
for a subscription, a stream of them). What the requests mean is each daemon's business
(vrrpd/control.py, ctsync/control.py); the vrrpd <-> ctsync subscription is
:mod:`hacommon.handshake`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import trio

from .client import json_line, request, stream  # noqa: F401 - the CLIs' client, re-exported for the lab and tests

log = logging.getLogger("hapair")

#: The longest line a daemon reads from a control client (a request, an ack, a demotion):
#: enough for any real request, small enough that a client cannot make us buffer without end.
MAX_LINE = 64 * 1024


class LineTooLong(Exception):
    pass


class BadRequest(Exception):
    """A line that is not a JSON object we can act on; the text says why."""


class LineReader:
    """Lines from a trio stream, each at most ``limit`` bytes (:class:`LineTooLong`
    past it). ``buf`` is what was already read after a previous line."""

    def __init__(self, conn: trio.abc.ReceiveStream, buf: bytes = b"", limit: int = MAX_LINE):
        self.stream = conn
        self.buf = bytearray(buf)
        self.limit = limit

    async def next_line(self) -> bytes | None:
        """The next line without its newline; None when the peer closed (a last line
        without a newline is returned first)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                if i > self.limit:
                    raise LineTooLong(f"line of {i} bytes, over {self.limit}")
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > self.limit:
                raise LineTooLong(f"over {self.limit} bytes without a newline")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                if self.buf:
                    line = bytes(self.buf)
                    self.buf.clear()
                    return line
                return None
            self.buf += chunk


def parse_json_object(line: bytes) -> dict:
    """A request line as a dict, or :class:`BadRequest` naming the problem (not JSON, not
    an object, nested too deep for the parser)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"not a JSON object: {type(e).__name__}: {str(e)[:80]}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"not a JSON object: {type(obj).__name__}")
    return obj


async def send_json(conn: trio.abc.SendStream, obj: Any) -> None:
    await conn.send_all(json_line(obj))


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
    """Life cycle shared by vrrpd's and ctsync's control sockets: bind (refusing a live
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
                    log.warning("%s control socket: accept failed: %s", self.prog, e)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._serve, trio.SocketStream(conn))

    async def _serve(self, conn: trio.SocketStream) -> None:
        raise NotImplementedError
