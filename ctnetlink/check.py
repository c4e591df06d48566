"""Is a replicated commit body exactly what :func:`ctnetlink.encode.encode_new` writes?

ctsync stores each ENTRY body it receives verbatim and, at failover, sends the bodies to
the kernel concatenated into netlink datagrams (``CtSocket.commit_raw``). A body is
therefore a netlink *request* written by the peer. :func:`check_commit_body` accepts a
body only if it is one IPCTNL_MSG_CT_NEW in the commit form and nothing else: no second
message hidden after the first (a tupleless CT_DELETE there is a flush of the whole
table), no request of another kind, no attribute the commit recipe does not write
(CTA_ID, CTA_LABELS, CTA_TUPLE_MASTER, CTA_SEQ_ADJ_*, ...). It is pure (no I/O; a cache of
accepted shapes makes it fast, see the function) and written to be mirrored in C; the
rules, in the order they are checked:

1. Framing: ``len(body) >= 20``, ``len(body) % 4 == 0``, and the nlmsghdr's ``nlmsg_len``
   equals ``len(body)`` (exactly one message).
2. nlmsghdr: type ``CT_NEW`` (0x0100); flags ``REQUEST | CREATE | EXCL`` (0x0601), with
   ``ACK`` (0x0004) also allowed; pid 0. The sequence number is not checked (the commit
   rewrites it).
3. nfgenmsg: family ``AF_INET`` (2) or ``AF_INET6`` (10), version 0, res_id 0.
4. Attributes, at every level: each has ``nla_len >= 4`` and fits its parent; the next
   one starts at the 4-aligned end; the last one's aligned end is exactly the parent's
   end (no trailing bytes). The attribute's type field, *flags included*, must be one
   the level allows (nests carry NLA_F_NESTED 0x8000, plain attributes carry no flag),
   at most once per parent, with the exact ``nla_len`` the level gives for it (or a
   nest, checked by these same rules). Required attributes must be there. The levels
   (V = the family's attributes: V4_* for AF_INET, V6_* for AF_INET6; a len is nla_len):

   ======================  =====================================================  ========
   level                   allowed (nla_len)                                      required
   ======================  =====================================================  ========
   top                     TUPLE_ORIG, TUPLE_REPLY (tuple); NAT_SRC, NAT_DST      ORIG, REPLY,
                           (nat); STATUS 8; TIMEOUT 8; MARK 8; ZONE 6;            STATUS,
                           PROTOINFO (protoinfo); HELP (help)                     TIMEOUT
   tuple                   TUPLE_IP (ip); TUPLE_PROTO (proto)                     both
   ip                      IP_V_SRC, IP_V_DST: 8 (v4) or 20 (v6)                  both
   proto                   PROTO_NUM 5; SRC_PORT 6; DST_PORT 6; ICMP_ID 6;        NUM
                           ICMP_TYPE 5; ICMP_CODE 5; ICMPV6_ID 6; ICMPV6_TYPE 5;
                           ICMPV6_CODE 5
   nat                     NAT_V_MINIP, NAT_V_MAXIP: 8 or 20; NAT_PROTO (natproto)  MINIP
   natproto                PROTONAT_PORT_MIN 6; PROTONAT_PORT_MAX 6               -
   protoinfo               PROTOINFO_TCP (tcp)                                    TCP
   tcp                     STATE 5; WSCALE_ORIGINAL 5; WSCALE_REPLY 5;            STATE
                           FLAGS_ORIGINAL 6; FLAGS_REPLY 6
   help                    HELP_NAME: 6 to 20, payload = 1 to 15 printable ASCII  NAME
                           bytes then a NUL
   ======================  =====================================================  ========

5. Values: CTA_STATUS (big-endian) has IPS_CONFIRMED and none of
   :data:`ctnetlink.encode.COMMIT_STATUS_STRIP`.

Any violation raises :class:`~ctnetlink.model.CodecError` with ``reason`` one of
``framing``, ``header``, ``attribute``, ``status`` and a detail naming the place; nothing
else is raised, whatever ``body`` holds (it must support ``len`` and indexing of bytes:
bytes, bytearray or memoryview).
"""

