"""A lean ``struct`` codec for ctnetlink (conntrack over nfnetlink).

Why not pyroute2: its generic nla machinery manages about 2k conntrack
messages/s; ctsync must keep up with connection churn of a busy NAT gateway
and replay whole tables at failover.  This module decodes and encodes only what
ctsync needs, with precompiled ``struct.Struct`` objects and no intermediate
attribute dictionaries.

Layout of a ctnetlink message::

    nlmsghdr (16, host order) | nfgenmsg (family u8, version u8, res_id be16)
    | attributes: nlattr (len u16, type u16, host order) + payload, 4-aligned

Nested attributes carry NLA_F_NESTED (masked off when parsing).  Integer
payloads wider than a byte are big-endian (network order): ports, ICMP id,
status, timeout, mark, zone, id, NAT ports.

Decoding never raises anything but :class:`CodecError` on malformed input.

Committing a replicated entry (the NAT recipe, verified against the kernel by
tests/ctsync/test_kernel.py)::

    CTA_TUPLE_ORIG   = the dumped original tuple
    CTA_TUPLE_REPLY  = orig.inverse()  -- NOT the dumped reply tuple
    CTA_NAT_DST      = {V4_MINIP = V4_MAXIP = reply.src, PROTO{PORT_MIN = PORT_MAX = reply.sport}}
                       if status & IPS_DST_NAT
    CTA_NAT_SRC      = {V4_MINIP = V4_MAXIP = reply.dst, PROTO{PORT_MIN = PORT_MAX = reply.dport}}
                       if status & IPS_SRC_NAT
    CTA_STATUS       = status | IPS_CONFIRMED, minus EXPECTED/DYING/OFFLOAD
    CTA_TIMEOUT, CTA_MARK, CTA_ZONE, CTA_PROTOINFO{TCP{STATE, FLAGS_* |= BE_LIBERAL}}

The kernel runs nf_nat_setup_info() on the NAT attributes: it rewrites the
reply tuple itself and sets IPS_SRC_NAT/IPS_DST_NAT (bits it ignores in
CTA_STATUS).  A reply tuple copied verbatim from a dump makes the mapping look
like a no-op to nf_nat_setup_info (the inverse of the reply already *is* the
translated tuple), so no NAT bit is set and packets are not translated.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from socket import htonl, htons
from typing import Iterator, NamedTuple

from .constants import (
    AF_INET, AF_INET6, AF_UNSPEC, CT_DELETE, CT_GET, CT_NEW, CTA_HELP, CTA_HELP_NAME,
    CTA_ID, CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_IP_V6_DST, CTA_IP_V6_SRC, CTA_MARK,
    CTA_NAT_DST, CTA_NAT_PROTO, CTA_NAT_SRC, CTA_NAT_V4_MAXIP, CTA_NAT_V4_MINIP,
    CTA_NAT_V6_MAXIP, CTA_NAT_V6_MINIP, CTA_PROTO_DST_PORT, CTA_PROTO_ICMP_CODE,
    CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_CODE, CTA_PROTO_ICMPV6_ID,
    CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTOINFO,
    CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, CTA_PROTOINFO_TCP_FLAGS_REPLY,
    CTA_PROTOINFO_TCP_STATE, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL,
    CTA_PROTOINFO_TCP_WSCALE_REPLY, CTA_PROTONAT_PORT_MAX, CTA_PROTONAT_PORT_MIN,
    CTA_STATUS, CTA_TIMEOUT, CTA_TUPLE_IP, CTA_TUPLE_ORIG, CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY, CTA_ZONE, ICMP_INVERSE, ICMPV6_INVERSE, IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_CLOSE_INIT, IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPS_CONFIRMED, IPS_DST_NAT, IPS_DYING,
    IPS_EXPECTED, IPS_HW_OFFLOAD, IPS_OFFLOAD, IPS_SRC_NAT, IPS_TEMPLATE, IPS_UNTRACKED,
    NFNETLINK_V0, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST, NLMSG_ERROR, PORT_PROTOS,
)

__all__ = [
    "CodecError", "Tuple", "Entry", "NlError", "Message",
    "parse_message", "iter_messages", "parse_entry",
    "encode_new", "encode_update", "encode_delete", "encode_get", "encode_dump", "encode_flush",
    "COMMIT_STATUS_STRIP", "COMMIT_TCP_FLAGS_KEEP",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CodecError(Exception):
    """Malformed netlink/ctnetlink input (or an entry that cannot be encoded).

    ``reason`` is a short stable token suitable as a counter name.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --------------------------------------------------------------------------
# structs

_NLMSGHDR = struct.Struct("=IHHII")        # len, type, flags, seq, portid
_HDR_NFGEN = struct.Struct("=IHHIIBBH")    # nlmsghdr + nfgenmsg (family, version, res_id)
_NLA = struct.Struct("=HH")
_I32 = struct.Struct("=i")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")

_unpack_nla = _NLA.unpack_from
_unpack_hdr = _NLMSGHDR.unpack_from
_unpack_be16 = _BE16.unpack_from
_unpack_be32 = _BE32.unpack_from

_NEST = NLA_F_NESTED
_TMASK = 0x3FFF  # ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

# attribute + be32 payload
_A_BE32 = struct.Struct("=HHI")
# attribute + be16 payload + pad
_A_BE16 = struct.Struct("=HHH2x")

