"""Kernel-shaped conntrack datagrams, valid and broken, for the batch codec's differential
tests (test_batch_codec.py) and for running its C code under valgrind or AddressSanitizer.

A seeded ``random`` corpus, much faster to produce than hypothesis examples, so that a run
can cover 10^5 datagrams:

    .venv/bin/python tests/ctsync/batch_corpus.py --cases 100000          # C vs Python
    PYTHONMALLOC=malloc valgrind --error-exitcode=9 .venv/bin/python \\
        tests/ctsync/batch_corpus.py --cases 3000 --c-only                 # memory errors
    .venv/bin/python tests/ctsync/batch_corpus.py --cases 2000 --c-only --loops 400 --rss
                                                                           # 1M calls: RSS flat?
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import resource
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ctnetlink import batch_python as P  # noqa: E402
from ctnetlink import constants as C  # noqa: E402
from ctnetlink.codec import CodecError, Entry, Tuple, encode_new  # noqa: E402

V4, V6 = C.AF_INET, C.AF_INET6
COMMIT = C.NLM_F_CREATE | C.NLM_F_EXCL
NEW, UPDATE, DESTROY, DUMP = "new", "update", "destroy", "dump"
KNOWN_PROTOS = [C.IPPROTO_TCP, C.IPPROTO_UDP, C.IPPROTO_UDPLITE, C.IPPROTO_SCTP, C.IPPROTO_DCCP,
                C.IPPROTO_GRE, C.IPPROTO_ICMP, C.IPPROTO_ICMPV6]
_HDR = struct.Struct("=IHHII")
A = ipaddress.ip_address
POOL4 = [A(f"10.{i}.{i * 7 % 256}.{i * 13 % 256}") for i in range(1, 7)]
POOL6 = [A(f"fd{i:02x}::{i * 29:x}") for i in range(1, 7)]


# --------------------------------------------------------------------------
# messages


def kernel_msg(e: Entry, kind: str, seq: int = 0, portid: int = 0, nested: bool = True) -> bytes:
    """``e`` as the kernel sends it: an event (NEW: CT_NEW with CREATE|EXCL, UPDATE: CT_NEW
    flags 0, DESTROY: CT_DELETE) or a dump part (CT_NEW, NLM_F_MULTI); encode_new's
    verbatim form is the kernel's wire form."""
    raw = bytearray(encode_new(e, seq, 0, for_commit=False))
    flags = {NEW: COMMIT, UPDATE: 0, DESTROY: 0, DUMP: C.NLM_F_MULTI}[kind]
    mtype = C.CT_DELETE if kind == DESTROY else C.CT_NEW
    struct.pack_into("=HHII", raw, 4, mtype, flags, seq, portid)
    return bytes(raw) if nested else strip_nested_flags(bytes(raw))


def strip_nested_flags(raw: bytes) -> bytes:
    """The same message with NLA_F_NESTED cleared everywhere (older kernels, some tools)."""
    buf = bytearray(raw)

    def walk(p, end):
        while p + 4 <= end:
            ln, tp = struct.unpack_from("=HH", buf, p)
            if tp & C.NLA_F_NESTED:
                struct.pack_into("=H", buf, p + 2, tp & ~C.NLA_F_NESTED)
                walk(p + 4, p + ln)
            p += (ln + 3) & ~3

    walk(20, len(buf))
    return bytes(buf)


def with_attr(msg: bytes, atype: int, payload: bytes) -> bytes:
    """``msg`` plus one top-level attribute (nlmsg_len fixed)."""
    attr = struct.pack("=HH", 4 + len(payload), atype) + payload + b"\0" * (-len(payload) % 4)
    raw = bytearray(msg + attr)
    struct.pack_into("=I", raw, 0, len(raw))
    return bytes(raw)


def nlmsg(mtype: int, flags: int = 0, seq: int = 0, portid: int = 0, payload: bytes = b"") -> bytes:
    return _HDR.pack(16 + len(payload), mtype, flags, seq, portid) + payload


def done(seq: int = 1, portid: int = 0) -> bytes:
    return nlmsg(C.NLMSG_DONE, C.NLM_F_MULTI, seq, portid, b"\0" * 4)


