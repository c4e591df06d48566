"""ctsync's reliable channel, sans-IO: what FTFW is to conntrackd, with authentication.

    ch = Channel(node=1, epoch=now_ns, key=KEY)
    ch.send(Message(MsgType.ENTRY, body), now)      # reliable, in order
    ch.send_unreliable(Message(MsgType.HEARTBEAT, b), now)
    for dgram in ch.datagrams_to_send(now): sock.send(dgram)
    delivered = ch.receive_datagram(bytes_from_peer, now)   # -> Delivery
    ch.handle_timer(now); ch.next_deadline()

Reliable messages are packed several per datagram up to the MTU. Each such datagram has
a reliable sequence number (rseq); the receiver delivers them in rseq order exactly
once, buffers what arrives early, asks for gaps with NACK ranges, and acknowledges
cumulatively (piggybacked, or in a bare ack after `ack_delay`). The sender keeps at most
`resend_limit` unacknowledged datagrams; it resends what is NACKed, and the oldest
unacknowledged one when nothing moves for `rto` (tail loss). That limit is also its send
window: while it is full, new messages wait in the send queue, unnumbered, for acks to
free room, so a burst faster than the link or the peer is paced, never dropped (a 100k-entry
burst used to overwrite its own unacknowledged datagrams, which made the peer ask for
resyncs that were overwritten in turn). The send queue is bounded too (`queue_limit`
messages, for a peer that is gone): past it the queue is dropped and `queue_overflowed` is
set, and the replicator pushes its whole table instead. A gap the sender can no longer fill
(a datagram fell out of the resend queue) is announced with a SKIP, and the receiver
reports it as `lost`: the replicator then asks for a resync. Orders of events for one
flow therefore never invert: a DESTROY is never applied before the NEW it follows.

Every datagram, resends included, has a fresh `seq` checked by the replay window, and
an HMAC; liveness comes from any authenticated datagram, so an attacker can neither
forge, replay, nor keep a dead peer looking alive.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from .wire import Datagram, Message, ReplayWindow, WireError, decode, encode, overhead

PROBE = 7  # channel-internal: body u64 = highest rseq sent, lets the peer see a lost tail
SKIP = 8  # channel-internal: body u64 first, u64 last = rseqs the sender can no longer resend
_U64 = struct.Struct("!Q")
_U64x2 = struct.Struct("!QQ")


@dataclass
class ChannelStats:
    datagrams_tx: int = 0
    datagrams_rx: int = 0
    messages_tx: int = 0
    messages_rx: int = 0
    retransmits: int = 0
    nacks_tx: int = 0
    nacks_rx: int = 0
    acks_tx: int = 0
    duplicates: int = 0
    auth_failures: int = 0
    replayed: int = 0
    malformed: int = 0
    unconfirmed: int = 0  # authentic but not echoing our current epoch: replays from before our restart, or a peer that has not heard us yet
    lost: int = 0  # reliable datagrams the peer could not resend (a resync repairs them)
    resend_overflows: int = 0
    window_full: int = 0  # times sending stopped with messages queued, waiting for acks
    queue_overflows: int = 0  # send queue dropped (peer not taking anything): table pushed instead
    old_key_rx: int = 0  # datagrams authenticated with the previous key during a key rotation


@dataclass
class Delivery:
    messages: list[Message] = field(default_factory=list)  # in order; reliable and unreliable
    lost: bool = False  # a gap that will never be filled: ask for a resync
    peer_restarted: bool = False  # a new epoch from the peer: its replica state is new too


@dataclass
class Channel:
    node: int
    epoch: int
    key: bytes
    mtu: int = 1400  # UDP payload budget per datagram
    resend_limit: int = 4096  # unacknowledged datagrams kept for resending
    reorder_limit: int = 4096  # early datagrams buffered while waiting for a gap
    queue_limit: int = 1 << 18  # messages waiting for the send window (~60 MB of entries)
    ack_delay: float = 0.01
    nack_interval: float = 0.05  # how often an open gap is asked for again
    rto: float = 0.2
    probe_interval: float = 0.5
    peer_timeout: float = 3.0
    stats: ChannelStats = field(default_factory=ChannelStats)

    def __post_init__(self) -> None:
        self._seq = 0
        self._rseq = 0
        self._queue: deque[Message] = deque()  # reliable, not yet in a datagram
        self.queue_overflowed = False  # set when the send queue was dropped; the owner clears it
        self._unreliable: list[Message] = []
        self._unacked: OrderedDict[int, tuple[Message, ...]] = OrderedDict()
        self._progress_at: float | None = None  # last ack progress (for rto)
        self._probe_at: float | None = None
        self._resend: dict[int, None] = {}  # rseqs to resend, in order (a dict: O(1) lookups)
        self._resent_at: dict[int, float] = {}  # rseq -> last resend: NACKs within rto are not honoured again
        self._skips: list[tuple[int, int]] = []
        # receive side
        self._window = ReplayWindow()
        self.peer_epoch = 0
        self._delivered = 0  # highest rseq delivered in order
        self._early: dict[int, tuple[Message, ...]] = {}
        self._peer_top = 0  # highest rseq the peer says it sent
        self._gap_since: float | None = None  # since when a reliable message is missing
        self._ack_due: float | None = None
        self._nack_due: float | None = None
        self.last_heard: float | None = None
        self._echo = 0  # the peer's newest epoch heard (authenticated); echoed in our datagrams
        # key rotation (rotate_key): the previous key, accepted until _old_until
        self._old_key: bytes | None = None
        self._old_until = 0.0
        self._send_old_until = 0.0  # sent with until then, unless the peer uses the new key first

    # ---- key rotation -----------------------------------------------------------------

    def rotate_key(self, key: bytes, now: float, grace: float) -> None:
        """A new shared secret (ctsync's SIGHUP). The two routers are reloaded one after
        the other, so for ``grace`` seconds the previous key is still accepted, and for
        the first half of it we keep sending with the previous key unless the peer is
        heard using the new one (then it has it: we switch at once). Both boxes reloaded
        within grace/2 of each other: not one datagram refused. Later: the reliable
        stream waits (resends) until the second box has the new key too."""
        if key == self.key:
            return
        self._old_key, self.key = self.key, key
        self._old_until = now + grace
        self._send_old_until = now + grace / 2

    def rotating(self, now: float) -> bool:
        """Is the previous key still accepted?"""
        return self._old_key is not None and now < self._old_until

    def _send_key(self, now: float) -> bytes:
        if self._old_key is not None and now < self._send_old_until:
            return self._old_key
        return self.key

    def _decode(self, data: bytes, now: float) -> Datagram:
        try:
            d = decode(data, self.key)
        except WireError as e:
            if e.reason != "auth_failures" or not self.rotating(now):
                raise
            d = decode(data, self._old_key)
            self.stats.old_key_rx += 1
            return d
        if self._old_key is not None:
            self._send_old_until = 0.0  # the peer has the new key: so do our datagrams now
            if now >= self._old_until:
                self._old_key = None
        return d

    # ---- sending ----------------------------------------------------------------------

    def send(self, msg: Message, now: float) -> None:
        if msg.size > self.mtu - overhead(0):
            raise ValueError(f"message of {msg.size} bytes does not fit a {self.mtu}-byte datagram")
        self._queue.append(msg)
        if len(self._queue) > self.queue_limit:
            # Nothing numbered is lost (the peer sees no gap), so the caller must make up
            # for the dropped messages: it pushes its whole table (see queue_overflowed).
            self._queue.clear()
            self.stats.queue_overflows += 1
            self.queue_overflowed = True

    def send_unreliable(self, msg: Message, now: float) -> None:
        self._unreliable.append(msg)

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        for first, last in self._skips:
            out.append(self._datagram(0, (Message(SKIP, _U64x2.pack(first, last)),), now))
        self._skips.clear()
        for rseq in self._resend:
            msgs = self._unacked.get(rseq)
            if msgs is not None:
                self.stats.retransmits += 1
                self._resent_at[rseq] = now
                out.append(self._datagram(rseq, msgs, now))
        self._resend.clear()
        budget = self.mtu - overhead(0)
        while self._queue:
            if len(self._unacked) >= self.resend_limit:
                self.stats.window_full += 1  # the rest waits for acks (has_output is false meanwhile)
                break
            q, size, batch = self._queue, 0, []
            while q and size + q[0].size <= budget:
                m = q.popleft()
                size += m.size
                batch.append(m)
            msgs = tuple(batch)
            self._rseq += 1
            self._unacked[self._rseq] = msgs
            if len(self._unacked) > self.resend_limit:
                dropped, _ = self._unacked.popitem(last=False)  # bounded: the peer gets a SKIP if it asks
                self._resent_at.pop(dropped, None)
                self.stats.resend_overflows += 1
            if self._progress_at is None:
                self._progress_at = now
            self.stats.messages_tx += len(msgs)
            out.append(self._datagram(self._rseq, msgs, now))
        if self._unreliable:
            msgs, self._unreliable = tuple(self._unreliable), []
            self.stats.messages_tx += len(msgs)
            out.append(self._datagram(0, msgs, now))
        if self._probe_at is not None and now >= self._probe_at:
            self._probe_at = None
            out.append(self._datagram(0, (Message(PROBE, _U64.pack(self._rseq)),), now))
        if (self._ack_due is not None and now >= self._ack_due) or (self._nack_due is not None and now >= self._nack_due):
            out.append(self._datagram(0, (), now))  # a bare ack/nack
        return out

    def _datagram(self, rseq: int, msgs: tuple[Message, ...], now: float) -> bytes:
        self._seq += 1
        nacks = self._gaps() if self._nack_due is not None and now >= self._nack_due else ()
        if nacks:
            self.stats.nacks_tx += 1
            self._nack_due = now + self.nack_interval
        if self._ack_due is not None:
            self.stats.acks_tx += 1
            self._ack_due = None
        self.stats.datagrams_tx += 1
        return encode(Datagram(self.node, self.epoch, self._seq, rseq, self._delivered, nacks, msgs, echo=self._echo),
                      self._send_key(now))

    # ---- receiving --------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> Delivery:
        res = Delivery()
        try:
            d = self._decode(data, now)
        except WireError as e:
            if e.reason == "auth_failures":
                self.stats.auth_failures += 1
            else:
                self.stats.malformed += 1
            return res
        if d.node == self.node:
            self.stats.malformed += 1  # our own datagram looped back, or a peer with our node id
            return res
        if d.epoch > self._echo:
            self._echo = d.epoch  # learn the peer's epoch (never backwards: old replays cannot undo it)
        if d.echo != self.epoch:
            # Not addressed to this incarnation of us: a replay of traffic captured before
            # we restarted, or the peer's first words before it heard ours. Act on nothing,
            # not even liveness; answer soon so a real peer learns our epoch.
            self.stats.unconfirmed += 1
            if self._ack_due is None:
                self._ack_due = now
            return res
        refused = self._window.check(d.epoch, d.seq)
        if refused == "replayed":
            self.stats.replayed += 1
            return res
        if refused:
            self.stats.malformed += 1
            return res
        self.stats.datagrams_rx += 1
        self.last_heard = now
        if d.epoch != self.peer_epoch:
            res.peer_restarted = self.peer_epoch != 0
            self.peer_epoch = d.epoch
            self._delivered, self._early, self._peer_top = 0, {}, 0
            self._nack_due = None
        self._on_ack(d.ack, d.nacks, now)
        reliable = d.rseq != 0
        for m in d.messages:
            if m.type == PROBE and len(m.body) == 8:
                self._peer_top = max(self._peer_top, _U64.unpack(m.body)[0])
            elif m.type == SKIP and len(m.body) == 16:
                first, last = _U64x2.unpack(m.body)
                if last > self._delivered:
                    self.stats.lost += last - max(first, self._delivered + 1) + 1
                    res.lost = True
                    for r in range(self._delivered + 1, last + 1):
                        self._early.pop(r, None)
                    self._delivered = last
                    self._drain(res)
            elif not reliable:
                res.messages.append(m)
                self.stats.messages_rx += 1
        if reliable:
            self._peer_top = max(self._peer_top, d.rseq)
            if d.rseq <= self._delivered or d.rseq in self._early:
                self.stats.duplicates += 1
            elif d.rseq == self._delivered + 1:
                self._deliver(d.rseq, d.messages, res)
                self._drain(res)
            elif len(self._early) < self.reorder_limit:
                self._early[d.rseq] = d.messages
            if self._ack_due is None:
                self._ack_due = now + self.ack_delay
        if self._peer_top > self._delivered:
            if self._nack_due is None:
                self._nack_due = now  # ask at once; then every nack_interval while open
            if self._gap_since is None:
                self._gap_since = now
        else:
            self._nack_due = None
            self._gap_since = None
        return res

    def stalled(self, now: float, grace: float) -> bool:
        """A reliable message from the peer has been missing for ``grace`` seconds or
        more: NACKs have not repaired the gap (a link that drops large datagrams, say),
        so everything after it is held back and our replica is behind the peer."""
        return self._gap_since is not None and now - self._gap_since >= grace

    def _deliver(self, rseq: int, msgs: tuple[Message, ...], res: Delivery) -> None:
        self._delivered = rseq
        res.messages.extend(msgs)
        self.stats.messages_rx += len(msgs)

    def _drain(self, res: Delivery) -> None:
        while self._delivered + 1 in self._early:
            r = self._delivered + 1
            self._deliver(r, self._early.pop(r), res)

    def _gaps(self) -> tuple[tuple[int, int], ...]:
        gaps, start = [], None
        for r in range(self._delivered + 1, self._peer_top + 1):
            if r not in self._early:
                start = r if start is None else start
            elif start is not None:
                gaps.append((start, r - 1))
                start = None
            if len(gaps) >= 32:
                break
        if start is not None and len(gaps) < 32:
            gaps.append((start, self._peer_top))
        return tuple(gaps)

    def _on_ack(self, ack: int, nacks, now: float) -> None:
        progressed = False
        while self._unacked and next(iter(self._unacked)) <= ack:
            acked, _ = self._unacked.popitem(last=False)
            self._resent_at.pop(acked, None)
            progressed = True
        if progressed:
            self._progress_at = now if self._unacked else None
        if nacks:
            self.stats.nacks_rx += 1
        for first, last in nacks:
            if last > self._rseq or first > last:
                continue  # nonsense from an authenticated peer: ignore, do not crash
            missing_from = None
            for r in range(first, min(last, first + self.resend_limit) + 1):
                if r in self._unacked:
                    # The peer asks again every nack_interval while a gap is open: a
                    # datagram resent less than rto ago is on its way (or lost again,
                    # and asked for again later). Resending it at every NACK would
                    # multiply a large gap's resends and bury the link and the peer.
                    if now - self._resent_at.get(r, -self.rto) >= self.rto:
                        self._resend[r] = None
                elif r > ack:
                    missing_from = r if missing_from is None else missing_from
            if missing_from is not None:
                top = max((r for r in range(missing_from, last + 1) if r not in self._unacked), default=missing_from)
                self._skips.append((missing_from, top))

    # ---- timers -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self._unacked and self._progress_at is not None and now >= self._progress_at + self.rto:
            # Nothing acknowledged for a while: resend the oldest, and tell the peer our
            # top so it can NACK a lost tail.
            oldest = next(iter(self._unacked))
            self._resend[oldest] = None
            self._probe_at = now
            self._progress_at = now
        if self._rseq and self._probe_at is None and self._unacked:
            self._probe_at = now + self.probe_interval

    def next_deadline(self) -> float | None:
        ds = [d for d in (self._ack_due, self._nack_due, self._probe_at) if d is not None]
        if self._unacked and self._progress_at is not None:
            ds.append(self._progress_at + self.rto)
        return min(ds) if ds else None

    def has_output(self, now: float) -> bool:
        due = self.next_deadline()
        window_open = len(self._unacked) < self.resend_limit
        return (bool((self._queue and window_open) or self._unreliable or self._resend or self._skips)
                or (due is not None and due <= now))

    def peer_alive(self, now: float) -> bool:
        return self.last_heard is not None and now - self.last_heard < self.peer_timeout