# tuple pieces (be values are passed through htons/htonl and packed host-order)
_IP4 = struct.Struct("=HHHH4sHH4s")        # IP nest(20): V4_SRC(8) V4_DST(8)
_IP6 = struct.Struct("=HHHH16sHH16s")      # IP nest(44): V6_SRC(20) V6_DST(20)
_PR_PORTS = struct.Struct("=HHHHB3xHHH2xHHH2x")       # PROTO nest(28): NUM, SPORT, DPORT
_PR_ICMP = struct.Struct("=HHHHB3xHHH2xHHB3xHHB3x")   # PROTO nest(36): NUM, ID, TYPE, CODE
_PR_NUM = struct.Struct("=HHHHB3x")                   # PROTO nest(12): NUM

# NAT nests: CTA_NAT_* (len, type) / MINIP / MAXIP / CTA_NAT_PROTO{PORT_MIN, PORT_MAX}
_NAT4_PORTS = struct.Struct("=HHHH4sHH4sHHHHH2xHHH2x")   # 4+8+8+(4+8+8)=40
_NAT6_PORTS = struct.Struct("=HHHH16sHH16sHHHHH2xHHH2x")  # 4+20+20+20=64
_NAT4 = struct.Struct("=HHHH4sHH4s")                      # 20
_NAT6 = struct.Struct("=HHHH16sHH16s")                    # 44

# TCP protoinfo, commit form: PROTOINFO(4) TCP(4) STATE(8) FLAGS_ORIG(8) FLAGS_REPLY(8) = 32
_PI_TCP = struct.Struct("=HHHHHHB3xHHBB2xHHBB2x")
# ... with both window scales (only applied by the kernel if WINDOW_SCALE is in both flags)
_PI_TCP_WS = struct.Struct("=HHHHHHB3xHHB3xHHB3xHHBB2xHHBB2x")  # 48

#: status bits never sent when committing: the kernel answers EBUSY for
#: EXPECTED/DYING, and the offload/template bits describe local state.
COMMIT_STATUS_STRIP = (IPS_EXPECTED | IPS_DYING | IPS_OFFLOAD | IPS_HW_OFFLOAD
                       | IPS_TEMPLATE | IPS_UNTRACKED)
#: TCP per-direction flags copied from a dump when committing; the others
#: (MAXACK_SET, DATA_UNACKNOWLEDGED, ...) describe window state that is not
#: replicated.  BE_LIBERAL is always added: the backup has no window history.
COMMIT_TCP_FLAGS_KEEP = (IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM
                         | IP_CT_TCP_FLAG_CLOSE_INIT)


# --------------------------------------------------------------------------
# address cache: conntrack tables repeat the same few addresses endlessly

_V4_CACHE: dict[bytes, ipaddress.IPv4Address] = {}
_V6_CACHE: dict[bytes, ipaddress.IPv6Address] = {}
_CACHE_MAX = 1 << 16


def _v4(raw: bytes) -> ipaddress.IPv4Address:
    a = _V4_CACHE.get(raw)
    if a is None:
        if len(_V4_CACHE) >= _CACHE_MAX:
            _V4_CACHE.clear()
        a = _V4_CACHE[raw] = ipaddress.IPv4Address(raw)
    return a


def _v6(raw: bytes) -> ipaddress.IPv6Address:
    a = _V6_CACHE.get(raw)
    if a is None:
        if len(_V6_CACHE) >= _CACHE_MAX:
            _V6_CACHE.clear()
        a = _V6_CACHE[raw] = ipaddress.IPv6Address(raw)
    return a


# --------------------------------------------------------------------------
# data model


@dataclass(frozen=True, slots=True)
class Tuple:
    """A conntrack tuple.  ``sport``/``dport`` for port protocols (TCP, UDP,
    SCTP, DCCP, UDP-Lite, GRE keys); ``icmp_id``/``icmp_type``/``icmp_code``
    for ICMP and ICMPv6; only ``proto`` for anything else."""

    family: int
    proto: int
    src: IPAddress
    dst: IPAddress
    sport: int = 0
    dport: int = 0
    icmp_id: int = 0
    icmp_type: int = 0
    icmp_code: int = 0

    def inverse(self) -> "Tuple":
        """The tuple of the other direction, as nf_ct_invert_tuple() computes
        it (ICMP request types map to their reply types and back)."""
        p = self.proto
        if p == IPPROTO_ICMP or p == IPPROTO_ICMPV6:
            inv = ICMP_INVERSE if p == IPPROTO_ICMP else ICMPV6_INVERSE
            return Tuple(self.family, p, self.dst, self.src, 0, 0, self.icmp_id,
                         inv.get(self.icmp_type, self.icmp_type), self.icmp_code)
        return Tuple(self.family, p, self.dst, self.src, self.dport, self.sport)

    @property
    def is_icmp(self) -> bool:
        return self.proto == IPPROTO_ICMP or self.proto == IPPROTO_ICMPV6

    def __str__(self) -> str:
        if self.is_icmp:
            l4 = f"type={self.icmp_type} code={self.icmp_code} id={self.icmp_id}"
        else:
            l4 = f"sport={self.sport} dport={self.dport}"
        return f"proto={self.proto} src={self.src} dst={self.dst} {l4}"


