"""What a peer sends as ENTRY bodies reaches the kernel only if it is one commit-form
CT_NEW (issue #5). Since wire version 2 a body is the compact form of that message
(ctnetlink.compact): the backup expands it and checks the expansion. A compact form
that does not expand, or expands to anything but one commit-form CT_NEW, is counted
(entries_refused) and dropped, in commit and in inject mode."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from test_replicator import Net, cached_keys, entry

from ctnetlink.codec import encode_delete, encode_flush, encode_new
from ctnetlink.compact import compact_of
from ctnetlink.constants import IPS_CONFIRMED, IPS_DYING, NLM_F_CREATE, NLM_F_EXCL
from ctnetlink.key import entry_key
from ctsync.wire import Message, MsgType

COMMIT = NLM_F_CREATE | NLM_F_EXCL
STATUS_AT = 16  # an IPv4 key is 16 bytes; the status follows it (ctnetlink/compact.py)


def _with_status(body: bytes, change) -> bytes:
    status = struct.unpack_from("!I", body, STATUS_AT)[0]
    return body[:STATUS_AT] + struct.pack("!I", change(status)) + body[STATUS_AT + 4:]


def smuggled() -> list[bytes]:
    good = compact_of(entry(1))
    assert struct.unpack_from("!I", good, STATUS_AT)[0] & IPS_CONFIRMED  # the offset is right
    commit_form = encode_new(entry(1), 0, COMMIT, True)
    return [
        # what version 1 carried, and its smuggling (issue #5): not compact forms at all
        commit_form,
        commit_form + encode_flush(),
        encode_flush(),
        # a compact form with a request after it, cut, or with a byte more
        good + encode_delete(entry(2).orig),
        good[:-1],
        good + b"\0",
        # compact forms that expand, to messages the commit must not send: a status without
        # CONFIRMED or with a bit the commit strips (DYING: EBUSY), a helper name the kernel
        # does not take (too long, not printable)
        _with_status(good, lambda s: s & ~IPS_CONFIRMED),
        _with_status(good, lambda s: s | IPS_DYING),
        compact_of(dataclasses.replace(entry(3), helper="x" * 20)),
        compact_of(dataclasses.replace(entry(4), helper="a\x01b")),
        # a key with ports for a protocol that has none (ESP): it expands to the message of
        # the entry without them, which would be kept twice under two keys
        _esp_with_ports(),
    ]


def _esp_with_ports() -> bytes:
    e = entry(6, proto=50)
    e = dataclasses.replace(e, orig=dataclasses.replace(e.orig, sport=0, dport=0),
                            reply=dataclasses.replace(e.reply, sport=0, dport=0))
    body = compact_of(e)
    assert body[12:16] == bytes(4)  # the key's l4 field (ctnetlink.key)
    return body[:12] + b"\x00\x08\x00\x00" + body[16:]


@pytest.mark.parametrize("mode", ["commit", "inject"])
def test_smuggled_requests_never_reach_the_commit(mode):
    net = Net(mode=mode)
    net.run(0.5)
    a, b = net.n["a"], net.n["b"]
    for body in smuggled():
        a.channel.send(Message(MsgType.ENTRY, body), net.now)
    net.event("a", "new", entry(5))  # and a real one after them
    net.run(1.0)
    to_kernel = net.injected["b"] if mode == "inject" else net.become_master("b").messages
    assert to_kernel == [encode_new(entry(5), 0, COMMIT, True)]
    assert cached_keys(b) == {entry_key(entry(5))}
    assert b.counters.entries_refused == len(smuggled())
    assert b.counters.entries_rx == 1
