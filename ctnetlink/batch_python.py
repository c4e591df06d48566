"""The batch codec in pure Python: the reference that the C extension
(``ctnetlink/_batch.c``) must agree with exactly, byte for byte and error for error.

It is the existing codec composed per message, nothing more: :func:`~ctnetlink.decode.parse_message`,
:func:`~ctnetlink.key.entry_key`, ctsync's filter (:class:`Filter`) and
:func:`~ctnetlink.compact.compact_of` (the commit message's fields, packed for the sync link);
:func:`expand` is :func:`ctnetlink.compact.expand`. Use :mod:`ctnetlink.batch`, which picks
the C implementation when it is built; this module is what it falls back to and what the
differential tests compare the C one with.
"""

from __future__ import annotations

import errno
import ipaddress
import operator
import socket
from typing import Iterable

from .check import check_commit_body
from .compact import compact_of, expand
from .constants import CT_DELETE, CT_NEW, NLM_F_CREATE
from .decode import key_and_timeout, parse_message
from .key import entry_key
from .layout import unpack_hdr
from .model import CodecError, Entry

__all__ = ["Filter", "events", "recv_events", "expand", "key_and_timeout", "RECV_SLOT", "KIND_NEW", "KIND_UPDATE", "KIND_DESTROY"]

#: record kinds, the values of :class:`ctnetlink.socket.EventKind`
KIND_NEW, KIND_UPDATE, KIND_DESTROY = 1, 2, 3
_NETWORKS = (ipaddress.IPv4Network, ipaddress.IPv6Network)
#: the room for one datagram in recv_events: a conntrack event is well under 1 KiB
RECV_SLOT = 16384


class Filter:
    """What ctsync does not replicate, built once from its configuration: entries whose
    protocol is in ``ignore_protocols``, whose TCP state (when the message carries one) is
    in ``ignore_tcp_states``, or whose original source or destination address lies in one
    of ``ignore_addresses`` (IPv4/IPv6 networks; an address only matches networks of its
    own version)."""

    __slots__ = ("protocols", "tcp_states", "networks")

    def __init__(self, ignore_protocols: Iterable[int] = (), ignore_tcp_states: Iterable[int] = (),
                 ignore_addresses: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()):
        self.protocols = frozenset(operator.index(p) for p in ignore_protocols)
        self.tcp_states = frozenset(operator.index(s) for s in ignore_tcp_states)
        nets = tuple(ignore_addresses)
        for n in nets:
            if not isinstance(n, _NETWORKS):
                raise TypeError(f"ignore_addresses: not an IPv4Network/IPv6Network: {n!r}")
        self.networks = nets

    def matches(self, e: Entry) -> bool:
        """True if ``e`` is not to be replicated (the semantics of ctsync's filter)."""
        if e.proto in self.protocols:
            return True
        if e.tcp_state is not None and e.tcp_state in self.tcp_states:
            return True
        if self.networks:
            o = e.orig
            for net in self.networks:
                if o.src in net or o.dst in net:
                    return True
        return False