@dataclass(frozen=True, slots=True)
class Entry:
    """A conntrack entry as dumped / announced by the kernel.

    ``reply`` is the kernel's reply tuple (post-NAT view): for SNAT its
    ``dst``/``dport`` are the translated source, for DNAT its ``src``/``sport``
    the translated destination.  ``timeout`` is in seconds.  ``tcp_*`` are None
    when the message carried no TCP protoinfo.
    """

    orig: Tuple
    reply: Tuple
    status: int = 0
    timeout: int = 0
    mark: int = 0
    zone: int = 0
    id: int | None = None
    tcp_state: int | None = None
    tcp_flags_orig: int | None = None
    tcp_flags_reply: int | None = None
    tcp_wscale_orig: int | None = None
    tcp_wscale_reply: int | None = None
    helper: str | None = None

    @property
    def family(self) -> int:
        return self.orig.family

    @property
    def proto(self) -> int:
        return self.orig.proto

    @property
    def src_nat(self) -> bool:
        return bool(self.status & IPS_SRC_NAT)

    @property
    def dst_nat(self) -> bool:
        return bool(self.status & IPS_DST_NAT)

    @property
    def nat_src(self) -> tuple[IPAddress, int] | None:
        """(address, port-or-ICMP-id) the source is translated to, if SNAT."""
        if not self.status & IPS_SRC_NAT:
            return None
        r = self.reply
        return (r.dst, r.icmp_id if r.is_icmp else r.dport)

    @property
    def nat_dst(self) -> tuple[IPAddress, int] | None:
        """(address, port-or-ICMP-id) the destination is translated to, if DNAT."""
        if not self.status & IPS_DST_NAT:
            return None
        r = self.reply
        return (r.src, r.icmp_id if r.is_icmp else r.sport)

    @property
    def key(self) -> tuple[int, Tuple]:
        """Identity of the entry in a table: (zone, original tuple)."""
        return (self.zone, self.orig)


class NlError(NamedTuple):
    """Payload of an NLMSG_ERROR message: ``errno`` is positive, 0 for an ACK;
    ``req_type``/``req_seq`` come from the echoed request header (0 if absent)."""

    errno: int
    req_type: int = 0
    req_seq: int = 0


class Message(NamedTuple):
    """One netlink message: ``payload`` is an :class:`Entry` (ctnetlink NEW /
    DELETE messages), an :class:`NlError` (NLMSG_ERROR, including ACKs),
    a :class:`CodecError` (only from :func:`iter_messages`: a well-framed
    message whose content is malformed), or None (NLMSG_DONE, others)."""

    msgtype: int
    flags: int
    seq: int
    portid: int
    payload: object


# --------------------------------------------------------------------------
# decoding


# Fast path: the exact layout the kernel emits for an IPv4 tuple of a port
# protocol (IP{SRC,DST} PROTO{NUM,SPORT,DPORT}, nests flagged NLA_F_NESTED).
# Anything else takes the generic walk below.
_F_IP_SRC = _NLA.pack(20, _NEST | CTA_TUPLE_IP) + _NLA.pack(8, CTA_IP_V4_SRC)
_F_DST = _NLA.pack(8, CTA_IP_V4_DST)
_F_PROTO_NUM = _NLA.pack(28, _NEST | CTA_TUPLE_PROTO) + _NLA.pack(5, CTA_PROTO_NUM)
_F_SPORT = _NLA.pack(6, CTA_PROTO_SRC_PORT)
_F_DPORT = _NLA.pack(6, CTA_PROTO_DST_PORT)


def _parse_tuple(buf, p: int, end: int) -> Tuple:
    if (end - p == 48 and buf[p:p + 8] == _F_IP_SRC and buf[p + 12:p + 16] == _F_DST
            and buf[p + 20:p + 28] == _F_PROTO_NUM and buf[p + 32:p + 36] == _F_SPORT
            and buf[p + 40:p + 44] == _F_DPORT and buf[p + 28] in PORT_PROTOS):
        return Tuple(AF_INET, buf[p + 28], _v4(bytes(buf[p + 8:p + 12])),
                     _v4(bytes(buf[p + 16:p + 20])), buf[p + 36] << 8 | buf[p + 37],
                     buf[p + 44] << 8 | buf[p + 45])
    src = dst = None
    family = proto = sport = dport = icmp_id = icmp_type = icmp_code = 0
    have_proto = False
    while p + 4 <= end:
        alen, atype = _unpack_nla(buf, p)
        if alen < 4 or p + alen > end:
            raise CodecError("bad_attr_len", "tuple")
        atype &= _TMASK
        q = p + 4
        qend = p + alen
        if atype == CTA_TUPLE_IP:
            while q + 4 <= qend:
                blen, btype = _unpack_nla(buf, q)
                if blen < 4 or q + blen > qend:
                    raise CodecError("bad_attr_len", "tuple ip")
                btype &= _TMASK
                if btype == CTA_IP_V4_SRC or btype == CTA_IP_V4_DST:
                    if blen != 8:
                        raise CodecError("bad_attr_len", "ipv4 address")
                    a = _v4(bytes(buf[q + 4:q + 8]))
                    if family == AF_INET6:
                        raise CodecError("mixed_family")
                    family = AF_INET
                    if btype == CTA_IP_V4_SRC:
                        src = a
                    else:
                        dst = a
                elif btype == CTA_IP_V6_SRC or btype == CTA_IP_V6_DST:
                    if blen != 20:
                        raise CodecError("bad_attr_len", "ipv6 address")
                    a = _v6(bytes(buf[q + 4:q + 20]))
                    if family == AF_INET:
                        raise CodecError("mixed_family")
                    family = AF_INET6
                    if btype == CTA_IP_V6_SRC:
                        src = a
                    else:
                        dst = a
                q += (blen + 3) & ~3
        elif atype == CTA_TUPLE_PROTO:
            while q + 4 <= qend:
                blen, btype = _unpack_nla(buf, q)
                if blen < 4 or q + blen > qend:
                    raise CodecError("bad_attr_len", "tuple proto")
                btype &= _TMASK
                if btype == CTA_PROTO_NUM:
                    if blen < 5:
                        raise CodecError("bad_attr_len", "proto num")
                    proto = buf[q + 4]
                    have_proto = True
                elif btype == CTA_PROTO_SRC_PORT:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "sport")
                    sport = _unpack_be16(buf, q + 4)[0]
                elif btype == CTA_PROTO_DST_PORT:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "dport")
                    dport = _unpack_be16(buf, q + 4)[0]
                elif btype == CTA_PROTO_ICMP_ID or btype == CTA_PROTO_ICMPV6_ID:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "icmp id")
                    icmp_id = _unpack_be16(buf, q + 4)[0]
                elif btype == CTA_PROTO_ICMP_TYPE or btype == CTA_PROTO_ICMPV6_TYPE:
                    if blen < 5:
                        raise CodecError("bad_attr_len", "icmp type")
                    icmp_type = buf[q + 4]
                elif btype == CTA_PROTO_ICMP_CODE or btype == CTA_PROTO_ICMPV6_CODE:
                    if blen < 5:
                        raise CodecError("bad_attr_len", "icmp code")
                    icmp_code = buf[q + 4]
                q += (blen + 3) & ~3
        p += (alen + 3) & ~3
    if src is None or dst is None:
        raise CodecError("incomplete_tuple", "missing address")
    if not have_proto:
        raise CodecError("incomplete_tuple", "missing protocol")
    return Tuple(family, proto, src, dst, sport, dport, icmp_id, icmp_type, icmp_code)


