"""Decoding ctnetlink messages: events, dump parts, GET answers, errors and ACKs.

Decoding never raises anything but :class:`~ctnetlink.model.CodecError` on malformed
input. The kernel's usual layout of an IPv4 port tuple is read in place (a fast path
checked byte for byte); any other tuple takes the generic attribute walk, which handles
IPv4 and IPv6 alike through :data:`ctnetlink.layout.TUPLE_ADDRESS`.
"""

from __future__ import annotations

import struct
from typing import Iterator

from .constants import (
    AF_INET,
    CT_DELETE,
    CT_NEW,
    CTA_HELP,
    CTA_HELP_NAME,
    CTA_ID,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_MARK,
    CTA_NAT_DST,
    CTA_NAT_PROTO,
    CTA_NAT_SRC,
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
    CTA_PROTONAT_PORT_MIN,
    CTA_STATUS,
    CTA_TIMEOUT,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_ZONE,
    IPS_DST_NAT,
    IPS_SRC_NAT,
    NLMSG_ERROR,
    PORT_PROTOS,
)
from .key import KEY_HEAD, key_of
from .layout import (
    I32,
    NAT_MINIP,
    NEST,
    NLA,
    TMASK,
    TUPLE_ADDRESS,
    unpack_be16,
    unpack_be32,
    unpack_hdr,
    unpack_nla,
)
from .model import CodecError, Entry, IPAddress, Message, NlError, Tuple, address

__all__ = ["parse_message", "parse_entry", "iter_messages", "key_and_timeout"]

# The exact bytes the kernel emits for an IPv4 tuple of a port protocol
# (IP{SRC,DST} PROTO{NUM,SPORT,DPORT}, nests flagged NLA_F_NESTED): 48 bytes, read in
# place. Offsets within the tuple's payload: src 8, dst 16, proto 28, sport 36, dport 44.
_F_IP_SRC = NLA.pack(20, NEST | CTA_TUPLE_IP) + NLA.pack(8, CTA_IP_V4_SRC)
_F_DST = NLA.pack(8, CTA_IP_V4_DST)
_F_PROTO_NUM = NLA.pack(28, NEST | CTA_TUPLE_PROTO) + NLA.pack(5, CTA_PROTO_NUM)
_F_SPORT = NLA.pack(6, CTA_PROTO_SRC_PORT)
_F_DPORT = NLA.pack(6, CTA_PROTO_DST_PORT)

_ICMP_ID = (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID)
_ICMP_TYPE = (CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_TYPE)
_ICMP_CODE = (CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMPV6_CODE)


def _is_fast_v4_tuple(buf, p: int, end: int) -> bool:
    return (end - p == 48 and buf[p:p + 8] == _F_IP_SRC and buf[p + 12:p + 16] == _F_DST
            and buf[p + 20:p + 28] == _F_PROTO_NUM and buf[p + 32:p + 36] == _F_SPORT
            and buf[p + 40:p + 44] == _F_DPORT and buf[p + 28] in PORT_PROTOS)


def _nested(buf, p: int, end: int, what: str) -> Iterator[tuple[int, int, int]]:
    """(type without flags, payload offset, attribute length) of each attribute in
    ``buf[p:end]``; CodecError on an attribute that does not fit."""
    while p + 4 <= end:
        alen, atype = unpack_nla(buf, p)
        if alen < 4 or p + alen > end:
            raise CodecError("bad_attr_len", what)
        yield atype & TMASK, p + 4, alen
        p += (alen + 3) & ~3


def _parse_tuple(buf, p: int, end: int) -> Tuple:
    if _is_fast_v4_tuple(buf, p, end):
        return Tuple(AF_INET, buf[p + 28], address(bytes(buf[p + 8:p + 12])), address(bytes(buf[p + 16:p + 20])),
                     buf[p + 36] << 8 | buf[p + 37], buf[p + 44] << 8 | buf[p + 45])
    src = dst = None
    family = proto = sport = dport = icmp_id = icmp_type = icmp_code = 0
    have_proto = False
    for atype, q, alen in _nested(buf, p, end, "tuple"):
        if atype == CTA_TUPLE_IP:
            for btype, v, blen in _nested(buf, q, q - 4 + alen, "tuple ip"):
                found = TUPLE_ADDRESS.get(btype)
                if found is None:
                    continue
                lay, is_src = found
                if blen != lay.addr_attr_len:
                    raise CodecError("bad_attr_len", f"ipv{4 if lay.addr_len == 4 else 6} address")
                if family and family != lay.family:
                    raise CodecError("mixed_family")
                family = lay.family
                a = address(bytes(buf[v:v + lay.addr_len]))
                if is_src:
                    src = a
                else:
                    dst = a
        elif atype == CTA_TUPLE_PROTO:
            for btype, v, blen in _nested(buf, q, q - 4 + alen, "tuple proto"):
                if btype == CTA_PROTO_NUM:
                    if blen < 5:
                        raise CodecError("bad_attr_len", "proto num")
                    proto = buf[v]
                    have_proto = True
                elif btype == CTA_PROTO_SRC_PORT:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "sport")
                    sport = unpack_be16(buf, v)[0]
                elif btype == CTA_PROTO_DST_PORT:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "dport")
                    dport = unpack_be16(buf, v)[0]
                elif btype in _ICMP_ID:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "icmp id")
                    icmp_id = unpack_be16(buf, v)[0]
                elif btype in _ICMP_TYPE:
                    if blen < 5:
                        raise CodecError("bad_attr_len", "icmp type")
                    icmp_type = buf[v]
                elif btype in _ICMP_CODE:
                    if blen < 5:
                        raise CodecError("bad_attr_len", "icmp code")
                    icmp_code = buf[v]
    if src is None or dst is None:
        raise CodecError("incomplete_tuple", "missing address")
    if not have_proto:
        raise CodecError("incomplete_tuple", "missing protocol")
    return Tuple(family, proto, src, dst, sport, dport, icmp_id, icmp_type, icmp_code)


