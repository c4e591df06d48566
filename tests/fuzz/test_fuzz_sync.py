"""Sync datagrams from the wire: ctsync.wire.decode (WireError only), and what a receiver
does with authentic ones (Channel.receive_datagram, the Replicator behind it, and what
they send or decide next): nothing may raise or hang. An authentic mutant is a mutated
datagram with its HMAC recomputed: what the peer (or whoever has the key) can send."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctsync.wire import HEADER_LEN, MAC_LEN, MAGIC, VERSION, WireError, decode

from . import corpus
from .mutate import QUICK, SLOW, apply_edits, run, run_one


def sign(raw: bytes) -> bytes:
    return raw + hmac.new(corpus.KEY, raw, hashlib.sha256).digest()


def unsigned() -> list[bytes]:
    return [d[:-MAC_LEN] for d in corpus.sync_datagrams()]


def targets(mode: str = "commit"):
    pair = corpus.SyncPair(mode)
    a, b = pair.a, pair.b
    seqs = iter(range(1 << 40, 1 << 41))

    def wire(data):
        decode(data, corpus.KEY)

    def wire_authentic(raw):
        decode(sign(raw), corpus.KEY)

    def receiver_raw(raw):
        pair.now += 0.003
        b.datagram(sign(raw), pair.now)
        b.handle_timer(pair.now)
        b.poll(pair.now)  # acks, NACK ranges, resyncs, commits: what the datagram led to
        b.next_deadline()
        b.not_ready(pair.now)

    def receiver(raw):
        """The header kept as the real sender's (its node, epoch, our epoch echoed, a
        fresh seq): the mutants get past the replay checks to the ranges and messages."""
        if len(raw) >= HEADER_LEN:
            h = bytearray(raw)
            struct.pack_into("!4sB", h, 0, MAGIC, VERSION)
            struct.pack_into("!HQQQ", h, 6, a.cfg.node_id, a.channel.epoch, b.channel.epoch, next(seqs))
            raw = bytes(h)
        receiver_raw(raw)

    def failover(raw):
        receiver(raw)
        if b.channel.stats.datagrams_rx % 97 == 0:  # now and then: move to master and back with what arrived
            b.become_master(pair.now)
            b.poll(pair.now)
            b.become_backup(pair.now)

    return {"wire": (wire, lambda: list(corpus.sync_datagrams()), (WireError,)),
            "wire_authentic": (wire_authentic, unsigned, (WireError,)),
            "receiver_raw": (receiver_raw, unsigned, ()),
            "receiver": (receiver, unsigned, ()),
            "receiver_failover": (failover, unsigned, ())}, pair


NAMES = list(targets()[0])


@pytest.mark.parametrize("mode", ["commit", "inject"])
@pytest.mark.parametrize("name", NAMES)
def test_mutants(name, mode):
    ts, pair = targets(mode)
    target, seeds, allowed = ts[name]
    run(target, seeds(), allowed, QUICK, seed=len(name), what=name)
    if name in ("receiver", "receiver_failover"):  # the mutants were acted on, not only refused
        assert pair.b.channel.stats.datagrams_rx > QUICK // 10, pair.b.channel.stats


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", NAMES)
def test_a_million_mutants(name):
    ts, _ = targets()
    target, seeds, allowed = ts[name]
    run(target, seeds(), allowed, SLOW, seed=1, what=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes(data):
    ts, _ = targets()
    run_one(ts["wire"][0], data, (WireError,))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes_signed(data):
    ts, _ = targets()
    run_one(ts["receiver"][0], data)  # signed: parsed as far as it goes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, 100),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1500), st.integers(0, 0xFFFF)), max_size=6))
def test_edited_datagrams(i, edits):
    ts, _ = targets()
    seeds = unsigned()
    run_one(ts["receiver_failover"][0], apply_edits(seeds[i % len(seeds)], edits))
