"""Speed of the batch codec (ctnetlink.batch): the pure-Python reference against the C
extension, no kernel, no root.

    .venv/bin/python bench/batch_codec.py [--events 50000] [--time 1.0] [--json]

Figures (one core, events or messages per second):

- ``events``: kernel-shaped conntrack events (mixed IPv4/IPv6, TCP/UDP/ICMP, SNAT/DNAT;
  40 % NEW, 40 % UPDATE, 20 % DESTROY) through ``events(datagram, filter, own_portids)``:
  decode, filter, identity key, commit form. Once with one event per datagram (how the
  kernel sends events) and once in ~32 KiB dump datagrams (how it sends dumps).
- ``key_and_timeout``: a backup's decode of each replicated commit message.
- for scale, what ctsync does next with each entry today (not part of the codec): the sync
  channel packing ENTRY messages into authenticated datagrams, and unpacking them.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.ctnetlink_codec import sample_entries  # noqa: E402
from ctnetlink import batch, batch_python  # noqa: E402
from ctnetlink import constants as C  # noqa: E402
from ctnetlink.codec import encode_new  # noqa: E402

OWN_PORTID = 4242


def kernel_events(n: int) -> list[bytes]:
    """``n`` events as the kernel sends them, one message each; every 50th was caused by our
    own commit (portid OWN_PORTID: skipped undecoded)."""
    out = []
    for i, e in enumerate(sample_entries(n)):
        k = i % 5
        raw = bytearray(encode_new(e, 0, 0, for_commit=False))
        mtype, flags = ((C.CT_DELETE, 0) if k == 4 else (C.CT_NEW, C.NLM_F_CREATE | C.NLM_F_EXCL) if k < 2
                        else (C.CT_NEW, 0))
        struct.pack_into("=HHII", raw, 4, mtype, flags, 0, OWN_PORTID if i % 50 == 49 else 0)
        out.append(bytes(raw))
    return out


def dump_datagrams(msgs: list[bytes]) -> list[bytes]:
    grams, cur = [], b""
    for m in msgs:
        if len(cur) + len(m) > 32768:
            grams.append(cur)
            cur = b""
        cur += m
    return grams + [cur]


def rate(fn, items, per_item: float, min_time: float) -> float:
    """Items (times per_item) per second of ``fn`` over ``items``, repeated for min_time."""
    n, t0 = 0, time.perf_counter()
    while True:
        for it in items:
            fn(it)
        n += len(items)
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return n * per_item / dt


def bench(n: int, min_time: float) -> dict:
    impls = {"python": batch_python}
    try:
        impls["c"] = batch.load_c()
    except ImportError as e:
        print(f"C extension unavailable: {e}", file=sys.stderr)
    events = kernel_events(n)
    grams = dump_datagrams(events)
    per_gram = len(events) / len(grams)
    commits = [encode_new(e, 0, C.NLM_F_CREATE | C.NLM_F_EXCL, True) for e in sample_entries(n)]
    res: dict = {"events": n, "events_per_dump_datagram": round(per_gram, 1)}
    for name, impl in impls.items():
        filt = impl.Filter({C.IPPROTO_SCTP}, {7}, ())  # a typical config: matches none of these
        own = {OWN_PORTID}
        res[f"{name}_events_per_s"] = rate(lambda d: impl.events(d, filt, own), events, 1, min_time)
        res[f"{name}_dump_entries_per_s"] = rate(lambda d: impl.events(d, filt, None), grams, per_gram, min_time)
        res[f"{name}_key_and_timeout_per_s"] = rate(impl.key_and_timeout, commits, 1, min_time)
    if "c" in impls:
        for what in ("events", "dump_entries", "key_and_timeout"):
            res[f"speedup_{what}"] = res[f"c_{what}_per_s"] / res[f"python_{what}_per_s"]
    res.update(bench_channel(commits, min_time))
    return res


def bench_channel(bodies: list[bytes], min_time: float) -> dict:
    """ENTRY messages through ctsync's channel: packed into 1400-byte authenticated datagrams
    (send + datagrams_to_send) and unpacked on the other side (receive_datagram)."""
    from ctsync.channel import Channel
    from ctsync.wire import Message, MsgType

    msgs = [Message(MsgType.ENTRY, b) for b in bodies]
    key = b"k" * 32

    def pack_all() -> list[bytes]:
        ch = Channel(1, 1, key, resend_limit=1 << 20, queue_limit=1 << 22)
        hello = Channel(2, 2, key)  # the peer's first words: ch learns the epoch to echo
        hello.send_unreliable(Message(MsgType.HEARTBEAT, b""), 0.0)
        for d in hello.datagrams_to_send(0.0):
            ch.receive_datagram(d, 0.0)
        for m in msgs:
            ch.send(m, 0.0)
        return ch.datagrams_to_send(0.0)

    out, n, t0 = [], 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        out = pack_all()
        n += len(msgs)
    pack = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        rx = Channel(2, 2, key)
        got = 0
        for d in out:
            got += len(rx.receive_datagram(d, 0.0).messages)
        n += got
    unpack = n / (time.perf_counter() - t0)
    assert got == len(msgs), (got, len(msgs))
    return {"channel_pack_entries_per_s": pack, "channel_unpack_entries_per_s": unpack,
            "entries_per_sync_datagram": round(len(msgs) / max(1, len(out)), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--time", type=float, default=1.0, help="minimum seconds per figure")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = bench(a.events, a.time)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:34s} {v:14,.1f}" if isinstance(v, float) else f"{k:34s} {v:14,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
