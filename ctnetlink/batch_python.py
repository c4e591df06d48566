"""The batch codec in pure Python: the reference that the C extension
(``ctnetlink/_batch.c``) must agree with exactly, byte for byte and error for error.

It is the existing codec composed per message, nothing more: :func:`~ctnetlink.decode.parse_message`,
:func:`~ctnetlink.key.entry_key`, the filter of ``ctsync.replicator`` and
``encode_new(entry, 0, NLM_F_CREATE | NLM_F_EXCL, True)``. Use :mod:`ctnetlink.batch`, which picks
the C implementation when it is built; this module is what it falls back to and what the
differential tests compare the C one with.
"""

from __future__ import annotations

import ipaddress
import operator
from typing import Iterable

from .constants import CT_DELETE, CT_NEW, NLM_F_CREATE, NLM_F_EXCL
from .decode import key_and_timeout, parse_message
from .encode import encode_new
from .key import entry_key
from .layout import unpack_hdr
from .model import CodecError, Entry

__all__ = ["Filter", "events", "key_and_timeout", "KIND_NEW", "KIND_UPDATE", "KIND_DESTROY"]

#: record kinds, the values of :class:`ctnetlink.socket.EventKind`
KIND_NEW, KIND_UPDATE, KIND_DESTROY = 1, 2, 3
_COMMIT_FLAGS = NLM_F_CREATE | NLM_F_EXCL
_NETWORKS = (ipaddress.IPv4Network, ipaddress.IPv6Network)


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
      :func:`ctnetlink.key.entry_key` of the entry; ``message`` is the commit form,
      ``encode_new(entry, 0, NLM_F_CREATE | NLM_F_EXCL, True)``, None for a DESTROY.
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
                        records.append((kind, portid, entry_key(e), encode_new(e, 0, _COMMIT_FLAGS, True)))
                except CodecError as err:
                    errors.append(err.reason)
        else:
            other.append((off, msgtype, flags, seq, portid))
        off += (nlen + 3) & ~3
    if off < n:
        errors.append("truncated")
    return records, skipped, filtered, errors, other
