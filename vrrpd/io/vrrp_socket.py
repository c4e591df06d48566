"""Raw sockets for VRRP: per interface a receive socket per address family, and one
send socket.

Receive, IPv4: a raw IPPROTO_VRRP socket bound to the interface, joined to 224.0.0.18
on that interface only (a receiver that does not join gets nothing, even though bridges
flood the link-local group), with multicast loop off. It delivers the IPv4 header, so
the TTL check reads the real TTL.

Receive, IPv6: a raw AF_INET6 IPPROTO_VRRP socket, bound to the interface, joined to
ff02::12 there. A raw IPv6 socket delivers the payload only: the hop limit and the
destination come as ancillary data (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO), the source as
the sender address. IPV6_CHECKSUM is *not* set: the kernel would then drop a bad checksum
silently, and `checksum_errors` would never see it.

Both are plain non-blocking sockets (the daemon waits with trio.lowlevel.wait_readable),
so the daemon can also drain one synchronously: a backup whose Master_Down timer fires
first reads what is already queued (see InstanceDriver). Each datagram carries its
kernel receive time (SO_TIMESTAMPNS), so an advert that waited in the queue still counts
from when it arrived.

Send: an AF_PACKET socket on the interface. Adverts, gratuitous ARPs and neighbour
advertisements are complete Ethernet frames, so their source MAC is exactly the virtual
MAC (or the interface's MAC with use_vmac = false) and the IP source is the interface's
primary address (IPv6: its link-local address), whatever the routing table says. Frames
sent this way are not looped back to our own receive sockets.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

import trio

from ..packet import VRRP_GROUP
from ..packet_v3 import VRRP_GROUP_V6
from .constants import (
    IP_MULTICAST_ALL,
    IPPROTO_VRRP,
    IPV6_HOPLIMIT,
    IPV6_MULTICAST_ALL,
    IPV6_PKTINFO,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    SO_BINDTODEVICE,
    SO_RCVBUFFORCE,
    SO_TIMESTAMPNS,
)

_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4) + 64


@dataclass(frozen=True, slots=True)
class Datagram:
    """What one receive gave: IPv4, the whole packet (header included) and `src`/`dst`/
    `hop_limit` None (the header has them); IPv6, the VRRP message and the rest from
    the socket. `stamp`: the kernel's receive time (CLOCK_REALTIME seconds) or None."""

    data: bytes
    src: ipaddress.IPv6Address | None = None
    dst: ipaddress.IPv6Address | None = None
    hop_limit: int | None = None
    stamp: float | None = None


def open_receive_socket(ifname: str, ifindex: int, family: int = 4, rcvbuf: int = 1 << 20) -> socket.socket:
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    sock = socket.socket(af, socket.SOCK_RAW, IPPROTO_VRRP)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        if family == 4:
            # ip_mreqn: group, local address (any), interface index
            mreqn = VRRP_GROUP.packed + bytes(4) + struct.pack("@i", ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            # Only the groups this socket joined, not every group the host joined.
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        else:
            mreq = VRRP_GROUP_V6.packed + struct.pack("@I", ifindex)  # ipv6_mreq
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except BaseException:
        sock.close()
        raise
    return sock


def receive(sock: socket.socket) -> Datagram:
    """One datagram from a receive socket; BlockingIOError when none is queued."""
    data, ancdata, _flags, addr = sock.recvmsg(65535, _ANCILLARY)
    stamp = hop = dst = None
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            stamp = sec + nsec / 1e9
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT and len(value) >= 4:
            hop = struct.unpack_from("@i", value)[0]
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 16:
            dst = ipaddress.IPv6Address(value[:16])
    if sock.family == socket.AF_INET:
        return Datagram(data, stamp=stamp)
    src = ipaddress.IPv6Address(addr[0].split("%", 1)[0]) if addr else None
    return Datagram(data, src, dst, hop, stamp)


async def open_send_socket(ifname: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: send only
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        await sock.bind((ifname, 0))
    except BaseException:
        sock.close()
        raise
    return sock
