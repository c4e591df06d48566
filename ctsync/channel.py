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

Epochs (a random number per incarnation, from the driver) are not ordered: a node whose
clock went back is not a replay. A datagram is acted on only if it echoes our current
epoch, and within one epoch of ours we accept one epoch of the peer. A second one that
echoes it (the peer restarted after hearing us, or a replay of an incarnation that heard
us too: nothing tells them apart) makes us take a new epoch; the first incarnation to
echo that one is accepted, and only a datagram made after our renewal can echo it. Each
epoch is also a stream: its rseqs start at 1, and a renewal moves what the peer had not
acknowledged into the new stream, so nothing reliable is lost.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from .wire import Datagram, Message, ReplayWindow, WireError, decode, encode, overhead

PROBE = 7  # channel-internal: body u64 = highest rseq sent, lets the peer see a lost tail
SKIP = 8  # channel-internal: body u64 first, u64 last = rseqs the sender can no longer resend
#: NACK ranges we send at most per datagram, and read at most from one
MAX_NACK_RANGES = 32
_U64 = struct.Struct("!Q")
_U64x2 = struct.Struct("!QQ")
_U64x3 = struct.Struct("!QQQ")


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
    epoch_renewals: int = 0  # a second incarnation of the peer echoed our epoch (it restarted): we took a new one
    lost: int = 0  # reliable datagrams the peer could not resend (a resync repairs them)
    resend_overflows: int = 0
    reorder_refused: int = 0  # early datagrams not buffered (reorder buffer full, or beyond its window): asked for again later
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
    reorder_bytes: int = 16 << 20  # and the bytes of message they may hold (4096 datagrams of 64 KiB: 256 MiB)
    queue_limit: int = 1 << 18  # messages waiting for the send window (~60 MB of entries; config send_queue)
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
        self._skips: dict[tuple[int, int], None] = {}  # SKIP ranges to announce (a dict: each once)
        self._acked = 0  # the peer's highest cumulative ack of our stream
        # receive side
        self._window = ReplayWindow()
        self.peer_epoch = 0  # the incarnation of the peer whose stream we receive
        self._bound = 0  # the peer's epoch accepted since our epoch began (0: none yet)
        self._delivered = 0  # highest rseq delivered in order
        self._early: dict[int, tuple[Message, ...]] = {}
        self._early_bytes = 0
        self._peer_top = 0  # highest rseq the peer says it sent
        self._gap_since: float | None = None  # since when a reliable message is missing
        self._ack_due: float | None = None
        self._nack_due: float | None = None
        self.last_heard: float | None = None
        self._echo = 0  # the peer's epoch we echo in our datagrams (see receive_datagram)
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

    @property
    def window_open(self) -> bool:
        """The send window has room: queued messages go out at the next send."""
        return len(self._unacked) < self.resend_limit

    @property
    def next_rseq(self) -> int:
        """The rseq of our next new reliable datagram (in our current epoch's stream):
        a message queued now gets this one or a later one."""
        return self._rseq + 1

    @property
    def acked(self) -> int:
        """The highest rseq of our current stream the peer has acknowledged (cumulative)."""
        return self._acked

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
        # Our ack and NACKs are about the stream of the peer epoch we receive; to another
        # one (the new incarnation we echo before accepting any of its datagrams) they
        # would acknowledge what it never sent us.
        mine = self._echo == self.peer_epoch
        nacks = self._gaps() if mine and self._nack_due is not None and now >= self._nack_due else ()
        if nacks:
            self.stats.nacks_tx += 1
            self._nack_due = now + self.nack_interval
        if self._ack_due is not None:
            self.stats.acks_tx += 1
            self._ack_due = None
        self.stats.datagrams_tx += 1
        ack = self._delivered if mine else 0
        return encode(Datagram(self.node, self.epoch, self._seq, rseq, ack, nacks, msgs, echo=self._echo),
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
        if d.echo != self.epoch:
            # Not addressed to this epoch of ours: a replay of traffic captured before it
            # began, or the peer's first words before it heard it. Act on nothing, not
            # even liveness; answer soon so a real peer learns our epoch. Until a peer
            # epoch is accepted in this epoch of ours, we echo whoever spoke last.
            self.stats.unconfirmed += 1
            if not self._bound:
                self._echo = d.epoch
            if self._ack_due is None:
                self._ack_due = now
            return res
        if self._bound and d.epoch != self._bound:
            # A second incarnation of the peer echoes this epoch of ours: the peer
            # restarted after hearing us, or this is a replay of an incarnation that heard
            # us too. Epochs are not ordered (a clock can go back), so nothing tells them
            # apart: take a new epoch, and accept the first incarnation that echoes it.
            # A datagram echoing it was made after this moment: not a replay.
            self._renew_epoch(d.epoch, now)
            return res
        window = self._window if d.epoch == self.peer_epoch else ReplayWindow()  # a new epoch: a new window
        refused = window.check(d.seq)
        if refused == "replayed":
            self.stats.replayed += 1
            return res
        if refused:
            self.stats.malformed += 1
            return res
        self.stats.datagrams_rx += 1
        self.last_heard = now
        self._bound = self._echo = d.epoch
        if d.epoch != self.peer_epoch:
            # A new stream from the peer (its first, or a restart): numbered from 1.
            res.peer_restarted = self.peer_epoch != 0
            self.peer_epoch, self._window = d.epoch, window
            self._delivered, self._peer_top = 0, 0
            self._early.clear()
            self._early_bytes = 0
            self._nack_due = None
            self._gap_since = None
        self._on_ack(d.ack, d.nacks, now)
        reliable = d.rseq != 0
        for m in d.messages:
            if m.type == PROBE and len(m.body) == 8:
                self._peer_top = max(self._peer_top, _U64.unpack(m.body)[0])
            elif m.type == SKIP and len(m.body) == 16:
                first, last = _U64x2.unpack(m.body)
                # The sender skips only what we asked for, below its top: a SKIP past
                # the top we know of is nonsense (it would swallow the stream to come).
                last = min(last, self._peer_top)
                if last > self._delivered:
                    self.stats.lost += last - max(first, self._delivered + 1) + 1
                    res.lost = True
                    for r in [r for r in self._early if r <= last]:
                        self._early_bytes -= _size(self._early.pop(r))
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
            else:
                # Within the reorder window and its bounds only: what is refused is
                # asked for again once the gap is filled (_gaps never looks further).
                size = _size(d.messages)
                if (d.rseq <= self._delivered + self.reorder_limit and len(self._early) < self.reorder_limit
                        and self._early_bytes + size <= self.reorder_bytes):
                    self._early[d.rseq] = d.messages
                    self._early_bytes += size
                else:
                    self.stats.reorder_refused += 1
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

    def _renew_epoch(self, candidate: int, now: float) -> None:
        """Take a new epoch: a new incarnation of us for the peer, with a new stream.
        What the peer had not acknowledged goes first into the new stream (numbered
        from 1 again), so no reliable message is lost; the peer's replica is rebuilt by
        the resync that either side asks for when it sees a new epoch anyway."""
        self.stats.epoch_renewals += 1
        self.epoch = _next_epoch(self.epoch, candidate, self.stats.epoch_renewals)
        self._bound, self._echo = 0, candidate
        self._queue.extendleft(reversed([m for msgs in self._unacked.values() for m in msgs]))
        self._unacked.clear()
        self._resend.clear()
        self._resent_at.clear()
        self._skips.clear()
        self._rseq = self._acked = 0
        self._progress_at = self._probe_at = None
        self._ack_due = now  # tell the candidate our new epoch at once

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
            msgs = self._early.pop(r)
            self._early_bytes -= _size(msgs)
            self._deliver(r, msgs, res)

    def _gaps(self) -> tuple[tuple[int, int], ...]:
        """What is missing between the last delivered rseq and the peer's top, as at most
        MAX_NACK_RANGES ranges, and only within the reorder window (what we would buffer
        if it came). Walks the buffered rseqs, never the sequence counter: the peer's
        top may be 2^40 rseqs away (a restarted receiver) or 2^64 (a PROBE of nonsense)."""
        lo = self._delivered + 1
        hi = min(self._peer_top, self._delivered + self.reorder_limit)
        gaps: list[tuple[int, int]] = []
        for r in sorted(self._early):
            if r > hi or len(gaps) >= MAX_NACK_RANGES:
                return tuple(gaps)
            if r > lo:
                gaps.append((lo, r - 1))
            lo = r + 1
        if lo <= hi and len(gaps) < MAX_NACK_RANGES:
            gaps.append((lo, hi))
        return tuple(gaps)

    def _on_ack(self, ack: int, nacks, now: float) -> None:
        progressed = False
        while self._unacked and next(iter(self._unacked)) <= ack:
            acked, _ = self._unacked.popitem(last=False)
            self._resent_at.pop(acked, None)
            progressed = True
        if progressed:
            self._progress_at = now if self._unacked else None
        self._acked = max(self._acked, min(ack, self._rseq))
        if not nacks:
            return
        self.stats.nacks_rx += 1
        # What we still hold is one run of rseqs, oldest..newest: the resend queue is
        # only ever cut at its old end. Everything a NACK asks for below it is gone (one
        # SKIP to our oldest, whatever the NACK's extent), everything in it is resent.
        # Ranges are clamped to what we sent and merged, so a peer asking for 2^64 rseqs,
        # or for the whole window in every range, costs one pass over the window.
        oldest = next(iter(self._unacked), self._rseq + 1)
        want: list[tuple[int, int]] = []
        for first, last in nacks[:MAX_NACK_RANGES]:
            first, last = max(first, 1), min(last, self._rseq)
            if first > last:
                continue  # nonsense from an authenticated peer (we never sent it): ignore
            if max(first, self._acked + 1) < oldest:
                self._skips[(max(first, self._acked + 1), oldest - 1)] = None
            if last >= oldest:
                want.append((max(first, oldest), last))
        upto = 0
        for first, last in sorted(want):
            for r in range(max(first, upto + 1), last + 1):
                # The peer asks again every nack_interval while a gap is open: a
                # datagram resent less than rto ago is on its way (or lost again,
                # and asked for again later). Resending it at every NACK would
                # multiply a large gap's resends and bury the link and the peer.
                if now - self._resent_at.get(r, -self.rto) >= self.rto:
                    self._resend[r] = None
            upto = max(upto, last)

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


def _size(msgs: tuple[Message, ...]) -> int:
    return sum(m.size for m in msgs)


def _next_epoch(epoch: int, candidate: int, n: int) -> int:
    """A new epoch of ours, derived from the current one (random, from the driver): as
    unpredictable and as unlikely to repeat one of ours as it is, and no I/O in here."""
    h = hashlib.sha256(_U64x3.pack(epoch, candidate, n)).digest()
    return int.from_bytes(h[:8], "big") or 1
