"""What ctnetlink messages mean, as Python values: a conntrack :class:`Tuple`, an
:class:`Entry`, a netlink error or ACK (:class:`NlError`), one decoded netlink
:class:`Message`, and :class:`CodecError` for malformed input. No wire layout here
(see :mod:`.decode` and :mod:`.encode`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

from .constants import (
    ICMP_INVERSE,
    ICMPV6_INVERSE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPS_DST_NAT,
    IPS_SRC_NAT,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CodecError(Exception):
    """Malformed netlink/ctnetlink input (or an entry that cannot be encoded).

    ``reason`` is a short stable token suitable as a counter name.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


#: conntrack tables repeat the same few addresses endlessly: one object per address
_ADDRESSES: dict[bytes, IPAddress] = {}
_ADDRESSES_MAX = 1 << 16


def address(raw: bytes) -> IPAddress:
    """The address object of 4 or 16 raw bytes (cached)."""
    a = _ADDRESSES.get(raw)
    if a is None:
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        a = _ADDRESSES[raw] = ipaddress.ip_address(raw)
    return a


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