def _parse_nat(buf, p: int, end: int) -> tuple[IPAddress | None, int | None]:
    """CTA_NAT_SRC/DST of a commit message -> (min address, min port)."""
    addr = None
    port = None
    while p + 4 <= end:
        alen, atype = _unpack_nla(buf, p)
        if alen < 4 or p + alen > end:
            raise CodecError("bad_attr_len", "nat")
        atype &= _TMASK
        if atype == CTA_NAT_V4_MINIP:
            if alen != 8:
                raise CodecError("bad_attr_len", "nat v4")
            addr = _v4(bytes(buf[p + 4:p + 8]))
        elif atype == CTA_NAT_V6_MINIP:
            if alen != 20:
                raise CodecError("bad_attr_len", "nat v6")
            addr = _v6(bytes(buf[p + 4:p + 20]))
        elif atype == CTA_NAT_PROTO:
            q = p + 4
            qend = p + alen
            while q + 4 <= qend:
                blen, btype = _unpack_nla(buf, q)
                if blen < 4 or q + blen > qend:
                    raise CodecError("bad_attr_len", "nat proto")
                if btype & _TMASK == CTA_PROTONAT_PORT_MIN:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "nat port")
                    port = _unpack_be16(buf, q + 4)[0]
                q += (blen + 3) & ~3
        p += (alen + 3) & ~3
    return addr, port


def _parse_protoinfo(buf, p: int, end: int):
    state = fo = fr = wo = wr = None
    while p + 4 <= end:
        alen, atype = _unpack_nla(buf, p)
        if alen < 4 or p + alen > end:
            raise CodecError("bad_attr_len", "protoinfo")
        if atype & _TMASK == CTA_PROTOINFO_TCP:
            q = p + 4
            qend = p + alen
            while q + 4 <= qend:
                blen, btype = _unpack_nla(buf, q)
                if blen < 4 or q + blen > qend:
                    raise CodecError("bad_attr_len", "protoinfo tcp")
                btype &= _TMASK
                if 0 < btype <= CTA_PROTOINFO_TCP_FLAGS_REPLY and blen < 5:
                    raise CodecError("bad_attr_len", "protoinfo tcp value")
                if btype == CTA_PROTOINFO_TCP_STATE:
                    state = buf[q + 4]
                elif btype == CTA_PROTOINFO_TCP_FLAGS_ORIGINAL:
                    fo = buf[q + 4]
                elif btype == CTA_PROTOINFO_TCP_FLAGS_REPLY:
                    fr = buf[q + 4]
                elif btype == CTA_PROTOINFO_TCP_WSCALE_ORIGINAL:
                    wo = buf[q + 4]
                elif btype == CTA_PROTOINFO_TCP_WSCALE_REPLY:
                    wr = buf[q + 4]
                q += (blen + 3) & ~3
        p += (alen + 3) & ~3
    return state, fo, fr, wo, wr


