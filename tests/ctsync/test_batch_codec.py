"""The batch codec (ctnetlink.batch): the C extension against the pure-Python reference.

Both run on the same bytes and must agree exactly: the same records (kind, portid, key,
compact form), the same counters, the same CodecError reasons, never a crash; and so must
their expand() of a compact form into (key, timeout, commit message). The inputs
are kernel-shaped datagrams of random entries of every protocol the codec knows (IPv4 and
IPv6, NAT, zones, marks, helpers, TCP protoinfo), the same with bytes changed or cut, random
bytes, and (marked netns) event and dump datagrams of a real kernel in a lab namespace.

The extension must be built: these tests fail if it is not, unless HAPAIR_CODEC=python says
the Python codec is forced on purpose (then only the reference's own checks run).
"""

from __future__ import annotations

import gc
import ipaddress
import os
import select
import socket
import struct
import subprocess
import sys

import pytest
from batch_corpus import (
    COMMIT,
    DESTROY,
    DUMP,
    KNOWN_PROTOS,
    NEW,
    POOL4,
    POOL6,
    UPDATE,
    attr_heads,
    corpus,
    done,
    kernel_msg,
    mutate,
    nlerror,
    restructure,
    run_both,
    strip_nested_flags,
    with_attr,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ctnetlink import batch
from ctnetlink import batch_python as P
from ctnetlink import constants as C
from ctnetlink.codec import CodecError, Entry, Tuple, encode_new, parse_message
from ctnetlink.compact import HELPER_MAX, compact_of
from ctnetlink.encode import _tuple_attr
from ctnetlink.key import entry_key

FORCED_PYTHON = os.environ.get(batch.ENV, "").strip().lower() == "python"
needs_c = pytest.mark.skipif(FORCED_PYTHON, reason=f"{batch.ENV}=python: the C codec is not used on purpose")
CX, CX_MISSING = None, f"{batch.ENV}=python"  # the reference alone, even if the extension is there
if not FORCED_PYTHON:
    try:
        CX, CX_MISSING = batch.load_c(), None
    except ImportError as e:
        CX_MISSING = str(e)


@pytest.fixture(autouse=True)
def _c_must_be_built():
    """Every test here fails, saying why, if the extension did not build: a broken build must
    not pass as the Python fallback (HAPAIR_CODEC=python is how to ask for that)."""
    if CX is None and not FORCED_PYTHON:
        pytest.fail(f"the C codec is not usable: {CX_MISSING}", pytrace=False)

A = ipaddress.ip_address
V4, V6 = C.AF_INET, C.AF_INET6


# --------------------------------------------------------------------------
# running both


def outcome(impl, fn: str, *args):
    """What impl.fn(*args) does: its result, or the CodecError reason it raises."""
    try:
        return getattr(impl, fn)(*args)
    except CodecError as e:
        return ("CodecError", e.reason)


def events_both(buf, fargs=None, skip=None):
    """events() of both implementations (each with its own Filter of ``fargs``): equal."""
    fp = None if fargs is None else P.Filter(*fargs)
    want = P.events(buf, fp, skip)
    if CX is not None:
        fc = None if fargs is None else CX.Filter(*fargs)
        got = CX.events(buf, fc, skip)
        assert got == want
        assert [type(x) for r in got[0] for x in r] == [type(x) for r in want[0] for x in r]
    return want


def key_and_timeout_both(buf):
    want = outcome(P, "key_and_timeout", buf)
    if CX is not None:
        assert outcome(CX, "key_and_timeout", buf) == want
    return want


def expand_both(body):
    want = outcome(P, "expand", body)
    if CX is not None:
        assert outcome(CX, "expand", body) == want
    accept_both(body)
    return want


def accept_both(body):
    """accept() of both: the same result or reason, and the reference's result is what
    expand gives, its refusals exactly check_commit_body's and the key check's."""
    want = outcome(P, "accept", body)
    if CX is not None:
        assert outcome(CX, "accept", body) == want
    return want


# --------------------------------------------------------------------------
# random entries of every protocol the codec knows

_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)


def _addr(v6: bool):
    return st.sampled_from(POOL6) | st.ip_addresses(v=6) if v6 else st.sampled_from(POOL4) | st.ip_addresses(v=4)


