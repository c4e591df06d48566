"""Raw sockets for VRRP: one receive socket and one send socket per interface.

Receive: a raw IPPROTO_VRRP socket bound to the interface, joined to 224.0.0.18 on
that interface only (a receiver that does not join gets nothing, even though bridges
flood the link-local group), with multicast loop off. It delivers the IPv4 header, so
the TTL check reads the real TTL.

Send: an AF_PACKET socket on the interface. Adverts and GARPs are complete Ethernet
frames, so their source MAC is exactly the virtual MAC (or the interface's MAC with
use_vmac = false) and the IP source is the interface's primary address, whatever the
routing table says. Frames sent this way are not looped back to our own receive socket.
"""

from __future__ import annotations

import socket
import struct

import trio

from ..packet import VRRP_GROUP
from .constants import IP_MULTICAST_ALL, IPPROTO_VRRP, SO_BINDTODEVICE, SO_RCVBUFFORCE


def open_receive_socket(ifname: str, ifindex: int, rcvbuf: int = 1 << 20) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        # ip_mreqn: group, local address (any), interface index
        mreqn = VRRP_GROUP.packed + bytes(4) + struct.pack("@i", ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        # Only the groups this socket joined, not every group the host joined.
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_send_socket(ifname: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: send only
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        await sock.bind((ifname, 0))
    except BaseException:
        sock.close()
        raise
    return sock
