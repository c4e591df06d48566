"""Valid inputs for the fuzz tests, built by the project's own encoders: VRRP adverts
(v2, v3 over IPv4 and IPv6), ctnetlink messages (dump parts, commits, requests, errors),
sync datagrams as a real sender writes them (a Replicator and its Channel), captures of
them (pcap, pcapng), configuration files, control-socket requests."""

from __future__ import annotations

import ipaddress
import socket
import struct
from functools import cache
from pathlib import Path

from ctnetlink import constants as C
from ctnetlink.codec import Entry, Tuple, encode_delete, encode_dump, encode_flush, encode_get, encode_new, encode_update
from ctnetlink.key import entry_key
from ctsync.config import parse as parse_ctsync
from ctsync.replicator import Replicator, SendDatagrams
from ctsync.wire import Datagram, Message, MsgType, encode
from vrrpd.packet import AUTH_SIMPLE, Advert, build_advert, build_frame, build_ip_packet, encode_auth
from vrrpd.packet_v3 import AdvertV3, build_advert_v3, build_ipv6_header

REPO = Path(__file__).resolve().parents[2]
A = ipaddress.ip_address
KEY = b"fuzz-key-0123456789abcdef"
V4, V6 = socket.AF_INET, socket.AF_INET6
COMMIT = C.NLM_F_CREATE | C.NLM_F_EXCL


# ---- VRRP -----------------------------------------------------------------------------

@cache
def vrrp_ipv4_packets() -> tuple[bytes, ...]:
    """IPv4 packets (header + VRRP message) as a raw IPPROTO_VRRP socket delivers them."""
    src = A("10.0.0.2")
    one, many = (A("10.0.0.100"),), tuple(A(f"10.0.{i}.1") for i in range(12))
    v2 = [Advert(7, 200, one, 1), Advert(1, 255, many, 3), Advert(255, 0, one, 255, AUTH_SIMPLE, encode_auth("s3cret"))]
    v3 = [AdvertV3(7, 200, one, 100), AdvertV3(200, 1, many, 4095)]
    out = [build_ip_packet(build_advert(a), src, 42) for a in v2]
    out += [build_ip_packet(build_advert_v3(a, src), src, 43) for a in v3]
    out += [build_ip_packet(build_advert_v3(v3[0], src, None, False), src)]  # without the pseudo-header
    return tuple(out)


@cache
def vrrp_ipv6_packets() -> tuple[bytes, ...]:
    src = A("fe80::2")
    one, many = (A("2001:db8::100"),), tuple(A(f"2001:db8::{i:x}") for i in range(1, 9))
    out = []
    for a in (AdvertV3(7, 200, one, 100), AdvertV3(9, 100, many, 1)):
        msg = build_advert_v3(a, src)
        out.append(build_ipv6_header(len(msg), src, A("ff02::12"), 112) + msg)
    return tuple(out)


@cache
def vrrp_frames() -> tuple[bytes, ...]:
    return tuple(build_frame(Advert(7, p, (A("10.0.0.100"),), 1), A("10.0.0.2"), bytes(6)) for p in (0, 100, 255))


# ---- ctnetlink ------------------------------------------------------------------------

def _t(fam, proto, s, d, sp=0, dp=0, **kw) -> Tuple:
    return Tuple(fam, proto, A(s), A(d), sp, dp, **kw)


BASE = C.IPS_CONFIRMED | C.IPS_SEEN_REPLY | C.IPS_ASSURED
SNAT = C.IPS_SRC_NAT | C.IPS_SRC_NAT_DONE | C.IPS_DST_NAT_DONE
DNAT = C.IPS_DST_NAT | C.IPS_SRC_NAT_DONE | C.IPS_DST_NAT_DONE


@cache
def entries() -> tuple[Entry, ...]:
    return (
        Entry(_t(V4, 6, "10.1.0.2", "10.2.0.2", 40000, 80), _t(V4, 6, "10.2.0.2", "10.2.0.1", 80, 20001),
              BASE | SNAT, 431999, 0x2A, 0, 12345, 3, 0x23, 0x33, 7, 9),
        Entry(_t(V4, 6, "10.1.0.2", "10.2.0.1", 40001, 9000), _t(V4, 6, "10.2.0.2", "10.2.0.1", 7000, 20002),
              BASE | SNAT | C.IPS_DST_NAT, 50, zone=7, tcp_state=3, tcp_flags_orig=0, tcp_flags_reply=0, helper="ftp"),
        Entry(_t(V4, 17, "192.0.2.1", "198.51.100.1", 5353, 53), _t(V4, 17, "10.9.9.9", "192.0.2.1", 5300, 5353),
              C.IPS_CONFIRMED | DNAT, 30, 0xFFFFFFFF, 65535, 0xFFFFFFFF),
        Entry(_t(V6, 17, "fd01::2", "fd02::2", 41000, 5000), _t(V6, 17, "fd02::2", "fd02::1", 5000, 20500), BASE | SNAT, 120),
        Entry(_t(V4, 1, "10.1.0.2", "10.2.0.2", icmp_id=1234, icmp_type=8),
              _t(V4, 1, "10.2.0.2", "10.2.0.1", icmp_id=777, icmp_type=0), BASE | SNAT, 29),
        Entry(_t(V6, 58, "fd01::2", "fd02::2", icmp_id=4242, icmp_type=128),
              _t(V6, 58, "fd02::2", "fd01::2", icmp_id=4242, icmp_type=129), BASE, 30),
        Entry(_t(V4, 50, "10.1.0.2", "10.2.0.2"), _t(V4, 50, "10.2.0.2", "10.2.0.1"), C.IPS_CONFIRMED | SNAT, 600),
        Entry(_t(V6, 132, "fd01::2", "fd02::100", 5000, 38412), _t(V6, 132, "fd02::9", "fd01::2", 38413, 5000),
              C.IPS_CONFIRMED | DNAT, 10),
    )


