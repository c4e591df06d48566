"""VRRPv2 advertisement codec (RFC 3768 §5), pure and `struct`-based.

`parse_ip_packet()` takes what a raw IPPROTO_VRRP socket returns (IPv4 header plus
payload) and applies the packet-level receive checks of RFC 3768 §7.1 in RFC order:
TTL, version, length/completeness, checksum, type. It returns an `Advert` or a
`Rejected(reason)`; it never raises on input from the wire. The per-instance checks
(VRID, owner, auth, address list, interval) need configuration and live in
`VirtualRouter.check` (machine.py). VRRPv3 (RFC 5798) is packet_v3.py; codec.py picks
one of the two per instance. The `Reason`s, `Rejected`, the checksum and the IPv4
header helpers here are shared by both.

`build_advert()` / `build_frame()` produce the bytes we send. We send whole Ethernet
frames from an AF_PACKET socket so the source MAC is exactly the virtual MAC, whatever
the routing table says.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum

VRRP_PROTO = 112
VRRP_GROUP = ipaddress.IPv4Address("224.0.0.18")
VRRP_GROUP_MAC = bytes.fromhex("01005e000012")
VRRP_TTL = 255
VRRP_VERSION = 2
TYPE_ADVERTISEMENT = 1

AUTH_NONE = 0
AUTH_SIMPLE = 1  # RFC 2338 simple text password; kept for keepalived `auth_type PASS`
AUTH_AH = 2  # RFC 2338 IP Authentication Header; not supported (RFC 3768 removed it)

AUTH_DATA_LEN = 8
HEADER_LEN = 8  # version/type, VRID, priority, count, auth type, interval, checksum
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806

_HDR = struct.Struct("!BBBBBBH")
_IPHDR = struct.Struct("!BBHHHBBH4s4s")
_ETH = struct.Struct("!6s6sH")


class Reason(str, Enum):
    """Why a received packet was dropped; each value is the name of its counter."""

    TTL = "ttl_errors"
    VERSION = "version_errors"
    LENGTH = "length_errors"
    CHECKSUM = "checksum_errors"
    TYPE = "type_errors"
    VRID = "vrid_errors"
    OWNER = "owner_discards"
    AUTH_TYPE = "auth_type_errors"
    AUTH = "auth_failures"
    ADDRESS_LIST = "address_list_errors"
    INTERVAL = "interval_errors"
    # Beyond RFC 3768 §7.1 (docs/vrrpd.md, "Protocol choices"):
    OWN_ADDRESS = "own_address_adverts"  # our own address as the source: looped back, or spoofed
    PRIO0_NOT_MASTER = "prio0_ignored"  # priority 0 from a router that is not the master we know


@dataclass(frozen=True, slots=True)
class Advert:
    vrid: int
    priority: int
    addresses: tuple[ipaddress.IPv4Address, ...]
    advert_interval: int = 1
    auth_type: int = AUTH_NONE
    auth_data: bytes = bytes(AUTH_DATA_LEN)
    # Filled in on receive, ignored when building.
    src: ipaddress.IPv4Address | None = None
    ttl: int = VRRP_TTL

    version = VRRP_VERSION  # class constants, not fields: what the machine asks any advert

    @property
    def interval(self) -> float:
        """The advert interval in seconds (VRRPv2 carries whole seconds)."""
        return float(self.advert_interval)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str
    vrid: int | None = None  # when the header was long enough to read it
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_auth(password: str | bytes | None) -> bytes:
    """RFC 2338 simple password: up to 8 octets, zero padded (keepalived does the same)."""
    if not password:
        return bytes(AUTH_DATA_LEN)
    raw = password.encode() if isinstance(password, str) else password
    if len(raw) > AUTH_DATA_LEN:
        raise ValueError("a VRRP simple password is at most 8 octets")
    return raw.ljust(AUTH_DATA_LEN, b"\0")


def build_advert(adv: Advert) -> bytes:
    """The VRRP message (IP payload) for `adv`, checksum filled in."""
    if not 1 <= adv.vrid <= 255:
        raise ValueError(f"VRID {adv.vrid} out of 1..255")
    if not 0 <= adv.priority <= 255:
        raise ValueError(f"priority {adv.priority} out of 0..255")
    if not 1 <= adv.advert_interval <= 255:
        raise ValueError(f"advert interval {adv.advert_interval} out of 1..255")
    if len(adv.addresses) > 255:
        raise ValueError("at most 255 addresses per advert")
    auth = adv.auth_data.ljust(AUTH_DATA_LEN, b"\0")[:AUTH_DATA_LEN]
    body = b"".join(a.packed for a in adv.addresses) + auth
    head = _HDR.pack(
        (VRRP_VERSION << 4) | TYPE_ADVERTISEMENT,
        adv.vrid,
        adv.priority,
        len(adv.addresses),
        adv.auth_type,
        adv.advert_interval,
        0,
    )
    csum = checksum(head + body)
    return head[:6] + struct.pack("!H", csum) + body


def build_ip_packet(payload: bytes, src: ipaddress.IPv4Address, ident: int = 0) -> bytes:
    """IPv4 header (TTL 255, proto 112, to 224.0.0.18) + payload."""
    total = 20 + len(payload)
    hdr = _IPHDR.pack(0x45, 0xC0, total, ident & 0xFFFF, 0, VRRP_TTL, VRRP_PROTO, 0, src.packed, VRRP_GROUP.packed)
    csum = checksum(hdr)
    return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + payload


def build_frame(adv: Advert, src_ip: ipaddress.IPv4Address, src_mac: bytes, ident: int = 0) -> bytes:
    """A complete Ethernet frame carrying `adv`, ready for an AF_PACKET socket."""
    return _ETH.pack(VRRP_GROUP_MAC, src_mac, ETH_P_IP) + build_ip_packet(build_advert(adv), src_ip, ident)


def with_ipv4_ident(frame: bytes, ident: int) -> bytes:
    """`frame` (Ethernet + IPv4, built with ident 0) with another IP identification,
    its header checksum updated incrementally (RFC 1624): an advert that does not change
    is built once, and each send only stamps its ID."""
    b = bytearray(frame)
    ident &= 0xFFFF
    struct.pack_into("!H", b, 18, ident)
    total = (~struct.unpack_from("!H", b, 24)[0] & 0xFFFF) + ident  # the ID field was 0
    total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", b, 24, ~total & 0xFFFF)
    return bytes(b)


def parse_advert(payload: bytes, ttl: int = VRRP_TTL, src: ipaddress.IPv4Address | None = None) -> Advert | Rejected:
    """Packet-level checks of RFC 3768 §7.1 on a VRRP message, in RFC order.

    `ttl` is the IP TTL the packet arrived with. Trailing bytes beyond the message
    (what a sender or a padding bug might add) are covered by the checksum, as the
    checksum is over the whole VRRP message the IP header delimits.
    """
    vrid = payload[1] if len(payload) >= 2 else None
    if ttl != VRRP_TTL:
        return Rejected(Reason.TTL, f"IP TTL {ttl}, must be 255", vrid, src)
    if not payload:
        return Rejected(Reason.LENGTH, "empty VRRP message", vrid, src)
    version = payload[0] >> 4
    if version != VRRP_VERSION:
        return Rejected(Reason.VERSION, f"VRRP version {version}, expected 2", vrid, src)
    if len(payload) < HEADER_LEN:
        return Rejected(Reason.LENGTH, f"{len(payload)} bytes, shorter than the 8-byte header", vrid, src)
    vtype, vrid, prio, count, auth_type, interval, _csum = _HDR.unpack_from(payload)
    need = HEADER_LEN + 4 * count + AUTH_DATA_LEN
    if len(payload) < need:
        return Rejected(
            Reason.LENGTH, f"{len(payload)} bytes, {count} addresses and auth data need {need}", vrid, src
        )
    if checksum(payload) != 0:
        return Rejected(Reason.CHECKSUM, "VRRP checksum does not verify", vrid, src)
    if vtype & 0x0F != TYPE_ADVERTISEMENT:
        return Rejected(Reason.TYPE, f"VRRP type {vtype & 0x0F}, only 1 (advertisement) exists", vrid, src)
    addrs = tuple(
        ipaddress.IPv4Address(payload[HEADER_LEN + 4 * i : HEADER_LEN + 4 * i + 4]) for i in range(count)
    )
    auth = payload[HEADER_LEN + 4 * count : need]
    return Advert(vrid, prio, addrs, interval, auth_type, bytes(auth), src, ttl)


@dataclass(frozen=True, slots=True)
class IPv4Datagram:
    """What the IPv4 header of a received VRRP packet tells the codecs."""

    payload: bytes
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int


def split_ipv4(packet: bytes) -> IPv4Datagram | Rejected:
    """IPv4 header + payload (what a raw IPPROTO_VRRP socket delivers) -> its parts."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return Rejected(Reason.LENGTH, "not a complete IPv4 header")
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if ihl < 20 or len(packet) < ihl:
        return Rejected(Reason.LENGTH, f"bad IPv4 header length {ihl}")
    src = ipaddress.IPv4Address(packet[12:16])
    dst = ipaddress.IPv4Address(packet[16:20])
    # The IP total length is authoritative: anything after it is link padding.
    end = min(total, len(packet)) if total >= ihl else len(packet)
    return IPv4Datagram(packet[ihl:end], src, dst, packet[8])


