"""Probes that can only leave by their uplink: ICMP echo or TCP connect, on trio.

Pinning takes two things, both needed:
* the socket is bound to the uplink's device (SO_BINDTODEVICE), so the route lookup
  only considers routes through that device and replies arriving elsewhere are not seen;
* a policy rule `oif DEVICE lookup TABLE` (installed by vrrpd/io/routes.py) sends
  traffic bound to that device to the uplink's own table, whose default route is the
  uplink's gateway -- never the main table's *active* route, which after a switch
  leads through the other uplink (the trap of probing "8.8.8.8" through the main table).
If that table has no route (the link is down), the kernel does not fall back to
another device: the probe fails, which is the point.
"""

from __future__ import annotations

import errno
import socket
import struct

import trio

IPPROTO_ICMP = 1
ICMP_ECHO = 8
ICMP_ECHOREPLY = 0
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_ICMP_HDR = struct.Struct("!BBHHH")


def icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def build_echo(ident: int, seq: int, payload: bytes = b"hapair-probe") -> bytes:
    hdr = _ICMP_HDR.pack(ICMP_ECHO, 0, 0, ident, seq)
    return _ICMP_HDR.pack(ICMP_ECHO, 0, icmp_checksum(hdr + payload), ident, seq) + payload


def parse_echo_reply(packet: bytes) -> tuple[str, int, int] | None:
    """(source, ident, seq) of an IPv4 ICMP echo reply, or None for anything else."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if packet[0] >> 4 != 4 or ihl < 20 or len(packet) < ihl + 8 or packet[9] != IPPROTO_ICMP:
        return None
    typ, code, _, ident, seq = _ICMP_HDR.unpack_from(packet, ihl)
    if typ != ICMP_ECHOREPLY or code != 0:
        return None
    return socket.inet_ntoa(packet[12:16]), ident, seq


class IcmpProber:
    """One raw ICMP socket bound to one device; `probe()` sends one echo and waits."""

    def __init__(self, ifname: str, target: str, ident: int):
        self.ifname = ifname
        self.target = target
        self.ident = ident & 0xFFFF
        self.seq = 0
        self.sock: trio.socket.SocketType | None = None

    def _open(self) -> trio.socket.SocketType:
        s = trio.socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ICMP)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
        except OSError:
            s.close()
            raise
        return s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def probe(self, timeout: float) -> tuple[bool, str]:
        """(True, "") on an echo reply from the target within `timeout`, else (False, why)."""
        try:
            if self.sock is None:
                self.sock = self._open()  # the device may appear later: retry each time
        except OSError as e:
            return False, f"cannot bind to {self.ifname}: {e.strerror or e}"
        self.seq = (self.seq + 1) & 0xFFFF
        seq = self.seq
        try:
            await self.sock.sendto(build_echo(self.ident, seq), (self.target, 0))
        except OSError as e:
            if e.errno == errno.ENODEV:
                self.close()
            return False, f"send failed: {e.strerror or e}"
        with trio.move_on_after(timeout):
            while True:
                try:
                    data = await self.sock.recv(2048)
                except OSError as e:
                    return False, f"receive failed: {e.strerror or e}"
                got = parse_echo_reply(data)
                if got == (self.target, self.ident, seq):
                    return True, ""
        return False, f"no echo reply within {timeout:g}s"


class TcpProber:
    """A TCP connect to target:port from a socket bound to the device."""

    def __init__(self, ifname: str, target: str, port: int):
        self.ifname = ifname
        self.target = target
        self.port = port

    def close(self) -> None:
        pass

    async def probe(self, timeout: float) -> tuple[bool, str]:
        s = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with s:
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            except OSError as e:
                return False, f"cannot bind to {self.ifname}: {e.strerror or e}"
            with trio.move_on_after(timeout):
                try:
                    await s.connect((self.target, self.port))
                    return True, ""
                except OSError as e:
                    return False, f"connect failed: {e.strerror or e}"
        return False, f"no connection within {timeout:g}s"