def _parse_nat(buf, p: int, end: int) -> tuple[IPAddress | None, int | None]:
    """CTA_NAT_SRC/DST of a commit message -> (min address, min port)."""
    addr = port = None
    for atype, q, alen in _nested(buf, p, end, "nat"):
        lay = NAT_MINIP.get(atype)
        if lay is not None:
            if alen != lay.addr_attr_len:
                raise CodecError("bad_attr_len", f"nat v{4 if lay.addr_len == 4 else 6}")
            addr = address(bytes(buf[q:q + lay.addr_len]))
        elif atype == CTA_NAT_PROTO:
            for btype, v, blen in _nested(buf, q, q - 4 + alen, "nat proto"):
                if btype == CTA_PROTONAT_PORT_MIN:
                    if blen < 6:
                        raise CodecError("bad_attr_len", "nat port")
                    port = unpack_be16(buf, v)[0]
    return addr, port


_TCP_BYTE_ATTRS = {CTA_PROTOINFO_TCP_STATE: 0, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: 1, CTA_PROTOINFO_TCP_FLAGS_REPLY: 2,
                   CTA_PROTOINFO_TCP_WSCALE_ORIGINAL: 3, CTA_PROTOINFO_TCP_WSCALE_REPLY: 4}


def _parse_protoinfo(buf, p: int, end: int) -> list:
    """[state, flags orig, flags reply, wscale orig, wscale reply] (None when absent)."""
    out: list = [None] * 5
    for atype, q, alen in _nested(buf, p, end, "protoinfo"):
        if atype != CTA_PROTOINFO_TCP:
            continue
        for btype, v, blen in _nested(buf, q, q - 4 + alen, "protoinfo tcp"):
            if 0 < btype <= CTA_PROTOINFO_TCP_FLAGS_REPLY and blen < 5:
                raise CodecError("bad_attr_len", "protoinfo tcp value")
            slot = _TCP_BYTE_ATTRS.get(btype)
            if slot is not None:
                out[slot] = buf[v]
    return out


def _parse_helper(buf, p: int, end: int) -> str | None:
    helper = None
    for atype, q, alen in _nested(buf, p, end, "help"):
        if atype == CTA_HELP_NAME:
            helper = bytes(buf[q:q - 4 + alen]).split(b"\0", 1)[0].decode("ascii", "replace")
    return helper


def _be32(buf, p: int, alen: int, what: str) -> int:
    if alen != 8:
        raise CodecError("bad_attr_len", what)
    return unpack_be32(buf, p)[0]