def nlerror(err: int, seq: int = 1) -> bytes:
    return nlmsg(C.NLMSG_ERROR, 0, seq, 0, struct.pack("=i", -err) + nlmsg(C.CT_NEW, 5, seq, 0))


def mutate(buf: bytes, flips, cut: int, fix_len: bool) -> bytes:
    """``buf`` with bytes replaced (position modulo its length), cut at ``cut``, and its
    first length field set to the new length if ``fix_len``."""
    raw = bytearray(buf)
    for pos, val in flips:
        if raw:
            raw[pos % len(raw)] = val
    if cut < len(raw):
        del raw[cut:]
    if fix_len and len(raw) >= 4:
        struct.pack_into("=I", raw, 0, len(raw))
    return bytes(raw)


def attr_heads(buf: bytes, p: int = 20, end: int | None = None, out: list | None = None) -> list[int]:
    """Offsets of every attribute header of a valid message, nested ones included."""
    out = [] if out is None else out
    end = len(buf) if end is None else end
    while p + 4 <= end:
        ln, tp = struct.unpack_from("=HH", buf, p)
        if ln < 4 or p + ln > end:
            break
        out.append(p)
        if tp & C.NLA_F_NESTED:
            attr_heads(buf, p + 4, p + ln, out)
        p += (ln + 3) & ~3
    return out


def attr_tree(buf: bytes, p: int = 20, end: int | None = None) -> list:
    """The attributes of a valid message as ``[type, payload]`` nodes; the payload of a nest
    (NLA_F_NESTED) is the list of its children, else bytes."""
    end = len(buf) if end is None else end
    out = []
    while p + 4 <= end:
        ln, tp = struct.unpack_from("=HH", buf, p)
        if ln < 4 or p + ln > end:
            break
        out.append([tp, attr_tree(buf, p + 4, p + ln) if tp & C.NLA_F_NESTED else buf[p + 4:p + ln]])
        p += (ln + 3) & ~3
    return out


def tree_bytes(nodes: list) -> bytes:
    parts = []
    for tp, payload in nodes:
        raw = tree_bytes(payload) if isinstance(payload, list) else payload
        parts.append(struct.pack("=HH", 4 + len(raw), tp) + raw + b"\0" * (-len(raw) % 4))
    return b"".join(parts)


def restructure(r: random.Random, msg: bytes, donor: bytes, ops: int = 2) -> bytes:
    """``msg`` (one valid message) with its attributes rearranged, every length kept right:
    attributes dropped, duplicated, swapped, cut short, given other bytes or another type,
    replaced by one of ``donor``'s (another message's), or followed by an empty copy. What only well-framed input
    reaches: the decoders' "last one wins", missing and repeated attributes, mixed families."""
    tree, spare = attr_tree(msg), attr_tree(donor)

    def lists(nodes, acc):
        acc.append(nodes)
        for _tp, payload in nodes:
            if isinstance(payload, list):
                lists(payload, acc)
        return acc

    for _ in range(ops):
        siblings = r.choice(lists(tree, []))
        donors = lists(spare, [])
        if not siblings:
            continue
        i = r.randrange(len(siblings))
        op = r.randrange(8)
        if op == 0:
            del siblings[i]
        elif op == 1:
            siblings.insert(r.randrange(len(siblings) + 1), _copy(siblings[i]))
        elif op == 2:
            j = r.randrange(len(siblings))
            siblings[i], siblings[j] = siblings[j], siblings[i]
        elif op == 3 and isinstance(siblings[i][1], bytes):
            siblings[i][1] = siblings[i][1][:r.randrange(len(siblings[i][1]) + 1)]
        elif op == 4 and isinstance(siblings[i][1], bytes):
            siblings[i][1] = r.randbytes(r.randrange(21))
        elif op == 5:
            siblings[i][0] = (siblings[i][0] & C.NLA_F_NESTED) | r.randrange(1, 20)
        elif op == 6 and any(donors):
            pick = _copy(r.choice(r.choice([d for d in donors if d])))
            if r.random() < 0.5:
                siblings[i] = pick
            else:
                siblings.insert(i, pick)
        elif op == 7 and isinstance(siblings[i][1], list):  # a nest without its children
            siblings.insert(i + 1, [siblings[i][0], []])
    body = tree_bytes(tree)
    return struct.pack("=I", 20 + len(body)) + msg[4:20] + body


