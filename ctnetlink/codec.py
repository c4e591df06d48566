"""A lean ``struct`` codec for ctnetlink (conntrack over nfnetlink).

Why not pyroute2: its generic nla machinery manages about 2k conntrack
messages/s; ctsync must keep up with connection churn of a busy NAT gateway
and replay whole tables at failover.  This module decodes and encodes only what
ctsync needs, with precompiled ``struct.Struct`` objects and no intermediate
attribute dictionaries.

Layout of a ctnetlink message::

    nlmsghdr (16, host order) | nfgenmsg (family u8, version u8, res_id be16)
    | attributes: nlattr (len u16, type u16, host order) + payload, 4-aligned

Nested attributes carry NLA_F_NESTED (masked off when parsing).  Integer
payloads wider than a byte are big-endian (network order): ports, ICMP id,
status, timeout, mark, zone, id, NAT ports.

Decoding never raises anything but :class:`CodecError` on malformed input.

This module is the codec's public face; the code lives in :mod:`.model` (the values),
:mod:`.key` (an entry's identity), :mod:`.layout` (wire layouts), :mod:`.decode` and
:mod:`.encode`.

Committing a replicated entry (the NAT recipe, verified against the kernel by
tests/ctsync/test_ctnetlink_kernel.py)::

    CTA_TUPLE_ORIG   = the dumped original tuple
    CTA_TUPLE_REPLY  = orig.inverse()  -- NOT the dumped reply tuple
    CTA_NAT_DST      = {V4_MINIP = V4_MAXIP = reply.src, PROTO{PORT_MIN = PORT_MAX = reply.sport}}
                       if status & IPS_DST_NAT
    CTA_NAT_SRC      = {V4_MINIP = V4_MAXIP = reply.dst, PROTO{PORT_MIN = PORT_MAX = reply.dport}}
                       if status & IPS_SRC_NAT
    CTA_STATUS       = status | IPS_CONFIRMED, minus EXPECTED/DYING/OFFLOAD
    CTA_TIMEOUT, CTA_MARK, CTA_ZONE, CTA_PROTOINFO{TCP{STATE, FLAGS_* |= BE_LIBERAL}}

The kernel runs nf_nat_setup_info() on the NAT attributes: it rewrites the
reply tuple itself and sets IPS_SRC_NAT/IPS_DST_NAT (bits it ignores in
CTA_STATUS).  A reply tuple copied verbatim from a dump makes the mapping look
like a no-op to nf_nat_setup_info (the inverse of the reply already *is* the
translated tuple), so no NAT bit is set and packets are not translated.
"""

from __future__ import annotations

from .check import check_commit_body
from .decode import iter_messages, key_and_timeout, parse_entry, parse_message
from .encode import (
    COMMIT_STATUS_STRIP,
    COMMIT_TCP_FLAGS_KEEP,
    encode_delete,
    encode_dump,
    encode_flush,
    encode_get,
    encode_new,
    encode_timeout,
    encode_update,
)
from .key import entry_key, key_of, tuple_from_key
from .model import CodecError, Entry, IPAddress, Message, NlError, Tuple

__all__ = [
    "CodecError", "Tuple", "Entry", "NlError", "Message", "IPAddress",
    "parse_message", "iter_messages", "parse_entry", "key_and_timeout", "check_commit_body",
    "encode_new", "encode_update", "encode_timeout", "encode_delete", "encode_get", "encode_dump", "encode_flush",
    "COMMIT_STATUS_STRIP", "COMMIT_TCP_FLAGS_KEEP", "key_of", "entry_key", "tuple_from_key",
]
