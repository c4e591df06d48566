"""What a peer sends as ENTRY bodies reaches the kernel only if it is one commit-form
CT_NEW (issue #5): the rest is counted (entries_refused) and dropped, in commit and in
inject mode."""

from __future__ import annotations

import dataclasses

import pytest
from test_replicator import Net, cached_keys, entry

from ctnetlink.codec import encode_delete, encode_flush, encode_new
from ctnetlink.constants import NLM_F_CREATE, NLM_F_EXCL
from ctnetlink.key import entry_key
from ctsync.wire import Message, MsgType

COMMIT = NLM_F_CREATE | NLM_F_EXCL


def smuggled() -> list[bytes]:
    good = encode_new(entry(1), 0, COMMIT, True)
    return [
        good + encode_flush(),  # the example: a flush after a valid entry
        good + encode_delete(entry(2).orig),
        encode_flush(),
        encode_new(dataclasses.replace(entry(3), id=7), 0, COMMIT, False),  # the dump form: with CTA_ID
    ]


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