@cache
def commit_bodies() -> tuple[bytes, ...]:
    """What a peer sends as ENTRY bodies."""
    return tuple(encode_new(e, 0, COMMIT, True) for e in entries())


def _nlerror(errno_: int, request: bytes) -> bytes:
    body = struct.pack("=i", -errno_) + request[:16]
    return struct.pack("=IHHII", 16 + len(body), C.NLMSG_ERROR, 0, 1, 0) + body


@cache
def netlink_messages() -> tuple[bytes, ...]:
    """Single messages of every kind the daemons read or write, and a few datagrams of
    several (a dump part: entries then NLMSG_DONE)."""
    es = entries()
    out = list(commit_bodies())
    out += [encode_new(e, 7, 0, False) for e in es]  # the dump / event form
    out += [encode_update(es[0], 1), encode_delete(es[1].orig, 2, 7), encode_get(es[3].orig, 3), encode_dump(),
            encode_flush(), _nlerror(2, commit_bodies()[0]), _nlerror(0, commit_bodies()[1])]
    done = struct.pack("=IHHIIi", 20, C.NLMSG_DONE, C.NLM_F_MULTI, 1, 0, 0)
    out.append(b"".join(encode_new(e, 1, C.NLM_F_MULTI, False) for e in es[:4]) + done)
    return tuple(out)


# ---- sync datagrams -------------------------------------------------------------------

def ctsync_config(local: str, peer: str, mode: str = "commit"):
    return parse_ctsync({"ctsync": {"sync_interface": "sync0", "local_address": local, "peer_address": peer,
                                    "key": KEY.decode(), "mode": mode}}, "fuzz.toml", lab=False)


class SyncPair:
    """Two replicators that have heard each other (each echoes the other's epoch): the
    datagrams ``a`` sends from then on are what ``b`` acts on, not just authenticates."""

    def __init__(self, mode: str = "commit"):
        self.a = Replicator(ctsync_config("172.16.0.1", "172.16.0.2", mode), epoch=1000)
        self.b = Replicator(ctsync_config("172.16.0.2", "172.16.0.1", mode), epoch=2000)
        self.now = 0.0
        self.a.start(0.0)
        self.b.start(0.0)
        self.exchange(0.5)

    def exchange(self, seconds: float, capture: list | None = None) -> None:
        end = self.now + seconds
        while self.now < end:
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                src.handle_timer(self.now)
                for act in src.poll(self.now):
                    if isinstance(act, SendDatagrams):
                        for d in act.datagrams:
                            if capture is not None and src is self.a:
                                capture.append(d)
                            dst.datagram(d, self.now)
                    elif act.__class__.__name__ == "DumpKernel":
                        src.send_table(list(entries()) if src is self.a else [], self.now, act.reason)
            self.now = round(self.now + 0.01, 6)


@cache
def sync_datagrams() -> tuple[bytes, ...]:
    """Datagrams a real sender wrote (entries, destroys, heartbeats, a table push with its
    markers, acks), plus the channel's own messages (NACK ranges, PROBE, SKIP)."""
    pair = SyncPair()
    out: list[bytes] = []
    for e in entries():
        pair.a.kernel_event("new", e, 0, pair.now)
    pair.a.kernel_event("destroy", entries()[2], 0, pair.now)
    pair.exchange(0.3, out)
    pair.a.become_backup(pair.now)
    pair.exchange(1.2, out)
    echo, epoch = pair.b.channel.epoch, pair.a.channel.epoch
    out.append(encode(Datagram(1, epoch, 10_000, 0, 3, ((5, 9), (12, 12)), (Message(7, struct.pack("!Q", 40)),), echo=echo), KEY))
    out.append(encode(Datagram(1, epoch, 10_001, 0, 3, (), (Message(8, struct.pack("!QQ", 4, 6)),), echo=echo), KEY))
    destroy = Message(MsgType.DESTROY, entry_key(entries()[0]))
    out.append(encode(Datagram(1, epoch, 10_002, 50, 3, (), (destroy,), echo=echo), KEY))
    return tuple(dict.fromkeys(out))  # in order, without repeats


