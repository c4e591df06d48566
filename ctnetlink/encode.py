"""Encoding ctnetlink requests: the commit recipe (:func:`encode_new`), updates,
timeouts, deletes, GETs, dumps and flushes. IPv4 and IPv6 take one path, through
:data:`ctnetlink.layout.FAMILIES`. Raises :class:`~ctnetlink.model.CodecError` for an
entry that cannot be encoded."""

from __future__ import annotations

import struct
from socket import htonl, htons
from typing import NamedTuple

from .constants import (
    AF_UNSPEC,
    CT_DELETE,
    CT_GET,
    CT_NEW,
    CTA_HELP,
    CTA_HELP_NAME,
    CTA_ID,
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
    CTA_PROTONAT_PORT_MAX,
    CTA_PROTONAT_PORT_MIN,
    CTA_STATUS,
    CTA_TIMEOUT,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_ZONE,
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_CLOSE_INIT,
    IP_CT_TCP_FLAG_SACK_PERM,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_DYING,
    IPS_EXPECTED,
    IPS_HW_OFFLOAD,
    IPS_OFFLOAD,
    IPS_SRC_NAT,
    IPS_TEMPLATE,
    IPS_UNTRACKED,
    NFNETLINK_V0,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    PORT_PROTOS,
)
from .layout import (
    A_BE16,
    A_BE32,
    FAMILIES,
    HDR_NFGEN,
    NEST,
    NLA,
    PI_TCP,
    PI_TCP_WS,
    PR_ICMP,
    PR_NUM,
    PR_PORTS,
)
from .model import CodecError, Entry, IPAddress, Tuple

__all__ = ["encode_new", "commit_fields", "commit_message", "CommitFields", "encode_update", "encode_timeout", "encode_delete", "encode_get", "encode_dump",
           "encode_flush", "COMMIT_STATUS_STRIP", "COMMIT_TCP_FLAGS_KEEP"]

#: status bits never sent when committing: the kernel answers EBUSY for
#: EXPECTED/DYING, and the offload/template bits describe local state.
COMMIT_STATUS_STRIP = (IPS_EXPECTED | IPS_DYING | IPS_OFFLOAD | IPS_HW_OFFLOAD | IPS_TEMPLATE | IPS_UNTRACKED)
#: TCP per-direction flags copied from a dump when committing; the others
#: (MAXACK_SET, DATA_UNACKNOWLEDGED, ...) describe window state that is not
#: replicated.  BE_LIBERAL is always added: the backup has no window history.
COMMIT_TCP_FLAGS_KEEP = (IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_CLOSE_INIT)

#: ICMP tuple attributes by protocol: (id, type, code)
_ICMP_ATTRS = {IPPROTO_ICMP: (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE),
               IPPROTO_ICMPV6: (CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE)}


def _family(family: int):
    lay = FAMILIES.get(family)
    if lay is None:
        raise CodecError("bad_family", str(family))
    return lay


def _addr_bytes(a, size: int) -> bytes:
    try:
        b = a.packed
    except AttributeError:
        raise CodecError("bad_address", repr(a)) from None
    if len(b) != size:
        raise CodecError("mixed_family", str(a))
    return b


def _tuple_attr(t: Tuple, nest_type: int) -> bytes:
    lay = _family(t.family)
    n, alen = lay.addr_len, lay.addr_attr_len
    ip = lay.pair.pack(4 + 2 * alen, NEST | CTA_TUPLE_IP, alen, lay.ip_src, _addr_bytes(t.src, n),
                       alen, lay.ip_dst, _addr_bytes(t.dst, n))
    p = t.proto
    try:
        if p in PORT_PROTOS:
            pr = PR_PORTS.pack(28, NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p,
                               6, CTA_PROTO_SRC_PORT, htons(t.sport), 6, CTA_PROTO_DST_PORT, htons(t.dport))
        elif p in _ICMP_ATTRS:
            a_id, a_type, a_code = _ICMP_ATTRS[p]
            pr = PR_ICMP.pack(36, NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p, 6, a_id, htons(t.icmp_id),
                              5, a_type, t.icmp_type, 5, a_code, t.icmp_code)
        else:
            pr = PR_NUM.pack(12, NEST | CTA_TUPLE_PROTO, 5, CTA_PROTO_NUM, p)
    except (struct.error, OverflowError, TypeError) as e:
        raise CodecError("bad_tuple", f"{t!r}: {e}") from None
    return NLA.pack(4 + len(ip) + len(pr), NEST | nest_type) + ip + pr


