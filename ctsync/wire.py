"""ctsync's sync protocol on the wire: datagram framing, HMAC-SHA256, replay window.

Version 1 datagram (all integers big-endian):

    magic "CTS1" | version u8 = 1 | flags u8 | node id u16 | epoch u64 | echo u64 | seq u64
    | rseq u64 | ack u64 | nack count u16 | message count u16 | nack ranges | messages
    | HMAC-SHA256 (32)

- `epoch`: the sender's incarnation, a random 64-bit number drawn at start (and derived
  anew when it renews it, see ctsync.channel); epochs are not ordered. `echo`: the
  peer's epoch the sender answers; a receiver acts only on datagrams that echo its own
  current epoch, so datagrams captured before that epoch began cannot be replayed to it.
  `seq`: this datagram's number in the epoch, from 1, never reused: it is what the
  replay window checks, so even a heartbeat cannot be replayed. `rseq`: the number of the
  reliable payload this datagram carries (0: none, e.g. a heartbeat or a bare ack); a
  resend carries the same rseq in a new datagram with a new seq. `ack`: the highest rseq
  of the peer's epoch received with nothing missing below it. The nack ranges (first,
  last rseq, u64 each) are gaps the sender asks the peer to resend.
- `messages`: `count` TLVs of type (u8), length (u16), body.
- The HMAC covers every byte before it. A datagram whose HMAC does not verify, that does
  not echo the receiver's current epoch, or whose (epoch, seq) was already seen or is
  older than the replay window, changes nothing and is counted.

The message bodies (conntrack entries) are opaque bytes here; `ctsync.replicator`
gives them meaning.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum

MAGIC = b"CTS1"
VERSION = 1
MAC_LEN = 32
_HDR = struct.Struct("!4sBBHQQQQQHH")  # magic, version, flags, node, epoch, echo, seq, rseq, ack, nack count, msg count
_RANGE = struct.Struct("!QQ")
_TLV = struct.Struct("!BH")
HEADER_LEN = _HDR.size


class MsgType(IntEnum):
    HEARTBEAT = 1  # body: role u8, ready u8, cache size u32
    ENTRY = 2  # body: a conntrack entry (new or updated), ctsync.replicator encoding
    DESTROY = 3  # body: an original tuple
    RESYNC_REQUEST = 4  # empty: "send me everything"
    RESYNC_BEGIN = 5  # body: resync id u32
    RESYNC_END = 6  # body: resync id u32, entries sent u32 — the explicit "in sync" marker


class WireError(Exception):
    """A datagram that is not ours or is malformed; `reason` names its counter."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    body: bytes = b""

    @property
    def size(self) -> int:
        return _TLV.size + len(self.body)


@dataclass(frozen=True, slots=True)
class Datagram:
    node: int
    epoch: int
    seq: int
    rseq: int
    ack: int
    nacks: tuple[tuple[int, int], ...] = ()
    messages: tuple[Message, ...] = ()
    flags: int = 0
    echo: int = 0


def encode(d: Datagram, key: bytes) -> bytes:
    parts = [_HDR.pack(MAGIC, VERSION, d.flags, d.node, d.epoch, d.echo, d.seq, d.rseq, d.ack, len(d.nacks), len(d.messages))]
    parts += [_RANGE.pack(a, b) for a, b in d.nacks]
    for m in d.messages:
        parts.append(_TLV.pack(m.type, len(m.body)))
        parts.append(m.body)
    raw = b"".join(parts)
    return raw + hmac.new(key, raw, hashlib.sha256).digest()


def decode(data: bytes, key: bytes) -> Datagram:
    """Verify and parse. Raises WireError(reason) for anything we must not act on."""
    if len(data) < HEADER_LEN + MAC_LEN:
        raise WireError("malformed", f"{len(data)} bytes, shorter than header and MAC")
    raw, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if raw[:4] != MAGIC:
        raise WireError("malformed", "not a ctsync datagram (magic)")
    # Authenticate before looking at anything else: an attacker must not be able to
    # make us parse (or count as anything but an auth failure) what they forged.
    if not hmac.compare_digest(mac, hmac.new(key, raw, hashlib.sha256).digest()):
        raise WireError("auth_failures", "HMAC does not verify")
    _, version, flags, node, epoch, echo, seq, rseq, ack, n_nack, n_msg = _HDR.unpack_from(raw)
    if version != VERSION:
        raise WireError("malformed", f"protocol version {version}, we speak {VERSION}")
    off = HEADER_LEN
    nacks = []
    for _ in range(n_nack):
        if off + _RANGE.size > len(raw):
            raise WireError("malformed", "truncated NACK ranges")
        nacks.append(_RANGE.unpack_from(raw, off))
        off += _RANGE.size
    msgs = []
    for _ in range(n_msg):
        if off + _TLV.size > len(raw):
            raise WireError("malformed", "truncated message header")
        t, ln = _TLV.unpack_from(raw, off)
        off += _TLV.size
        if off + ln > len(raw):
            raise WireError("malformed", "truncated message body")
        msgs.append(Message(t, raw[off:off + ln]))
        off += ln
    if off != len(raw):
        raise WireError("malformed", f"{len(raw) - off} trailing bytes")
    return Datagram(node, epoch, seq, rseq, ack, tuple(nacks), tuple(msgs), flags, echo)


def overhead(n_nacks: int = 0) -> int:
    return HEADER_LEN + n_nacks * _RANGE.size + MAC_LEN


@dataclass
class ReplayWindow:
    """Accepts each seq of one epoch of the peer once, and nothing `size` or more behind
    the newest. A datagram too old for the window is refused even if it was never seen:
    if it was real, its reliable payload comes again through a NACK and a resend. Which
    epoch is current is the channel's business (epochs are not ordered): it starts a new
    window for each new epoch of the peer it accepts.
    """

    size: int = 1024
    top: int = 0
    seen: set[int] = field(default_factory=set)

    def check(self, seq: int) -> str | None:
        """None if acceptable (and records it), else the reason it is refused."""
        if seq == 0:
            return "malformed"  # every datagram is numbered
        if seq + self.size <= self.top:
            return "replayed"  # too old to tell: refuse, the resend path covers real losses
        if seq in self.seen:
            return "replayed"
        self.seen.add(seq)
        if seq > self.top:
            self.top = seq
            floor = self.top - self.size
            if len(self.seen) > 2 * self.size:
                self.seen = {s for s in self.seen if s > floor}
        return None