@st.composite
def entries(draw):
    v6 = draw(st.booleans())
    fam = V6 if v6 else V4
    proto = draw(st.sampled_from(KNOWN_PROTOS) | st.integers(0, 255))  # ICMPv6 in IPv4 too: the codec allows it
    s, d, ns, nd = (draw(_addr(v6)) for _ in range(4))
    snat, dnat = draw(st.booleans()), draw(st.booleans())
    icmp = proto in C.ICMP_PROTOS
    if icmp:
        inverse = C.ICMP_INVERSE if proto == C.IPPROTO_ICMP else C.ICMPV6_INVERSE
        itype = draw(st.sampled_from(sorted(inverse)) | st.integers(0, 255))
        iid = draw(_u16)
        o = Tuple(fam, proto, s, d, icmp_id=iid, icmp_type=itype, icmp_code=draw(st.integers(0, 255)))
        r = o.inverse()
        if snat or dnat:  # NAT may change the ICMP id
            r = Tuple(fam, proto, r.src, r.dst, icmp_id=draw(_u16), icmp_type=r.icmp_type, icmp_code=r.icmp_code)
    else:
        # ports for the port protocols; others have none (a GRE key travels as ports)
        ports = (draw(_u16), draw(_u16)) if proto in C.PORT_PROTOS else (0, 0)
        o = Tuple(fam, proto, s, d, *ports)
        r = o.inverse()
    status = draw(_u32) & ~C.IPS_NAT_MASK
    if dnat:
        status |= C.IPS_DST_NAT
        r = Tuple(fam, proto, nd, r.dst, draw(_u16) if proto in C.PORT_PROTOS else r.sport, r.dport,
                  r.icmp_id, r.icmp_type, r.icmp_code)
    if snat:
        status |= C.IPS_SRC_NAT
        r = Tuple(fam, proto, r.src, ns, r.sport, draw(_u16) if proto in C.PORT_PROTOS else r.dport,
                  r.icmp_id, r.icmp_type, r.icmp_code)
    tcp = {}
    if draw(st.integers(0, 9)) < (8 if proto == C.IPPROTO_TCP else 1):  # protoinfo: TCP mostly, others rarely
        ws = draw(st.booleans())
        tcp = dict(tcp_state=draw(st.integers(0, 9) | st.integers(0, 255)), tcp_flags_orig=draw(st.integers(0, 255)),
                   tcp_flags_reply=draw(st.integers(0, 255)),
                   tcp_wscale_orig=draw(st.integers(0, 14)) if ws else None,
                   tcp_wscale_reply=draw(st.integers(0, 14)) if ws else None)
    helper = draw(st.none() | st.sampled_from(["ftp", "sip", "h323", "", "tftp", "pptp"])
                  | st.text(st.characters(max_codepoint=127, blacklist_characters="\0"), max_size=HELPER_MAX))
    return Entry(o, r, status=status, timeout=draw(_u32), mark=draw(st.just(0) | _u32),
                 zone=draw(st.just(0) | _u16), id=draw(st.none() | _u32), helper=helper, **tcp)


@st.composite
def messages(draw):
    """One netlink message of an event or dump datagram (mostly conntrack entries)."""
    what = draw(st.sampled_from([NEW, UPDATE, DESTROY, DUMP, NEW, UPDATE, DESTROY, "commit", "done", "error"]))
    if what == "done":
        return done(draw(_u32))
    if what == "error":
        return nlerror(draw(st.integers(0, 200)), draw(_u32))
    e = draw(entries())
    portid = draw(st.sampled_from([0, 0, 4242, 777, 0xFFFFFFFF]))
    if what == "commit":  # a commit message, NAT as attributes: the other decode path
        raw = bytearray(encode_new(e, draw(_u32)))
        struct.pack_into("=I", raw, 12, portid)
        return bytes(raw)
    msg = kernel_msg(e, what, draw(_u32) if what == DUMP else 0, portid, nested=draw(st.integers(0, 5)) > 0)
    if draw(st.integers(0, 9)) == 0:  # flags the kernel does not send: only NLM_F_CREATE decides NEW or UPDATE
        msg = msg[:6] + struct.pack("=H", draw(_u16)) + msg[8:]
    return msg


datagrams = st.lists(messages(), min_size=1, max_size=6).map(b"".join)


@st.composite
def filters(draw):
    """Filter arguments: protocols, TCP states, networks around the pooled addresses."""
    nets = []
    for a in draw(st.lists(st.sampled_from(POOL4 + POOL6) | st.ip_addresses(), max_size=4)):
        nets.append(ipaddress.ip_network(f"{a}/{draw(st.integers(0, a.max_prefixlen))}", strict=False))
    return (draw(st.frozensets(st.sampled_from(KNOWN_PROTOS) | st.integers(0, 300), max_size=3)),
            draw(st.frozensets(st.integers(0, 10), max_size=3)), nets)


_flips = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)
skips = st.none() | st.frozensets(st.sampled_from([4242, 777, 0xFFFFFFFF, 1]), max_size=2)


# --------------------------------------------------------------------------
# the build


@needs_c
def test_c_extension_is_built_and_chosen():
    """A broken build must not silently fall back to Python (that is for HAPAIR_CODEC=python)."""
    assert batch.IMPLEMENTATION == "c", batch.C_UNAVAILABLE
    assert batch.C_UNAVAILABLE is None
    assert batch.events is CX.events and batch.Filter is CX.Filter
    src = os.path.join(os.path.dirname(batch.__file__), "_batch.c")
    assert os.path.getmtime(CX.__file__) >= os.path.getmtime(src), \
        "ctnetlink/_batch.c is newer than its build: rebuild (./run setup or pip install -e .)"


