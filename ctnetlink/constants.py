"""Numbers of the netlink / nfnetlink / ctnetlink kernel ABI used by ctsync.

Sources: include/uapi/linux/netlink.h, include/uapi/linux/netfilter/nfnetlink.h,
nfnetlink_conntrack.h, nf_conntrack_common.h, nf_conntrack_tcp.h and
nf_nat.h.  Every value used on the wire is exercised against the running
kernel by the namespace tests in tests/ctsync/ (round trips through
``IPCTNL_MSG_CT_NEW`` / dump).

Byte order (a frequent source of bugs): netlink and attribute *headers*
(nlmsghdr, nlattr) are host order; the ctnetlink *payloads* that are
integers wider than a byte (ports, ICMP id, status, timeout, mark, zone, id,
NAT port range) are network order (big-endian).  Addresses are raw bytes.
"""

from __future__ import annotations

import socket as _socket

# --------------------------------------------------------------------------
# sockets (linux/netlink.h, linux/socket.h, asm-generic/socket.h)
from hacommon.sockopts import (  # noqa: E402,F401
                         NETLINK_NETFILTER,
                         SO_RCVBUFFORCE,
                         SO_SNDBUFFORCE,
                         SOL_NETLINK,
)

AF_NETLINK = 16
SO_RCVBUF = 8
SO_SNDBUF = 7

# SOL_NETLINK options
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_PKTINFO = 3
NETLINK_BROADCAST_ERROR = 4
NETLINK_NO_ENOBUFS = 5
NETLINK_LISTEN_ALL_NSID = 8
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

AF_UNSPEC = 0
AF_INET = int(_socket.AF_INET)     # 2
AF_INET6 = int(_socket.AF_INET6)   # 10

# --------------------------------------------------------------------------
# netlink message header (linux/netlink.h)

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP_FILTERED = 0x20
# GET requests
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_ATOMIC = 0x400
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
# NEW requests
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
# ACK flags
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# --------------------------------------------------------------------------
# nfnetlink (linux/netfilter/nfnetlink.h)

NFNETLINK_V0 = 0
NFNL_SUBSYS_NONE = 0
NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_CTNETLINK_EXP = 2

NFNLGRP_NONE = 0
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_UPDATE = 2
NFNLGRP_CONNTRACK_DESTROY = 3

# --------------------------------------------------------------------------
# ctnetlink message types (nfnetlink_conntrack.h, enum cntl_msg_types)

IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_CTRZERO = 3
IPCTNL_MSG_CT_GET_STATS_CPU = 4
IPCTNL_MSG_CT_GET_STATS = 5
IPCTNL_MSG_CT_GET_DYING = 6
IPCTNL_MSG_CT_GET_UNCONFIRMED = 7

#: nlmsg_type of ctnetlink messages: (subsystem << 8) | message
CT_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW        # 0x100
CT_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET        # 0x101
CT_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE  # 0x102

# enum ctattr_type
CTA_UNSPEC = 0
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_HELP = 5
CTA_NAT_SRC = 6
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_COUNTERS_ORIG = 9
CTA_COUNTERS_REPLY = 10
CTA_USE = 11
CTA_ID = 12
CTA_NAT_DST = 13
CTA_TUPLE_MASTER = 14
CTA_SEQ_ADJ_ORIG = 15
CTA_SEQ_ADJ_REPLY = 16
CTA_SECMARK = 17  # obsolete
CTA_ZONE = 18
CTA_SECCTX = 19
CTA_TIMESTAMP = 20
CTA_MARK_MASK = 21
CTA_LABELS = 22
CTA_LABELS_MASK = 23
CTA_SYNPROXY = 24
CTA_FILTER = 25
CTA_STATUS_MASK = 26
CTA_TIMESTAMP_EVENT = 27
CTA_NAT = CTA_NAT_SRC  # backwards compatibility alias

# enum ctattr_tuple
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3

# enum ctattr_ip
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4

# enum ctattr_l4proto
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTO_ICMP_TYPE = 5
CTA_PROTO_ICMP_CODE = 6
CTA_PROTO_ICMPV6_ID = 7
CTA_PROTO_ICMPV6_TYPE = 8
CTA_PROTO_ICMPV6_CODE = 9

# enum ctattr_protoinfo
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_DCCP = 2
CTA_PROTOINFO_SCTP = 3

