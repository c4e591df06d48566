"""Unix control sockets speaking JSON lines, shared by vrrpd and ctsync: the server's
life cycle (bind, refusing a live owner and taking over a stale socket; accept; close
and unlink), who is asking (the peer's credentials), one line reader with a length
limit for every stream the daemons read, and re-exports the blocking client of the
command-line tools (:mod:`hacommon.client`, which imports no trio).

A request is one JSON object on one line; the reply is one JSON object on one line (or,
for a subscription, a stream of them). What the requests mean is each daemon's business
(vrrpd/control.py, ctsync/control.py); the vrrpd <-> ctsync subscription is
:mod:`hacommon.handshake`.

Who may do what: the socket file is mode 0660, owned by root and by the daemon's
``control_group`` if one is configured (else root's group), so the file system decides
who can connect. Whoever can connect may *read* (status, metrics, dump, events). A
request that *changes* something (a commit, a flush, holding transitions, a demotion)
is carried out only for uid 0 or a member of ``control_group`` (the peer's credentials
at connect time: SO_PEERCRED and SO_PEERGROUPS), else answered "permission denied",
logged and counted. A connection's requests fail alone: whatever happens while one is
served is logged and answered as an error, never passed on to the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .client import json_line, request, stream  # noqa: F401 - the CLIs' client, re-exported for the lab and tests
from .log import first_error
from .sockopts import SO_PEERCRED, SO_PEERGROUPS

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


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a control connection, as the kernel saw it when
    it connected (uid -1: unknown, which is never privileged)."""

    pid: int = 0
    uid: int = -1
    gid: int = -1
    groups: frozenset[int] = frozenset()

    def member_of(self, gid: int | None) -> bool:
        return gid is not None and (self.gid == gid or gid in self.groups)

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"


_UCRED = struct.Struct("=iII")


def peer_of(sock: socket.socket) -> Peer:
    """SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS (supplementary groups) of a
    connected Unix socket; Peer() (unprivileged) if the kernel does not tell."""
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _UCRED.size))
    except OSError:
        return Peer()
    groups: frozenset[int] = frozenset()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
        groups = frozenset(struct.unpack(f"={len(raw) // 4}I", raw[:len(raw) // 4 * 4]))
    except OSError:  # more than 256 groups (ERANGE) or an old kernel: the primary gid still counts
        pass
    return Peer(pid, uid, gid, groups)


async def send_json(conn: trio.abc.SendStream, obj: Any) -> None:
    await conn.send_all(json_line(obj))


async def bind_unix_socket(path: str, prog: str, gid: int | None = None) -> trio.socket.SocketType:
    """Listen on a Unix socket for a control protocol; refuse if a live daemon has it,
    take it over if it is a stale leftover of a crash. Mode 0660; group ``gid`` if given."""
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
    if gid is not None:
        os.chown(path, -1, gid)
    sock.listen(16)
    return sock


@dataclass
class ControlStats:
    """What a control socket has seen, in each daemon's status under "control"."""

    connections: int = 0
    refused: int = 0  # requests that change something, from a peer not allowed to
    bad_requests: int = 0  # too long, not JSON, not an object, unknown command
    errors: int = 0  # a request whose handling failed (a bug: logged with its traceback)
    last_refused: str | None = None

    def to_dict(self) -> dict:
        return {"connections": self.connections, "refused": self.refused, "bad_requests": self.bad_requests,
                "errors": self.errors, "last_refused": self.last_refused}


class UnixControlServer:
    """Life cycle shared by vrrpd's and ctsync's control sockets: bind (refusing a live
    owner), accept connections into the daemon's nursery, close and unlink. Subclasses
    implement `_serve(stream, peer)`; whatever it raises stays in its connection.

    ``group`` (a name) and ``gid``: the daemon's ``control_group``, whose members may
    change things (:meth:`allowed`) and connect (the socket's group)."""

    prog = "daemon"

    def __init__(self, daemon, path: str, group: str | None = None, gid: int | None = None):
        self.daemon = daemon
        self.path = path
        self.group = group
        self.gid = gid
        self.sock: trio.socket.SocketType | None = None
        self.stats = ControlStats()
        self.log = logging.getLogger(self.prog)  # the daemon's own logger
        self._scope = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> None:
        self.sock = await bind_unix_socket(self.path, self.prog, self.gid)
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
                    self.log.warning("%s control socket: accept failed: %s", self.prog, e)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._connection, conn)

    async def _connection(self, conn: trio.socket.SocketType) -> None:
        await self.serve_stream(trio.SocketStream(conn), peer_of(conn))

    async def serve_stream(self, stream: trio.abc.Stream, peer: Peer) -> None:
        """One client, on ``stream``, as ``peer``: served by `_serve`; nothing it does can
        end the daemon (what goes wrong is logged, answered and counted here). The
        stream is closed at the end."""
        self.stats.connections += 1
        failed: BaseException | None = None
        try:
            try:
                await self._serve(stream, peer)
            except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass  # the client went away
            except* Exception as eg:  # a bug in serving this request: this connection fails, alone
                failed = eg
            if failed is not None:
                self.stats.errors += 1
                self.log.error("%s control socket: request of %s failed", self.prog, peer, exc_info=failed)
                with trio.move_on_after(1):
                    try:
                        error = f"internal error: {first_error(failed)}; see the daemon's log"
                        await send_json(stream, {"ok": False, "error": error})
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    def allowed(self, peer: Peer) -> bool:
        """May this peer change something? uid 0, or a member of control_group."""
        return peer.uid == 0 or peer.member_of(self.gid)

    def refuse(self, peer: Peer, what: str) -> dict:
        """Count and log a refused request; the reply that says so."""
        self.stats.refused += 1
        self.stats.last_refused = f"{what} from {peer}"
        who = "root" + (f" or a member of group {self.group}" if self.group else "")
        self.log.warning("%s control socket: %s refused to %s (only %s may)", self.prog, what, peer, who)
        return {"ok": False, "error": f"permission denied: {what} needs {who} (control_group)"}

    def bad_request(self, error: str) -> dict:
        self.stats.bad_requests += 1
        return {"ok": False, "error": error}

    async def _serve(self, stream: trio.abc.Stream, peer: Peer) -> None:
        raise NotImplementedError
