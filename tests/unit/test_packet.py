"""vrrpd.packet: the VRRPv2 codec, its receive checks, and the GARP frame."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP
from scapy.packet import Raw

from vrrpd import packet as P
from vrrpd.packet import (
    AUTH_NONE,
    AUTH_SIMPLE,
    Advert,
    Reason,
    Rejected,
    build_advert,
    build_frame,
    build_garp,
    build_ip_packet,
    checksum,
    encode_auth,
    parse_advert,
    parse_frame,
    parse_ip_packet,
    vmac,
)
from vrrpd.status import COUNTER_NAMES

A = ipaddress.IPv4Address
SRC = A("192.0.2.10")
VIPS = (A("192.0.2.1"), A("198.51.100.7"), A("10.255.0.254"))


def scapy_vrrp(adv: Advert) -> VRRP:
    auth = adv.auth_data.ljust(8, b"\0")
    return VRRP(
        version=2,
        type=1,
        vrid=adv.vrid,
        priority=adv.priority,
        authtype=adv.auth_type,
        adv=adv.advert_interval,
        addrlist=[str(a) for a in adv.addresses],
        auth1=int.from_bytes(auth[:4], "big"),
        auth2=int.from_bytes(auth[4:8], "big"),
    )


# ---- checksum / auth helpers -----------------------------------------------------------


def test_checksum_rfc1071_example():
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_checksum_odd_length_pads_with_zero():
    assert checksum(b"\x12\x34\x56") == checksum(b"\x12\x34\x56\x00")
    assert checksum(b"") == 0xFFFF


def test_encode_auth():
    assert encode_auth(None) == bytes(8)
    assert encode_auth("") == bytes(8)
    assert encode_auth("secret") == b"secret\0\0"
    assert encode_auth(b"12345678") == b"12345678"
    with pytest.raises(ValueError):
        encode_auth("123456789")


def test_every_reason_is_a_counter():
    assert {r.value for r in Reason} <= set(COUNTER_NAMES)


# ---- building ------------------------------------------------------------------------


def test_build_advert_exact_bytes():
    adv = Advert(vrid=7, priority=100, addresses=(A("10.0.0.1"),))
    raw = build_advert(adv)
    # version 2 type 1, vrid 7, prio 100, 1 address, auth 0, interval 1, checksum, addr, auth data
    body = bytes.fromhex("21076401000100000a000001") + bytes(8)
    csum = checksum(body)
    assert raw == body[:6] + struct.pack("!H", csum) + body[8:]
    assert checksum(raw) == 0
    assert len(raw) == 20


@pytest.mark.parametrize(
    "bad",
    [
        dict(vrid=0),
        dict(vrid=256),
        dict(priority=-1),
        dict(priority=256),
        dict(advert_interval=0),
        dict(advert_interval=256),
        dict(addresses=tuple(A(i) for i in range(256))),
    ],
)
def test_build_advert_rejects_out_of_range(bad):
    adv = dataclasses.replace(Advert(vrid=1, priority=100, addresses=(VIPS[0],)), **bad)
    with pytest.raises(ValueError):
        build_advert(adv)


def test_build_ip_packet_header():
    payload = build_advert(Advert(vrid=9, priority=50, addresses=VIPS))
    pkt = build_ip_packet(payload, SRC, ident=0x12345)
    ip = IP(pkt)
    assert ip.version == 4 and ip.ihl == 5
    assert ip.tos == 0xC0
    assert ip.len == 20 + len(payload) == len(pkt)
    assert ip.id == 0x2345
    assert ip.ttl == 255
    assert ip.proto == 112
    assert ip.src == str(SRC) and ip.dst == "224.0.0.18"
    assert checksum(pkt[:20]) == 0  # the IP header checksum verifies
    assert pkt[20:] == payload


# ---- scapy golden bytes ----------------------------------------------------------------

GOLDEN = [
    Advert(vrid=1, priority=100, addresses=(A("10.0.0.1"),)),
    Advert(vrid=255, priority=255, addresses=VIPS, advert_interval=3),
    Advert(vrid=42, priority=0, addresses=(A("172.16.0.1"), A("172.16.0.2")), advert_interval=255),
    Advert(vrid=7, priority=200, addresses=VIPS, auth_type=AUTH_SIMPLE, auth_data=encode_auth("secret")),
    Advert(vrid=8, priority=1, addresses=VIPS[:2], auth_type=AUTH_SIMPLE, auth_data=encode_auth("12345678")),
]


@pytest.mark.parametrize("adv", GOLDEN, ids=lambda a: f"vrid{a.vrid}-prio{a.priority}-auth{a.auth_type}")
def test_vrrp_bytes_match_scapy(adv):
    ours = build_advert(adv)
    theirs = bytes(scapy_vrrp(adv))
    assert ours == theirs
    # and scapy reads ours back field by field
    s = VRRP(ours)
    assert (s.version, s.type, s.vrid, s.priority, s.ipcount, s.authtype, s.adv) == (
        2, 1, adv.vrid, adv.priority, len(adv.addresses), adv.auth_type, adv.advert_interval,
    )
    assert s.addrlist == [str(a) for a in adv.addresses]
    assert s.auth1.to_bytes(4, "big") + s.auth2.to_bytes(4, "big") == adv.auth_data
    assert s.chksum == struct.unpack("!H", ours[6:8])[0]
    # scapy's bytes parse to the same advert
    assert parse_advert(theirs) == adv


@pytest.mark.parametrize("adv", GOLDEN, ids=lambda a: f"vrid{a.vrid}-prio{a.priority}-auth{a.auth_type}")
def test_frame_bytes_match_scapy(adv):
    ours = build_frame(adv, SRC, vmac(adv.vrid), ident=77)
    theirs = bytes(
        Ether(dst="01:00:5e:00:00:12", src=P.mac_str(vmac(adv.vrid)))
        / IP(src=str(SRC), dst="224.0.0.18", ttl=255, tos=0xC0, id=77, proto=112)
        / scapy_vrrp(adv)
    )
    assert ours == theirs
    e = Ether(ours)
    assert e.dst == "01:00:5e:00:00:12"
    assert e.src == P.mac_str(vmac(adv.vrid))
    assert e.type == 0x0800
    assert e[IP].ttl == 255 and e[IP].proto == 112
    assert VRRP in e and e[VRRP].vrid == adv.vrid
    parsed = parse_frame(ours)
    assert parsed == dataclasses.replace(adv, src=SRC, ttl=255)


def test_scapy_built_password_advert_parses():
    pkt = bytes(
        IP(src="10.1.1.1", dst="224.0.0.18", ttl=255, proto=112)
        / VRRP(vrid=3, priority=150, authtype=1, addrlist=["10.1.1.254", "10.1.2.254"],
               auth1=int.from_bytes(b"pass", "big"), auth2=int.from_bytes(b"word", "big"))
    )
    adv = parse_ip_packet(pkt)
    assert adv == Advert(
        vrid=3, priority=150, addresses=(A("10.1.1.254"), A("10.1.2.254")), advert_interval=1,
        auth_type=1, auth_data=b"password", src=A("10.1.1.1"), ttl=255,
    )


# ---- tshark golden ---------------------------------------------------------------------


def _tshark_prefs(tshark: str) -> str:
    return subprocess.run([tshark, "-G", "defaultprefs"], capture_output=True, text=True, timeout=60).stdout


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_our_frames(tmp_path):
    from scapy.utils import wrpcap

    tshark = shutil.which("tshark")
    good = [
        build_frame(Advert(vrid=1, priority=100, addresses=(A("10.0.0.1"),)), A("10.0.0.2"), vmac(1), ident=1),
        build_frame(GOLDEN[1], A("10.0.0.3"), vmac(255), ident=2),
        build_frame(GOLDEN[3], A("10.0.0.4"), vmac(7), ident=3),
        build_frame(GOLDEN[2], A("10.0.0.5"), vmac(42), ident=4),
    ]
    bad = bytearray(good[0])
    bad[-1] ^= 0x01  # last auth byte: VRRP checksum now wrong, IP header still fine
    pcap = tmp_path / "vrrp.pcap"
    wrpcap(str(pcap), [Ether(f) for f in good + [bytes(bad)]])
    fields = ["vrrp.version", "vrrp.virt_rtr_id", "vrrp.prio", "vrrp.checksum.status", "ip.ttl",
              "ip.checksum.status", "vrrp.addr_count", "vrrp.adver_int", "vrrp.auth_type"]
    cmd = [tshark, "-n", "-r", str(pcap), "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    prefs = _tshark_prefs(tshark)
    # Wireshark always verifies the VRRP checksum (4.x has no preference for it); older
    # or newer builds may have one, so turn every relevant check on when it exists.
    for pref in ("vrrp.check_checksum", "ip.check_checksum"):
        if pref + ":" in prefs:
            cmd += ["-o", f"{pref}:TRUE"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.strip().splitlines()]
    assert len(rows) == 5
    expected = [
        ["2", "1", "100", "1", "255", "1", "1", "1", "0"],
        ["2", "255", "255", "1", "255", "1", "3", "3", "0"],
        ["2", "7", "200", "1", "255", "1", "3", "1", "1"],
        ["2", "42", "0", "1", "255", "1", "2", "255", "0"],
        ["2", "1", "100", "0", "255", "1", "1", "1", "0"],  # tshark flags the corrupted one Bad
    ]
    if "ip.check_checksum:" not in prefs:  # IP header checksum status unverified: don't compare it
        rows = [r[:5] + r[6:] for r in rows]
        expected = [r[:5] + r[6:] for r in expected]
    assert rows == expected


# ---- parsing: round trip ---------------------------------------------------------------

addresses = st.lists(st.integers(0, 2**32 - 1).map(A), min_size=0, max_size=20).map(tuple)
adverts = st.builds(
    Advert,
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    addresses=addresses,
    advert_interval=st.integers(1, 255),
    auth_type=st.sampled_from([AUTH_NONE, AUTH_SIMPLE]),
    auth_data=st.binary(min_size=8, max_size=8),
)


@given(adverts, st.integers(0, 2**32 - 1).map(A))
def test_round_trip(adv, src):
    assert parse_advert(build_advert(adv)) == adv
    assert parse_ip_packet(build_ip_packet(build_advert(adv), src)) == dataclasses.replace(adv, src=src)
    frame = build_frame(adv, src, vmac(adv.vrid))
    assert parse_frame(frame) == dataclasses.replace(adv, src=src)
    assert parse_frame(frame.ljust(60, b"\0") + bytes(7)) == dataclasses.replace(adv, src=src)


def test_short_auth_data_is_zero_padded_on_build():
    adv = Advert(vrid=1, priority=100, addresses=(VIPS[0],), auth_type=AUTH_SIMPLE, auth_data=b"abc")
    assert parse_advert(build_advert(adv)).auth_data == b"abc\0\0\0\0\0"


# ---- parsing: receive checks in RFC order ---------------------------------------------

BASE = Advert(vrid=5, priority=100, addresses=(A("10.0.0.1"),))


def make_packet(faults: set[str]) -> bytes:
    """An IP packet with the given packet-level faults, and no other."""
    p = bytearray(build_advert(BASE))
    if "version" in faults:
        p[0] = (3 << 4) | (p[0] & 0x0F)
    if "type" in faults:
        p[0] = (p[0] & 0xF0) | 2
    if "count" in faults:
        p[3] = 4  # four addresses announced, one present
    p[6:8] = b"\0\0"
    p[6:8] = struct.pack("!H", checksum(bytes(p)))
    if "checksum" in faults:
        p[-1] ^= 0x55
    if "short" in faults:
        p = p[:6]
    pkt = bytearray(build_ip_packet(bytes(p), SRC))
    if "ttl" in faults:
        pkt[8] = 64
    return bytes(pkt)


# (fault, reason) in the order RFC 3768 §7.1 (and §5.3.2 for the type) applies them
ORDER = [
    ("ttl", Reason.TTL),
    ("version", Reason.VERSION),
    ("short", Reason.LENGTH),
    ("count", Reason.LENGTH),
    ("checksum", Reason.CHECKSUM),
    ("type", Reason.TYPE),
]


def test_clean_packet_is_accepted():
    assert parse_ip_packet(make_packet(set())) == dataclasses.replace(BASE, src=SRC)


@pytest.mark.parametrize("fault,reason", ORDER)
def test_single_fault_reason(fault, reason):
    r = parse_ip_packet(make_packet({fault}))
    assert isinstance(r, Rejected)
    assert r.reason is reason
    assert r.src == SRC
    assert r.vrid == 5
    assert r.detail


@pytest.mark.parametrize(
    "first,second",
    [(a, b) for a, b in itertools.combinations(ORDER, 2) if {a[0], b[0]} != {"short", "count"}],
    ids=lambda x: x[0],
)
def test_earlier_check_wins(first, second):
    r = parse_ip_packet(make_packet({first[0], second[0]}))
    assert isinstance(r, Rejected)
    assert r.reason is first[1]


def test_all_faults_at_once_is_a_ttl_error():
    r = parse_ip_packet(make_packet({f for f, _ in ORDER}))
    assert r.reason is Reason.TTL


def test_ttl_values():
    payload = build_advert(BASE)
    for ttl in (0, 1, 64, 254):
        assert parse_advert(payload, ttl=ttl).reason is Reason.TTL
    assert parse_advert(payload, ttl=255) == BASE


def test_parse_advert_tiny_payloads():
    assert parse_advert(b"").reason is Reason.LENGTH
    assert parse_advert(b"").vrid is None
    assert parse_advert(b"\x21").reason is Reason.LENGTH
    assert parse_advert(b"\x21").vrid is None
    assert parse_advert(b"\x31").reason is Reason.VERSION
    r = parse_advert(b"\x21\x09\x64")
    assert (r.reason, r.vrid) == (Reason.LENGTH, 9)


def test_missing_auth_data_is_a_length_error():
    raw = build_advert(BASE)
    r = parse_advert(raw[:-1])
    assert r.reason is Reason.LENGTH


def test_version_1_is_a_version_error():
    p = bytearray(build_advert(BASE))
    p[0] = 0x11
    p[6:8] = b"\0\0"
    p[6:8] = struct.pack("!H", checksum(bytes(p)))
    assert parse_advert(bytes(p)).reason is Reason.VERSION


def test_not_ipv4_or_truncated_ip_header():
    pkt = make_packet(set())
    assert parse_ip_packet(pkt[:19]).reason is Reason.LENGTH
    v6 = bytes([0x65]) + pkt[1:]
    assert parse_ip_packet(v6).reason is Reason.LENGTH
    small_ihl = bytes([0x44]) + pkt[1:]
    assert parse_ip_packet(small_ihl).reason is Reason.LENGTH


def test_ip_options_are_skipped():
    payload = build_advert(BASE)
    ip = IP(src=str(SRC), dst="224.0.0.18", ttl=255, proto=112, options=[b"\x94\x04\x00\x00"]) / Raw(payload)
    raw = bytes(ip)
    assert raw[0] & 0x0F == 6
    assert parse_ip_packet(raw) == dataclasses.replace(BASE, src=SRC)


def test_ip_total_length_is_authoritative():
    pkt = make_packet(set())
    # link padding after the IP packet is ignored
    assert parse_ip_packet(pkt + bytes(10)) == dataclasses.replace(BASE, src=SRC)
    # a non-zero trailer too: it is outside the IP packet
    assert parse_ip_packet(pkt + b"\xff" * 3) == dataclasses.replace(BASE, src=SRC)


def test_ethernet_padding_accepted():
    # 1 address, no auth: 14 + 20 + 20 = 54 bytes, padded to the 60-byte minimum on the wire
    frame = build_frame(BASE, SRC, vmac(5))
    assert len(frame) == 54
    padded = frame + bytes(6)
    assert parse_frame(padded) == dataclasses.replace(BASE, src=SRC)
    assert parse_frame(padded + bytes(100)) == dataclasses.replace(BASE, src=SRC)


def test_parse_frame_rejects_non_ip_and_short():
    frame = build_frame(BASE, SRC, vmac(5))
    assert parse_frame(frame[:33]).reason is Reason.LENGTH
    arp = frame[:12] + b"\x08\x06" + frame[14:]
    assert parse_frame(arp).reason is Reason.LENGTH


# ---- fuzz ------------------------------------------------------------------------------


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_parse_never_raises_on_arbitrary_bytes(data):
    for fn in (parse_ip_packet, parse_frame, parse_advert):
        r = fn(data)
        assert isinstance(r, (Advert, Rejected))


@settings(max_examples=400)
@given(st.binary(max_size=120), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_parse_never_raises_behind_a_valid_ip_header(payload, ttl, total):
    pkt = bytearray(build_ip_packet(payload, SRC))
    pkt[8] = ttl
    if total % 3 == 0:
        pkt[2:4] = struct.pack("!H", total)  # lying total length
    r = parse_ip_packet(bytes(pkt))
    assert isinstance(r, (Advert, Rejected))
    r = parse_frame(bytes(12) + b"\x08\x00" + bytes(pkt))
    assert isinstance(r, (Advert, Rejected))


@settings(max_examples=300)
@given(adverts, st.integers(0, 60), st.integers(0, 255))
def test_single_byte_corruption_never_passes_unnoticed(adv, pos, value):
    """A changed byte is either rejected or, if accepted, decodes to what the bytes say."""
    raw = bytearray(build_advert(adv))
    pos %= len(raw)
    raw[pos] = value
    r = parse_advert(bytes(raw))
    if isinstance(r, Advert):
        assert build_advert(r) == bytes(raw)


# ---- GARP and MACs -------------------------------------------------------------------


@pytest.mark.parametrize("vrid", [1, 51, 255])
def test_garp_frame_layout(vrid):
    ip = A("192.0.2.77")
    frame = build_garp(ip, vmac(vrid))
    assert len(frame) == 60
    e = Ether(frame)
    assert e.dst == "ff:ff:ff:ff:ff:ff"
    assert e.src == P.mac_str(vmac(vrid))
    assert e.type == 0x0806
    arp = e[ARP]
    assert arp.hwtype == 1 and arp.ptype == 0x0800 and arp.hwlen == 6 and arp.plen == 4
    assert arp.op == 1  # request ("who-has")
    assert arp.psrc == arp.pdst == str(ip)
    assert arp.hwsrc == P.mac_str(vmac(vrid))
    assert arp.hwdst == "ff:ff:ff:ff:ff:ff"
    assert frame[42:] == bytes(18)  # zero padding to the minimum frame


def test_vmac():
    assert vmac(1) == bytes.fromhex("00005e000101")
    assert vmac(255) == bytes.fromhex("00005e0001ff")
    assert P.mac_str(vmac(16)) == "00:00:5e:00:01:10"
    assert P.mac_bytes("00:00:5e:00:01:10") == vmac(16)
    assert P.mac_bytes(P.mac_str(bytes(range(6)))) == bytes(range(6))


def test_with_ipv4_ident_equals_a_fresh_build():
    """The cached advert frame with another IP ID is exactly the frame built with it (the
    header checksum updated incrementally), for v2 and v3, for every ID."""
    from vrrpd.codec import codec_for
    from vrrpd.packet import with_ipv4_ident
    from vrrpd.packet_v3 import AdvertV3
    src, mac = ipaddress.IPv4Address("10.0.0.2"), bytes.fromhex("00005e000107")
    for codec, adv in ((codec_for(2), Advert(7, 100, (ipaddress.IPv4Address("10.0.0.100"),), 1)),
                       (codec_for(3, 4), AdvertV3(7, 100, (ipaddress.IPv4Address("10.0.0.100"),), 5))):
        base = codec.build_frame(adv, src, mac, 0)
        for ident in (0, 1, 2, 0x1234, 0x7FFF, 0xFFFE, 0xFFFF, 0x10000 + 5):
            assert with_ipv4_ident(base, ident) == codec.build_frame(adv, src, mac, ident & 0xFFFF), ident