def parse_entry(buf, off: int, end: int) -> Entry:
    """Decode the attributes of a ctnetlink NEW/DELETE message; ``off`` points
    at the nfgenmsg (right after the nlmsghdr), ``end`` at the message end."""
    if off + 4 > end:
        raise CodecError("truncated", "nfgenmsg")
    off += 4
    orig = reply = None
    status = timeout = mark = zone = 0
    ct_id = tcp_state = fo = fr = wo = wr = helper = None
    nat_src = nat_dst = None
    while off + 4 <= end:
        alen, atype = _unpack_nla(buf, off)
        if alen < 4 or off + alen > end:
            raise CodecError("bad_attr_len", "top level")
        atype &= _TMASK
        p = off + 4
        if atype == CTA_TUPLE_ORIG:
            orig = _parse_tuple(buf, p, off + alen)
        elif atype == CTA_TUPLE_REPLY:
            reply = _parse_tuple(buf, p, off + alen)
        elif atype == CTA_STATUS:
            if alen != 8:
                raise CodecError("bad_attr_len", "status")
            status = _unpack_be32(buf, p)[0]
        elif atype == CTA_TIMEOUT:
            if alen != 8:
                raise CodecError("bad_attr_len", "timeout")
            timeout = _unpack_be32(buf, p)[0]
        elif atype == CTA_MARK:
            if alen != 8:
                raise CodecError("bad_attr_len", "mark")
            mark = _unpack_be32(buf, p)[0]
        elif atype == CTA_ID:
            if alen != 8:
                raise CodecError("bad_attr_len", "id")
            ct_id = _unpack_be32(buf, p)[0]
        elif atype == CTA_ZONE:
            if alen < 6:
                raise CodecError("bad_attr_len", "zone")
            zone = _unpack_be16(buf, p)[0]
        elif atype == CTA_PROTOINFO:
            tcp_state, fo, fr, wo, wr = _parse_protoinfo(buf, p, off + alen)
        elif atype == CTA_NAT_SRC:
            nat_src = _parse_nat(buf, p, off + alen)
        elif atype == CTA_NAT_DST:
            nat_dst = _parse_nat(buf, p, off + alen)
        elif atype == CTA_HELP:
            q = p
            qend = off + alen
            while q + 4 <= qend:
                blen, btype = _unpack_nla(buf, q)
                if blen < 4 or q + blen > qend:
                    raise CodecError("bad_attr_len", "help")
                if btype & _TMASK == CTA_HELP_NAME:
                    helper = bytes(buf[q + 4:q + blen]).split(b"\0", 1)[0].decode(
                        "ascii", "replace")
                q += (blen + 3) & ~3
        off += (alen + 3) & ~3
    if orig is None:
        raise CodecError("no_orig_tuple")
    if reply is None:
        raise CodecError("no_reply_tuple")
    if orig.family != reply.family:
        raise CodecError("mixed_family", "orig/reply")
    if nat_src is not None or nat_dst is not None:
        # A commit message: the kernel's reply tuple will be the NATed one.
        reply = _apply_nat(reply, nat_src, nat_dst)
        if nat_src is not None:
            status |= IPS_SRC_NAT
        if nat_dst is not None:
            status |= IPS_DST_NAT
    return Entry(orig, reply, status, timeout, mark, zone, ct_id, tcp_state, fo, fr, wo, wr,
                 helper)


def _apply_nat(reply: Tuple, nat_src, nat_dst) -> Tuple:
    src, dst = reply.src, reply.dst
    sport, dport, icmp_id = reply.sport, reply.dport, reply.icmp_id
    icmp = reply.is_icmp
    if nat_dst is not None:
        addr, port = nat_dst
        if addr is not None:
            src = addr
        if port is not None:
            if icmp:
                icmp_id = port
            else:
                sport = port
    if nat_src is not None:
        addr, port = nat_src
        if addr is not None:
            dst = addr
        if port is not None:
            if icmp:
                icmp_id = port
            else:
                dport = port
    if src.version != dst.version or (src.version == 4) != (reply.family == AF_INET):
        raise CodecError("mixed_family", "nat address")
    return Tuple(reply.family, reply.proto, src, dst, sport, dport, icmp_id,
                 reply.icmp_type, reply.icmp_code)


def parse_message(buf, offset: int = 0):
    """Decode the netlink message at ``offset``.

    Returns ``(msgtype, flags, seq, portid, payload)`` where payload is an
    :class:`Entry` for ctnetlink NEW/DELETE messages (dump parts, GET answers,
    events), an :class:`NlError` for NLMSG_ERROR (errno 0 = ACK), else None.
    The message length is the u32 at ``offset`` (``NLMSG_ALIGN`` it to walk).
    Raises :class:`CodecError` (and nothing else) on malformed input.
    """
    try:
        n = len(buf)
        if offset < 0 or offset + 16 > n:
            raise CodecError("truncated", "nlmsghdr")
        nlen, msgtype, flags, seq, portid = _unpack_hdr(buf, offset)
        if nlen < 16 or offset + nlen > n:
            raise CodecError("bad_msg_len", f"nlmsg_len={nlen}")
        end = offset + nlen
        if msgtype == CT_NEW or msgtype == CT_DELETE:
            return (msgtype, flags, seq, portid, parse_entry(buf, offset + 16, end))
        if msgtype == NLMSG_ERROR:
            if nlen < 20:
                raise CodecError("truncated", "nlmsgerr")
            err = -_I32.unpack_from(buf, offset + 16)[0]
            if err < 0:
                raise CodecError("bad_errno", str(-err))
            if nlen >= 36:
                _l, rtype, _f, rseq, _p = _unpack_hdr(buf, offset + 20)
                return (msgtype, flags, seq, portid, NlError(err, rtype, rseq))
            return (msgtype, flags, seq, portid, NlError(err))
        return (msgtype, flags, seq, portid, None)
    except CodecError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, UnicodeError) as e:
        raise CodecError("malformed", repr(e)) from None


_KEY_HEAD = struct.Struct("!BBH")


