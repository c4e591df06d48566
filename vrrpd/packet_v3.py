"""VRRPv3 advertisement codec (RFC 5798 §5), IPv4 and IPv6, pure and `struct`-based.

The v3 message is the v2 one without authentication: the second 16-bit word is 4
reserved bits and a 12-bit Max Adver Int in centiseconds (0.01 s to 40.95 s), and the
addresses are IPv4 or IPv6 ones, never both. The checksum also covers a pseudo-header
(RFC 5798 §5.2.8): for IPv6 the RFC 8200 §8.1 one (source, destination, upper-layer
length, next header 112); for IPv4 the same idea (source, destination, zero, protocol
112, length), which keepalived, FRR and Wireshark compute by default. Cisco and Juniper
(and RFC 9568, which obsoletes RFC 5798) sum the IPv4 message alone, so that is an
option, `ipv4_pseudo_header=False`, chosen per instance; IPv6 always has the
pseudo-header.

`parse_advert_v3()` takes the VRRP message plus what the IP layer said about it (source,
destination, TTL or hop limit). That is what a raw IPv6 socket gives (the payload, and
the rest as the sender address and ancillary data); for IPv4 `parse_ipv4_packet_v3()`
reads them from the header, as `packet.parse_ip_packet()` does for v2. The packet-level
checks of RFC 5798 §7.1 run in RFC order: TTL/hop limit, version, completeness,
checksum, then the type (§5.2.2). The instance-level ones (VRID, owner, address list,
interval) are in machine.py. Nothing here raises on input from the wire.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .packet import (
    ETH_P_IP,
    HEADER_LEN,
    TYPE_ADVERTISEMENT,
    VRRP_GROUP,
    VRRP_GROUP_MAC,
    VRRP_PROTO,
    VRRP_TTL,
    Reason,
    Rejected,
    build_ip_packet,
    checksum,
    split_ipv4,
)

VRRP_VERSION_3 = 3
VRRP_GROUP_V6 = ipaddress.IPv6Address("ff02::12")
VRRP_GROUP_MAC_V6 = bytes.fromhex("333300000012")  # 33:33 + the group's low 32 bits (RFC 2464 §7)
ETH_P_IPV6 = 0x86DD
MAX_ADVER_INT = 0x0FFF  # centiseconds: 40.95 s
TRAFFIC_CLASS = 0xC0  # network control, as the IPv4 TOS of our adverts

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HDR = struct.Struct("!BBBBHH")  # version/type, VRID, priority, count, rsvd/max adver int, checksum
_IP6HDR = struct.Struct("!IHBB16s16s")
_ETH = struct.Struct("!6s6sH")


@dataclass(frozen=True, slots=True)
class AdvertV3:
    vrid: int
    priority: int
    addresses: tuple[IPAddress, ...]
    max_adver_int: int = 100  # centiseconds
    # Filled in on receive, ignored when building.
    src: IPAddress | None = None
    ttl: int = VRRP_TTL  # the IPv4 TTL or the IPv6 hop limit it arrived with

    version = VRRP_VERSION_3  # class constant, not a field (see packet.Advert)

    @property
    def interval(self) -> float:
        """Max Adver Int in seconds."""
        return self.max_adver_int / 100


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """The pseudo-header the v3 checksum covers: RFC 8200 §8.1 for IPv6, the classic
    (source, destination, zero, protocol, length) one for IPv4."""
    if src.version == 6:
        return src.packed + dst.packed + struct.pack("!I3xB", length, VRRP_PROTO)
    return src.packed + dst.packed + struct.pack("!xBH", VRRP_PROTO, length)


def checksum_v3(message: bytes, src: IPAddress, dst: IPAddress, ipv4_pseudo_header: bool = True) -> int:
    """RFC 1071 sum of `message` (checksum field as it is) and, unless it is an IPv4
    message checksummed without one, its pseudo-header. 0 when a received one verifies."""
    if src.version == 4 and not ipv4_pseudo_header:
        return checksum(message)
    # Both pseudo-headers are an even number of octets, so prepending is exact.
    return checksum(pseudo_header(src, dst, len(message)) + message)


def group_for(family: int) -> IPAddress:
    return VRRP_GROUP if family == 4 else VRRP_GROUP_V6


def build_advert_v3(
    adv: AdvertV3, src: IPAddress, dst: IPAddress | None = None, ipv4_pseudo_header: bool = True
) -> bytes:
    """The VRRPv3 message (IP payload) for `adv` sent from `src` to `dst` (the group by
    default), checksum filled in."""
    if not 1 <= adv.vrid <= 255:
        raise ValueError(f"VRID {adv.vrid} out of 1..255")
    if not 0 <= adv.priority <= 255:
        raise ValueError(f"priority {adv.priority} out of 0..255")
    if not 1 <= adv.max_adver_int <= MAX_ADVER_INT:
        raise ValueError(f"max advert interval {adv.max_adver_int} cs out of 1..{MAX_ADVER_INT} (0.01 s to 40.95 s)")
    if not 1 <= len(adv.addresses) <= 255:
        raise ValueError("a VRRPv3 advert carries 1 to 255 addresses (RFC 5798 §5.2.5)")
    if any(a.version != src.version for a in adv.addresses):
        raise ValueError(f"every address of an advert sent from IPv{src.version} must be IPv{src.version}")
    dst = group_for(src.version) if dst is None else dst
    body = b"".join(a.packed for a in adv.addresses)
    head = _HDR.pack(
        (VRRP_VERSION_3 << 4) | TYPE_ADVERTISEMENT, adv.vrid, adv.priority, len(adv.addresses), adv.max_adver_int, 0
    )
    csum = checksum_v3(head + body, src, dst, ipv4_pseudo_header)
    return head[:6] + struct.pack("!H", csum) + body


def parse_advert_v3(
    payload: bytes,
    src: IPAddress,
    dst: IPAddress | None = None,
    ttl: int | None = VRRP_TTL,
    ipv4_pseudo_header: bool = True,
) -> AdvertV3 | Rejected:
    """Packet-level checks of RFC 5798 §7.1 on a VRRPv3 message, in RFC order.

    `src`/`dst` are the IP source and destination (`dst` None: the VRRP group), `ttl` the
    IPv4 TTL or IPv6 hop limit (None: the socket did not say, which fails the first
    check). The family is `src`'s. As for v2, bytes after the addresses that the IP
    length includes are covered by the checksum and otherwise ignored.
    """
    vrid = payload[1] if len(payload) >= 2 else None
    family = src.version
    if ttl is None:
        return Rejected(Reason.TTL, "hop limit unknown (no IPV6_HOPLIMIT ancillary data)", vrid, src)
    if ttl != VRRP_TTL:
        what = "IP TTL" if family == 4 else "IPv6 hop limit"
        return Rejected(Reason.TTL, f"{what} {ttl}, must be 255", vrid, src)
    if not payload:
        return Rejected(Reason.LENGTH, "empty VRRP message", vrid, src)
    version = payload[0] >> 4
    if version != VRRP_VERSION_3:
        return Rejected(Reason.VERSION, f"VRRP version {version}, expected 3", vrid, src)
    if len(payload) < HEADER_LEN:
        return Rejected(Reason.LENGTH, f"{len(payload)} bytes, shorter than the 8-byte header", vrid, src)
    vtype, vrid, prio, count, word, _csum = _HDR.unpack_from(payload)
    size = 4 if family == 4 else 16
    need = HEADER_LEN + size * count
    if len(payload) < need:
        return Rejected(
            Reason.LENGTH, f"{len(payload)} bytes, {count} IPv{family} addresses need {need}", vrid, src
        )
    dst = group_for(family) if dst is None else dst
    if checksum_v3(payload, src, dst, ipv4_pseudo_header) != 0:
        return Rejected(Reason.CHECKSUM, _checksum_detail(payload, src, dst, ipv4_pseudo_header), vrid, src)
    if vtype & 0x0F != TYPE_ADVERTISEMENT:
        return Rejected(Reason.TYPE, f"VRRP type {vtype & 0x0F}, only 1 (advertisement) exists", vrid, src)
    kind = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    addrs = tuple(kind(payload[HEADER_LEN + size * i : HEADER_LEN + size * (i + 1)]) for i in range(count))
    return AdvertV3(vrid, prio, addrs, word & MAX_ADVER_INT, src, ttl)


def _checksum_detail(payload: bytes, src: IPAddress, dst: IPAddress, ipv4_pseudo_header: bool) -> str:
    """Say which convention the sender uses when it is the other one: the usual cause."""
    if src.version == 4 and checksum_v3(payload, src, dst, not ipv4_pseudo_header) == 0:
        if ipv4_pseudo_header:
            return ("VRRPv3 checksum verifies only without the IPv4 pseudo-header: the sender sums the message "
                    "alone (Cisco, Juniper, RFC 9568, keepalived v3_checksum_as_v2); the two must agree")
        return ("VRRPv3 checksum verifies only with the IPv4 pseudo-header: the sender includes it "
                "(RFC 5798, keepalived and FRR defaults); the two must agree")
    return "VRRPv3 checksum does not verify"


def parse_ipv4_packet_v3(packet: bytes, ipv4_pseudo_header: bool = True) -> AdvertV3 | Rejected:
    """Parse what a raw IPv4 IPPROTO_VRRP socket delivers: IPv4 header + VRRPv3 message."""
    dgram = split_ipv4(packet)
    if isinstance(dgram, Rejected):
        return dgram
    return parse_advert_v3(dgram.payload, dgram.src, dgram.dst, dgram.ttl, ipv4_pseudo_header)


# ---- sending: whole Ethernet frames, as for v2 -------------------------------------------


def build_ipv6_header(
    payload_len: int, src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, next_header: int,
    hop_limit: int = VRRP_TTL, traffic_class: int = 0,
) -> bytes:
    """A fixed 40-byte IPv6 header (no extension headers, flow label 0)."""
    return _IP6HDR.pack((6 << 28) | (traffic_class << 20), payload_len, next_header, hop_limit, src.packed, dst.packed)


def build_frame_v3(
    adv: AdvertV3, src_ip: IPAddress, src_mac: bytes, ident: int = 0, ipv4_pseudo_header: bool = True
) -> bytes:
    """A complete Ethernet frame carrying `adv` to the VRRP group of `src_ip`'s family:
    IPv4 (TTL 255, to 224.0.0.18, `ident` as IP ID) or IPv6 (hop limit 255, to ff02::12;
    `ident` unused: IPv6 has no ID). For IPv6 `src_ip` is the link-local address of the
    interface (RFC 5798 §5.1.2.1)."""
    if src_ip.version == 4:
        payload = build_advert_v3(adv, src_ip, VRRP_GROUP, ipv4_pseudo_header)
        return _ETH.pack(VRRP_GROUP_MAC, src_mac, ETH_P_IP) + build_ip_packet(payload, src_ip, ident)
    payload = build_advert_v3(adv, src_ip, VRRP_GROUP_V6)
    ip6 = build_ipv6_header(len(payload), src_ip, VRRP_GROUP_V6, VRRP_PROTO, VRRP_TTL, TRAFFIC_CLASS)
    return _ETH.pack(VRRP_GROUP_MAC_V6, src_mac, ETH_P_IPV6) + ip6 + payload


@dataclass(frozen=True, slots=True)
class IPv6Datagram:
    """What a raw IPv6 socket reports with a payload (sender, IPV6_PKTINFO, IPV6_HOPLIMIT)."""

    payload: bytes
    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    hop_limit: int
    next_header: int


def split_ipv6(packet: bytes) -> IPv6Datagram | Rejected:
    """An IPv6 packet without extension headers -> its parts (tests, pcaps; a raw socket
    already gives them separately). The payload length is authoritative."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return Rejected(Reason.LENGTH, "not a complete IPv6 header")
    _vtf, plen, nh, hop, src, dst = _IP6HDR.unpack_from(packet)
    return IPv6Datagram(packet[40 : 40 + plen], ipaddress.IPv6Address(src), ipaddress.IPv6Address(dst), hop, nh)
