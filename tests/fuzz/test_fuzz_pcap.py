"""Capture files for `ctsyncctl decode` (pcap, pcapng; Ethernet, VLAN, Linux cooked v1
and v2, raw IP; IPv4 and IPv6) and the datagrams and messages in them: PcapError for a
file that is not a capture, a line for anything else, whatever the packets hold."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctsync.pcapdecode import PcapError, decode_capture, describe_message, parse_datagram
from ctsync.wire import MsgType

from . import corpus
from .mutate import QUICK, SLOW, apply_edits, run


def capture(data):
    for line in decode_capture(data, corpus.KEY):
        assert isinstance(line, str)


def datagram(data):
    d = parse_datagram(data, corpus.KEY)
    for t, body in d.messages:
        assert isinstance(describe_message(t, body), str)


def message(data):
    """A message body under every type (the first byte picks the type: 0 to 8 and beyond)."""
    for t in (*MsgType, 7, 8, data[0] if data else 0):
        assert isinstance(describe_message(int(t), data[1:]), str)


def bodies() -> list[bytes]:
    return ([bytes([MsgType.ENTRY]) + b for b in corpus.netlink_messages()]
            + [bytes([MsgType.DESTROY]) + b[:40] for b in corpus.sync_datagrams()])


TARGETS = {"capture": (capture, corpus.captures, (PcapError,)),
           "datagram": (datagram, corpus.sync_datagrams, (PcapError,)),
           "message": (message, bodies, ())}


@pytest.mark.parametrize("name", TARGETS)
def test_mutants(name):
    target, seeds, allowed = TARGETS[name]
    run(target, seeds(), allowed, QUICK, seed=len(name), what=name)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", TARGETS)
def test_a_million_mutants(name):
    target, seeds, allowed = TARGETS[name]
    run(target, seeds(), allowed, SLOW, seed=1, what=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), data=st.binary(max_size=400))
def test_random_bytes(name, data):
    target, _, allowed = TARGETS[name]
    try:
        target(data)
    except allowed:
        pass


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), i=st.integers(0, 100),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5000), st.integers(0, 0xFFFF)), max_size=6))
def test_edited_files(name, i, edits):
    target, seeds, allowed = TARGETS[name]
    try:
        target(apply_edits(seeds()[i % len(seeds())], edits))
    except allowed:
        pass


def test_the_issue_inputs_are_in_the_corpus_of_failures_fixed():
    """The two inputs of issue #8, through the fuzz targets (also tests/ctsync/test_pcapdecode.py)."""
    capture(bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000010000001800000001000000"
                          "ffff00000900010018000000"))
    message(bytes([MsgType.ENTRY]) + bytes.fromhex("1400000002000000000000000000000000000000"))


def _block(btype: int, body: bytes, pad: bool) -> bytes:
    if pad:
        body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return btype.to_bytes(4, "little") + n.to_bytes(4, "little") + body + n.to_bytes(4, "little")


_options = st.lists(st.tuples(st.sampled_from([0, 2, 9, 9, 14, 0xFFFF]), st.binary(max_size=12), st.booleans()), max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(idbs=st.lists(st.tuples(st.integers(0, 300), _options, st.booleans()), min_size=1, max_size=3),
       packets=st.lists(st.tuples(st.sampled_from([6, 3, 5, 2]), st.integers(0, 4), st.binary(max_size=80)), max_size=4))
def test_pcapng_of_well_framed_blocks(idbs, packets):
    """pcapng whose blocks are framed right and whose contents are not: interface
    options cut short or too long (how issue #8's if_tsresol was found), packets for
    interfaces that do not exist, short bodies. Framing is where mutants die first."""
    data = _block(0x0A0D0D0A, bytes.fromhex("4d3c2b1a01000000ffffffffffffffff"), True)
    frame = corpus.captures()[0][40:40 + 100]  # an Ethernet frame from the pcap seed
    for linktype, options, pad in idbs:
        body = linktype.to_bytes(2, "little") + bytes(2) + (65535).to_bytes(4, "little")
        for code, value, cut in options:
            raw = code.to_bytes(2, "little") + len(value).to_bytes(2, "little") + value
            body += raw[:-1] if cut and value else raw + b"\0" * (-len(raw) % 4)
        data += _block(1, body, pad)
    for btype, iid, extra in packets:
        body = iid.to_bytes(4, "little") + bytes(8) + (len(frame)).to_bytes(4, "little") * 2 + frame + extra
        data += _block(btype, body, True)
    try:
        capture(data)
    except PcapError:
        pass