from __future__ import annotations

from .constants import (
    AF_INET,
    AF_INET6,
    CT_NEW,
    CTA_HELP,
    CTA_HELP_NAME,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_MARK,
    CTA_NAT_DST,
    CTA_NAT_PROTO,
    CTA_NAT_SRC,
    CTA_NAT_V4_MAXIP,
    CTA_NAT_V4_MINIP,
    CTA_NAT_V6_MAXIP,
    CTA_NAT_V6_MINIP,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_ICMP_CODE,
    CTA_PROTO_ICMP_ID,
    CTA_PROTO_ICMP_TYPE,
    CTA_PROTO_ICMPV6_CODE,
    CTA_PROTO_ICMPV6_ID,
    CTA_PROTO_ICMPV6_TYPE,
    CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT,
    CTA_PROTOINFO,
    CTA_PROTOINFO_TCP,
    CTA_PROTOINFO_TCP_FLAGS_ORIGINAL,
    CTA_PROTOINFO_TCP_FLAGS_REPLY,
    CTA_PROTOINFO_TCP_STATE,
    CTA_PROTOINFO_TCP_WSCALE_ORIGINAL,
    CTA_PROTOINFO_TCP_WSCALE_REPLY,
    CTA_PROTONAT_PORT_MAX,
    CTA_PROTONAT_PORT_MIN,
    CTA_STATUS,
    CTA_TIMEOUT,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_ZONE,
    IPS_CONFIRMED,
    NFNETLINK_V0,
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
)
from .encode import COMMIT_STATUS_STRIP
from .layout import HDR_NFGEN, unpack_be32, unpack_nla
from .model import CodecError

__all__ = ["check_commit_body", "COMMIT_FLAGS"]

#: nlmsg flags of a commit body (NLM_F_ACK may be added).
COMMIT_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL

_N = NLA_F_NESTED
_HELP_NAME_MAX = 15  # NF_CT_HELPER_NAME_LEN - 1


class _Level:
    """One nesting level of rule 4: type field -> nla_len (int) or a sub-level; required
    types; the rule "name" is the helper name's own check."""

    __slots__ = ("name", "allowed", "required")

    def __init__(self, name: str, allowed: dict, required: frozenset[int]):
        self.name = name
        self.allowed = allowed
        self.required = required


def _levels(v6: bool) -> _Level:
    src, dst = (CTA_IP_V6_SRC, CTA_IP_V6_DST) if v6 else (CTA_IP_V4_SRC, CTA_IP_V4_DST)
    minip, maxip = (CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP) if v6 else (CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP)
    alen = 20 if v6 else 8
    ip = _Level("ip", {src: alen, dst: alen}, frozenset({src, dst}))
    proto = _Level("proto", {CTA_PROTO_NUM: 5, CTA_PROTO_SRC_PORT: 6, CTA_PROTO_DST_PORT: 6, CTA_PROTO_ICMP_ID: 6,
                             CTA_PROTO_ICMP_TYPE: 5, CTA_PROTO_ICMP_CODE: 5, CTA_PROTO_ICMPV6_ID: 6,
                             CTA_PROTO_ICMPV6_TYPE: 5, CTA_PROTO_ICMPV6_CODE: 5}, frozenset({CTA_PROTO_NUM}))
    tup = _Level("tuple", {_N | CTA_TUPLE_IP: ip, _N | CTA_TUPLE_PROTO: proto},
                 frozenset({_N | CTA_TUPLE_IP, _N | CTA_TUPLE_PROTO}))
    natproto = _Level("natproto", {CTA_PROTONAT_PORT_MIN: 6, CTA_PROTONAT_PORT_MAX: 6}, frozenset())
    nat = _Level("nat", {minip: alen, maxip: alen, _N | CTA_NAT_PROTO: natproto}, frozenset({minip}))
    tcp = _Level("tcp", {CTA_PROTOINFO_TCP_STATE: 5, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: 5,
                         CTA_PROTOINFO_TCP_WSCALE_REPLY: 5, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: 6,
                         CTA_PROTOINFO_TCP_FLAGS_REPLY: 6}, frozenset({CTA_PROTOINFO_TCP_STATE}))
    protoinfo = _Level("protoinfo", {_N | CTA_PROTOINFO_TCP: tcp}, frozenset({_N | CTA_PROTOINFO_TCP}))
    helper = _Level("help", {CTA_HELP_NAME: "name"}, frozenset({CTA_HELP_NAME}))
    return _Level("top", {_N | CTA_TUPLE_ORIG: tup, _N | CTA_TUPLE_REPLY: tup, _N | CTA_NAT_SRC: nat,
                          _N | CTA_NAT_DST: nat, CTA_STATUS: 8, CTA_TIMEOUT: 8, CTA_MARK: 8, CTA_ZONE: 6,
                          _N | CTA_PROTOINFO: protoinfo, _N | CTA_HELP: helper},
                  frozenset({_N | CTA_TUPLE_ORIG, _N | CTA_TUPLE_REPLY, CTA_STATUS, CTA_TIMEOUT}))


