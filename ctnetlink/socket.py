"""A trio adapter for ctnetlink: raw ``AF_NETLINK``/``NETLINK_NETFILTER``
socket, dumps, acknowledged requests, pipelined commits and events.

One socket per role is the intended use (ctsync opens one for events and one
for dumps/commits): a socket subscribed to event groups that is also used for
requests keeps the events it reads while waiting for an answer in a backlog
that :meth:`CtSocket.events` drains first.

Overruns: ``NETLINK_NO_ENOBUFS`` is explicitly off, so when the kernel cannot
queue a multicast event (receive buffer full) the next ``recv`` fails with
ENOBUFS.  :meth:`CtSocket.events` counts that and yields an
``EventKind.OVERRUN`` event (events were lost: the caller must resync by
dumping); the socket keeps working afterwards.

Commits: the kernel processes every message of a ``sendmsg`` synchronously,
in the sender's context.  :meth:`CtSocket.commit_batch` therefore packs many
IPCTNL_MSG_CT_NEW messages per datagram (up to ``chunk_bytes``), asks for an
ACK only on the last one of each datagram (failures are always answered with
an NLMSG_ERROR carrying their errno), and when ``send`` returns, every answer
of that datagram is already in the receive queue: it is drained without
waiting.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import socket as _stdsocket
import struct
from collections import deque
from enum import IntEnum
from typing import Iterable, NamedTuple, Sequence

import trio

_NLMSGHDR = struct.Struct("=IHHII")

from .codec import (
    CodecError,
    Entry,
    Message,
    NlError,
    Tuple,
    encode_dump,
    encode_flush,
    encode_get,
    encode_new,
    encode_update,
    iter_messages,
)
from .constants import (
    AF_NETLINK,
    AF_UNSPEC,
    CT_DELETE,
    CT_NEW,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_NETFILTER,
    NETLINK_NO_ENOBUFS,
    NFNLGRP_CONNTRACK_DESTROY,
    NFNLGRP_CONNTRACK_NEW,
    NFNLGRP_CONNTRACK_UPDATE,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLMSG_DONE,
    NLMSG_ERROR,
    SO_RCVBUF,
    SO_RCVBUFFORCE,
    SO_SNDBUF,
    SO_SNDBUFFORCE,
    SOL_NETLINK,
)
from .netns import run_in_netns

__all__ = ["CtSocket", "Event", "EventKind", "ALL_GROUPS", "CommitResult"]

ALL_GROUPS = (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY)

_SOL_SOCKET = _stdsocket.SOL_SOCKET
_FLAGS = struct.Struct("=H")
_SEQ = struct.Struct("=I")
_RECV_SIZE = 1 << 16  # > 32 KiB: lets the kernel build dump datagrams of its maximum size
#: room assumed per queued NLMSG_ERROR (skb truesize), to size commit chunks
_ACK_TRUESIZE = 1024


class EventKind(IntEnum):
    OVERRUN = 0
    NEW = 1
    UPDATE = 2
    DESTROY = 3


class Event(NamedTuple):
    """A conntrack event.  ``portid`` is the netlink portid of the socket whose
    request caused it (0 for entries created/changed by packets or timers):
    compare it with :attr:`CtSocket.portid` to recognise your own commits.
    ``OVERRUN`` events have ``entry`` None: events were lost; so do events of
    the ports in :attr:`CtSocket.skip_portids` (not decoded)."""

    kind: EventKind
    entry: Entry | None
    portid: int


class CommitResult(NamedTuple):
    entry: Entry
    errno: int  # 0: committed


def _with_seq(msg: bytes, seq: int) -> bytes:
    """The same netlink message with another sequence number (nlmsghdr bytes 8-11)."""
    return msg[:8] + struct.pack("=I", seq & 0xFFFFFFFF) + msg[12:]


def _with_ack(msg: bytes) -> bytes:
    flags = _FLAGS.unpack_from(msg, 6)[0]
    if flags & NLM_F_ACK:
        return msg
    return msg[:6] + _FLAGS.pack(flags | NLM_F_ACK) + msg[8:]


class CtSocket:
    """A ctnetlink socket.  Create with :meth:`open` (usable as ``async with``)."""

    def __init__(self, raw: _stdsocket.socket, groups: Sequence[int]):
        raw.setblocking(False)
        self._raw = raw
        self._sock = trio.socket.from_stdlib_socket(raw)
        self.groups = tuple(groups)
        self.portid: int = raw.getsockname()[0]
        self.rcvbuf: int = raw.getsockopt(_SOL_SOCKET, SO_RCVBUF)
        self._seq = 1
        self._lock = trio.Lock()
        self._backlog: deque[Message] = deque()
        self._pending: deque[Event] = deque()
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)
        # counters
        self.overruns = 0
        self.codec_errors = 0
        self.dump_interrupted = 0
        self.stray = 0
        # Events caused by these netlink ports (our own commits) are queued without
        # decoding their entry (Event.entry None): a commit of 100k entries brings 100k
        # such events, and decoding them competed with the commit for the CPU.
        self.skip_portids: set[int] = set()

    # -- life cycle
    @classmethod
    def open(cls, groups: Iterable[int] = (), rcvbuf: int | None = None, *,
             rcvbuf_force: bool = True, sndbuf: int | None = None,
             netns: str | None = None) -> "CtSocket":
        """Open and bind a ctnetlink socket.

        ``groups``: NFNLGRP_CONNTRACK_* to subscribe to (e.g. ALL_GROUPS).
        ``rcvbuf``: receive buffer in bytes; with ``rcvbuf_force`` (default)
        via SO_RCVBUFFORCE (ignores net.core.rmem_max, needs CAP_NET_ADMIN;
        falls back to SO_RCVBUF), else SO_RCVBUF (capped by rmem_max; the
        kernel doubles the value for bookkeeping).  ``netns``: create the
        socket in that network namespace (name under /run/netns or a path)
        instead of the caller's.
        """
        groups = tuple(groups)
        for g in groups:
            if not 1 <= g <= 32:
                raise ValueError(f"bad netlink group {g}")

        def make() -> _stdsocket.socket:
            s = _stdsocket.socket(AF_NETLINK, _stdsocket.SOCK_RAW | _stdsocket.SOCK_CLOEXEC,
                                  NETLINK_NETFILTER)
            try:
                if rcvbuf:
                    _setbuf(s, SO_RCVBUFFORCE if rcvbuf_force else None, SO_RCVBUF, rcvbuf)
                if sndbuf:
                    _setbuf(s, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf)
                # Overruns must be reported (ENOBUFS), never silently swallowed.
                s.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 0)
                # Error answers without a copy of the request: less receive buffer.
                s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                s.bind((0, 0))
                for g in groups:
                    s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g)
                return s
            except BaseException:
                s.close()
                raise

        return cls(run_in_netns(netns, make), groups)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._raw.fileno()

    async def __aenter__(self) -> "CtSocket":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __enter__(self) -> "CtSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CtSocket(portid={self.portid}, groups={self.groups})"

    # -- helpers
    def next_seq(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive sequence numbers (never 0, no u32
        wrap-around inside the block); return the first."""
        first = self._seq
        if first + n >= 1 << 32:
            first = 1
        self._seq = first + n
        return first

    async def _recv(self) -> memoryview:
        n = await self._sock.recv_into(self._buf)
        return self._view[:n]

    async def _recv_reply(self) -> memoryview:
        """Receive while waiting for an answer: an overrun (events this socket was
        subscribed to did not fit) is counted and the wait goes on."""
        while True:
            try:
                return await self._recv()
            except OSError as e:
                if e.errno != _errno.ENOBUFS:
                    raise
                self._overrun()

    def _recv_nowait(self) -> memoryview | None:
        try:
            n = self._raw.recv_into(self._buf)
        except BlockingIOError:
            return None
        return self._view[:n]

    def _park(self, m: Message) -> None:
        """A message that is not the answer being waited for."""
        if m.seq == 0 and self.groups and m.msgtype in (CT_NEW, CT_DELETE):
            self._backlog.append(m)
        else:
            self.stray += 1

    def _overrun(self) -> None:
        self.overruns += 1
        if self.groups:
            self._pending.append(Event(EventKind.OVERRUN, None, 0))

    def _messages(self, data) -> list[Message]:
        try:
            return list(iter_messages(data))
        except CodecError:
            self.codec_errors += 1
            return []

    # -- requests
    async def request(self, msg: bytes, timeout: float | None = 5.0) -> int:
        """Send one request (its seq is replaced by a fresh one, NLM_F_ACK is
        added) and return the kernel's answer: 0 or a positive errno."""
        seq = self.next_seq()
        msg = _with_ack(msg[:8] + _SEQ.pack(seq) + msg[12:])
        with _deadline(timeout):
            async with self._lock:
                await self._sock.send(msg)
                while True:
                    data = await self._recv_reply()
                    for m in self._messages(data):
                        if m.seq == seq and m.msgtype == NLMSG_ERROR and isinstance(m.payload, NlError):
                            return m.payload.errno
                        self._park(m)

    async def get(self, t: Tuple, zone: int = 0, timeout: float | None = 5.0) -> Entry | None:
        """The entry with original (or reply) tuple ``t``, or None."""
        seq = self.next_seq()
        with _deadline(timeout):
            async with self._lock:
                await self._sock.send(encode_get(t, seq, zone))
                while True:
                    data = await self._recv_reply()
                    for m in self._messages(data):
                        if m.seq != seq:
                            self._park(m)
                        elif m.msgtype == NLMSG_ERROR and isinstance(m.payload, NlError):
                            if m.payload.errno == _errno.ENOENT:
                                return None
                            raise OSError(m.payload.errno, _errno_name(m.payload.errno))
                        elif isinstance(m.payload, Entry):
                            return m.payload
                        elif isinstance(m.payload, CodecError):
                            self.codec_errors += 1
                            raise m.payload

    async def dump(self, family: int = AF_UNSPEC, timeout: float | None = 30.0) -> list[Entry]:
        """Every entry of the table (of ``family``)."""
        out: list[Entry] = []
        with _deadline(timeout):
            async with contextlib.aclosing(self.dump_batches(family, None)) as batches:
                async for batch in batches:
                    out += batch
        return out

    async def dump_batches(self, family: int = AF_UNSPEC, idle_timeout: float | None = 30.0):
        """Every entry of the table (of ``family``), one received datagram's worth at a
        time (an async generator; consume it in one task, ideally with
        ``contextlib.aclosing``): a large table flows while the kernel still dumps it.
        ``idle_timeout`` bounds each wait for the kernel, not the whole dump."""
        seq = self.next_seq()
        async with self._lock:
            await self._sock.send(encode_dump(family, seq))
            while True:
                with _deadline(idle_timeout):
                    data = await self._recv_reply()
                batch: list[Entry] = []
                done = False
                for m in self._messages(data):
                    if m.seq != seq:
                        self._park(m)
                        continue
                    if m.flags & NLM_F_DUMP_INTR:
                        self.dump_interrupted += 1
                    p = m.payload
                    if isinstance(p, Entry):
                        batch.append(p)
                    elif m.msgtype == NLMSG_DONE:
                        done = True
                        break
                    elif isinstance(p, NlError):
                        raise OSError(p.errno, _errno_name(p.errno))
                    elif isinstance(p, CodecError):
                        self.codec_errors += 1
                if batch:
                    yield batch
                if done:
                    return

    async def flush(self, family: int = AF_UNSPEC) -> int:
        """Delete every entry (of ``family``); 0 or errno."""
        return await self.request(encode_flush(family))

    async def commit_batch(self, entries: Sequence[Entry], *,
                           flags: int = NLM_F_CREATE | NLM_F_EXCL,
                           update_existing: bool = False,
                           chunk_bytes: int = 1 << 16, ack_each: bool = False,
                           for_commit: bool = True) -> list[CommitResult]:
        """Create ``entries`` in the kernel (IPCTNL_MSG_CT_NEW, commit recipe
        of :func:`encode_new`), many messages per sendmsg.  Returns one
        (entry, errno) per entry, in order: 0 = done; EEXIST = already there;
        EINVAL also for an entry that could not be encoded; ENOBUFS = answer
        lost in a receive-buffer overrun (outcome unknown).

        ``update_existing``: entries answered EEXIST are sent again as updates
        (:func:`encode_update`: timeout, mark, status, TCP state; NAT cannot
        change on an existing entry) and get the update's errno.
        ``ack_each``: ask an ACK for every message (slower; default: only for
        the last message of each datagram -- failures are reported anyway).
        """
        n = len(entries)
        if n == 0:
            return []
        results = [0] * n
        flags &= ~NLM_F_ACK
        mflags = flags | (NLM_F_ACK if ack_each else 0)

        def new(e: Entry, seq: int) -> bytes:
            return encode_new(e, seq, mflags, for_commit)

        await self._pipeline(entries, range(n), new, results, chunk_bytes)
        if update_existing:
            again = [i for i, r in enumerate(results) if r == _errno.EEXIST]
            if again:
                uflags = NLM_F_ACK if ack_each else 0
                await self._pipeline(entries, again, lambda e, seq: encode_update(e, seq, uflags),
                                     results, chunk_bytes)
        return [CommitResult(e, r) for e, r in zip(entries, results)]

    async def commit_raw(self, messages: Sequence[bytes], chunk_bytes: int = 1 << 16) -> list[int]:
        """Send pre-encoded IPCTNL_MSG_CT_NEW messages (e.g. ctsync's cache, which keeps
        each entry ready to send), patching only their sequence numbers; one errno per
        message (0 = done). The fastest commit: no parsing or encoding at failover."""
        results = [0] * len(messages)
        if messages:
            await self._pipeline(messages, range(len(messages)), _with_seq, results, chunk_bytes)
        return results

    async def _pipeline(self, entries: Sequence[Entry], indices: Sequence[int], encode,
                        results: list[int], chunk_bytes: int) -> None:
        """Send encode(entries[i], seq) for i in indices, many per datagram;
        store each answer's errno in results[i]."""
        n = len(indices)
        seq0 = self.next_seq(n)
        # Worst case every message of a datagram fails: all answers must fit.
        max_msgs = max(1, self.rcvbuf // _ACK_TRUESIZE)
        async with self._lock:
            k = 0
            while k < n:
                parts: list[bytes] = []
                seqs: list[int] = []
                size = 0
                while k < n and len(parts) < max_msgs:
                    i = indices[k]
                    try:
                        m = encode(entries[i], seq0 + k)
                    except CodecError:
                        self.codec_errors += 1
                        results[i] = _errno.EINVAL
                        k += 1
                        continue
                    if parts and size + len(m) > chunk_bytes:
                        break
                    parts.append(m)
                    seqs.append(seq0 + k)
                    size += len(m)
                    results[i] = 0
                    k += 1
                if not parts:
                    continue
                first, last = seqs[0], seqs[-1]
                parts[-1] = _with_ack(parts[-1])
                await self._sock.send(b"".join(parts))
                # The kernel handled the whole datagram inside send(): every
                # answer is queued already (or was dropped by an overrun).
                seen_last = False
                lost = False
                while not seen_last:
                    try:
                        data = self._recv_nowait()
                    except OSError as e:
                        if e.errno != _errno.ENOBUFS:
                            raise
                        self._overrun()
                        lost = True
                        continue
                    if data is None:
                        break
                    for msg in self._messages(data):
                        p = msg.payload
                        if msg.msgtype == NLMSG_ERROR and first <= msg.seq <= last \
                                and isinstance(p, NlError):
                            results[indices[msg.seq - seq0]] = p.errno
                            if msg.seq == last:
                                seen_last = True
                        else:
                            self._park(msg)
                if not seen_last:
                    if not lost:  # pragma: no cover - would be a kernel surprise
                        # Answers not there yet: wait for them normally.
                        seen_last = await self._wait_acks(first, last, seq0, indices, results)
                    if not seen_last:
                        for sq in seqs:
                            if results[indices[sq - seq0]] == 0:
                                results[indices[sq - seq0]] = _errno.ENOBUFS
                await trio.lowlevel.checkpoint()

    async def _wait_acks(self, first: int, last: int, seq0: int, indices: Sequence[int],
                         results: list[int], timeout: float = 2.0) -> bool:
        with trio.move_on_after(timeout):
            while True:
                try:
                    data = await self._recv()
                except OSError as e:
                    if e.errno != _errno.ENOBUFS:
                        raise
                    self._overrun()
                    return False
                for msg in self._messages(data):
                    p = msg.payload
                    if msg.msgtype == NLMSG_ERROR and first <= msg.seq <= last \
                            and isinstance(p, NlError):
                        results[indices[msg.seq - seq0]] = p.errno
                        if msg.seq == last:
                            return True
                    else:
                        self._park(msg)
        return False

    async def commit(self, entry: Entry, flags: int = NLM_F_CREATE | NLM_F_EXCL) -> int:
        """Create one entry; 0 or errno."""
        return await self.request(encode_new(entry, 0, flags | NLM_F_ACK))

    # -- events
    def events(self) -> "_EventIterator":
        """``async for ev in sock.events(): ...`` -> :class:`Event` (NEW,
        UPDATE, DESTROY, or OVERRUN when ENOBUFS reported lost events)."""
        return _EventIterator(self)

    async def next_event(self) -> Event:
        pending = self._pending
        while not pending:
            backlog = self._backlog
            if backlog:
                self._queue_events(list(backlog))
                backlog.clear()
                continue
            try:
                data = await self._recv()
            except OSError as e:
                if e.errno != _errno.ENOBUFS:
                    raise
                self.overruns += 1
                return Event(EventKind.OVERRUN, None, 0)
            self._queue_datagram(data)
        return pending.popleft()

    def read_queued(self, max_datagrams: int = 64) -> tuple[list[Event], bool]:
        """Events already queued, read without waiting (at most ``max_datagrams``
        datagrams), and whether the receive queue was found empty.

        After an OVERRUN, read until it is empty before dumping the table: the
        kernel reports only the first lost event (ENOBUFS) until the queue has
        been found empty (NETLINK_S_CONGESTED), so events lost in between go
        unreported, and a dump started earlier may not cover them.  ENOBUFS met
        here is counted and returned as an OVERRUN event in its place (an event
        subscriber must learn of it; the drain after an OVERRUN ignores them,
        since the coming dump covers those losses too)."""
        out = list(self._pending)
        self._pending.clear()
        if self._backlog:
            self._queue_events(list(self._backlog))
            self._backlog.clear()
        for _ in range(max_datagrams):
            out.extend(self._pending)
            self._pending.clear()
            try:
                data = self._recv_nowait()
            except OSError as e:
                if e.errno != _errno.ENOBUFS:
                    raise
                self._overrun()
                continue
            if data is None:
                out.extend(self._pending)
                self._pending.clear()
                return out, True
            self._queue_datagram(data)
        out.extend(self._pending)
        self._pending.clear()
        return out, False

    def _queue_datagram(self, data) -> None:
        skip = self.skip_portids
        if skip and len(data) >= 16:
            nlen, msgtype, flags, _seq, portid = _NLMSGHDR.unpack_from(data, 0)
            if portid in skip and nlen == len(data) and msgtype in (CT_NEW, CT_DELETE):
                kind = (EventKind.DESTROY if msgtype == CT_DELETE
                        else EventKind.NEW if flags & NLM_F_CREATE else EventKind.UPDATE)
                self._pending.append(Event(kind, None, portid))
                return
        self._queue_events(self._messages(data))

    def _queue_events(self, msgs: list[Message]) -> None:
        for m in msgs:
            t = m.msgtype
            if t == CT_NEW:
                kind = EventKind.NEW if m.flags & NLM_F_CREATE else EventKind.UPDATE
            elif t == CT_DELETE:
                kind = EventKind.DESTROY
            else:
                self.stray += 1
                continue
            p = m.payload
            if isinstance(p, Entry):
                self._pending.append(Event(kind, p, m.portid))
            else:
                self.codec_errors += 1


class _EventIterator:
    __slots__ = ("_s",)

    def __init__(self, s: CtSocket):
        self._s = s

    def __aiter__(self) -> "_EventIterator":
        return self

    async def __anext__(self) -> Event:
        return await self._s.next_event()


@contextlib.contextmanager
def _deadline(timeout: float | None):
    """``trio.fail_after`` raising the builtin TimeoutError; no-op for None."""
    if timeout is None:
        yield
        return
    try:
        with trio.fail_after(timeout):
            yield
    except trio.TooSlowError:
        raise TimeoutError("ctnetlink: no answer in time") from None


def _setbuf(s: _stdsocket.socket, force_opt: int | None, opt: int, size: int) -> None:
    if force_opt is not None:
        try:
            s.setsockopt(_SOL_SOCKET, force_opt, size)
            return
        except PermissionError:
            pass
    s.setsockopt(_SOL_SOCKET, opt, size)


def _errno_name(e: int) -> str:
    return f"{_errno.errorcode.get(e, 'E?')}: {os.strerror(e)}"