def _nat_attr(nest_type: int, t: Tuple, addr, port: int) -> bytes:
    lay = _family(t.family)
    b = _addr_bytes(addr, lay.addr_len)
    alen = lay.addr_attr_len
    if t.proto in PORT_PROTOS or t.is_icmp:
        return lay.pair_ports.pack(4 + 2 * alen + 20, NEST | nest_type, alen, lay.nat_minip, b, alen, lay.nat_maxip, b,
                                   20, NEST | CTA_NAT_PROTO, 6, CTA_PROTONAT_PORT_MIN, htons(port),
                                   6, CTA_PROTONAT_PORT_MAX, htons(port))
    return lay.pair.pack(4 + 2 * alen, NEST | nest_type, alen, lay.nat_minip, b, alen, lay.nat_maxip, b)


def _msg(msgtype: int, flags: int, seq: int, family: int, body: bytes) -> bytes:
    return HDR_NFGEN.pack(20 + len(body), msgtype, flags, seq, 0, family, NFNETLINK_V0, 0) + body


def _tcp_protoinfo(state: int, fo: int, fr: int, mask_o: int, mask_r: int, wo: int | None, wr: int | None) -> bytes:
    if wo is not None and wr is not None:
        return PI_TCP_WS.pack(48, NEST | CTA_PROTOINFO, 44, NEST | CTA_PROTOINFO_TCP,
                              5, CTA_PROTOINFO_TCP_STATE, state,
                              5, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, wo,
                              5, CTA_PROTOINFO_TCP_WSCALE_REPLY, wr,
                              6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, fo, mask_o,
                              6, CTA_PROTOINFO_TCP_FLAGS_REPLY, fr, mask_r)
    return PI_TCP.pack(32, NEST | CTA_PROTOINFO, 28, NEST | CTA_PROTOINFO_TCP,
                       5, CTA_PROTOINFO_TCP_STATE, state,
                       6, CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, fo, mask_o,
                       6, CTA_PROTOINFO_TCP_FLAGS_REPLY, fr, mask_r)