# ---- captures ---------------------------------------------------------------------------

def _udp_ipv4(payload: bytes, src="172.16.0.1", dst="172.16.0.2") -> bytes:
    udp = struct.pack("!HHHH", 3780, 3780, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + udp


def _udp_ipv6(payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 3780, 3780, 8 + len(payload), 0) + payload
    return build_ipv6_header(len(udp), A("fd00::1"), A("fd00::2"), 17) + udp


def _ether(ip: bytes, vlan: bool = False) -> bytes:
    etype = b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00"
    return b"\x02" * 6 + b"\x04" * 6 + (b"\x81\x00\x00\x05" if vlan else b"") + etype + ip


def _pcap(frames, linktype=1, endian="<", nano=False) -> bytes:
    out = struct.pack(endian + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack(endian + "IIII", 1000 + i, 500, len(f), len(f)) + f
    return out


def _pcapng(frames) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9) + b"\0" * 4)
    for i, f in enumerate(frames):
        ts = (2000 + i) * 10**9
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    out += block(3, struct.pack("<I", len(frames[0])) + frames[0])
    return out


@cache
def captures() -> tuple[bytes, ...]:
    ds = sync_datagrams()[:6] + sync_datagrams()[-3:]
    frames = [_ether(_udp_ipv4(d)) for d in ds]
    sll = [struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800) + _udp_ipv4(d) for d in ds[:3]]
    sll2 = [struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\x02" * 8) + _udp_ipv4(d) for d in ds[:2]]
    return (_pcap(frames), _pcap(frames[:3], endian=">", nano=True), _pcapng(frames),
            _pcap([_ether(_udp_ipv4(d), vlan=True) for d in ds[:3]]), _pcap(sll, linktype=113),
            _pcap(sll2, linktype=276), _pcap([_udp_ipv4(d) for d in ds[:2]], linktype=101),
            _pcap([_ether(_udp_ipv6(d)) for d in ds[:3]]))


# ---- configuration files ----------------------------------------------------------------

FULL_VRRPD = """
[vrrpd]
control_socket = "/run/test/vrrpd.sock"
control_group = "root"
transition_hold_timeout = 1.5

[vrrpd.instance.WAN]
interface = "eth0"
vrid = 51
priority = 150
advert_interval = 2
preempt = false
preempt_delay = 30
virtual_addresses = ["203.0.113.1/24", "203.0.113.2/24"]
use_vmac = false
auth = { type = "pass", password = "s3cret" }
track_interfaces = [{ interface = "eth2", weight = -60 }, "eth3"]
strict = true
notify = ["/usr/local/bin/notify", "WAN"]
garp_count = 3
garp_interval = 0.2
garp_repeat_delay = 10

[vrrpd.instance.LAN]
interface = "eth1"
vrid = 52
virtual_addresses = ["192.168.1.1/24"]
notify = "/bin/true"

[vrrpd.sync_group.G]
instances = ["WAN", "LAN"]
notify = "/bin/true"

[ctsync]
sync_interface = "eth2"
local_address = "172.16.0.1"
peer_address = "172.16.0.2"
key = "fuzz-key-0123456789abcdef"
mode = "inject"
failover = { vrrp_sync_group = "G", demote_when_not_ready = 50 }
ignore_addresses = ["10.0.0.0/8", "fd00::/8"]
ignore_protocols = ["icmp", 132]
ignore_tcp_states = ["syn_sent", "time_wait"]
multicast_group = "225.0.0.50"
control_group = 0
"""


@cache
def config_files() -> tuple[bytes, ...]:
    files = [FULL_VRRPD.encode()] + [p.read_bytes() for p in sorted((REPO / "configs").glob("*.toml"))]
    return tuple(files)


# ---- control-socket requests --------------------------------------------------------------

VRRPD_REQUESTS = (
    b'{"cmd": "status"}\n', b'{"cmd": "metrics"}\n',
    b'{"cmd": "events", "name": "ctsync", "hold": ["G"], "uplinks": true, "prepare": true}\n{"ack": 1}\n'
    b'{"demote": 50, "reason": "not ready", "scope": ["WAN"]}\n{"demote": 0}\n',
    b'{"cmd": "events"}\n{"demote": 300}\n{"ack": true}\n',
    b'{"cmd": "events", "hold": "*"}\n{"demote": 5, "scope": []}\n',
)
CTSYNC_REQUESTS = (
    b'{"cmd": "status"}\n', b'{"cmd": "metrics"}\n', b'{"cmd": "dump"}\n', b'{"cmd": "flush"}\n', b'{"cmd": "resync"}\n',
    b'{"cmd": "commit"}\n',
    b'{"cmd": "flush-uplink", "address": "198.51.100.2", "proto": "udp", "dport": 5060}\n',
    b'{"cmd": "flush-uplink", "address": "198.51.100.2"}\n',
)