def key_and_timeout(buf) -> tuple[bytes, int]:
    """The cache key (zone + original tuple, as ``ctsync.cache.key_of``) and
    the timeout of one CT_NEW message, without decoding the rest: what a
    backup needs of each replicated entry, at a fraction of ``parse_message``'s
    cost (no objects, no reply tuple, no NAT).  The usual kernel layout of an
    IPv4 port tuple is read in place; any other tuple takes the full tuple
    parser.  Raises :class:`CodecError` (only) on malformed input."""
    try:
        n = len(buf)
        if n < 20:
            raise CodecError("truncated", "nlmsghdr")
        nlen, msgtype, _f, _s, _p = _unpack_hdr(buf, 0)
        if nlen < 20 or nlen > n:
            raise CodecError("bad_msg_len", f"nlmsg_len={nlen}")
        if msgtype != CT_NEW:
            raise CodecError("not_ct_new", str(msgtype))
        off, end = 20, nlen
        tup = None  # (start, end) of CTA_TUPLE_ORIG's payload
        timeout = zone = 0
        have_reply = False
        while off + 4 <= end:
            alen, atype = _unpack_nla(buf, off)
            if alen < 4 or off + alen > end:
                raise CodecError("bad_attr_len", "top level")
            atype &= _TMASK
            if atype == CTA_TUPLE_ORIG:
                tup = (off + 4, off + alen)
            elif atype == CTA_TUPLE_REPLY:
                have_reply = True
            elif atype == CTA_TIMEOUT:
                if alen != 8:
                    raise CodecError("bad_attr_len", "timeout")
                timeout = _unpack_be32(buf, off + 4)[0]
            elif atype == CTA_ZONE:
                if alen < 6:
                    raise CodecError("bad_attr_len", "zone")
                zone = _unpack_be16(buf, off + 4)[0]
            off += (alen + 3) & ~3
        if tup is None:
            raise CodecError("no_orig_tuple")
        if not have_reply:
            raise CodecError("no_reply_tuple")
        p, tend = tup
        if (tend - p == 48 and buf[p:p + 8] == _F_IP_SRC and buf[p + 12:p + 16] == _F_DST
                and buf[p + 20:p + 28] == _F_PROTO_NUM and buf[p + 32:p + 36] == _F_SPORT
                and buf[p + 40:p + 44] == _F_DPORT and buf[p + 28] in PORT_PROTOS):
            key = (_KEY_HEAD.pack(AF_INET, buf[p + 28], zone) + bytes(buf[p + 8:p + 12])
                   + bytes(buf[p + 16:p + 20]) + bytes(buf[p + 36:p + 38]) + bytes(buf[p + 44:p + 46]))
            return key, timeout
        t = _parse_tuple(buf, p, tend)
        if t.src is None or t.dst is None:
            raise CodecError("no_address", "tuple")
        if t.icmp_type or t.icmp_id or t.icmp_code:
            ports = struct.pack("!HBB", t.icmp_id, t.icmp_type, t.icmp_code)
        else:
            ports = struct.pack("!HH", t.sport, t.dport)
        return _KEY_HEAD.pack(t.family, t.proto, zone) + t.src.packed + t.dst.packed + ports, timeout
    except CodecError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, AttributeError) as e:
        raise CodecError("malformed", repr(e)) from None


def iter_messages(data) -> Iterator[Message]:
    """Walk a datagram holding one or more netlink messages.

    Yields :class:`Message` tuples.  A message that is well framed but whose
    content is malformed is yielded with a :class:`CodecError` as payload (the
    walk goes on); broken framing raises :class:`CodecError` (nothing after it
    can be trusted).
    """
    n = len(data)
    off = 0
    while off + 16 <= n:
        nlen, msgtype, flags, seq, portid = _unpack_hdr(data, off)
        if nlen < 16 or off + nlen > n:
            raise CodecError("bad_msg_len", f"nlmsg_len={nlen} at {off}")
        try:
            yield Message(*parse_message(data, off))
        except CodecError as e:
            yield Message(msgtype, flags, seq, portid, e)
        off += (nlen + 3) & ~3
    if off < n:
        raise CodecError("truncated", f"{n - off} trailing bytes")


# --------------------------------------------------------------------------
# encoding


def _addr_bytes(a, size: int) -> bytes:
    try:
        b = a.packed
    except AttributeError:
        raise CodecError("bad_address", repr(a)) from None
    if len(b) != size:
        raise CodecError("mixed_family", str(a))
    return b


def _tuple_attr(t: Tuple, nest_type: int) -> bytes:
    fam = t.family
    if fam == AF_INET:
        ip = _IP4.pack(20, _NEST | CTA_TUPLE_IP, 8, CTA_IP_V4_SRC, _addr_bytes(t.src, 4),
                       8, CTA_IP_V4_DST, _addr_bytes(t.dst, 4))
    elif fam == AF_INET6:
        ip = _IP6.pack(44, _NEST | CTA_TUPLE_IP, 20, CTA_IP_V6_SRC, _addr_bytes(t.src, 16),
                       20, CTA_IP_V6_DST, _addr_bytes(t.dst, 16))
    else:
        raise CodecError("bad_family", str(fam))
    p = t.proto
    try:
        if p in PORT_PROTOS:
            pr = _PR_PORTS.pack(28, _NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p,
                                6, CTA_PROTO_SRC_PORT, htons(t.sport),
                                6, CTA_PROTO_DST_PORT, htons(t.dport))
        elif p == IPPROTO_ICMP:
            pr = _PR_ICMP.pack(36, _NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p,
                               6, CTA_PROTO_ICMP_ID, htons(t.icmp_id),
                               5, CTA_PROTO_ICMP_TYPE, t.icmp_type,
                               5, CTA_PROTO_ICMP_CODE, t.icmp_code)
        elif p == IPPROTO_ICMPV6:
            pr = _PR_ICMP.pack(36, _NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p,
                               6, CTA_PROTO_ICMPV6_ID, htons(t.icmp_id),
                               5, CTA_PROTO_ICMPV6_TYPE, t.icmp_type,
                               5, CTA_PROTO_ICMPV6_CODE, t.icmp_code)
        else:
            pr = _PR_NUM.pack(12, _NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p)
    except (struct.error, OverflowError, TypeError) as e:
        raise CodecError("bad_tuple", f"{t!r}: {e}") from None
    return _NLA.pack(4 + len(ip) + len(pr), _NEST | nest_type) + ip + pr


