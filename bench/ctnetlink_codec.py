"""Speed of the ctnetlink codec (and, optionally, of commits into a kernel).

    .venv/bin/python bench/ctnetlink_codec.py            # codec only, no root
    .venv/bin/python bench/ctnetlink_codec.py --commit 10000   # + kernel (root, lab netns)

Codec figures are messages per second on one core: ``encode_new`` in the
commit form for a mix of TCP/UDP/ICMP, IPv4/IPv6, with and without NAT;
``parse_message`` of kernel-shaped dump parts; ``iter_messages`` over
~32 KiB dump datagrams.  ``--commit N`` creates N NATed UDP entries with
``CtSocket.commit_batch`` inside a fresh lab namespace (never the host's),
dumps them back, and reports entries/s for both.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctnetlink import constants as C  # noqa: E402
from ctnetlink.codec import (  # noqa: E402
    Entry,
    Tuple,
    encode_new,
    iter_messages,
    parse_message,
)

A = ipaddress.ip_address
BASE = C.IPS_CONFIRMED | C.IPS_SEEN_REPLY | C.IPS_ASSURED | C.IPS_SRC_NAT_DONE | C.IPS_DST_NAT_DONE


def sample_entries(n: int) -> list[Entry]:
    out = []
    for i in range(n):
        k = i % 6
        a, b = i >> 8 & 0xFF, i & 0xFF
        if k in (0, 1, 2):  # IPv4 TCP/UDP with SNAT, some with DNAT too
            proto = 6 if k == 0 else 17
            o = Tuple(C.AF_INET, proto, A(f"10.1.{a}.{b}"), A("198.51.100.7"), 1024 + i % 60000, 443)
            r = Tuple(C.AF_INET, proto, A("198.51.100.7"), A("203.0.113.1"), 443, 20000 + i % 40000)
            st = BASE | C.IPS_SRC_NAT | (C.IPS_DST_NAT if k == 2 else 0)
            tcp = dict(tcp_state=3, tcp_flags_orig=0x23, tcp_flags_reply=0x23,
                       tcp_wscale_orig=7, tcp_wscale_reply=7) if proto == 6 else {}
            out.append(Entry(o, r, st, 300, mark=i & 0xF, id=i, **tcp))
        elif k == 3:  # ICMP echo SNAT
            o = Tuple(C.AF_INET, 1, A(f"10.1.{a}.{b}"), A("198.51.100.7"), icmp_id=i & 0xFFFF, icmp_type=8)
            r = Tuple(C.AF_INET, 1, A("198.51.100.7"), A("203.0.113.1"), icmp_id=i & 0xFFFF, icmp_type=0)
            out.append(Entry(o, r, BASE | C.IPS_SRC_NAT, 30, id=i))
        else:  # IPv6 UDP/TCP, no NAT
            proto = 17 if k == 4 else 6
            o = Tuple(C.AF_INET6, proto, A(f"2001:db8:1::{i:x}"), A("2001:db8:2::1"), 1024 + i % 60000, 53)
            out.append(Entry(o, o.inverse(), BASE, 120, id=i,
                             **(dict(tcp_state=3, tcp_flags_orig=0x23, tcp_flags_reply=0x23)
                                if proto == 6 else {})))
    return out


def dump_part(e: Entry, seq: int) -> bytes:
    raw = bytearray(encode_new(e, seq, flags=0, for_commit=False))
    struct.pack_into("=H", raw, 6, C.NLM_F_MULTI)
    return bytes(raw)


def rate(fn, items, min_time: float = 1.0) -> float:
    n = 0
    t0 = time.perf_counter()
    while True:
        for it in items:
            fn(it)
        n += len(items)
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return n / dt


def bench_codec(n: int = 3000, min_time: float = 1.0) -> dict:
    ents = sample_entries(n)
    parts = [dump_part(e, 1) for e in ents]
    # ~32 KiB datagrams, as the kernel sends dumps to a 64 KiB reader
    grams, cur = [], b""
    for p in parts:
        if len(cur) + len(p) > 32768:
            grams.append(cur)
            cur = b""
        cur += p
    grams.append(cur)
    per_gram = len(parts) / len(grams)
    res = {
        "encode_new_commit_msgs_per_s": rate(lambda e: encode_new(e, 1), ents, min_time),
        "encode_new_verbatim_msgs_per_s": rate(lambda e: encode_new(e, 1, for_commit=False), ents, min_time),
        "parse_message_msgs_per_s": rate(lambda b: parse_message(b), parts, min_time),
        "iter_messages_msgs_per_s": rate(lambda g: list(iter_messages(g)), grams, min_time) * per_gram,
        "avg_commit_msg_bytes": sum(len(encode_new(e, 1)) for e in ents) / n,
    }
    return res


def bench_commit(n: int) -> dict:
    import trio

    from ctnetlink.socket import CtSocket
    from halab import Lab, require_root_and_netns

    require_root_and_netns()
    ents = []
    for i in range(n):
        a, b, p = i >> 16 & 0xFF, i >> 8 & 0xFF, i & 0xFF
        o = Tuple(C.AF_INET, 17, A(f"10.{a}.{b}.{p}"), A("198.51.100.7"), 1024 + i % 60000, 53)
        r = Tuple(C.AF_INET, 17, A("198.51.100.7"), A("203.0.113.1"), 53, 1024 + i % 60000)
        ents.append(Entry(o, r, BASE | C.IPS_SRC_NAT, 300))
    out: dict = {}
    with Lab() as lab:
        r = lab.add_host("r", ipv6=False)

        async def main():
            with CtSocket.open(rcvbuf=4 << 20, netns=r.netns) as s:
                t0 = time.perf_counter()
                res = await s.commit_batch(ents)
                dt = time.perf_counter() - t0
                out["commit_entries"] = n
                out["commit_failed"] = sum(1 for x in res if x.errno)
                out["commit_entries_per_s"] = n / dt
                t0 = time.perf_counter()
                dumped = await s.dump()
                dt = time.perf_counter() - t0
                out["dump_entries"] = len(dumped)
                out["dump_entries_per_s"] = len(dumped) / dt
                await s.flush()
                # the same with an ACK requested for every message
                t0 = time.perf_counter()
                res = await s.commit_batch(ents, ack_each=True)
                dt = time.perf_counter() - t0
                out["commit_ack_each_failed"] = sum(1 for x in res if x.errno)
                out["commit_ack_each_entries_per_s"] = n / dt
                await s.flush()

        trio.run(main)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commit", type=int, default=0, metavar="N",
                    help="also commit N entries into a lab namespace (root)")
    ap.add_argument("--time", type=float, default=1.0, help="seconds per codec figure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = bench_codec(min_time=args.time)
    if args.commit:
        res.update(bench_commit(args.commit))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:34s} {v:12,.0f}" if isinstance(v, float) else f"{k:34s} {v:12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