# enum ctattr_protoinfo_tcp
CTA_PROTOINFO_TCP_STATE = 1
CTA_PROTOINFO_TCP_WSCALE_ORIGINAL = 2
CTA_PROTOINFO_TCP_WSCALE_REPLY = 3
CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4
CTA_PROTOINFO_TCP_FLAGS_REPLY = 5

# enum ctattr_counters
CTA_COUNTERS_PACKETS = 1
CTA_COUNTERS_BYTES = 2

# enum ctattr_nat
CTA_NAT_V4_MINIP = 1
CTA_NAT_V4_MAXIP = 2
CTA_NAT_PROTO = 3
CTA_NAT_V6_MINIP = 4
CTA_NAT_V6_MAXIP = 5
CTA_NAT_MINIP = CTA_NAT_V4_MINIP
CTA_NAT_MAXIP = CTA_NAT_V4_MAXIP

# enum ctattr_protonat
CTA_PROTONAT_PORT_MIN = 1
CTA_PROTONAT_PORT_MAX = 2

# enum ctattr_help
CTA_HELP_NAME = 1

# --------------------------------------------------------------------------
# conntrack status bits (nf_conntrack_common.h, enum ip_conntrack_status)

IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5
IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT
IPS_SEQ_ADJUST = 1 << 6
IPS_SRC_NAT_DONE = 1 << 7
IPS_DST_NAT_DONE = 1 << 8
IPS_NAT_DONE_MASK = IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
IPS_DYING = 1 << 9
IPS_FIXED_TIMEOUT = 1 << 10
IPS_TEMPLATE = 1 << 11
IPS_UNTRACKED = 1 << 12
IPS_HELPER = 1 << 13
IPS_OFFLOAD = 1 << 14
IPS_HW_OFFLOAD = 1 << 15
#: bits the kernel refuses to change through CTA_STATUS (silently ignored)
IPS_UNCHANGEABLE_MASK = (IPS_NAT_DONE_MASK | IPS_NAT_MASK | IPS_EXPECTED | IPS_CONFIRMED
                         | IPS_DYING | IPS_SEQ_ADJUST | IPS_TEMPLATE | IPS_UNTRACKED
                         | IPS_OFFLOAD | IPS_HW_OFFLOAD)

# --------------------------------------------------------------------------
# TCP conntrack (nf_conntrack_tcp.h)

# enum tcp_conntrack
TCP_CONNTRACK_NONE = 0
TCP_CONNTRACK_SYN_SENT = 1
TCP_CONNTRACK_SYN_RECV = 2
TCP_CONNTRACK_ESTABLISHED = 3
TCP_CONNTRACK_FIN_WAIT = 4
TCP_CONNTRACK_CLOSE_WAIT = 5
TCP_CONNTRACK_LAST_ACK = 6
TCP_CONNTRACK_TIME_WAIT = 7
TCP_CONNTRACK_CLOSE = 8
TCP_CONNTRACK_LISTEN = 9  # obsolete, also SYN_SENT2
TCP_CONNTRACK_SYN_SENT2 = 9
TCP_CONNTRACK_MAX = 10

# per-direction flags (struct nf_ct_tcp_flags {u8 flags; u8 mask;})
IP_CT_TCP_FLAG_WINDOW_SCALE = 0x01
IP_CT_TCP_FLAG_SACK_PERM = 0x02
IP_CT_TCP_FLAG_CLOSE_INIT = 0x04
IP_CT_TCP_FLAG_BE_LIBERAL = 0x08
IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED = 0x10
IP_CT_TCP_FLAG_MAXACK_SET = 0x20
IP_CT_EXP_CHALLENGE_ACK = 0x40
IP_CT_TCP_SIMULTANEOUS_OPEN = 0x80

# --------------------------------------------------------------------------
# protocols

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_GRE = 47
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
#: protocols whose conntrack tuple carries 16-bit source/destination "ports"
PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_DCCP, IPPROTO_SCTP,
                         IPPROTO_UDPLITE, IPPROTO_GRE})
ICMP_PROTOS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})

#: ICMP types that conntrack tracks, mapped to the reply type
#: (nf_conntrack_proto_icmp.c invmap): echo, timestamp, info, address mask.
ICMP_INVERSE = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
#: ICMPv6 (nf_conntrack_proto_icmpv6.c invmap): echo, node information.
ICMPV6_INVERSE = {128: 129, 129: 128, 139: 140, 140: 139}