@pytest.mark.parametrize("value, impl", [("python", "python"), ("c", "c"), ("", "c"), ("auto", "c")])
def test_environment_override(value, impl):
    if FORCED_PYTHON and impl == "c":
        pytest.skip(f"{batch.ENV}=python: the C codec is not used on purpose")
    code = "from ctnetlink import batch; print(batch.IMPLEMENTATION, batch.C_UNAVAILABLE)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, batch.ENV: value},
                         capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    assert out[0] == impl
    assert out[1].strip() == ("None" if impl == "c" else f"{batch.ENV}=python")


@needs_c
def test_environment_override_refuses_a_typo():
    res = subprocess.run([sys.executable, "-c", "import ctnetlink.batch"], env={**os.environ, batch.ENV: "C "},
                         capture_output=True, text=True)
    assert res.returncode == 0  # case and blanks do not matter
    res = subprocess.run([sys.executable, "-c", "import ctnetlink.batch"], env={**os.environ, batch.ENV: "fast"},
                         capture_output=True, text=True)
    assert res.returncode == 1 and "HAPAIR_CODEC='fast'" in res.stderr


# --------------------------------------------------------------------------
# the reference is the existing codec composed


def test_reference_records_are_the_codec_composed():
    e4 = Entry(Tuple(V4, 6, A("10.1.0.2"), A("10.2.0.2"), 40000, 80), Tuple(V4, 6, A("10.2.0.2"), A("10.2.0.1"), 80, 20001),
               C.IPS_CONFIRMED | C.IPS_SRC_NAT, 100, mark=0x2A, zone=7, tcp_state=3, tcp_flags_orig=0x23,
               tcp_flags_reply=0x23, tcp_wscale_orig=7, tcp_wscale_reply=7, helper="ftp")
    e6 = Entry(Tuple(V6, 58, A("fd01::2"), A("fd02::2"), icmp_id=9, icmp_type=128),
               Tuple(V6, 58, A("fd02::2"), A("fd02::1"), icmp_id=9, icmp_type=129), C.IPS_CONFIRMED | C.IPS_SRC_NAT, 30)
    buf = (kernel_msg(e4, NEW, portid=0) + kernel_msg(e6, UPDATE, portid=5) + kernel_msg(e4, DESTROY, portid=6)
           + kernel_msg(e6, NEW, portid=4242) + done())
    records, skipped, filtered, errors, other = events_both(buf, None, {4242})
    commit4, commit6 = encode_new(e4, 0, COMMIT, True), encode_new(e6, 0, COMMIT, True)
    assert records == [(P.KIND_NEW, 0, entry_key(e4), compact_of(e4)), (P.KIND_UPDATE, 5, entry_key(e6), compact_of(e6)),
                       (P.KIND_DESTROY, 6, entry_key(e4), None)]
    # the backup's view of what the master sends: the commit message, its key and timeout
    assert expand_both(records[0][3]) == (entry_key(e4), 100, commit4)
    assert expand_both(records[1][3]) == (entry_key(e6), 30, commit6)
    assert (len(records[0][3]), len(commit4)) == (43, 256)
    assert (skipped, filtered, errors) == (1, 0, [])
    assert other == [(len(buf) - 20, C.NLMSG_DONE, C.NLM_F_MULTI, 1, 0)]
    assert parse_message(buf, other[0][0])[0] == C.NLMSG_DONE
    # NEW or UPDATE is NLM_F_CREATE alone (ctnetlink/socket.py); the kernel always adds EXCL to it
    for flags, kind in ((C.NLM_F_CREATE, P.KIND_NEW), (C.NLM_F_EXCL, P.KIND_UPDATE), (0xFFFF, P.KIND_NEW)):
        msg = kernel_msg(e6, NEW)
        assert events_both(msg[:6] + struct.pack("=H", flags) + msg[8:])[0][0][0] == kind
    # the backup's view of what the master sends
    assert key_and_timeout_both(commit4) == (entry_key(e4), 100)
    assert key_and_timeout_both(commit6) == (entry_key(e6), 30)


@pytest.mark.parametrize("fargs, filtered", [
    (({6}, (), ()), True),
    (({17, 300}, (), ()), False),
    (((), {3}, ()), True),  # its TCP state
    (((), {2}, ()), False),
    (((), (), [ipaddress.ip_network("10.2.0.0/16")]), True),  # its destination
    (((), (), [ipaddress.ip_network("10.1.0.2/32")]), True),  # its source
    (((), (), [ipaddress.ip_network("10.2.0.1/32")]), False),  # only its reply (NAT) address
    (((), (), [ipaddress.ip_network("::ffff:10.1.0.0/112")]), False),  # v6 networks never hold v4 addresses
    (((), (), [ipaddress.ip_network("0.0.0.0/0")]), True),
    (((), (), [ipaddress.ip_network("::/0")]), False),
])
def test_filter_semantics(fargs, filtered):
    """ctsync's filter (replicator._filtered): protocol, TCP state, original addresses."""
    e = Entry(Tuple(V4, 6, A("10.1.0.2"), A("10.2.0.2"), 40000, 80), Tuple(V4, 6, A("10.2.0.2"), A("10.2.0.1"), 80, 20001),
              C.IPS_CONFIRMED | C.IPS_SRC_NAT, 100, tcp_state=3)
    assert P.Filter(*fargs).matches(e) is filtered
    res = events_both(kernel_msg(e, NEW), fargs)
    assert (res[2], len(res[0])) == ((1, 0) if filtered else (0, 1))


