"""Telling the segment where the virtual addresses now live, per address family.

A new master announces each virtual address with the virtual MAC: IPv4 with gratuitous
ARP (packet.build_garp, RFC 3768 §6.4.2), IPv6 with an unsolicited Neighbour
Advertisement (RFC 5798 §6.4.2 (395): Router flag set, Solicited unset, Override set,
target the address, Target Link-Layer Address option the virtual MAC; RFC 4861
§4.4/§7.2.6: to all-nodes ff02::1, hop limit 255). The machine asks for both with the
same `SendGarp(count)` action; the driver holds the announcer of the instance's family,
chosen once from its configuration.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .packet import build_garp, checksum
from .packet_v3 import ETH_P_IPV6, build_ipv6_header

ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = bytes.fromhex("333300000001")
ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LL_ADDR = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000
ND_HOP_LIMIT = 255  # RFC 4861 §7.1.2: receivers drop NAs that crossed a router

_ETH = struct.Struct("!6s6sH")


def icmpv6_checksum(message: bytes, src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address) -> int:
    """RFC 4443 §2.3: over the RFC 8200 §8.1 pseudo-header (next header 58) and the message."""
    return checksum(src.packed + dst.packed + struct.pack("!I3xB", len(message), ICMPV6) + message)


def build_unsolicited_na(
    target: ipaddress.IPv6Address, mac: bytes, src: ipaddress.IPv6Address | None = None, router: bool = True
) -> bytes:
    """An Ethernet frame with an unsolicited Neighbour Advertisement for `target` at `mac`.

    The IPv6 source is `target` itself unless given (any address of the sending interface
    will do, RFC 4861 §4.4; keepalived uses the address too). `router` sets the R flag:
    a VRRP master is the hosts' router (RFC 5798 §6.4.2).
    """
    if target.version != 6:
        raise ValueError(f"{target} is not an IPv6 address")
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 octets")
    src = target if src is None else src
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    body = struct.pack("!I", flags) + target.packed + struct.pack("!BB6s", ND_OPT_TARGET_LL_ADDR, 1, mac)
    head = struct.pack("!BBH", ND_NEIGHBOR_ADVERT, 0, 0)
    csum = icmpv6_checksum(head + body, src, ALL_NODES)
    icmp = head[:2] + struct.pack("!H", csum) + body
    ip6 = build_ipv6_header(len(icmp), src, ALL_NODES, ICMPV6, ND_HOP_LIMIT)
    return _ETH.pack(ALL_NODES_MAC, mac, ETH_P_IPV6) + ip6 + icmp


@dataclass(frozen=True)
class ArpAnnouncer:
    """IPv4: one gratuitous ARP request per address."""

    family: int = 4

    def frames(self, addresses, mac: bytes) -> list[bytes]:
        return [build_garp(a, mac) for a in addresses]


@dataclass(frozen=True)
class NdAnnouncer:
    """IPv6: one unsolicited Neighbour Advertisement per address."""

    family: int = 6

    def frames(self, addresses, mac: bytes) -> list[bytes]:
        return [build_unsolicited_na(a, mac) for a in addresses]


def announcer_for(family: int) -> ArpAnnouncer | NdAnnouncer:
    if family == 4:
        return ArpAnnouncer()
    if family == 6:
        return NdAnnouncer()
    raise ValueError(f"address family {family}: 4 or 6")