def _commit_tcp_protoinfo(entry: Entry, with_wscale: bool) -> bytes:
    """The TCP state of a commit or update: the kept flags plus BE_LIBERAL, as value and mask."""
    fo = ((entry.tcp_flags_orig or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL
    fr = ((entry.tcp_flags_reply or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL
    if with_wscale:
        return _tcp_protoinfo(entry.tcp_state, fo, fr, fo, fr, entry.tcp_wscale_orig, entry.tcp_wscale_reply)
    return _tcp_protoinfo(entry.tcp_state, fo, fr, fo, fr, None, None)


def _help_attr(name: str) -> bytes:
    raw = name.encode("ascii") + b"\0"
    inner = NLA.pack(4 + len(raw), CTA_HELP_NAME) + raw + b"\0" * (-len(raw) % 4)
    return NLA.pack(4 + len(inner), NEST | CTA_HELP) + inner


def _commit_status(status: int) -> bytes:
    return A_BE32.pack(8, CTA_STATUS, htonl((status & ~COMMIT_STATUS_STRIP) | IPS_CONFIRMED))


class CommitFields(NamedTuple):
    """Everything a commit message is made of, as the message carries it: the inputs of
    :func:`commit_message`. :func:`commit_fields` derives them from an entry (the commit
    recipe); :mod:`ctnetlink.compact` packs them for the sync link and back."""

    orig: Tuple
    zone: int
    status: int  # as sent: (status & ~COMMIT_STATUS_STRIP) | IPS_CONFIRMED
    timeout: int  # as sent: the entry's, or 1 for 0
    mark: int
    dnat: tuple[IPAddress, int] | None  # where the destination goes: (reply.src, reply sport or ICMP id)
    snat: tuple[IPAddress, int] | None  # where the source goes: (reply.dst, reply dport or ICMP id)
    tcp: tuple[int, int, int] | None  # state, flags original, flags reply: the kept flags | BE_LIBERAL
    wscale: tuple[int, int] | None  # window scales, original and reply (only with tcp)
    helper: str | None


def commit_fields(entry: Entry) -> CommitFields:
    """The commit recipe (module docstring of :mod:`ctnetlink.codec`) applied to ``entry``."""
    o, r, status = entry.orig, entry.reply, entry.status
    dnat = (r.src, r.icmp_id if r.is_icmp else r.sport) if status & IPS_DST_NAT else None
    snat = (r.dst, r.icmp_id if r.is_icmp else r.dport) if status & IPS_SRC_NAT else None
    tcp = wscale = None
    if o.proto == IPPROTO_TCP and entry.tcp_state is not None:
        tcp = (entry.tcp_state, ((entry.tcp_flags_orig or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL,
               ((entry.tcp_flags_reply or 0) & COMMIT_TCP_FLAGS_KEEP) | IP_CT_TCP_FLAG_BE_LIBERAL)
        if entry.tcp_wscale_orig is not None and entry.tcp_wscale_reply is not None:
            wscale = (entry.tcp_wscale_orig, entry.tcp_wscale_reply)
    return CommitFields(o, entry.zone, (status & ~COMMIT_STATUS_STRIP) | IPS_CONFIRMED, entry.timeout or 1,
                        entry.mark, dnat, snat, tcp, wscale, entry.helper or None)


def commit_message(f: CommitFields, seq: int = 0, flags: int = NLM_F_CREATE | NLM_F_EXCL) -> bytes:
    """IPCTNL_MSG_CT_NEW of the commit form from its fields, written as they are
    (NLM_F_REQUEST is always added). CodecError if they cannot be encoded."""
    o = f.orig
    try:
        body = _tuple_attr(o, CTA_TUPLE_ORIG) + _tuple_attr(o.inverse(), CTA_TUPLE_REPLY)  # never the dumped reply
        if f.dnat is not None:
            body += _nat_attr(CTA_NAT_DST, o, *f.dnat)
        if f.snat is not None:
            body += _nat_attr(CTA_NAT_SRC, o, *f.snat)
        body += A_BE32.pack(8, CTA_STATUS, htonl(f.status))
        body += A_BE32.pack(8, CTA_TIMEOUT, htonl(f.timeout))
        if f.mark:
            body += A_BE32.pack(8, CTA_MARK, htonl(f.mark))
        if f.zone:
            body += A_BE16.pack(6, CTA_ZONE, htons(f.zone))
        if f.tcp is not None:
            state, fo, fr = f.tcp
            wo, wr = f.wscale or (None, None)
            body += _tcp_protoinfo(state, fo, fr, fo, fr, wo, wr)
        if f.helper:
            body += _help_attr(f.helper)
        return HDR_NFGEN.pack(20 + len(body), CT_NEW, flags | NLM_F_REQUEST, seq, 0, o.family, NFNETLINK_V0, 0) + body
    except CodecError:
        raise
    except (struct.error, OverflowError, TypeError, AttributeError, UnicodeError) as e:
        raise CodecError("bad_entry", f"{e}") from None


def encode_new(entry: Entry, seq: int, flags: int = NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
               for_commit: bool = True) -> bytes:
    """IPCTNL_MSG_CT_NEW for ``entry`` (NLM_F_REQUEST is always added).

    ``for_commit=True`` (default) builds what makes the kernel *create a
    working* entry (see :mod:`ctnetlink.codec`: reply tuple = inverse of the
    original, NAT as CTA_NAT_SRC/CTA_NAT_DST, CONFIRMED status, TCP
    BE_LIBERAL): ``commit_message(commit_fields(entry))``.  ``for_commit=False``
    is the verbatim wire form of the entry as a dump shows it (reply tuple as
    is, status as is, id): what the kernel would send; parse_message() of it
    returns an equal Entry.

    The commit form only *creates*: on an existing entry the kernel answers
    EOPNOTSUPP to NAT attributes even without NLM_F_EXCL; use
    :func:`encode_update` to change an existing entry.
    """
    if for_commit:
        try:
            f = commit_fields(entry)
        except (TypeError, AttributeError) as e:
            raise CodecError("bad_entry", f"{e}") from None
        return commit_message(f, seq, flags)
    o = entry.orig
    try:
        mark = entry.mark
        body = _tuple_attr(o, CTA_TUPLE_ORIG) + _tuple_attr(entry.reply, CTA_TUPLE_REPLY)
        body += A_BE32.pack(8, CTA_STATUS, htonl(entry.status))
        body += A_BE32.pack(8, CTA_TIMEOUT, htonl(entry.timeout))
        if mark:
            body += A_BE32.pack(8, CTA_MARK, htonl(mark))
        if entry.zone:
            body += A_BE16.pack(6, CTA_ZONE, htons(entry.zone))
        if entry.id is not None:
            body += A_BE32.pack(8, CTA_ID, htonl(entry.id))
        if entry.tcp_state is not None:
            body += _tcp_protoinfo(entry.tcp_state, entry.tcp_flags_orig or 0, entry.tcp_flags_reply or 0, 0, 0,
                                   entry.tcp_wscale_orig, entry.tcp_wscale_reply)
        if entry.helper:
            body += _help_attr(entry.helper)
    except CodecError:
        raise
    except (struct.error, OverflowError, TypeError, AttributeError, UnicodeError) as e:
        raise CodecError("bad_entry", f"{e}") from None
    return HDR_NFGEN.pack(20 + len(body), CT_NEW, flags | NLM_F_REQUEST, seq, 0, o.family, NFNETLINK_V0, 0) + body


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
        body += _commit_status(entry.status)
        body += A_BE32.pack(8, CTA_TIMEOUT, htonl(entry.timeout or 1))
        body += A_BE32.pack(8, CTA_MARK, htonl(entry.mark))
        if entry.zone:
            body += A_BE16.pack(6, CTA_ZONE, htons(entry.zone))
        if o.proto == IPPROTO_TCP and entry.tcp_state is not None:
            body += _commit_tcp_protoinfo(entry, with_wscale=False)
    except CodecError:
        raise
    except (struct.error, OverflowError, TypeError, AttributeError) as e:
        raise CodecError("bad_entry", f"{e}") from None
    return _msg(CT_NEW, (flags | NLM_F_REQUEST) & ~(NLM_F_CREATE | NLM_F_EXCL), seq, o.family, body)


def _zone_attr(zone: int) -> bytes:
    return A_BE16.pack(6, CTA_ZONE, htons(zone)) if zone else b""


def encode_timeout(t: Tuple, timeout: int, seq: int = 0, zone: int = 0, flags: int = NLM_F_ACK) -> bytes:
    """IPCTNL_MSG_CT_NEW without NLM_F_CREATE carrying only the original tuple
    and CTA_TIMEOUT: set the remaining lifetime of an existing entry and change
    nothing else (``conntrackd -t``).  ENOENT if the entry is gone."""
    body = _tuple_attr(t, CTA_TUPLE_ORIG) + A_BE32.pack(8, CTA_TIMEOUT, htonl(max(int(timeout), 1))) + _zone_attr(zone)
    return _msg(CT_NEW, (flags | NLM_F_REQUEST) & ~(NLM_F_CREATE | NLM_F_EXCL), seq, t.family, body)


def encode_delete(t: Tuple, seq: int = 0, zone: int = 0, flags: int = NLM_F_ACK) -> bytes:
    """IPCTNL_MSG_CT_DELETE of the entry whose original tuple is ``t``
    (``t`` may also be a reply tuple: the kernel looks both up)."""
    return _msg(CT_DELETE, flags | NLM_F_REQUEST, seq, t.family, _tuple_attr(t, CTA_TUPLE_ORIG) + _zone_attr(zone))


def encode_get(t: Tuple, seq: int = 0, zone: int = 0, flags: int = 0) -> bytes:
    """IPCTNL_MSG_CT_GET of one entry: the answer is a CT_NEW message, or an
    NLMSG_ERROR (ENOENT)."""
    return _msg(CT_GET, flags | NLM_F_REQUEST, seq, t.family, _tuple_attr(t, CTA_TUPLE_ORIG) + _zone_attr(zone))


def encode_dump(family: int = AF_UNSPEC, seq: int = 0) -> bytes:
    """Dump request of the whole table (``family`` AF_UNSPEC: IPv4 and IPv6)."""
    return _msg(CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, b"")


def encode_flush(family: int = AF_UNSPEC, seq: int = 0) -> bytes:
    """IPCTNL_MSG_CT_DELETE without a tuple: delete every entry (of ``family``)."""
    return _msg(CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, b"")
