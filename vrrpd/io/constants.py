"""VRRP's numbers on the wire and the rtnetlink groups vrrpd listens to; the socket
constants Python lacks come from hacommon.sockopts (defined once for both daemons)."""

from hacommon.sockopts import (  # noqa: F401 - re-exported for vrrpd's socket modules
    IP_MULTICAST_ALL,
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_HOPLIMIT,
    IPV6_MULTICAST_ALL,
    IPV6_PKTINFO,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    NETLINK_NETFILTER,
    NETLINK_ROUTE,
    SO_BINDTODEVICE,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPNS,
    SOL_NETLINK,
)

IPPROTO_VRRP = 112
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