_TOP = {AF_INET: _levels(False), AF_INET6: _levels(True)}
_FLAGS_AT = 6  # offset of nlmsg_flags; NLM_F_ACK (0x04) is its low byte's bit 2
_SEQ = range(8, 12)  # nlmsg_seq: anything


def check_commit_body(body) -> None:
    """Raise :class:`CodecError` unless ``body`` is one CT_NEW in the commit form (the
    rules are in this module's doc); return None if it is.

    Speed: a backup checks every entry it receives. A body whose every header byte (and
    helper name) equals that of a body already accepted, at the same offsets, has the
    same attributes at the same places, so rules 1-4 give the same answer (no rule reads
    a payload but the status and the helper name, nor the padding). Such bodies are
    matched against a *shape* (a mask and the expected bytes, one big-integer
    comparison) learnt from the first one, and only rule 5 is checked again: about 1 µs
    instead of 20. Any other body takes the full walk and teaches its shape if it passes
    (a few dozen shapes in practice; at most 512 are kept: the only state here)."""
    shapes = _SHAPES.get(len(body))
    if shapes:
        value = int.from_bytes(body, "little")
        for mask, expected, status_at in shapes:
            if value & mask == expected:
                _check_status(body, status_at)
                return
    status_at, fixed = _full_check(body)
    _check_status(body, status_at)
    _learn(body, status_at, fixed)


def _check_status(body, status_at: int) -> None:
    status = unpack_be32(body, status_at)[0]
    if not status & IPS_CONFIRMED or status & COMMIT_STATUS_STRIP:
        raise CodecError("status", f"status {status:#x}: needs CONFIRMED, none of {COMMIT_STATUS_STRIP:#x}")


#: body length -> [(mask, expected, status offset)] of the shapes accepted so far
_SHAPES: dict[int, list[tuple[int, int, int]]] = {}
_MAX_SHAPES = 512
_shape_count = 0


def _learn(body, status_at: int, fixed: list[range]) -> None:
    """Remember the shape of an accepted body: its fixed bytes (the headers, padding and
    helper name the walk found), except the sequence number and the ACK flag."""
    global _shape_count
    if _shape_count >= _MAX_SHAPES:
        return
    m = bytearray(len(body))
    for r in fixed:
        m[r.start:r.stop] = b"\xff" * len(r)
    m[_SEQ.start:_SEQ.stop] = bytes(len(_SEQ))
    m[_FLAGS_AT] &= ~NLM_F_ACK & 0xFF
    mask = int.from_bytes(m, "little")
    expected = int.from_bytes(body, "little") & mask
    shapes = _SHAPES.setdefault(len(body), [])
    if (mask, expected, status_at) not in shapes:
        shapes.append((mask, expected, status_at))
        _shape_count += 1