def test_filter_refuses_what_is_not_config():
    for impl in (P, CX) if CX is not None else (P,):
        with pytest.raises(TypeError):
            impl.Filter(["tcp"])
        with pytest.raises(TypeError):
            impl.Filter((), [None])
        with pytest.raises(TypeError):
            impl.Filter((), (), ["10.0.0.0/8"])
        with pytest.raises(TypeError):
            impl.Filter((), (), [A("10.0.0.1")])
        impl.Filter(iter([6, 17]), range(3), (ipaddress.ip_network("fd00::/8"),))


@needs_c
def test_events_refuses_a_foreign_filter():
    with pytest.raises(TypeError):
        CX.events(b"", P.Filter())


# --------------------------------------------------------------------------
# differential: valid datagrams


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams, filters(), skips)
def test_events_agree_on_kernel_datagrams(buf, fargs, skip):
    records, skipped, filtered, errors, other = events_both(buf, fargs, skip)
    events_both(buf)  # no filter, no skips
    assert errors == []  # all of it was valid: the records path really ran
    n_ct = sum(1 for _ in _ct_messages(buf))
    assert len(records) + skipped + filtered == n_ct
    for kind, _portid, key, body in records:
        if kind != P.KIND_DESTROY:
            k, timeout, msg = expand_both(body)
            assert k == key and key_and_timeout_both(msg) == (key, timeout)


def _queued(dgrams):
    """A non-netlink datagram socket with ``dgrams`` queued on it (recvmmsg and recvmsg_into
    read a unix socketpair as they read netlink: one datagram per message)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    for d in dgrams:
        a.send(d)
    a.close()
    return b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(datagrams | st.binary(max_size=64), min_size=0, max_size=80), st.integers(1, 300),
       st.none() | filters(), skips, st.booleans())
def test_recv_events_agree_and_equal_events_per_datagram(dgrams, max_dgrams, fargs, skip, oversize):
    """recv_events (recvmmsg in C, 64 per call) reads what events() reads datagram by
    datagram, summed; stops at max_datagrams; says the queue was empty only when it was; a
    datagram larger than RECV_SLOT is "truncated", not walked."""
    if oversize and dgrams:
        dgrams[len(dgrams) // 2] = dgrams[len(dgrams) // 2] + bytes(P.RECV_SLOT)
    results = []
    for impl in (P, CX) if CX is not None else (P,):
        filt = None if fargs is None else impl.Filter(*fargs)
        s = _queued(dgrams)
        try:
            results.append(impl.recv_events(s, max_dgrams, filt, skip))
            rest = impl.recv_events(s, 1000)  # what is left
        finally:
            s.close()
        assert rest[5] == max(0, len(dgrams) - max_dgrams) and rest[7] is True
    if CX is not None:
        assert results[1] == results[0]
    records, skipped, filtered, errors, other, got, overrun, empty = results[0]
    read = dgrams[:max_dgrams]
    assert got == len(read) and overrun is False and empty == (len(dgrams) < max_dgrams)
    want_r, want_e, want = [], [], [0, 0, 0]
    fp = None if fargs is None else P.Filter(*fargs)
    for d in read:
        if len(d) > P.RECV_SLOT:
            want_e.append("truncated")
            continue
        r, sk, fi, er, ot = P.events(d, fp, skip)
        want_r += r
        want_e += er
        want = [want[0] + sk, want[1] + fi, want[2] + len(ot)]
    assert (records, [skipped, filtered, other], errors) == (want_r, want, want_e)


def _ct_messages(buf):
    off = 0
    while off + 16 <= len(buf):
        nlen, mtype = struct.unpack_from("=IH", buf, off)
        if mtype in (C.CT_NEW, C.CT_DELETE):
            yield off
        off += (nlen + 3) & ~3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries())
def test_the_compact_form_expands_to_the_commit_message(e):
    """What the sync link carries turns back into exactly the commit message of the entry,
    its key and its timeout; and an event's record carries exactly that compact form."""
    body = compact_of(e)
    assert expand_both(body) == (entry_key(e), e.timeout or 1, encode_new(e, 0, COMMIT, True))
    for variant in (bytearray(body), memoryview(body), memoryview(body + b"pad")[:len(body)]):
        assert expand_both(variant) == expand_both(body)
    assert events_both(kernel_msg(e, NEW))[0][0][3] == compact_of(parse_message(kernel_msg(e, NEW))[4])
    assert len(body) < len(encode_new(e, 0, COMMIT, True)) / 2


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries(), _flips, st.integers(0, 120), st.booleans())
def test_expand_agrees_on_mutated_compact_forms(e, flips, cut, extend):
    """Compact forms with bytes changed, cut short or lengthened: every reason of the
    reference (truncated, bad_family, bad_flags, bad_entry, trailing_bytes) the same in C."""
    raw = bytearray(compact_of(e))
    for pos, val in flips:
        raw[pos % len(raw)] = val
    body = bytes(raw[:cut]) if cut < len(raw) else bytes(raw) + (b"\x07" * (cut - len(raw)) if extend else b"")
    expand_both(body)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_expand_agrees_on_arbitrary_bytes(body):
    expand_both(body)
    expand_both(bytes([C.AF_INET]) + body)  # past the family check more often
    expand_both(bytes([C.AF_INET, 6]) + body)


