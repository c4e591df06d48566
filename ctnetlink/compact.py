"""The compact form of a replicated entry: the fields of its commit message
(:class:`~ctnetlink.encode.CommitFields`), each written once, for the sync link.

A commit message is ~180-210 bytes for an IPv4 flow: two tuples (the reply one is the
inverse of the original), NAT addresses and ports written as ranges (min = max), TCP
flags written as value and mask, netlink and attribute headers. The same information
packs into 27-40 bytes, so a sync datagram carries about 40 entries instead of 7: fewer
datagrams, system calls, HMACs and wake-ups per entry on both routers. The backup
expands each one back into the commit message (:func:`expand`) as it arrives, so the
commit itself is unchanged.

Layout (big-endian)::

    key            ctnetlink.key: family u8 | proto u8 | zone u16 | src | dst | l4 (4)
    status u32     CTA_STATUS as the commit sends it
    timeout u32    CTA_TIMEOUT as the commit sends it
    flags u8       1 MARK, 2 TCP, 4 WSCALE (with TCP only), 8 HELPER; no other bit
    [mark u32]                          if MARK
    [dnat: address, port u16]           if status has IPS_DST_NAT (address 4 or 16 bytes)
    [snat: address, port u16]           if status has IPS_SRC_NAT
    [tcp: state u8, flags orig u8, flags reply u8]     if TCP (TCP entries only)
    [window scales: orig u8, reply u8]                 if WSCALE
    [helper name: ASCII, 1-32 bytes, to the end]       if HELPER

This module is the reference; ``ctnetlink/_batch.c`` implements the same (its ``events``
records carry this form, its ``expand`` reads it) and must agree with it byte for byte and
error for error. CodecError reasons of :func:`expand`: ``truncated``, ``bad_family``,
``bad_flags``, ``bad_entry`` (a helper name that is empty, not ASCII or too long),
``trailing_bytes``.
"""

from __future__ import annotations

import struct

from .constants import AF_INET, AF_INET6, IPPROTO_TCP, IPS_DST_NAT, IPS_SRC_NAT
from .encode import CommitFields, commit_fields, commit_message
from .key import key_of, tuple_from_key
from .model import CodecError, Entry, address

__all__ = ["compact_of", "pack", "unpack", "expand", "HELPER_MAX", "FLAG_MARK", "FLAG_TCP", "FLAG_WSCALE",
           "FLAG_HELPER"]

FLAG_MARK, FLAG_TCP, FLAG_WSCALE, FLAG_HELPER = 1, 2, 4, 8
_FLAGS = FLAG_MARK | FLAG_TCP | FLAG_WSCALE | FLAG_HELPER
#: longest helper name carried (the kernel's are at most 15 characters: NF_CT_HELPER_NAME_LEN)
HELPER_MAX = 32
_FIXED = struct.Struct("!IIB")  # status, timeout, flags
_U32 = struct.Struct("!I")
_PORT = struct.Struct("!H")
_TCP = struct.Struct("!BBB")
_WS = struct.Struct("!BB")


def compact_of(entry: Entry) -> bytes:
    """The compact form of ``entry``'s commit message. CodecError if it cannot be committed."""
    return pack(commit_fields(entry))


def pack(f: CommitFields) -> bytes:
    """The compact form of commit fields."""
    try:
        flags = (FLAG_MARK if f.mark else 0) | (FLAG_TCP if f.tcp is not None else 0)
        if f.tcp is not None and f.wscale is not None:
            flags |= FLAG_WSCALE
        helper = b""
        if f.helper:
            helper = f.helper.encode("ascii")
            if len(helper) > HELPER_MAX:
                raise CodecError("bad_entry", f"helper name of {len(helper)} bytes")
            flags |= FLAG_HELPER
        parts = [key_of(f.orig, f.zone), _FIXED.pack(f.status, f.timeout, flags)]
        if f.mark:
            parts.append(_U32.pack(f.mark))
        n = 4 if f.orig.family == AF_INET else 16
        for nat in (f.dnat, f.snat):
            if nat is not None:
                raw = nat[0].packed
                if len(raw) != n:
                    raise CodecError("mixed_family", str(nat[0]))
                parts.append(raw + _PORT.pack(nat[1]))
        if f.tcp is not None:
            parts.append(_TCP.pack(*f.tcp))
            if f.wscale is not None:
                parts.append(_WS.pack(*f.wscale))
        parts.append(helper)
        return b"".join(parts)
    except CodecError:
        raise
    except (struct.error, OverflowError, TypeError, AttributeError, UnicodeError) as e:
        raise CodecError("bad_entry", f"{e}") from None


def _need(body, off: int, n: int) -> None:
    if off + n > len(body):
        raise CodecError("truncated", f"{len(body)} bytes")


def unpack(body) -> CommitFields:
    """The commit fields of a compact form (bytes-like: TypeError for anything else);
    CodecError if malformed."""
    body = bytes(memoryview(body))
    n = len(body)
    if n < 1:
        raise CodecError("truncated", "empty")
    family = body[0]
    if family != AF_INET and family != AF_INET6:
        raise CodecError("bad_family", str(family))
    alen = 4 if family == AF_INET else 16
    klen = 8 + 2 * alen
    _need(body, 0, klen + _FIXED.size)
    orig, zone = tuple_from_key(body[:klen])
    status, timeout, flags = _FIXED.unpack_from(body, klen)
    if flags & ~_FLAGS or (flags & FLAG_WSCALE and not flags & FLAG_TCP) or (
            flags & FLAG_TCP and orig.proto != IPPROTO_TCP):
        raise CodecError("bad_flags", hex(flags))
    off = klen + _FIXED.size
    mark = 0
    if flags & FLAG_MARK:
        _need(body, off, 4)
        mark = _U32.unpack_from(body, off)[0]
        off += 4
    nats = []
    for bit in (IPS_DST_NAT, IPS_SRC_NAT):
        if status & bit:
            _need(body, off, alen + 2)
            nats.append((address(body[off:off + alen]), _PORT.unpack_from(body, off + alen)[0]))
            off += alen + 2
        else:
            nats.append(None)
    tcp = wscale = None
    if flags & FLAG_TCP:
        _need(body, off, 3)
        tcp = _TCP.unpack_from(body, off)
        off += 3
        if flags & FLAG_WSCALE:
            _need(body, off, 2)
            wscale = _WS.unpack_from(body, off)
            off += 2
    helper = None
    if flags & FLAG_HELPER:
        raw = body[off:]
        if not 1 <= len(raw) <= HELPER_MAX:
            raise CodecError("bad_entry", f"helper name of {len(raw)} bytes")
        try:
            helper = raw.decode("ascii")
        except UnicodeError:
            raise CodecError("bad_entry", "helper name not ASCII") from None
        off = n
    if off != n:
        raise CodecError("trailing_bytes", f"{n - off}")
    return CommitFields(orig, zone, status, timeout, mark, nats[0], nats[1], tcp, wscale, helper)


def expand(body) -> tuple[bytes, int, bytes]:
    """``(key, timeout, commit message)`` of a compact form: what a backup keeps of each
    replicated entry (the message is what its commit sends). CodecError if malformed."""
    body = bytes(memoryview(body))
    f = unpack(body)
    key = body[:8 + (8 if f.orig.family == AF_INET else 32)]
    return key, f.timeout, commit_message(f)