def _full_check(body) -> tuple[int, list[range]]:
    """Rules 1 to 4: (the payload offset of CTA_STATUS, the byte ranges whose values the
    verdict depended on)."""
    n = len(body)
    if n < 20 or n % 4:
        raise CodecError("framing", f"{n} bytes: a commit body is at least 20 bytes, a multiple of 4")
    try:
        nlen, mtype, flags, _seq, pid, family, version, res_id = HDR_NFGEN.unpack_from(body, 0)
    except (TypeError, ValueError) as e:  # not a bytes-like object
        raise CodecError("framing", repr(e)) from None
    if nlen != n:
        raise CodecError("framing", f"nlmsg_len {nlen} in a body of {n} bytes: exactly one message allowed")
    if mtype != CT_NEW:
        raise CodecError("header", f"message type {mtype:#06x}, only CT_NEW {CT_NEW:#06x}")
    if flags & ~NLM_F_ACK != COMMIT_FLAGS:
        raise CodecError("header", f"flags {flags:#06x}, only REQUEST|CREATE|EXCL (|ACK)")
    if pid:
        raise CodecError("header", f"pid {pid}, must be 0")
    top = _TOP.get(family)
    if top is None or version != NFNETLINK_V0 or res_id:
        raise CodecError("header", f"nfgenmsg family {family} version {version} res_id {res_id}")
    fixed = [range(0, 20)]
    return _walk(body, 20, n, top, fixed), fixed


def _walk(buf, p: int, end: int, level: _Level, fixed: list[range]) -> int:
    """Check the attributes of ``buf[p:end]`` against ``level`` (rule 4), adding the
    bytes that decided it to ``fixed``; returns the payload offset of CTA_STATUS at the
    top level (else 0)."""
    seen = set()
    status_at = 0
    while p < end:
        if p + 4 > end:
            raise CodecError("attribute", f"{level.name}: {end - p} trailing bytes")
        alen, atype = unpack_nla(buf, p)
        aend = p + alen
        if alen < 4 or aend > end:
            raise CodecError("attribute", f"{level.name}: attribute {atype:#06x} of length {alen} does not fit")
        rule = level.allowed.get(atype)
        if rule is None:
            raise CodecError("attribute", f"{level.name}: attribute type {atype:#06x} not in the commit form")
        if atype in seen:
            raise CodecError("attribute", f"{level.name}: attribute {atype:#06x} twice")
        seen.add(atype)
        fixed.append(range(p, p + 4))
        if rule.__class__ is int:
            if alen != rule:
                raise CodecError("attribute", f"{level.name}: attribute {atype:#06x} of length {alen}, must be {rule}")
            if atype == CTA_STATUS and level.name == "top":
                status_at = p + 4
        elif rule == "name":
            _check_helper_name(buf, p + 4, aend)
            fixed.append(range(p + 4, aend))
        else:
            _walk(buf, p + 4, aend, rule, fixed)
        p = (aend + 3) & ~3  # (padding: its bytes do not matter, so they are not part of a shape)
    if p != end:
        raise CodecError("attribute", f"{level.name}: the last attribute's padding runs past its parent")
    if not level.required <= seen:
        missing = ", ".join(f"{t:#06x}" for t in sorted(level.required - seen))
        raise CodecError("attribute", f"{level.name}: missing {missing}")
    return status_at


def _check_helper_name(buf, p: int, end: int) -> None:
    name = bytes(buf[p:end])
    if not 2 <= len(name) <= _HELP_NAME_MAX + 1 or name[-1] != 0 or not all(0x21 <= c < 0x7F for c in name[:-1]):
        raise CodecError("attribute", f"help: helper name {name!r} is not 1 to {_HELP_NAME_MAX} printable characters and a NUL")
