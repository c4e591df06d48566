"""The advert codec of one instance, chosen once from its configuration.

VRRPv2 (RFC 3768, IPv4 only, packet.py) and VRRPv3 (RFC 5798, IPv4 or IPv6,
packet_v3.py) differ in the message, the checksum and the group they send to; the
driver does not care which it has. Every codec takes what the IP layer delivered in the
same shape, `parse(payload, src, dst, ttl)` (a raw IPv6 socket gives exactly that; for
IPv4 `packet.split_ipv4()` cuts the header off first), and builds whole Ethernet frames
with `build_frame(adv, src_ip, src_mac, ident)`.

Which codec parses a packet is decided by the VRID it carries (`peek_vrid`), since
that names the instance; a v2 instance handed a v3 advert (or the reverse) counts a
version error, as RFC 5798 §7.1 says.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from .packet import (
    ETH_P_IP,
    VRRP_GROUP,
    Advert,
    Reason,
    Rejected,
    build_frame,
    parse_advert,
    split_ipv4,
    vmac,
)
from .packet_v3 import (
    ETH_P_IPV6,
    VRRP_GROUP_V6,
    AdvertV3,
    IPAddress,
    build_frame_v3,
    parse_advert_v3,
    split_ipv6,
)

AnyAdvert = Advert | AdvertV3


class Codec(Protocol):
    version: int
    family: int

    def parse(self, payload: bytes, src: IPAddress, dst: IPAddress | None, ttl: int | None) -> AnyAdvert | Rejected: ...

    def build_frame(self, adv: AnyAdvert, src_ip: IPAddress, src_mac: bytes, ident: int = 0) -> bytes: ...

    def vmac(self, vrid: int) -> bytes: ...


@dataclass(frozen=True)
class V2Codec:
    """RFC 3768 over IPv4; `dst` is not part of its checksum."""

    version: int = 2
    family: int = 4
    group: ipaddress.IPv4Address = VRRP_GROUP

    def parse(self, payload: bytes, src: IPAddress, dst: IPAddress | None, ttl: int | None) -> Advert | Rejected:
        if ttl is None:
            return Rejected(Reason.TTL, "TTL unknown", payload[1] if len(payload) >= 2 else None, src)
        return parse_advert(payload, ttl=ttl, src=src)

    def build_frame(self, adv: Advert, src_ip: ipaddress.IPv4Address, src_mac: bytes, ident: int = 0) -> bytes:
        return build_frame(adv, src_ip, src_mac, ident)

    def vmac(self, vrid: int) -> bytes:
        return vmac(vrid, 4)


@dataclass(frozen=True)
class V3Codec:
    """RFC 5798 over IPv4 or IPv6. `ipv4_pseudo_header=False` sums IPv4 messages
    without the pseudo-header, both ways (Cisco/Juniper interop); IPv6 ignores it."""

    family: int = 4
    ipv4_pseudo_header: bool = True
    version: int = 3

    @property
    def group(self) -> IPAddress:
        return VRRP_GROUP if self.family == 4 else VRRP_GROUP_V6

    def parse(self, payload: bytes, src: IPAddress, dst: IPAddress | None, ttl: int | None) -> AdvertV3 | Rejected:
        # The family is src's: the driver keeps IPv4 and IPv6 instances apart by socket.
        return parse_advert_v3(payload, src, dst, ttl, self.ipv4_pseudo_header)

    def build_frame(self, adv: AdvertV3, src_ip: IPAddress, src_mac: bytes, ident: int = 0) -> bytes:
        return build_frame_v3(adv, src_ip, src_mac, ident, self.ipv4_pseudo_header)

    def vmac(self, vrid: int) -> bytes:
        return vmac(vrid, self.family)


def codec_for(version: int, family: int = 4, ipv4_pseudo_header: bool = True) -> V2Codec | V3Codec:
    """The codec of an instance: `version` 2 or 3, `family` 4 or 6 (v2 is IPv4 only)."""
    if version == 2:
        if family != 4:
            raise ValueError("VRRPv2 carries IPv4 addresses only; IPv6 needs version 3")
        return V2Codec()
    if version == 3:
        if family not in (4, 6):
            raise ValueError(f"address family {family}: 4 or 6")
        return V3Codec(family, ipv4_pseudo_header)
    raise ValueError(f"VRRP version {version}: 2 or 3")


def peek_vrid(payload: bytes) -> int | None:
    """The VRID a VRRP message (of any version) names, to find its instance and codec."""
    return payload[1] if len(payload) >= 2 else None


def parse_ipv4(packet: bytes, codec: Codec) -> AnyAdvert | Rejected:
    """IPv4 header + VRRP message (a raw IPv4 socket's packet) through `codec`."""
    dgram = split_ipv4(packet)
    if isinstance(dgram, Rejected):
        return dgram
    return codec.parse(dgram.payload, dgram.src, dgram.dst, dgram.ttl)


def parse_frame_with(frame: bytes, codec: Codec) -> AnyAdvert | Rejected:
    """An Ethernet frame (tests, pcaps, the simulator) through `codec`, IPv4 or IPv6."""
    if len(frame) < 14:
        return Rejected(Reason.LENGTH, "frame too short")
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETH_P_IP:
        return parse_ipv4(frame[14:], codec)
    if ethertype == ETH_P_IPV6:
        dgram = split_ipv6(frame[14:])
        if isinstance(dgram, Rejected):
            return dgram
        if dgram.next_header != 112:
            return Rejected(Reason.LENGTH, f"IPv6 next header {dgram.next_header} is not VRRP (extension headers?)")
        return codec.parse(dgram.payload, dgram.src, dgram.dst, dgram.hop_limit)
    return Rejected(Reason.LENGTH, f"ethertype {ethertype:#06x} is neither IPv4 nor IPv6")