def events(buf, filt: Filter | None = None, skip_portids=None):
    """Walk one netlink datagram of conntrack events (or of a dump) and return
    ``(records, skipped, filtered, errors, other)``:

    - ``records``: ``(kind, portid, key, message)`` per event kept, in order; ``kind`` is
      :data:`KIND_NEW` (CT_NEW with NLM_F_CREATE), :data:`KIND_UPDATE` (CT_NEW without it:
      also every dump part) or :data:`KIND_DESTROY` (CT_DELETE); ``key`` is
      :func:`ctnetlink.key.entry_key` of the entry; ``message`` is the compact form of
      its commit message (:func:`ctnetlink.compact.compact_of`: what the sync link
      carries, :func:`expand` turns it into the commit message), None for a DESTROY.
    - ``skipped``: ctnetlink messages whose portid is in ``skip_portids`` (not decoded).
    - ``filtered``: entries ``filt`` matched (not encoded).
    - ``errors``: the :class:`~ctnetlink.model.CodecError` reason of each message that could
      not be decoded or encoded, in order; broken framing ends the walk with
      ``"bad_msg_len"``, bytes after the last message add ``"truncated"``.
    - ``other``: ``(offset, msgtype, flags, seq, portid)`` of every message that is not a
      ctnetlink NEW/DELETE (NLMSG_DONE, NLMSG_ERROR, ...), not decoded:
      ``parse_message(buf, offset)`` reads one when needed.
    """
    records: list = []
    errors: list[str] = []
    other: list = []
    skipped = filtered = 0
    n = len(buf)
    off = 0
    while off + 16 <= n:
        nlen, msgtype, flags, seq, portid = unpack_hdr(buf, off)
        if nlen < 16 or off + nlen > n:
            errors.append("bad_msg_len")  # framing broken: nothing after it can be trusted
            return records, skipped, filtered, errors, other
        if msgtype == CT_NEW or msgtype == CT_DELETE:
            if skip_portids and portid in skip_portids:
                skipped += 1
            else:
                kind = KIND_DESTROY if msgtype == CT_DELETE else KIND_NEW if flags & NLM_F_CREATE else KIND_UPDATE
                try:
                    e = parse_message(buf, off)[4]
                    if filt is not None and filt.matches(e):
                        filtered += 1
                    elif kind == KIND_DESTROY:
                        records.append((kind, portid, entry_key(e), None))
                    else:
                        records.append((kind, portid, entry_key(e), compact_of(e)))
                except CodecError as err:
                    errors.append(err.reason)
        else:
            other.append((off, msgtype, flags, seq, portid))
        off += (nlen + 3) & ~3
    if off < n:
        errors.append("truncated")
    return records, skipped, filtered, errors, other


def recv_events(sock, max_datagrams: int = 256, filt: Filter | None = None, skip_portids=None):
    """Read the datagrams queued on ``sock`` (a socket: its ``recvmsg_into``) without
    waiting, ``max_datagrams`` at most, and walk each as :func:`events` does; returns
    ``(records, skipped, filtered, errors, other, datagrams, overrun, empty)``: the
    records, counters and reasons of all of them (``other``: how many messages were not
    ctnetlink NEW/DELETE), the datagrams read, whether an overrun (ENOBUFS: events were
    lost; what is queued is still read) was met, and whether the queue was found empty.
    A datagram longer than :data:`RECV_SLOT` is not walked: reason ``"truncated"``. The C
    implementation reads many datagrams per system call (recvmmsg)."""
    records: list = []
    errors: list[str] = []
    skipped = filtered = other = got = 0
    overrun = empty = False
    buf = bytearray(RECV_SLOT)
    view = memoryview(buf)
    while got < max_datagrams:
        try:
            n, _anc, flags, _addr = sock.recvmsg_into([buf], 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            empty = True
            break
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            overrun = True
            continue
        got += 1
        if flags & socket.MSG_TRUNC:
            errors.append("truncated")
            continue
        recs, sk, fi, errs, oth = events(view[:n], filt, skip_portids)
        records += recs
        skipped += sk
        filtered += fi
        errors += errs
        other += len(oth)
    return records, skipped, filtered, errors, other, got, overrun, empty


def accept(body) -> tuple[bytes, int, bytes]:
    """``(key, timeout, commit message)`` of an ENTRY body from the peer, or CodecError.

    The body is the compact form, expanded once into the commit message that is kept: the
    commit then only sends it, to the kernel, as it is. So whatever the peer wrote, the
    message must be exactly one commit-form CT_NEW (check_commit_body: no status the
    commit strips, no helper name the kernel refuses, ...), and the key it is kept under
    must be the key of the entry it commits (a key with ports for a protocol that has none
    would expand to another entry's message: kept twice, never destroyed)."""
    key, timeout, message = expand(body)
    check_commit_body(message)
    if key_and_timeout(message)[0] != key:
        raise CodecError("bad_entry", "the key is not the key of the entry it expands to")
    return key, timeout, message
