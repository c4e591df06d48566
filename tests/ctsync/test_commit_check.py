"""ctnetlink.check.check_commit_body: a replicated ENTRY body is exactly one CT_NEW in the
commit form, or it is refused (issue #5: bytes after the first message, e.g. a tupleless
CT_DELETE, used to reach the kernel at failover)."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from test_ctnetlink_codec import ENTRIES, entries

from ctnetlink import constants as C
from ctnetlink.check import check_commit_body
from ctnetlink.codec import CodecError, encode_delete, encode_flush, encode_new, encode_update, encode_timeout
from ctnetlink.layout import A_BE32, NLA

COMMIT = C.NLM_F_CREATE | C.NLM_F_EXCL


def body(name="tcp4-snat", **kw) -> bytes:
    e = ENTRIES[name]
    if kw:
        e = dataclasses.replace(e, **kw)
    return encode_new(e, 0, COMMIT, True)


def with_len(b: bytes | bytearray) -> bytes:
    b = bytearray(b)
    struct.pack_into("=I", b, 0, len(b))
    return bytes(b)


def reason(b) -> str:
    with pytest.raises(CodecError) as exc:
        check_commit_body(b)
    return exc.value.reason


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_commit_form_passes(name):
    check_commit_body(encode_new(ENTRIES[name], 0, COMMIT, True))
    check_commit_body(encode_new(ENTRIES[name], 77, COMMIT | C.NLM_F_ACK, True))  # ACK and seq: commit_raw's business
    check_commit_body(memoryview(encode_new(ENTRIES[name], 0, COMMIT, True)))


def test_helper_passes():
    check_commit_body(body("tcp4-plain", helper="ftp"))
    check_commit_body(body("udp6-plain", helper="netbios-ns"))


@settings(max_examples=500, deadline=None)
@given(entries())
def test_property_whatever_the_encoder_writes_passes(e):
    check_commit_body(encode_new(e, 0, COMMIT, True))


def test_a_flush_appended_after_the_message_is_refused():
    """The issue's attack: the first message is fine, the body goes on with a CT_DELETE
    without a tuple (a flush). Once it was stored and committed verbatim."""
    b = body()
    assert reason(b + encode_flush()) == "framing"  # nlmsg_len covers only the first message
    assert reason(with_len(b + encode_flush())) == "attribute"  # ... or the flush as "attributes"
    assert reason(b + encode_delete(ENTRIES["tcp4-snat"].orig)) == "framing"
    assert reason(b + b) == "framing"


@pytest.mark.parametrize("make,expected", [
    (lambda: encode_flush(), "header"),
    (lambda: encode_delete(ENTRIES["tcp4-snat"].orig), "header"),
    (lambda: encode_update(ENTRIES["tcp4-snat"], 0), "header"),  # NEW without CREATE|EXCL: changes an entry
    (lambda: encode_timeout(ENTRIES["tcp4-snat"].orig, 5), "header"),
    (lambda: encode_new(ENTRIES["tcp4-snat"], 0, C.NLM_F_CREATE, True), "header"),  # no EXCL: may overwrite
    (lambda: encode_new(ENTRIES["tcp4-plain"], 0, COMMIT, False), "attribute"),  # the dump form: CTA_ID and more
    (lambda: bytes.fromhex("1400000002000000000000000000000000000000"), "header"),  # an NLMSG_ERROR
    (lambda: body()[:-4], "framing"),
    (lambda: body()[:19], "framing"),
    (lambda: b"", "framing"),
    (lambda: with_len(body() + b"\0\0\0\0"), "attribute"),  # trailing bytes
])
def test_other_requests_and_forms_are_refused(make, expected):
    assert reason(make()) == expected


def patch(b: bytes, off: int, fmt: str, v) -> bytes:
    b = bytearray(b)
    struct.pack_into(fmt, b, off, v)
    return bytes(b)


def test_header_fields():
    b = body()
    assert reason(patch(b, 12, "=I", 1234)) == "header"  # pid
    assert reason(patch(b, 16, "=B", 7)) == "header"  # family
    assert reason(patch(b, 17, "=B", 1)) == "header"  # version
    assert reason(patch(b, 18, "=H", 3)) == "header"  # res_id
    check_commit_body(patch(b, 8, "=I", 0xDEADBEEF))  # seq: anything


def top_attrs(b: bytes) -> list[tuple[int, int, int]]:
    out, p = [], 20
    while p < len(b):
        ln, tp = struct.unpack_from("=HH", b, p)
        out.append((p, ln, tp))
        p += (ln + 3) & ~3
    return out


def test_attributes_the_commit_does_not_write_are_refused():
    b = body()
    for extra in (A_BE32.pack(8, C.CTA_ID, 1), A_BE32.pack(8, C.CTA_MARK_MASK, 1),
                  NLA.pack(8, C.CTA_LABELS) + b"\xff" * 4, A_BE32.pack(8, C.CTA_STATUS_MASK, 0xFFFF),
                  NLA.pack(4, C.NLA_F_NESTED | C.CTA_TUPLE_MASTER), A_BE32.pack(8, C.CTA_STATUS, 0x8)):  # the last: twice
        assert reason(with_len(b + extra)) == "attribute", extra


def test_nests_without_their_flag_or_plain_attributes_with_one_are_refused():
    b = body()
    for off, ln, tp in top_attrs(b):
        flipped = patch(b, off + 2, "=H", tp ^ C.NLA_F_NESTED)
        assert reason(flipped) == "attribute", hex(tp)


def test_required_attributes():
    b = body()
    for off, ln, tp in top_attrs(b):
        stripped = with_len(b[:off] + b[off + ((ln + 3) & ~3):])
        want_missing = tp & 0x3FFF in (C.CTA_TUPLE_ORIG, C.CTA_TUPLE_REPLY, C.CTA_STATUS, C.CTA_TIMEOUT)
        if want_missing:
            assert reason(stripped) == "attribute", hex(tp)
        else:
            check_commit_body(stripped)  # NAT, mark, protoinfo are optional


def test_status_bits():
    b = body()
    (off,) = [o for o, _, tp in top_attrs(b) if tp == C.CTA_STATUS]
    assert reason(patch(b, off + 4, ">I", C.IPS_SEEN_REPLY)) == "status"  # not CONFIRMED
    assert reason(patch(b, off + 4, ">I", C.IPS_CONFIRMED | C.IPS_DYING)) == "status"
    assert reason(patch(b, off + 4, ">I", C.IPS_CONFIRMED | C.IPS_EXPECTED)) == "status"
    check_commit_body(patch(b, off + 4, ">I", C.IPS_CONFIRMED | C.IPS_ASSURED))


def test_family_mismatch_inside_the_tuple():
    v4 = body("udp4-dnat")
    assert reason(patch(v4, 16, "=B", C.AF_INET6)) == "attribute"  # v4 addresses in a v6 message
    v6 = body("udp6-snat")
    assert reason(patch(v6, 16, "=B", C.AF_INET)) == "attribute"


@pytest.mark.parametrize("name", ["", "a" * 16, "ft p", "f\x01"])
def test_bad_helper_names(name):
    e = dataclasses.replace(ENTRIES["tcp4-plain"], helper="ftp")
    b = encode_new(e, 0, COMMIT, True)
    raw = name.encode() + b"\0"
    inner = NLA.pack(4 + len(raw), C.CTA_HELP_NAME) + raw + b"\0" * (-len(raw) % 4)
    helper = NLA.pack(4 + len(inner), C.NLA_F_NESTED | C.CTA_HELP) + inner
    good = NLA.pack(4 + 8, C.NLA_F_NESTED | C.CTA_HELP)
    i = b.index(good)
    assert reason(with_len(b[:i] + helper)) == "attribute"


def test_the_shape_cache_agrees_with_the_full_walk():
    """Every single-byte change of every accepted body: the verdict with the learnt
    shapes (the fast path) is the full walk's."""
    from ctnetlink import check

    def verdict(f, m):
        try:
            f(m)
            return None
        except CodecError as e:
            return e.reason

    def slow(m):
        status_at, _ = check._full_check(m)
        check._check_status(m, status_at)

    tried = 0
    for name in sorted(ENTRIES):
        b = body(name)
        check_commit_body(b)  # its shape is learnt
        for i in range(len(b)):
            for v in {0, 1, 0x80, 0xFF, b[i] ^ 0x04, b[i] ^ 0x80}:
                m = b[:i] + bytes([v]) + b[i + 1:]
                assert verdict(check_commit_body, m) == verdict(slow, m), (name, i, v)
                tried += 1
    assert tried > 5000
