"""`ctsyncctl decode`: crafted captures (pcap µs/ns, both byte orders, pcapng, Ethernet
with a VLAN tag, Linux cooked) holding real encoded datagrams; truncated and foreign
payloads. A capture from the lab is decoded in tests/netns/test_ctsync_dissector.py."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from ctnetlink.codec import Entry, Tuple, encode_new
from ctnetlink.constants import IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, IPS_SRC_NAT, NLM_F_CREATE, NLM_F_EXCL
from ctnetlink.key import entry_key
from ctsync.cli import ctsyncctl_main
from ctsync.pcapdecode import PcapError, decode_lines, parse_datagram
from ctsync.wire import Datagram, Message, MsgType, encode

A = ipaddress.ip_address
KEY = b"0123456789abcdef0123"


def entry() -> Entry:
    o = Tuple(socket.AF_INET, 6, A("192.168.100.10"), A("10.10.0.200"), 40001, 9000)
    r = Tuple(socket.AF_INET, 6, A("10.10.0.200"), A("10.10.0.101"), 9000, 40001)
    return Entry(o, r, IPS_SRC_NAT | IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED, 300, tcp_state=3)


def datagrams() -> list[bytes]:
    e = entry()
    body = encode_new(e, 0, NLM_F_CREATE | NLM_F_EXCL, True)
    return [
        encode(Datagram(1, 10, 1, 1, 0, messages=(Message(MsgType.ENTRY, body),
                                                  Message(MsgType.DESTROY, entry_key(e)))), KEY),
        encode(Datagram(2, 20, 7, 0, 1, nacks=((3, 5),)), KEY),
        encode(Datagram(2, 20, 8, 0, 1, messages=(Message(MsgType.HEARTBEAT, struct.pack("!BBI", 1, 1, 42)),
                                                  Message(MsgType.RESYNC_END, struct.pack("!II", 4, 200)))), KEY),
    ]


def udp_ipv4(payload: bytes, src="172.16.0.1", dst="172.16.0.2", sport=3780, dport=3780) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip + udp


def ether(ip: bytes, vlan: bool = False) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    if vlan:
        head += b"\x81\x00\x00\x05"
    return head + b"\x08\x00" + ip


def pcap(frames: list[bytes], linktype: int = 1, endian: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        out += struct.pack(endian + "IIII", 1000 + i, 500, len(f), len(f)) + f
    return out


def pcapng(frames: list[bytes]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9) + b"\0" * 4)
    for i, f in enumerate(frames):
        ts = (2000 + i) * 10**9
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    return out


EXPECT = [
    "ENTRY tcp 192.168.100.10:40001 -> 10.10.0.200:9000 reply 10.10.0.200:9000 -> 10.10.0.101:40001 ESTABLISHED timeout 300s",
    "DESTROY tcp 192.168.100.10:40001 -> 10.10.0.200:9000",
    "(no message: NACK)",
    "HEARTBEAT role master ready True cache 42",
    "RESYNC_END id 4 entries 200",
]


def messages(lines: list[str]) -> list[str]:
    return [ln.split(" | ", 1)[1] for ln in lines]


@pytest.mark.parametrize("variant", ["pcap-le", "pcap-be-ns", "pcapng", "vlan", "sll"])
def test_decode_every_file_format(tmp_path, variant):
    ips = [udp_ipv4(d) for d in datagrams()]
    if variant == "pcap-le":
        data = pcap([ether(i) for i in ips])
    elif variant == "pcap-be-ns":
        data = pcap([ether(i) for i in ips], endian=">", nano=True)
    elif variant == "pcapng":
        data = pcapng([ether(i) for i in ips])
    elif variant == "vlan":
        data = pcap([ether(i, vlan=True) for i in ips])
    else:
        sll = lambda ip: struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", 0x0800) + ip  # noqa: E731
        data = pcap([sll(i) for i in ips], linktype=113)
    f = tmp_path / "sync.pcap"
    f.write_bytes(data)
    lines = list(decode_lines(f))
    assert messages(lines) == EXPECT
    assert lines[0].split()[1:4] == ["172.16.0.1:3780", ">", "172.16.0.2:3780"]
    assert "node 1 seq 1 rseq 1 ack 0" in lines[0]
    assert "nack 3-5" in lines[2]


def test_hmac_checked_only_with_the_key(tmp_path):
    d = bytearray(datagrams()[2])
    d[-1] ^= 1
    assert parse_datagram(bytes(d)).mac_ok is None
    assert parse_datagram(bytes(d), KEY).mac_ok is False
    assert parse_datagram(datagrams()[2], KEY).mac_ok is True
    f = tmp_path / "x.pcap"
    f.write_bytes(pcap([ether(udp_ipv4(bytes(d)))]))
    assert all("BAD-HMAC" in ln for ln in decode_lines(f, KEY))


def test_malformed_and_foreign_payloads(tmp_path):
    good = datagrams()[0]
    truncated = good[:60] + good[-32:]  # the header says 2 messages; the bodies are cut
    frames = [ether(udp_ipv4(truncated)), ether(udp_ipv4(b"CTS1short")), ether(udp_ipv4(b"not ours at all " * 4)),
              b"\x00" * 10]
    f = tmp_path / "bad.pcap"
    f.write_bytes(pcap(frames))
    lines = list(decode_lines(f))
    assert len(lines) == 2, lines
    assert "MALFORMED: truncated message" in lines[0]
    assert "MALFORMED: shorter than a header and MAC" in lines[1]


def test_not_a_capture(tmp_path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"hello, this is not a capture file at all")
    with pytest.raises(PcapError):
        list(decode_lines(f))


def test_ctsyncctl_decode_prints_one_line_per_message(tmp_path, capsys):
    f = tmp_path / "sync.pcap"
    f.write_bytes(pcap([ether(udp_ipv4(d)) for d in datagrams()]))
    assert ctsyncctl_main(["decode", str(f)]) == 0
    assert messages(capsys.readouterr().out.splitlines()) == EXPECT
    assert ctsyncctl_main(["decode", str(tmp_path / "missing.pcap")]) == 1
    assert "ctsyncctl: decode:" in capsys.readouterr().err


# ---- the Wireshark dissector (docs/ctsync-dissector.lua) on the same crafted captures ----

DISSECTOR = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "ctsync-dissector.lua"


def _tshark(path) -> str:
    import subprocess
    cp = subprocess.run(["tshark", "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(path), "-V"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


@pytest.mark.skipif(__import__("shutil").which("tshark") is None, reason="tshark not installed")
def test_dissector_decodes_good_datagrams_and_flags_bad_ones(tmp_path):
    good = tmp_path / "good.pcap"
    good.write_bytes(pcap([ether(udp_ipv4(d)) for d in datagrams()]))
    out = _tshark(good)
    assert out.count("ctsync conntrack sync protocol") == 3
    assert "Malformed" not in out and "Lua Error" not in out
    assert "Original tuple: tcp 192.168.100.10:40001 -> 10.10.0.200:9000" in out
    assert "NAT address: 10.10.0.101" in out and "TCP state: ESTABLISHED (3)" in out
    assert "NACK first: 3" in out and "Role: master (1)" in out and "Entries sent: 200" in out
    # Not on the default port: found by the heuristic (the magic).
    other = tmp_path / "other-port.pcap"
    other.write_bytes(pcap([ether(udp_ipv4(datagrams()[2], sport=4000, dport=4001))]))
    assert "Role: master (1)" in _tshark(other)
    bad = tmp_path / "bad.pcap"
    d = datagrams()[0]
    bad.write_bytes(pcap([ether(udp_ipv4(d[:60] + d[-32:]))]))
    out = _tshark(bad)
    assert "Malformed" in out and "truncated message" in out and "Lua Error" not in out


# ---- inputs found by fuzzing (issue #8): each once crashed `ctsyncctl decode` ----

def test_pcapng_tsresol_option_cut_at_the_end_of_its_block(tmp_path):
    """An if_tsresol option whose header is the block body's last 4 bytes (its value is
    missing): once an IndexError; now the option is ignored (the default resolution)."""
    f = tmp_path / "cut.pcapng"
    f.write_bytes(bytes.fromhex("0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c00000001000000"
                                "1800000001000000ffff00000900010018000000"))
    assert list(decode_lines(f)) == []
    assert ctsyncctl_main(["decode", str(f)]) == 0


def test_pcapng_option_longer_than_its_block(tmp_path):
    body = struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HH", 9, 200) + b"\x06\0\0\0"
    n = 12 + len(body)
    data = pcapng([])[:28] + struct.pack("<II", 1, n) + body + struct.pack("<I", n)
    f = tmp_path / "long-option.pcapng"
    f.write_bytes(data)
    assert list(decode_lines(f)) == []


def test_entry_body_that_is_a_netlink_error_is_described_not_a_crash():
    """An ENTRY whose body is an NLMSG_ERROR: once an AttributeError."""
    from ctsync.pcapdecode import describe_message

    body = bytes.fromhex("1400000002000000000000000000000000000000")
    assert describe_message(MsgType.ENTRY, body) == "ENTRY (not a conntrack entry: netlink message type 2, 20 bytes)"


def test_ctsyncctl_decode_of_a_capture_with_an_error_entry(tmp_path, capsys):
    body = bytes.fromhex("1400000002000000000000000000000000000000")
    d = encode(Datagram(1, 10, 1, 1, 0, messages=(Message(MsgType.ENTRY, body),)), KEY)
    f = tmp_path / "err.pcap"
    f.write_bytes(pcap([ether(udp_ipv4(d))]))
    assert ctsyncctl_main(["decode", str(f)]) == 0
    assert messages(capsys.readouterr().out.splitlines()) == ["ENTRY (not a conntrack entry: netlink message type 2, 20 bytes)"]