def test_accept_refuses_what_cannot_be_committed():
    """Compact forms that expand but whose message check_commit_body refuses, or that come
    under another entry's key: the same reason from both, and from the reference the
    reasons of check_commit_body and of the key check."""
    from ctnetlink.compact import pack
    from ctnetlink.encode import commit_fields

    e = Entry(Tuple(V4, 6, A("10.0.0.1"), A("10.0.0.2"), 1, 2), Tuple(V4, 6, A("10.0.0.2"), A("10.0.0.1"), 2, 1),
              C.IPS_CONFIRMED, 5, helper="ftp")
    good = commit_fields(e)
    assert accept_both(pack(good))[0] == entry_key(e)
    cases = {
        "attribute": [pack(good._replace(helper=h)) for h in ("a" * 16, "a b", "tab\t", "x\x7f", "nul\0x")],
        "status": [pack(good._replace(status=st)) for st in (0, C.IPS_SEEN_REPLY, C.IPS_CONFIRMED | C.IPS_DYING,
                                                              C.IPS_CONFIRMED | C.IPS_TEMPLATE)],
    }
    esp = Entry(Tuple(V4, 50, A("10.0.0.1"), A("10.0.0.2")), Tuple(V4, 50, A("10.0.0.2"), A("10.0.0.1")), C.IPS_CONFIRMED, 5)
    raw = bytearray(compact_of(esp))
    raw[12:16] = b"\x00\x01\x00\x02"  # ports in the key of ESP, a protocol without ports
    cases["bad_entry"] = [bytes(raw)]
    for reason, bodies in cases.items():
        for body in bodies:
            assert outcome(P, "expand", body)[0] != "CodecError", body  # it expands...
            assert accept_both(body) == ("CodecError", reason), body  # ...and is refused
    assert accept_both(pack(good._replace(helper="a" * 15)))[0] == entry_key(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries(), st.integers(0, 0xFFFFFFFF), st.text(st.characters(max_codepoint=127), min_size=1, max_size=20))