def parse_ip_packet(packet: bytes) -> Advert | Rejected:
    """Parse what a raw IPPROTO_VRRP socket delivers: IPv4 header + VRRP message."""
    dgram = split_ipv4(packet)
    if isinstance(dgram, Rejected):
        return dgram
    return parse_advert(dgram.payload, ttl=dgram.ttl, src=dgram.src)


def parse_frame(frame: bytes) -> Advert | Rejected:
    """Parse an Ethernet frame (tests, pcaps). Accepts Ethernet padding after the IP packet."""
    if len(frame) < 14 + 20:
        return Rejected(Reason.LENGTH, "frame too short")
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype != ETH_P_IP:
        return Rejected(Reason.LENGTH, f"ethertype {ethertype:#06x} is not IPv4")
    return parse_ip_packet(frame[14:])


def vmac(vrid: int, family: int = 4) -> bytes:
    """The virtual MAC: 00:00:5e:00:01:{VRID} for IPv4 (RFC 3768 §7.3, RFC 5798 §7.3),
    00:00:5e:00:02:{VRID} for IPv6 (RFC 5798 §7.3)."""
    return bytes((0x00, 0x00, 0x5E, 0x00, 0x01 if family == 4 else 0x02, vrid))


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def build_garp(ip: ipaddress.IPv4Address, mac: bytes) -> bytes:
    """Gratuitous ARP request for `ip` from `mac`, broadcast (what keepalived sends).

    A request with sender IP = target IP updates existing neighbour entries on every
    host of the segment and teaches the switches where `mac` now lives.
    """
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac, ip.packed, b"\xff" * 6, ip.packed)
    frame = _ETH.pack(b"\xff" * 6, mac, ETH_P_ARP) + arp
    return frame.ljust(60, b"\0")  # minimum Ethernet frame without FCS
