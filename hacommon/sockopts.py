"""Socket constants Python 3.11's `socket` module lacks, defined once (values from the
Linux UAPI headers). Everything that opens a raw, netlink or multicast socket takes them
from here."""

import socket

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # also the cmsg type SCM_TIMESTAMPNS
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+
SOL_NETLINK = 270
NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