def test_accept_agrees_on_any_status_and_helper(e, status, helper):
    from ctnetlink.compact import pack
    from ctnetlink.encode import commit_fields

    accept_both(pack(commit_fields(e)._replace(status=status, helper=helper)))
    accept_both(pack(commit_fields(e)._replace(status=status)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries())
def test_key_and_timeout_agree_on_commit_messages(e):
    msg = encode_new(e, 0, COMMIT, True)
    assert key_and_timeout_both(msg) == (entry_key(e), e.timeout or 1)
    for variant in (bytearray(msg), memoryview(msg), memoryview(msg + b"pad")[:len(msg)], strip_nested_flags(msg),
                    encode_new(e, 3, 0, for_commit=False)):
        key_and_timeout_both(variant)


@needs_c
def test_input_types():
    msg = kernel_msg(Entry(Tuple(V4, 17, A("10.0.0.1"), A("10.0.0.2"), 1, 2),
                           Tuple(V4, 17, A("10.0.0.2"), A("10.0.0.1"), 2, 1), C.IPS_CONFIRMED, 5), NEW)
    for buf in (msg, bytearray(msg), memoryview(msg), memoryview(b"x" + msg)[1:]):
        assert len(events_both(buf)[0]) == 1
    for bad in ("x" * 10, "x" * 40, None, 5, [0] * 30, [0] * 3):
        assert outcome(CX, "key_and_timeout", bad) == outcome(P, "key_and_timeout", bad)
    with pytest.raises(TypeError):
        CX.events("not bytes")
    with pytest.raises(TypeError):
        P.events(None)
    for bad in ("x" * 40, None, 5, [2] * 30):
        for impl in (CX, P):
            with pytest.raises(TypeError):
                impl.expand(bad)


def test_helper_names_that_cannot_be_committed():
    """A helper the compact form cannot carry (not ASCII, or longer than HELPER_MAX: the
    kernel's are at most 15 characters): the message is counted with reason bad_entry; a
    DESTROY needs no encoding."""
    e = Entry(Tuple(V4, 6, A("10.0.0.1"), A("10.0.0.2"), 1, 2), Tuple(V4, 6, A("10.0.0.2"), A("10.0.0.1"), 2, 1),
              C.IPS_CONFIRMED, 5)
    for name, ok in ((b"ftp\0\xff", True), (b"caf\xc3\xa9", False), (b"\x80", False), (b"\0\x80", True),
                     (b"a" * HELPER_MAX, True), (b"a" * HELPER_MAX + b"\0xyz", True), (b"a" * (HELPER_MAX + 1), False),
                     (b"a" * 65000, False)):
        inner = struct.pack("=HH", 4 + len(name), C.CTA_HELP_NAME) + name + b"\0" * (-len(name) % 4)
        for kind in (NEW, DESTROY):
            msg = with_attr(kernel_msg(e, kind), C.NLA_F_NESTED | C.CTA_HELP, inner)
            records, _, _, errors, _ = events_both(msg)
            assert (len(records), errors) == ((1, []) if ok or kind == DESTROY else (0, ["bad_entry"])), (name[:8], kind)


def test_a_repeated_attribute_replaces_the_earlier_one():
    """The Python decoder keeps the last of a repeated attribute, whole: a later empty
    protoinfo, helper or NAT nest resets what the earlier one said; the C one must too."""
    e = Entry(Tuple(V4, 6, A("10.1.0.2"), A("10.2.0.2"), 40000, 80), Tuple(V4, 6, A("10.2.0.2"), A("10.2.0.1"), 80, 20001),
              C.IPS_CONFIRMED, 100, tcp_state=3, tcp_flags_orig=1, tcp_flags_reply=1, tcp_wscale_orig=7,
              tcp_wscale_reply=7, helper="ftp")
    snat = Entry(e.orig, e.reply, C.IPS_CONFIRMED | C.IPS_SRC_NAT, 100)
    other = Tuple(V4, 17, A("10.9.0.1"), A("10.9.0.2"), 1, 2)
    state_only = struct.pack("=HHHHB3x", 12, C.NLA_F_NESTED | C.CTA_PROTOINFO_TCP, 5, C.CTA_PROTOINFO_TCP_STATE, 4)
    cases = [  # (message, what the Python decoder makes of it)
        (with_attr(kernel_msg(e, NEW), C.NLA_F_NESTED | C.CTA_PROTOINFO, b""),
         lambda d: d.tcp_state is None and d.tcp_flags_orig is None),
        (with_attr(kernel_msg(e, NEW), C.NLA_F_NESTED | C.CTA_PROTOINFO, state_only),
         lambda d: d.tcp_state == 4 and d.tcp_wscale_orig is None and d.tcp_flags_orig is None),
        (with_attr(kernel_msg(e, NEW), C.NLA_F_NESTED | C.CTA_HELP, b""), lambda d: d.helper is None),
        (with_attr(encode_new(snat, 0), C.NLA_F_NESTED | C.CTA_NAT_SRC, b""),
         lambda d: d.src_nat and d.reply == e.orig.inverse()),
        (with_attr(kernel_msg(e, NEW), C.NLA_F_NESTED | C.CTA_TUPLE_ORIG,
                   _tuple_attr(other, C.CTA_TUPLE_ORIG)[4:]), lambda d: d.orig == other),
    ]
    for msg, decoded in cases:
        assert decoded(parse_message(msg)[4])
        records, _, _, errors, _ = events_both(msg)
        assert errors == [] and len(records) == 1
        key_and_timeout_both(msg)


# --------------------------------------------------------------------------
# differential: broken input


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), skips)
def test_events_agree_on_arbitrary_bytes(buf, skip):
    events_both(buf, ((6,), (3,), [ipaddress.ip_network("10.0.0.0/8")]), skip)
    key_and_timeout_both(buf)




@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams, _flips, st.integers(0, 1200), st.booleans(), filters(), skips)
def test_events_agree_on_mutated_datagrams(buf, flips, cut, fix_len, fargs, skip):
    """Valid datagrams with bytes changed and/or cut (the first length kept consistent or
    not): errors deep inside the nested attributes, not only in the framing."""
    bad = mutate(buf, flips, cut, fix_len)
    events_both(bad, fargs, skip)
    key_and_timeout_both(bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries(), _flips, st.integers(0, 600), st.booleans(), st.booleans())
def test_key_and_timeout_agree_on_mutated_commit_messages(e, flips, cut, fix_len, commit_form):
    msg = encode_new(e, 0, COMMIT, True) if commit_form else kernel_msg(e, NEW)
    key_and_timeout_both(mutate(msg, flips, cut, fix_len))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_events_agree_when_an_attribute_header_is_changed(msg, data):
    """Aim at the attribute headers (lengths and types) of every nesting level: the
    framing errors of each decoder branch, duplicated and unknown attributes."""
    heads = attr_heads(msg)
    assume(heads)
    raw = bytearray(msg)
    for _ in range(data.draw(st.integers(1, 3))):
        p = data.draw(st.sampled_from(heads))
        if data.draw(st.booleans()):
            ln = struct.unpack_from("=H", raw, p)[0]
            struct.pack_into("=H", raw, p, max(0, min(0xFFFF, ln + data.draw(st.integers(-8, 8)))))
        else:
            struct.pack_into("=H", raw, p + 2, data.draw(st.integers(0, 20) | st.integers(0, 0xFFFF)))
    events_both(bytes(raw), ((), (3,), [ipaddress.ip_network("fd00::/8")]))
    key_and_timeout_both(bytes(raw))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), messages(), st.randoms(use_true_random=False), st.integers(1, 4))