def _copy(node: list) -> list:
    tp, payload = node
    return [tp, [_copy(n) for n in payload] if isinstance(payload, list) else payload]


# --------------------------------------------------------------------------
# a seeded corpus


def random_entry(r: random.Random) -> Entry:
    v6 = r.random() < 0.5
    fam = V6 if v6 else V4

    def addr():
        if r.random() < 0.7:
            return r.choice(POOL6 if v6 else POOL4)
        return A(r.getrandbits(128 if v6 else 32))

    proto = r.choice(KNOWN_PROTOS) if r.random() < 0.85 else r.randrange(256)
    s, d, ns, nd = addr(), addr(), addr(), addr()
    snat, dnat = r.random() < 0.5, r.random() < 0.3
    u16 = lambda: r.randrange(1 << 16)  # noqa: E731
    if proto in C.ICMP_PROTOS:
        inverse = C.ICMP_INVERSE if proto == C.IPPROTO_ICMP else C.ICMPV6_INVERSE
        itype = r.choice(sorted(inverse)) if r.random() < 0.8 else r.randrange(256)
        o = Tuple(fam, proto, s, d, icmp_id=u16(), icmp_type=itype, icmp_code=r.randrange(256))
        rt = o.inverse()
        if snat or dnat:
            rt = Tuple(fam, proto, rt.src, rt.dst, icmp_id=u16(), icmp_type=rt.icmp_type, icmp_code=rt.icmp_code)
    else:
        ports = (u16(), u16()) if proto in C.PORT_PROTOS else (0, 0)
        o = Tuple(fam, proto, s, d, *ports)
        rt = o.inverse()
    status = r.getrandbits(32) & ~C.IPS_NAT_MASK
    if dnat:
        status |= C.IPS_DST_NAT
        rt = Tuple(fam, proto, nd, rt.dst, u16() if proto in C.PORT_PROTOS else rt.sport, rt.dport,
                   rt.icmp_id, rt.icmp_type, rt.icmp_code)
    if snat:
        status |= C.IPS_SRC_NAT
        rt = Tuple(fam, proto, rt.src, ns, rt.sport, u16() if proto in C.PORT_PROTOS else rt.dport,
                   rt.icmp_id, rt.icmp_type, rt.icmp_code)
    tcp = {}
    if r.random() < (0.8 if proto == C.IPPROTO_TCP else 0.05):
        ws = r.random() < 0.5
        tcp = dict(tcp_state=r.randrange(10), tcp_flags_orig=r.randrange(256), tcp_flags_reply=r.randrange(256),
                   tcp_wscale_orig=r.randrange(15) if ws else None, tcp_wscale_reply=r.randrange(15) if ws else None)
    helper = r.choice([None, None, None, "ftp", "sip", "", "x" * r.randrange(1, 64)])
    return Entry(o, rt, status=status, timeout=r.getrandbits(32), mark=r.choice([0, r.getrandbits(32)]),
                 zone=r.choice([0, 0, u16()]), id=r.choice([None, r.getrandbits(32)]), helper=helper, **tcp)


def random_message(r: random.Random) -> bytes:
    what = r.choice([NEW, UPDATE, DESTROY, DUMP, NEW, UPDATE, DESTROY, "commit", "done", "error"])
    if what == "done":
        return done(r.getrandbits(32))
    if what == "error":
        return nlerror(r.randrange(200), r.getrandbits(32))
    e = random_entry(r)
    portid = r.choice([0, 0, 4242, 777, 0xFFFFFFFF])
    if what == "commit":
        raw = bytearray(encode_new(e, r.getrandbits(32)))
        struct.pack_into("=I", raw, 12, portid)
        return bytes(raw)
    msg = kernel_msg(e, what, r.getrandbits(32) if what == DUMP else 0, portid, nested=r.random() < 0.85)
    if r.random() < 0.1:  # flags the kernel does not send: only NLM_F_CREATE decides NEW or UPDATE
        msg = msg[:6] + struct.pack("=H", r.getrandbits(16)) + msg[8:]
    return msg


def random_datagram(r: random.Random) -> bytes:
    return b"".join(random_message(r) for _ in range(r.randint(1, 5)))


