"""The identity of a conntrack entry, written once: zone and original tuple as compact
bytes. ctsync keys its caches with it, sends it in DESTROY messages, and turns it back
into a tuple to delete an entry; the decoder builds it straight from a message's bytes
(:func:`ctnetlink.decode.key_and_timeout`).

Layout (big-endian): family u8 | proto u8 | zone u16 | src | dst | then for ICMP/ICMPv6
id u16, type u8, code u8, for every other protocol sport u16, dport u16. Addresses are 4
or 16 bytes by family.
"""

from __future__ import annotations

import struct

from .constants import AF_INET, IPPROTO_ICMP, IPPROTO_ICMPV6
from .model import CodecError, Entry, Tuple, address

KEY_HEAD = struct.Struct("!BBH")  # family, proto, zone
_PORTS = struct.Struct("!HH")
_ICMP = struct.Struct("!HBB")
_ICMP_PROTOS = (IPPROTO_ICMP, IPPROTO_ICMPV6)


def key_of(t: Tuple, zone: int = 0) -> bytes:
    """Compact identity of an entry: zone and original tuple."""
    if t.proto in _ICMP_PROTOS:
        l4 = _ICMP.pack(t.icmp_id, t.icmp_type, t.icmp_code)
    else:
        l4 = _PORTS.pack(t.sport, t.dport)
    return KEY_HEAD.pack(t.family, t.proto, zone) + t.src.packed + t.dst.packed + l4


def entry_key(e: Entry) -> bytes:
    return key_of(e.orig, e.zone)


def tuple_from_key(key: bytes) -> tuple[Tuple, int]:
    """(original tuple, zone) of a key; CodecError if it is not one."""
    try:
        family, proto, zone = KEY_HEAD.unpack_from(key)
        n = 4 if family == AF_INET else 16
        if len(key) != KEY_HEAD.size + 2 * n + 4:
            raise CodecError("bad_key", f"{len(key)} bytes")
        src, dst = address(key[4:4 + n]), address(key[4 + n:4 + 2 * n])
        rest = key[4 + 2 * n:]
    except (struct.error, ValueError) as e:
        raise CodecError("bad_key", str(e)) from None
    if proto in _ICMP_PROTOS:
        icmp_id, icmp_type, icmp_code = _ICMP.unpack(rest)
        return Tuple(family, proto, src, dst, icmp_id=icmp_id, icmp_type=icmp_type, icmp_code=icmp_code), zone
    sport, dport = _PORTS.unpack(rest)
    return Tuple(family, proto, src, dst, sport, dport), zone