def test_events_agree_on_rearranged_attributes(msg, donor, rnd, ops):
    """Well framed but unusual: attributes dropped, repeated, swapped, cut short, retyped,
    or taken from another message (a v6 NAT address in a v4 entry, a second protoinfo)."""
    assume(len(msg) > 20)
    bad = restructure(rnd, msg, donor, ops)
    events_both(bad, ({1}, {3}, [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]), {777})
    key_and_timeout_both(bad)


@needs_c
def test_both_agree_on_a_seeded_corpus():
    """20000 datagrams, half of them broken, from batch_corpus (whose command line runs 10^5
    or more, and runs the C code under valgrind)."""
    for case in corpus(20000, seed=20240601):
        run_both(CX, *case)


# --------------------------------------------------------------------------
# the C code: references and memory


def _leak_corpus() -> list[tuple]:
    """(function, args) covering every path of the C functions: records, filtered,
    skipped, each error, other messages, bad arguments."""
    e4 = Entry(Tuple(V4, 6, A("10.1.0.2"), A("10.2.0.2"), 40000, 80), Tuple(V4, 6, A("10.2.0.2"), A("10.2.0.1"), 80, 20001),
               C.IPS_CONFIRMED | C.IPS_SRC_NAT, 100, zone=3, tcp_state=3, tcp_flags_orig=1, tcp_flags_reply=1, helper="ftp")
    e6 = Entry(Tuple(V6, 17, A("fd01::2"), A("fd02::2"), 5, 53), Tuple(V6, 17, A("fd02::9"), A("fd01::2"), 53, 5),
               C.IPS_CONFIRMED | C.IPS_DST_NAT, 30, mark=1)
    good = kernel_msg(e4, NEW) + kernel_msg(e6, UPDATE, portid=9) + kernel_msg(e4, DESTROY, portid=4242) + done()
    non_ascii = with_attr(kernel_msg(e6, NEW), C.NLA_F_NESTED | C.CTA_HELP, struct.pack("=HH", 6, 1) + b"\xff\0\0\0")
    fc = CX.Filter({132}, {7}, [ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("fd02::/16")])
    commit = encode_new(e4, 0)
    compact4, compact6 = compact_of(e4), compact_of(e6)
    calls = [(CX.expand, (compact4,)), (CX.expand, (memoryview(compact6),)), (CX.expand, (compact4 + b"x",)),
             (CX.expand, (b"\x09" + compact4[1:],)), (CX.expand, (compact4[:20] + b"\xff" + compact4[21:],)),
             (CX.expand, (None,)), (CX.expand, ("str",))]
    for cut in range(0, len(compact6), 3):
        calls.append((CX.expand, (compact6[:cut],)))
    from ctnetlink.compact import pack
    from ctnetlink.encode import commit_fields

    f4 = commit_fields(e4)
    calls += [(CX.accept, (compact4,)), (CX.accept, (bytearray(compact6),)), (CX.accept, (compact4[:30],)),
              (CX.accept, (None,)), (CX.accept, (pack(f4._replace(helper="a b")),)),
              (CX.accept, (pack(f4._replace(status=0)),)), (CX.accept, (pack(f4._replace(helper="x" * 20)),))]
    calls += [(CX.events, (good, fc, {4242})), (CX.events, (good, None, None)), (CX.events, (good[:-3], fc, None)),
             (CX.events, (good[:100] + good, fc, {9})), (CX.events, (non_ascii, None, None)),
             (CX.events, (bytearray(good), fc, frozenset())), (CX.key_and_timeout, (commit,)),
             (CX.key_and_timeout, (memoryview(commit),))]
    for cut in (10, 19, 30, 60, 90, len(commit) - 1):
        calls.append((CX.key_and_timeout, (mutate(commit, [], cut, True),)))
    for bad in ("x", None, [1] * 40):
        calls.append((CX.key_and_timeout, (bad,)))
    for args in ((None,), (good, "filter"), (good, None, 5)):
        calls.append((CX.events, args))
    # recv_events: a socket that is refilled on every call (records, truncated, other,
    # skipped, empty), one left empty, and bad arguments
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def refill_and_read(*args):
        for d in (good, good[:-3], bytes(P.RECV_SLOT + 1), b""):
            tx.send(d)
        return CX.recv_events(rx, *args)

    calls += [(refill_and_read, (256, fc, {4242})), (refill_and_read, (2, None, None)),
              (CX.recv_events, (socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)[0],)),
              (CX.recv_events, ("not a socket",)), (CX.recv_events, (rx, 4, "filter")), (CX.recv_events, (rx, "many"))]
    for fargs in (({1, 2}, [3], [ipaddress.ip_network("::/0")]), (["x"],), ((), (), ["10.0.0.0/8"])):
        calls.append((CX.Filter, fargs))
    return calls


@needs_c
def test_c_functions_hold_no_references():
    """Every path of the C code, many times over: the number of allocated blocks stays put
    (a missing Py_DECREF leaks a block per call and shows at once)."""
    calls = _leak_corpus()

    def run(n):
        for _ in range(n):
            for fn, args in calls:
                try:
                    fn(*args)
                except (CodecError, TypeError):
                    pass

    run(200)  # warm caches: interned reasons, small ints, the exception machinery
    gc.collect()
    before = sys.getallocatedblocks()
    run(10000)
    gc.collect()
    assert sys.getallocatedblocks() - before < 200


