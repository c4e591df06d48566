"""The sync channel's work per datagram is bounded by its windows, never by its counters.

A node's reliable sequence (rseq) counts every reliable datagram of its run, table
refreshes included: about 4e7 a day with 100k entries. A walk "from 1 up" (a restarted
peer's first NACK, the SKIP that answers it, the highest missing rseq) then costs seconds
to minutes of a frozen event loop after weeks, and an authenticated PROBE carrying
2^64-1 about 2^64 steps. These tests count the per-rseq lookups in the channel's
buffers (a dict that fails past a budget) instead of timing anything: a walk over the
counter shows up as one lookup per rseq and fails at once.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from ctsync.channel import PROBE, SKIP, Channel
from ctsync.wire import Datagram, Message, MsgType, encode

from test_channel import KEY, Link, bodies, feed, handshake

BIG = 1 << 40  # the rseq of a sender after a few weeks
U64_MAX = (1 << 64) - 1


class OverBudget(AssertionError):
    pass


def _counting(base):
    class Counting(base):
        """A dict counting its per-key operations; past ``budget`` it fails."""

        def __init__(self, *args, budget: int, **kw):
            super().__init__(*args, **kw)
            self.budget, self.ops = budget, 0

        def _tick(self):
            self.ops += 1
            if self.ops > self.budget:
                raise OverBudget(f"more than {self.budget} lookups: a walk over the sequence counter")

        def __contains__(self, k):
            self._tick()
            return super().__contains__(k)

        def __getitem__(self, k):
            self._tick()
            return super().__getitem__(k)

        def get(self, k, default=None):
            self._tick()
            return super().get(k, default)

        def pop(self, k, *default):
            self._tick()
            return super().pop(k, *default)

    return Counting


CountingDict, CountingOrderedDict = _counting(dict), _counting(OrderedDict)


def watch(ch: Channel, budget: int) -> None:
    """Count the lookups in ``ch``'s receive buffer and resend queue from now on."""
    ch._early = CountingDict(ch._early, budget=budget)
    ch._unacked = CountingOrderedDict(ch._unacked, budget=budget)


def long_running(ch: Channel, rseq: int = BIG) -> Channel:
    """``ch`` as after weeks of uptime: its reliable sequence is at ``rseq``."""
    ch._rseq = rseq
    return ch


def meet(a: Channel, b: Channel) -> None:
    """Both sides have accepted a datagram of the other's current epoch."""
    handshake(a, b)
    a.send_unreliable(Message(MsgType.HEARTBEAT, b""), 0.0)
    for d in a.datagrams_to_send(0.0):
        b.receive_datagram(d, 0.0)
    assert a.peer_epoch == b.epoch and b.peer_epoch == a.epoch


def small_pair():
    kw = dict(resend_limit=64, reorder_limit=64)
    return Channel(1, 1000, KEY, **kw), Channel(2, 2000, KEY, **kw)


def forged_by(sender: Channel, receiver: Channel, rseq: int, msgs, nacks=()) -> bytes:
    """An authenticated datagram of ``sender``'s current epoch, as a buggy peer (or one
    holding the key) would send it."""
    sender._seq += 1
    return encode(Datagram(sender.node, sender.epoch, sender._seq, rseq, 0, tuple(nacks), tuple(msgs),
                           echo=receiver.epoch), KEY)


def test_a_fresh_receiver_catches_up_with_a_long_running_sender_in_window_steps():
    """The issue's case: the receiver is new to the sender's stream (it restarted), whose
    rseq is at 2^40. Its first NACK, the sender's SKIP and the receiver's handling of the
    SKIP used to walk every rseq from 1: now each is bounded by the windows."""
    a, b = small_pair()
    long_running(a)
    meet(a, b)
    watch(a, 20_000)
    watch(b, 20_000)
    feed(a, 50)
    link = Link(a, b)
    link.run(3.0)
    assert link.got["b"] == bodies(50)
    assert link.lost["b"] and b.stats.lost == BIG  # what the sender could no longer resend, announced once
    assert a.unacked == 0


def test_a_probe_of_2_to_the_64_is_handled_in_window_steps():
    a, b = small_pair()
    meet(a, b)
    watch(a, 20_000)
    watch(b, 20_000)
    b.receive_datagram(forged_by(a, b, 0, [Message(PROBE, struct.pack("!Q", U64_MAX))]), 0.1)
    link = Link(a, b)
    link.now = 0.1
    link.run(1.0)  # b NACKs what it believes missing; a cannot resend what it never sent
    feed(a, 5)
    link.run(2.0)
    assert link.got["b"] == bodies(5)  # the stream goes on


def test_nack_ranges_far_beyond_what_was_sent_cost_no_more_than_the_window():
    """A NACK that asks for every rseq since 1 of a long-running sender (a restarted
    peer), repeated in as many ranges as a datagram can hold."""
    a, b = small_pair()
    long_running(a)
    meet(a, b)
    feed(a, 30)
    a.datagrams_to_send(0.0)  # a few datagrams unacknowledged at 2^40 + 1...
    watch(a, 20_000)
    nacks = [(1, BIG + 2)] * 4000 + [(BIG + 5, U64_MAX)]
    a.receive_datagram(forged_by(b, a, 0, [], nacks), 0.2)
    out = a.datagrams_to_send(0.3)
    assert a.stats.retransmits == a.unacked  # each unacknowledged datagram resent once
    skips = [m for d in out for m in _decode(d).messages if m.type == SKIP]
    assert [struct.unpack("!QQ", m.body) for m in skips] == [(1, BIG)]  # the gap before them, once


def test_an_absurd_skip_is_handled_in_window_steps_and_breaks_nothing():
    a, b = small_pair()
    meet(a, b)
    watch(b, 20_000)
    b.receive_datagram(forged_by(a, b, 0, [Message(SKIP, struct.pack("!QQ", 1, U64_MAX))]), 0.1)
    feed(a, 5)
    link = Link(a, b)
    link.now = 0.2
    link.run(2.0)
    assert link.got["b"] == bodies(5)


def _decode(d: bytes):
    from ctsync.wire import decode
    return decode(d, KEY)


def early_bytes(ch: Channel) -> int:
    """Bytes of message held in ``ch``'s reorder buffer."""
    return sum(m.size for msgs in ch._early.values() for m in msgs)


def test_the_reorder_buffer_is_bounded_in_bytes_and_refusals_are_counted():
    """Datagrams up to 64 KiB (a large `mtu`) behind one lost datagram: 4096 of them used
    to pin about 256 MiB. The buffer now stops at 16 MiB by default; what it refuses is
    counted, asked for again once the gap is filled, and delivered in order."""
    kw = dict(mtu=65000)
    a, b = Channel(1, 1000, KEY, **kw), Channel(2, 2000, KEY, **kw)
    meet(a, b)
    big = [struct.pack("!I", i) + bytes(30000) for i in range(600)]  # two per datagram
    for body in big:
        a.send(Message(MsgType.ENTRY, body), 0.0)
    out = a.datagrams_to_send(0.0)
    assert len(out) == 300
    peak, got = 0, []
    for d in out[1:]:  # the first one is lost
        got += b.receive_datagram(d, 0.0).messages
        peak = max(peak, early_bytes(b))
    assert got == [] and peak <= 16 << 20, f"{peak} bytes buffered"
    assert b.stats.reorder_refused > 0
    link = Link(a, b)
    link.now = 0.01
    link.run(5.0)
    assert [m for m in link.got["b"]] == big  # everything, once, in order
    assert early_bytes(b) == 0
