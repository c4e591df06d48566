"""ctnetlink messages: events and dumps from the kernel, bodies from the peer. The
decoders raise CodecError and nothing else; iter_messages yields a CodecError for a
message it cannot read and goes on; check_commit_body either refuses (CodecError) or
accepts a body that then decodes as the entry it is."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctnetlink.codec import CodecError, Entry, Message, NlError, check_commit_body, iter_messages, key_and_timeout, parse_message

from . import corpus
from .mutate import QUICK, SLOW, apply_edits, run


def parse(data):
    for off in (0, 4):
        try:
            msg = parse_message(data, off)
        except CodecError:
            continue
        assert len(msg) == 5 and isinstance(msg[4], (Entry, NlError, type(None))), msg


def walk(data):
    for m in iter_messages(data):
        assert isinstance(m, Message) and isinstance(m.payload, (Entry, NlError, CodecError, type(None))), m


def key(data):
    k, timeout = key_and_timeout(data)
    assert isinstance(k, bytes) and isinstance(timeout, int)


def commit_body(data):
    """Accepted means usable: one message that decodes as an entry, whose key the backup
    can read, and whose shape a second check accepts again."""
    check_commit_body(data)
    msgtype, _, _, _, e = parse_message(data)
    assert isinstance(e, Entry), e
    key_and_timeout(data)
    check_commit_body(bytes(data))


TARGETS = {"parse_message": (parse, corpus.netlink_messages), "iter_messages": (walk, corpus.netlink_messages),
           "key_and_timeout": (key, corpus.netlink_messages), "check_commit_body": (commit_body, corpus.commit_bodies)}


@pytest.mark.parametrize("name", TARGETS)
def test_mutants(name):
    target, seeds = TARGETS[name]
    errors = run(target, seeds(), (CodecError,), QUICK, seed=len(name), what=name)
    assert errors < QUICK  # some mutants are still messages


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", TARGETS)
def test_a_million_mutants(name):
    target, seeds = TARGETS[name]
    run(target, seeds(), (CodecError,), SLOW, seed=1, what=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), data=st.binary(max_size=400))
def test_random_bytes(name, data):
    try:
        TARGETS[name][0](data)
    except CodecError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), i=st.integers(0, 100),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 400), st.integers(0, 0xFFFF)), max_size=6))
def test_edited_messages(name, i, edits):
    target, seeds = TARGETS[name]
    try:
        target(apply_edits(seeds()[i % len(seeds())], edits))
    except CodecError:
        pass
