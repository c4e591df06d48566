"""Read captures of the sync link: ``ctsyncctl decode FILE.pcap``.

Pure Python (no scapy, no tshark): classic pcap (what ``tcpdump -w`` writes,
µs or ns timestamps, either byte order) and pcapng (what Wireshark saves);
Ethernet (with 802.1Q tags), Linux cooked (``-i any``, SLL and SLL2) and raw IP
link types; IPv4 and IPv6; UDP.  A UDP payload starting with the magic
``CTS1`` is a ctsync datagram, whatever the port.  The HMAC is not checked
(the key is not needed to read the headers and messages; pass ``key`` to check
it).  Prints one line per message; a datagram carrying no message (a bare ACK
or NACK) gets one line too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ctnetlink.codec import CodecError, Entry, parse_message

from .channel import PROBE
from .wire import _HDR, _RANGE, _TLV, HEADER_LEN, MAC_LEN, MAGIC, MsgType

_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp", 47: "gre", 136: "udplite", 33: "dccp"}
_TCP_STATES = {0: "NONE", 1: "SYN_SENT", 2: "SYN_RECV", 3: "ESTABLISHED", 4: "FIN_WAIT", 5: "CLOSE_WAIT",
               6: "LAST_ACK", 7: "TIME_WAIT", 8: "CLOSE", 9: "SYN_SENT2"}
_HB = struct.Struct("!BBI")


class PcapError(Exception):
    pass


# ---- capture files -------------------------------------------------------------------------

def read_packets(path: str | Path) -> Iterator[tuple[float, int, bytes]]:
    """(timestamp, link type, frame) for each packet of a pcap or pcapng file."""
    return capture_packets(Path(path).read_bytes(), path)


def capture_packets(data: bytes, path: str | Path = "<capture>") -> Iterator[tuple[float, int, bytes]]:
    """(timestamp, link type, frame) for each packet of a capture held in ``data``;
    :class:`PcapError` (only) if it is not one."""
    if len(data) < 24:
        raise PcapError(f"{path}: too short for a capture file ({len(data)} bytes)")
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(data, path)
        return
    for endian in "<>":
        magic = struct.unpack_from(endian + "I", data)[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            break
    else:
        raise PcapError(f"{path}: not a pcap or pcapng file")
    scale = 1e9 if magic == 0xA1B23C4D else 1e6
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        yield sec + frac / scale, linktype, data[off:off + caplen]
        off += caplen


def _pcapng(data: bytes, path) -> Iterator[tuple[float, int, bytes]]:
    off, endian = 0, "<"
    ifaces: list[tuple[int, float]] = []  # (link type, seconds per tick)
    while off + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, off)[0]
        if btype == 0x0A0D0D0A:  # section header: byte order from its magic
            endian = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        blen = struct.unpack_from(endian + "I", data, off + 4)[0]
        if blen < 12 or off + blen > len(data):
            raise PcapError(f"{path}: truncated pcapng block at offset {off}")
        body = data[off + 8:off + blen - 4]
        if btype == 1 and len(body) >= 8:  # interface description
            linktype = struct.unpack_from(endian + "H", body)[0]
            tick = 1e-6
            p = 8
            while p + 4 <= len(body):
                code, ln = struct.unpack_from(endian + "HH", body, p)
                if code == 0:
                    break
                if p + 4 + ln > len(body):
                    break  # an option cut short by its block: ignore it and the rest
                if code == 9 and ln >= 1:  # if_tsresol
                    v = body[p + 4]
                    tick = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
                p += 4 + ((ln + 3) & ~3)
            ifaces.append((linktype, tick))
        elif btype == 6 and len(body) >= 20:  # enhanced packet
            iid, hi, lo, caplen, _ = struct.unpack_from(endian + "IIIII", body)
            if iid < len(ifaces):
                linktype, tick = ifaces[iid]
                yield ((hi << 32) | lo) * tick, linktype, body[20:20 + caplen]
        elif btype == 3 and len(body) >= 4 and ifaces:  # simple packet
            yield 0.0, ifaces[0][0], body[4:]
        off += blen


def udp_payloads(path: str | Path) -> Iterator[tuple[float, str, int, str, int, bytes]]:
    """(time, src, sport, dst, dport, payload) of each UDP datagram in the capture."""
    return capture_udp_payloads(Path(path).read_bytes(), path)


def capture_udp_payloads(data: bytes, path: str | Path = "<capture>") -> Iterator[tuple[float, str, int, str, int, bytes]]:
    for ts, linktype, frame in capture_packets(data, path):
        ip = _ip_packet(linktype, frame)
        if ip is None:
            continue
        got = _udp(ip)
        if got is not None:
            yield (ts, *got)


def _ip_packet(linktype: int, frame: bytes) -> bytes | None:
    if linktype == 1:  # Ethernet
        off, etype = 14, struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = struct.unpack_from("!H", frame, off + 2)[0]
            off += 4
    elif linktype == 113:  # Linux cooked v1
        off, etype = 16, struct.unpack_from("!H", frame, 14)[0] if len(frame) >= 16 else 0
    elif linktype == 276:  # Linux cooked v2
        off, etype = 20, struct.unpack_from("!H", frame, 0)[0] if len(frame) >= 20 else 0
    elif linktype in (101, 12, 228, 229):  # raw IP
        return frame
    else:
        return None
    return frame[off:] if etype in (0x0800, 0x86DD) else None


def _udp(ip: bytes) -> tuple[str, int, str, int, bytes] | None:
    if len(ip) < 20:
        return None
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or len(ip) < ihl + 8:
            return None
        if struct.unpack_from("!H", ip, 6)[0] & 0x1FFF:
            return None  # a later fragment
        src, dst = socket.inet_ntop(socket.AF_INET, ip[12:16]), socket.inet_ntop(socket.AF_INET, ip[16:20])
        udp = ip[ihl:]
    elif ip[0] >> 4 == 6 and len(ip) >= 48:
        if ip[6] != 17:
            return None  # extension headers: not for a sync link
        src, dst = socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
        udp = ip[40:]
    else:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", udp)
    return src, sport, dst, dport, udp[8:ulen] if ulen >= 8 else udp[8:]


# ---- ctsync datagrams ----------------------------------------------------------------------

@dataclass
class Decoded:
    """One ctsync datagram as read from a capture (HMAC not checked unless a key is given)."""

    flags: int
    node: int
    epoch: int
    echo: int
    seq: int
    rseq: int
    ack: int
    nacks: list[tuple[int, int]]
    messages: list[tuple[int, bytes]]
    problem: str | None = None  # malformed: what is wrong (the rest may be partial)
    mac_ok: bool | None = None


def parse_datagram(data: bytes, key: bytes | None = None) -> Decoded:
    if len(data) < HEADER_LEN + MAC_LEN or data[:4] != MAGIC:
        raise PcapError("not a ctsync datagram")
    raw = data[:-MAC_LEN]
    _, version, flags, node, epoch, echo, seq, rseq, ack, n_nack, n_msg = _HDR.unpack_from(raw)
    d = Decoded(flags, node, epoch, echo, seq, rseq, ack, [], [])
    if key is not None:
        d.mac_ok = hmac.compare_digest(data[-MAC_LEN:], hmac.new(key, raw, hashlib.sha256).digest())
    if version != 1:
        d.problem = f"version {version}"
        return d
    off = HEADER_LEN
    for _ in range(n_nack):
        if off + _RANGE.size > len(raw):
            d.problem = "truncated NACK ranges"
            return d
        d.nacks.append(_RANGE.unpack_from(raw, off))
        off += _RANGE.size
    for _ in range(n_msg):
        if off + _TLV.size > len(raw):
            d.problem = "truncated message header"
            return d
        t, ln = _TLV.unpack_from(raw, off)
        off += _TLV.size
        if off + ln > len(raw):
            d.problem = "truncated message body"
            return d
        d.messages.append((t, raw[off:off + ln]))
        off += ln
    if off != len(raw):
        d.problem = f"{len(raw) - off} trailing bytes"
    return d


def _tuple_text(t) -> str:
    name = _PROTO_NAMES.get(t.proto, str(t.proto))
    if t.proto in (1, 58):
        return f"{name} {t.src} -> {t.dst} id {t.icmp_id} type {t.icmp_type}"
    return f"{name} {_hp(t.src, t.sport)} -> {_hp(t.dst, t.dport)}"


def _hp(addr, port) -> str:
    return f"[{addr}]:{port}" if getattr(addr, "version", 4) == 6 else f"{addr}:{port}"


def describe_message(mtype: int, body: bytes) -> str:
    """One message as text."""
    if mtype == PROBE and len(body) == 8:
        return f"PROBE highest rseq sent {struct.unpack('!Q', body)[0]}"
    try:
        name = MsgType(mtype).name
    except ValueError:
        return f"type {mtype} ({len(body)} bytes)"
    if mtype == MsgType.HEARTBEAT and len(body) == _HB.size:
        role, ready, size = _HB.unpack(body)
        return f"HEARTBEAT role {'master' if role else 'backup'} ready {bool(ready)} cache {size}"
    if mtype == MsgType.ENTRY:
        try:
            msgtype, _, _, _, e = parse_message(body)
        except CodecError as exc:
            return f"ENTRY (undecodable ctnetlink message: {exc})"
        if not isinstance(e, Entry):  # an error, an ACK or another netlink message
            return f"ENTRY (not a conntrack entry: netlink message type {msgtype}, {len(body)} bytes)"
        text = f"ENTRY {_tuple_text(e.orig)} reply {_tuple_text(e.reply).split(' ', 1)[1]}"
        if e.tcp_state is not None:
            text += f" {_TCP_STATES.get(e.tcp_state, e.tcp_state)}"
        return text + f" timeout {e.timeout}s"
    if mtype == MsgType.DESTROY:
        return "DESTROY " + _key_text(body)
    if mtype in (MsgType.RESYNC_BEGIN,) and len(body) == 4:
        return f"RESYNC_BEGIN id {struct.unpack('!I', body)[0]}"
    if mtype == MsgType.RESYNC_END and len(body) == 8:
        rid, n = struct.unpack("!II", body)
        return f"RESYNC_END id {rid} entries {n}"
    if mtype == MsgType.RESYNC_REQUEST:
        return "RESYNC_REQUEST" + (f" ({body.decode(errors='replace')})" if body else "")
    return f"{name} ({len(body)} bytes)"


def _key_text(key: bytes) -> str:
    try:
        family, proto, zone = struct.unpack_from("!BBH", key)
        n = 4 if family == socket.AF_INET else 16
        mk = ipaddress.IPv4Address if n == 4 else ipaddress.IPv6Address
        src, dst = mk(key[4:4 + n]), mk(key[4 + n:4 + 2 * n])
        rest = key[4 + 2 * n:]
        name = _PROTO_NAMES.get(proto, str(proto))
        if proto in (1, 58):
            icmp_id, typ, _code = struct.unpack("!HBB", rest)
            return f"{name} {src} -> {dst} id {icmp_id} type {typ}"
        sport, dport = struct.unpack("!HH", rest)
        return f"{name} {_hp(src, sport)} -> {_hp(dst, dport)}" + (f" zone {zone}" if zone else "")
    except (struct.error, ValueError):
        return f"(undecodable tuple, {len(key)} bytes)"


def decode_lines(path: str | Path, key: bytes | None = None, t0: float | None = None) -> Iterator[str]:
    """The lines ``ctsyncctl decode`` prints; :class:`PcapError` or :class:`OSError` (only)."""
    return decode_capture(Path(path).read_bytes(), key, t0, path)


def decode_capture(data: bytes, key: bytes | None = None, t0: float | None = None,
                   path: str | Path = "<capture>") -> Iterator[str]:
    """The lines of a capture held in ``data``; :class:`PcapError` (only) on a file that
    is not a capture. Whatever the packets hold, they are described, never raised."""
    first = t0
    for ts, src, sport, dst, dport, payload in capture_udp_payloads(data, path):
        if payload[:4] != MAGIC:
            continue
        if first is None:
            first = ts
        head = f"{ts - first:10.6f} {_hp(src, sport)} > {_hp(dst, dport)}"
        try:
            d = parse_datagram(payload, key)
        except PcapError:
            yield f"{head} MALFORMED: shorter than a header and MAC"
            continue
        hdr = f"node {d.node} seq {d.seq} rseq {d.rseq} ack {d.ack}"
        if d.nacks:
            hdr += " nack " + ",".join(f"{a}-{b}" for a, b in d.nacks)
        if d.mac_ok is False:
            hdr += " BAD-HMAC"
        for mtype, body in d.messages:
            yield f"{head} {hdr} | {describe_message(mtype, body)}"
        if not d.messages and not d.problem:
            yield f"{head} {hdr} | (no message: " + ("NACK)" if d.nacks else "ACK)")
        if d.problem:
            yield f"{head} {hdr} | MALFORMED: {d.problem}"