def _nat_attr(nest_type: int, t: Tuple, addr, port: int) -> bytes:
    with_port = t.proto in PORT_PROTOS or t.is_icmp
    if t.family == AF_INET:
        b = _addr_bytes(addr, 4)
        if with_port:
            return _NAT4_PORTS.pack(40, _NEST | nest_type, 8, CTA_NAT_V4_MINIP, b,
                                    8, CTA_NAT_V4_MAXIP, b, 20, _NEST | CTA_NAT_PROTO,
                                    6, CTA_PROTONAT_PORT_MIN, htons(port),
                                    6, CTA_PROTONAT_PORT_MAX, htons(port))
        return _NAT4.pack(20, _NEST | nest_type, 8, CTA_NAT_V4_MINIP, b, 8, CTA_NAT_V4_MAXIP, b)
    b = _addr_bytes(addr, 16)
    if with_port:
        return _NAT6_PORTS.pack(64, _NEST | nest_type, 20, CTA_NAT_V6_MINIP, b,
                                20, CTA_NAT_V6_MAXIP, b, 20, _NEST | CTA_NAT_PROTO,
                                6, CTA_PROTONAT_PORT_MIN, htons(port),
                                6, CTA_PROTONAT_PORT_MAX, htons(port))
    return _NAT6.pack(44, _NEST | nest_type, 20, CTA_NAT_V6_MINIP, b, 20, CTA_NAT_V6_MAXIP, b)


def _msg(msgtype: int, flags: int, seq: int, family: int, body: bytes) -> bytes:
    return _HDR_NFGEN.pack(20 + len(body), msgtype, flags, seq, 0, family, NFNETLINK_V0, 0) + body


def _tcp_protoinfo(state: int, fo: int, fr: int, mask_o: int, mask_r: int,
                   wo: int | None, wr: int | None) -> bytes:
    if wo is not None and wr is not None:
        return _PI_TCP_WS.pack(48, _NEST | CTA_PROTOINFO, 44, _NEST | CTA_PROTOINFO_TCP,
                               5, CTA_PROTOINFO_TCP_STATE, state,
                               5, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, wo,
                               5, CTA_PROTOINFO_TCP_WSCALE_REPLY, wr,
                               6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, fo, mask_o,
                               6, CTA_PROTOINFO_TCP_FLAGS_REPLY, fr, mask_r)
    return _PI_TCP.pack(32, _NEST | CTA_PROTOINFO, 28, _NEST | CTA_PROTOINFO_TCP,
                        5, CTA_PROTOINFO_TCP_STATE, state,
                        6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, fo, mask_o,
                        6, CTA_PROTOINFO_TCP_FLAGS_REPLY, fr, mask_r)


def _help_attr(name: str) -> bytes:
    raw = name.encode("ascii") + b"\0"
    inner = _NLA.pack(4 + len(raw), CTA_HELP_NAME) + raw + b"\0" * (-len(raw) % 4)
    return _NLA.pack(4 + len(inner), _NEST | CTA_HELP) + inner


