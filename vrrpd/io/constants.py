"""Socket constants Python 3.11's `socket` module lacks (values from the Linux UAPI headers)."""

import socket

IPPROTO_VRRP = 112
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SOL_NETLINK = 270
NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