def random_restructured(r: random.Random) -> bytes:
    """A datagram of messages with their attributes rearranged (:func:`restructure`)."""
    out = []
    for _ in range(r.randint(1, 3)):
        msg = random_message(r)
        if len(msg) > 20 and r.random() < 0.8:
            msg = restructure(r, msg, random_message(r), r.randint(1, 4))
        out.append(msg)
    return b"".join(out)


def broken(r: random.Random, buf: bytes) -> bytes:
    """``buf`` damaged one of three ways: bytes flipped and/or cut, an attribute header's
    length or type changed, or replaced by random bytes."""
    how = r.random()
    if how < 0.45:
        flips = [(r.randrange(1 << 16), r.randrange(256)) for _ in range(r.randint(0, 6))]
        return mutate(buf, flips, r.randrange(len(buf) + 40), r.random() < 0.5)
    if how < 0.9:
        heads = attr_heads(buf)
        raw = bytearray(buf)
        for _ in range(r.randint(1, 3)):
            if not heads:
                break
            p = r.choice(heads)
            if r.random() < 0.5:
                ln = struct.unpack_from("=H", raw, p)[0]
                struct.pack_into("=H", raw, p, max(0, min(0xFFFF, ln + r.randint(-8, 8))))
            else:
                struct.pack_into("=H", raw, p + 2, r.randrange(21) if r.random() < 0.8 else r.randrange(1 << 16))
        return bytes(raw)
    return r.randbytes(r.randrange(400))


def random_filter_args(r: random.Random):
    nets = []
    for _ in range(r.randint(0, 3)):
        a = r.choice(POOL4 + POOL6)
        nets.append(ipaddress.ip_network(f"{a}/{r.randint(0, a.max_prefixlen)}", strict=False))
    return ({r.choice(KNOWN_PROTOS) for _ in range(r.randint(0, 2))}, {r.randrange(10) for _ in range(r.randint(0, 2))},
            nets)


def corpus(n: int, seed: int = 1):
    """``n`` cases (datagram, filter args, skipped portids): valid datagrams, broken ones,
    and well-framed ones with their attributes rearranged, about a third each."""
    r = random.Random(seed)
    for _ in range(n):
        how = r.random()
        if how < 0.3:
            d = random_datagram(r)
        elif how < 0.65:
            d = broken(r, random_datagram(r))
        else:
            d = random_restructured(r)
        yield d, random_filter_args(r), r.choice([None, frozenset(), frozenset({4242}), frozenset({777, 0})])


# --------------------------------------------------------------------------
# running it


def run_both(c_mod, data, fargs, skip) -> None:
    """C and Python on one case: AssertionError if they differ."""
    want = P.events(data, P.Filter(*fargs), skip)
    got = c_mod.events(data, c_mod.Filter(*fargs), skip)
    assert got == want, (data.hex(), got, want)
    for d in [data] + [rec[3] for rec in want[0] if rec[3] is not None]:
        assert _kat(c_mod, d) == _kat(P, d), d.hex()


def _kat(impl, d):
    try:
        return impl.key_and_timeout(d)
    except CodecError as e:
        return e.reason


def run_c(c_mod, cases) -> int:
    calls = 0
    for data, fargs, skip in cases:
        recs = c_mod.events(data, c_mod.Filter(*fargs), skip)[0]
        _kat(c_mod, data)
        for rec in recs:
            if rec[3] is not None:
                _kat(c_mod, rec[3])
        calls += 3 + len(recs)
    return calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--c-only", action="store_true", help="only the C functions (for valgrind/ASan)")
    ap.add_argument("--loops", type=int, default=1, help="run the corpus this many times (--c-only)")
    ap.add_argument("--rss", action="store_true", help="print the peak RSS after the first and the last loop")
    a = ap.parse_args()
    from ctnetlink.batch import load_c
    c_mod = load_c()
    cases = list(corpus(a.cases, a.seed))
    if not a.c_only:
        for case in cases:
            run_both(c_mod, *case)
        print(f"{len(cases)} cases: C and Python agree")
        return 0
    calls = 0
    for i in range(a.loops):
        calls += run_c(c_mod, cases)
        if a.rss and i in (0, a.loops - 1):
            print(f"after loop {i + 1}: {calls} calls, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB")
    print(f"{len(cases)} cases x {a.loops}: {calls} C calls, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