def encode_new(entry: Entry, seq: int,
               flags: int = NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
               for_commit: bool = True) -> bytes:
    """IPCTNL_MSG_CT_NEW for ``entry`` (NLM_F_REQUEST is always added).

    ``for_commit=True`` (default) builds what makes the kernel *create a
    working* entry (see the module docstring: reply tuple = inverse of the
    original, NAT as CTA_NAT_SRC/CTA_NAT_DST, CONFIRMED status, TCP
    BE_LIBERAL).  ``for_commit=False`` is the verbatim wire form of the entry
    as a dump shows it (reply tuple as is, status as is, id): what the kernel
    would send; parse_message() of it returns an equal Entry.

    The commit form only *creates*: on an existing entry the kernel answers
    EOPNOTSUPP to NAT attributes even without NLM_F_EXCL; use
    :func:`encode_update` to change an existing entry.
    """
    o = entry.orig
    try:
        mark = entry.mark
        status = entry.status
        if for_commit:
            r = entry.reply
            body = _tuple_attr(o, CTA_TUPLE_ORIG) + _tuple_attr(o.inverse(), CTA_TUPLE_REPLY)
            if status & IPS_DST_NAT:
                body += _nat_attr(CTA_NAT_DST, o, r.src, r.icmp_id if r.is_icmp else r.sport)
            if status & IPS_SRC_NAT:
                body += _nat_attr(CTA_NAT_SRC, o, r.dst, r.icmp_id if r.is_icmp else r.dport)
            body += _A_BE32.pack(8, CTA_STATUS, htonl((status & ~COMMIT_STATUS_STRIP)
                                                      | IPS_CONFIRMED))
            body += _A_BE32.pack(8, CTA_TIMEOUT, htonl(entry.timeout or 1))
            if mark:
                body += _A_BE32.pack(8, CTA_MARK, htonl(mark))
            if entry.zone:
                body += _A_BE16.pack(6, CTA_ZONE, htons(entry.zone))
            if o.proto == IPPROTO_TCP and entry.tcp_state is not None:
                fo = ((entry.tcp_flags_orig or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL
                fr = ((entry.tcp_flags_reply or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL
                body += _tcp_protoinfo(entry.tcp_state, fo, fr, fo, fr,
                                       entry.tcp_wscale_orig, entry.tcp_wscale_reply)
        else:
            body = _tuple_attr(o, CTA_TUPLE_ORIG) + _tuple_attr(entry.reply, CTA_TUPLE_REPLY)
            body += _A_BE32.pack(8, CTA_STATUS, htonl(status))
            body += _A_BE32.pack(8, CTA_TIMEOUT, htonl(entry.timeout))
            if mark:
                body += _A_BE32.pack(8, CTA_MARK, htonl(mark))
            if entry.zone:
                body += _A_BE16.pack(6, CTA_ZONE, htons(entry.zone))
            if entry.id is not None:
                body += _A_BE32.pack(8, CTA_ID, htonl(entry.id))
            if entry.tcp_state is not None:
                fo = entry.tcp_flags_orig
                fr = entry.tcp_flags_reply
                body += _tcp_protoinfo(entry.tcp_state, fo or 0, fr or 0, 0, 0,
                                       entry.tcp_wscale_orig, entry.tcp_wscale_reply)
        if entry.helper:
            body += _help_attr(entry.helper)
    except CodecError:
        raise
    except (struct.error, OverflowError, TypeError, AttributeError, UnicodeError) as e:
        raise CodecError("bad_entry", f"{e}") from None
    return _HDR_NFGEN.pack(20 + len(body), CT_NEW, flags | NLM_F_REQUEST, seq, 0,
                           o.family, NFNETLINK_V0, 0) + body


def encode_update(entry: Entry, seq: int, flags: int = NLM_F_ACK) -> bytes:
    """IPCTNL_MSG_CT_NEW *without* NLM_F_CREATE/EXCL: change an existing entry
    (found by its original tuple and zone) -- timeout, mark, status bits, TCP
    state.  The kernel refuses NAT attributes on an existing entry
    (EOPNOTSUPP: NAT is fixed at creation), so none are sent; the status is
    the commit form's (bits SEEN_REPLY/ASSURED can only be added: clearing
    them is EBUSY).  ENOENT if the entry does not exist."""
    o = entry.orig
    try:
        body = _tuple_attr(o, CTA_TUPLE_ORIG)
        body += _A_BE32.pack(8, CTA_STATUS, htonl((entry.status & ~COMMIT_STATUS_STRIP)
                                                  | IPS_CONFIRMED))
        body += _A_BE32.pack(8, CTA_TIMEOUT, htonl(entry.timeout or 1))
        body += _A_BE32.pack(8, CTA_MARK, htonl(entry.mark))
        if entry.zone:
            body += _A_BE16.pack(6, CTA_ZONE, htons(entry.zone))
        if o.proto == IPPROTO_TCP and entry.tcp_state is not None:
            fo = ((entry.tcp_flags_orig or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL
            fr = ((entry.tcp_flags_reply or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL
            body += _tcp_protoinfo(entry.tcp_state, fo, fr, fo, fr, None, None)
    except CodecError:
        raise
    except (struct.error, OverflowError, TypeError, AttributeError) as e:
        raise CodecError("bad_entry", f"{e}") from None
    return _msg(CT_NEW, (flags | NLM_F_REQUEST) & ~(NLM_F_CREATE | NLM_F_EXCL), seq, o.family,
                body)


def encode_timeout(t: Tuple, timeout: int, seq: int = 0, zone: int = 0,
                   flags: int = NLM_F_ACK) -> bytes:
    """IPCTNL_MSG_CT_NEW without NLM_F_CREATE carrying only the original tuple
    and CTA_TIMEOUT: set the remaining lifetime of an existing entry and change
    nothing else (``conntrackd -t``).  ENOENT if the entry is gone."""
    body = _tuple_attr(t, CTA_TUPLE_ORIG)
    body += _A_BE32.pack(8, CTA_TIMEOUT, htonl(max(int(timeout), 1)))
    if zone:
        body += _A_BE16.pack(6, CTA_ZONE, htons(zone))
    return _msg(CT_NEW, (flags | NLM_F_REQUEST) & ~(NLM_F_CREATE | NLM_F_EXCL), seq, t.family, body)


def encode_delete(t: Tuple, seq: int = 0, zone: int = 0,
                  flags: int = NLM_F_ACK) -> bytes:
    """IPCTNL_MSG_CT_DELETE of the entry whose original tuple is ``t``
    (``t`` may also be a reply tuple: the kernel looks both up)."""
    body = _tuple_attr(t, CTA_TUPLE_ORIG)
    if zone:
        body += _A_BE16.pack(6, CTA_ZONE, htons(zone))
    return _msg(CT_DELETE, flags | NLM_F_REQUEST, seq, t.family, body)


def encode_get(t: Tuple, seq: int = 0, zone: int = 0, flags: int = 0) -> bytes:
    """IPCTNL_MSG_CT_GET of one entry: the answer is a CT_NEW message, or an
    NLMSG_ERROR (ENOENT)."""
    body = _tuple_attr(t, CTA_TUPLE_ORIG)
    if zone:
        body += _A_BE16.pack(6, CTA_ZONE, htons(zone))
    return _msg(CT_GET, flags | NLM_F_REQUEST, seq, t.family, body)


def encode_dump(family: int = AF_UNSPEC, seq: int = 0) -> bytes:
    """Dump request of the whole table (``family`` AF_UNSPEC: IPv4 and IPv6)."""
    return _msg(CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, b"")


def encode_flush(family: int = AF_UNSPEC, seq: int = 0) -> bytes:
    """IPCTNL_MSG_CT_DELETE without a tuple: delete every entry (of ``family``)."""
    return _msg(CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, b"")