def parse_entry(buf, off: int, end: int) -> Entry:
    """Decode the attributes of a ctnetlink NEW/DELETE message; ``off`` points
    at the nfgenmsg (right after the nlmsghdr), ``end`` at the message end."""
    if off + 4 > end:
        raise CodecError("truncated", "nfgenmsg")
    orig = reply = None
    status = timeout = mark = zone = 0
    ct_id = helper = None
    tcp = [None] * 5
    nat_src = nat_dst = None
    off += 4
    while off + 4 <= end:  # inline, not _nested: every event and dump entry comes through here
        alen, atype = unpack_nla(buf, off)
        if alen < 4 or off + alen > end:
            raise CodecError("bad_attr_len", "top level")
        atype &= TMASK
        p, aend = off + 4, off + alen
        off += (alen + 3) & ~3
        if atype == CTA_TUPLE_ORIG:
            orig = _parse_tuple(buf, p, aend)
        elif atype == CTA_TUPLE_REPLY:
            reply = _parse_tuple(buf, p, aend)
        elif atype == CTA_STATUS:
            status = _be32(buf, p, alen, "status")
        elif atype == CTA_TIMEOUT:
            timeout = _be32(buf, p, alen, "timeout")
        elif atype == CTA_MARK:
            mark = _be32(buf, p, alen, "mark")
        elif atype == CTA_ID:
            ct_id = _be32(buf, p, alen, "id")
        elif atype == CTA_ZONE:
            if alen < 6:
                raise CodecError("bad_attr_len", "zone")
            zone = unpack_be16(buf, p)[0]
        elif atype == CTA_PROTOINFO:
            tcp = _parse_protoinfo(buf, p, aend)
        elif atype == CTA_NAT_SRC:
            nat_src = _parse_nat(buf, p, aend)
        elif atype == CTA_NAT_DST:
            nat_dst = _parse_nat(buf, p, aend)
        elif atype == CTA_HELP:
            helper = _parse_helper(buf, p, aend)
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
    return Entry(orig, reply, status, timeout, mark, zone, ct_id, *tcp, helper)


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
    return Tuple(reply.family, reply.proto, src, dst, sport, dport, icmp_id, reply.icmp_type, reply.icmp_code)


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
        nlen, msgtype, flags, seq, portid = unpack_hdr(buf, offset)
        if nlen < 16 or offset + nlen > n:
            raise CodecError("bad_msg_len", f"nlmsg_len={nlen}")
        end = offset + nlen
        if msgtype == CT_NEW or msgtype == CT_DELETE:
            return (msgtype, flags, seq, portid, parse_entry(buf, offset + 16, end))
        if msgtype == NLMSG_ERROR:
            if nlen < 20:
                raise CodecError("truncated", "nlmsgerr")
            err = -I32.unpack_from(buf, offset + 16)[0]
            if err < 0:
                raise CodecError("bad_errno", str(-err))
            if nlen >= 36:
                _l, rtype, _f, rseq, _p = unpack_hdr(buf, offset + 20)
                return (msgtype, flags, seq, portid, NlError(err, rtype, rseq))
            return (msgtype, flags, seq, portid, NlError(err))
        return (msgtype, flags, seq, portid, None)
    except CodecError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, UnicodeError) as e:
        raise CodecError("malformed", repr(e)) from None


def key_and_timeout(buf) -> tuple[bytes, int]:
    """The identity key (:mod:`ctnetlink.key`) and the timeout of one CT_NEW message,
    without decoding the rest: what a backup needs of each replicated entry, at a
    fraction of ``parse_message``'s cost (no objects, no reply tuple, no NAT). The
    usual kernel layout of an IPv4 port tuple is read in place; any other tuple takes
    the full tuple parser. Raises :class:`CodecError` (only) on malformed input."""
    try:
        n = len(buf)
        if n < 20:
            raise CodecError("truncated", "nlmsghdr")
        nlen, msgtype, _f, _s, _p = unpack_hdr(buf, 0)
        if nlen < 20 or nlen > n:
            raise CodecError("bad_msg_len", f"nlmsg_len={nlen}")
        if msgtype != CT_NEW:
            raise CodecError("not_ct_new", str(msgtype))
        tup = None  # (start, end) of CTA_TUPLE_ORIG's payload
        timeout = zone = 0
        have_reply = False
        off = 20
        while off + 4 <= nlen:  # the top level walked inline: this is a backup's hot path
            alen, atype = unpack_nla(buf, off)
            if alen < 4 or off + alen > nlen:
                raise CodecError("bad_attr_len", "top level")
            atype &= TMASK
            if atype == CTA_TUPLE_ORIG:
                tup = (off + 4, off + alen)
            elif atype == CTA_TUPLE_REPLY:
                have_reply = True
            elif atype == CTA_TIMEOUT:
                if alen != 8:
                    raise CodecError("bad_attr_len", "timeout")
                timeout = unpack_be32(buf, off + 4)[0]
            elif atype == CTA_ZONE:
                if alen < 6:
                    raise CodecError("bad_attr_len", "zone")
                zone = unpack_be16(buf, off + 4)[0]
            off += (alen + 3) & ~3
        if tup is None:
            raise CodecError("no_orig_tuple")
        if not have_reply:
            raise CodecError("no_reply_tuple")
        p, tend = tup
        if (tend - p == 48 and buf[p:p + 8] == _F_IP_SRC and buf[p + 12:p + 16] == _F_DST  # _is_fast_v4_tuple, inline
                and buf[p + 20:p + 28] == _F_PROTO_NUM and buf[p + 32:p + 36] == _F_SPORT
                and buf[p + 40:p + 44] == _F_DPORT and buf[p + 28] in PORT_PROTOS):
            key = (KEY_HEAD.pack(AF_INET, buf[p + 28], zone) + bytes(buf[p + 8:p + 12])
                   + bytes(buf[p + 16:p + 20]) + bytes(buf[p + 36:p + 38]) + bytes(buf[p + 44:p + 46]))
            return key, timeout
        return key_of(_parse_tuple(buf, p, tend), zone), timeout
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
        nlen, msgtype, flags, seq, portid = unpack_hdr(data, off)
        if nlen < 16 or off + nlen > n:
            raise CodecError("bad_msg_len", f"nlmsg_len={nlen} at {off}")
        try:
            yield Message(*parse_message(data, off))
        except CodecError as e:
            yield Message(msgtype, flags, seq, portid, e)
        off += (nlen + 3) & ~3
    if off < n:
        raise CodecError("truncated", f"{n - off} trailing bytes")