# --------------------------------------------------------------------------
# a real kernel: event and dump datagrams of real entries (lab namespaces only)


def _nl_socket(groups: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, C.NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((0, groups))
    return s


def _drain(s: socket.socket, quiet: float = 0.3) -> list[bytes]:
    out = []
    while select.select([s], [], [], quiet)[0]:
        out.append(s.recv(1 << 16))
    return out


def _dump(s: socket.socket) -> list[bytes]:
    from ctnetlink.codec import encode_dump
    s.send(encode_dump(seq=77))
    out = []
    while True:
        d = s.recv(1 << 16)
        out.append(d)
        if any(o[1] == C.NLMSG_DONE for o in P.events(d)[4]):
            return out


@pytest.mark.netns
@pytest.mark.timeout(120)
def test_both_agree_on_a_real_kernels_events_and_dumps(lab):
    import trio
    from test_ctnetlink_kernel import Site, make_traffic

    from ctnetlink.codec import encode_delete
    from ctnetlink.netns import run_in_netns
    from ctnetlink.socket import CtSocket
    from ctnetlink.sysctl import set_conntrack_events

    site = Site(lab)
    set_conntrack_events(1, netns=site.ns)
    ev = run_in_netns(site.ns, _nl_socket, 0b111)  # NFNLGRP_CONNTRACK_NEW, UPDATE, DESTROY
    dumper = run_in_netns(site.ns, _nl_socket)
    # real traffic (ICMP, UDP v4/v6 and a zone, TCP through DNAT+SNAT), then committed entries
    # of the other protocols and a helper, then their deletion: NEW, UPDATE and DESTROY
    procs = make_traffic(site, lab)
    t = lambda fam, p, s, d, sp=0, dp=0: Tuple(fam, p, A(s), A(d), sp, dp)  # noqa: E731
    synth = [Entry(t(V4, p, "10.1.0.77", "10.2.0.2", 1000 + p, 2000), t(V4, p, "10.2.0.2", "10.2.0.1", 2000, 20000 + p),
                   C.IPS_CONFIRMED | C.IPS_SRC_NAT, 60, mark=5) for p in (132, 136, 33, 47)]
    synth += [Entry(t(V6, p, "fd01::77", "fd02::2", 1000 + p, 2000), t(V6, p, "fd02::2", "fd01::77", 2000, 1000 + p),
                    C.IPS_CONFIRMED, 60, zone=4) for p in (132, 136, 33, 47, 50)]
    synth.append(Entry(t(V4, 6, "10.1.0.78", "10.2.0.2", 40000, 21), t(V4, 6, "10.2.0.2", "10.2.0.1", 21, 20021),
                       C.IPS_CONFIRMED | C.IPS_SRC_NAT, 60, tcp_state=3, helper="ftp"))

    async def commit_and_delete():
        with CtSocket.open(netns=site.ns) as s:
            res = await s.commit_batch(synth)
            done_ = [r.entry for r in res if r.errno == 0]
            for e in done_[::2]:
                assert await s.request(encode_delete(e.orig, zone=e.zone)) == 0
            return done_

    async def dump():
        with CtSocket.open(netns=site.ns) as s:
            return await s.dump()

    try:
        committed = trio.run(commit_and_delete)
        dump_datagrams = _dump(dumper)
        dumped = trio.run(dump)  # the same table through the socket's usual path
        event_datagrams = _drain(ev)
    finally:
        ev.close()
        dumper.close()
    assert procs and len(committed) >= 4, "the kernel took too few of the synthetic entries"
    kinds, protos, n_records = set(), set(), 0
    fargs = ({136}, {7}, [ipaddress.ip_network("10.1.0.77/32"), ipaddress.ip_network("fd01::/16")])
    for d in event_datagrams + dump_datagrams:
        records, skipped, filtered, errors, other = events_both(d)
        assert errors == [] and skipped == filtered == 0
        events_both(d, fargs, {0})
        for kind, portid, key, body in records:
            kinds.add(kind)
            protos.add(key[:2])
            n_records += 1
            if body is not None:  # the compact form: it expands to the entry's commit message
                k, timeout, msg = expand_both(body)
                assert k == key and key_and_timeout_both(msg) == (key, timeout)
    assert kinds == {P.KIND_NEW, P.KIND_UPDATE, P.KIND_DESTROY}
    want = {bytes([V4, 1]), bytes([V4, 6]), bytes([V4, 17]), bytes([V6, 17]), bytes([V6, 58])}
    want |= {bytes([e.family, e.proto]) for e in committed}
    assert want <= protos, sorted(protos)
    # the dump comes in datagrams of several entries each; it holds what the socket's dump holds
    assert max(len(events_both(d)[0]) for d in dump_datagrams) > 1
    assert {r[2] for d in dump_datagrams for r in events_both(d)[0]} == {entry_key(e) for e in dumped}
