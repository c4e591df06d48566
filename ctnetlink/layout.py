"""Wire layouts of ctnetlink messages, shared by :mod:`.decode` and :mod:`.encode`.

Netlink and attribute *headers* are host order; integer payloads wider than a byte are
big-endian (they are passed through htons/htonl and packed host-order). The layouts are
precompiled ``struct.Struct`` objects so that a message is built or read with few calls.
IPv4 and IPv6 differ only in the address length and the attribute numbers: one
:class:`FamilyLayout` each, one code path for both.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    AF_INET,
    AF_INET6,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_NAT_V4_MAXIP,
    CTA_NAT_V4_MINIP,
    CTA_NAT_V6_MAXIP,
    CTA_NAT_V6_MINIP,
    NLA_F_NESTED,
)

NLMSGHDR = struct.Struct("=IHHII")        # len, type, flags, seq, portid
HDR_NFGEN = struct.Struct("=IHHIIBBH")    # nlmsghdr + nfgenmsg (family, version, res_id)
NLA = struct.Struct("=HH")
I32 = struct.Struct("=i")
BE16 = struct.Struct(">H")
BE32 = struct.Struct(">I")

unpack_nla = NLA.unpack_from
unpack_hdr = NLMSGHDR.unpack_from
unpack_be16 = BE16.unpack_from
unpack_be32 = BE32.unpack_from

NEST = NLA_F_NESTED
TMASK = 0x3FFF  # ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

A_BE32 = struct.Struct("=HHI")     # attribute + be32 payload
A_BE16 = struct.Struct("=HHH2x")   # attribute + be16 payload + pad

PR_PORTS = struct.Struct("=HHHHB3xHHH2xHHH2x")       # PROTO nest(28): NUM, SPORT, DPORT
PR_ICMP = struct.Struct("=HHHHB3xHHH2xHHB3xHHB3x")   # PROTO nest(36): NUM, ID, TYPE, CODE
PR_NUM = struct.Struct("=HHHHB3x")                   # PROTO nest(12): NUM

# TCP protoinfo, commit form: PROTOINFO(4) TCP(4) STATE(8) FLAGS_ORIG(8) FLAGS_REPLY(8) = 32
PI_TCP = struct.Struct("=HHHHHHB3xHHBB2xHHBB2x")
# ... with both window scales (only applied by the kernel if WINDOW_SCALE is in both flags)
PI_TCP_WS = struct.Struct("=HHHHHHB3xHHB3xHHB3xHHBB2xHHBB2x")  # 48


@dataclass(frozen=True)
class FamilyLayout:
    """What differs between IPv4 and IPv6 in a ctnetlink message."""

    family: int
    addr_len: int
    ip_src: int  # CTA_IP_V*_SRC
    ip_dst: int
    nat_minip: int  # CTA_NAT_V*_MINIP
    nat_maxip: int
    #: an address pair nest: (len, type) (len, type) addr (len, type) addr -- the tuple's
    #: CTA_TUPLE_IP{SRC, DST} and a NAT range's {MINIP, MAXIP} alike
    pair: struct.Struct
    #: a NAT nest with a port range: the pair, then CTA_NAT_PROTO{PORT_MIN, PORT_MAX}
    pair_ports: struct.Struct

    @property
    def addr_attr_len(self) -> int:
        return 4 + self.addr_len


def _layout(family: int, n: int, src: int, dst: int, minip: int, maxip: int) -> FamilyLayout:
    pair = struct.Struct(f"=HHHH{n}sHH{n}s")
    return FamilyLayout(family, n, src, dst, minip, maxip, pair, struct.Struct(pair.format + "HHHHH2xHHH2x"))


FAMILIES = {
    AF_INET: _layout(AF_INET, 4, CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP),
    AF_INET6: _layout(AF_INET6, 16, CTA_IP_V6_SRC, CTA_IP_V6_DST, CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP),
}
#: address attribute of a tuple -> (its family's layout, is it the source)
TUPLE_ADDRESS = {lay.ip_src: (lay, True) for lay in FAMILIES.values()} | {lay.ip_dst: (lay, False) for lay in FAMILIES.values()}
#: CTA_NAT_V*_MINIP -> its family's layout
NAT_MINIP = {lay.nat_minip: lay for lay in FAMILIES.values()}
