"""vrrpd.packet_v3, codec and announce: the VRRPv3 codec (IPv4 and IPv6), its receive
checks, the checksum conventions, the codec strategies and unsolicited NAs."""

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
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRPv3
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from vrrpd import packet as P
from vrrpd.announce import ArpAnnouncer, NdAnnouncer, announcer_for, build_unsolicited_na
from vrrpd.codec import V2Codec, V3Codec, codec_for, parse_frame_with, parse_ipv4, peek_vrid
from vrrpd.packet import Advert, Reason, Rejected, build_advert, build_ip_packet, checksum, vmac
from vrrpd.packet_v3 import (
    VRRP_GROUP_V6,
    AdvertV3,
    build_advert_v3,
    build_frame_v3,
    build_ipv6_header,
    checksum_v3,
    parse_advert_v3,
    parse_ipv4_packet_v3,
    pseudo_header,
    split_ipv6,
)

A4, A6 = ipaddress.IPv4Address, ipaddress.IPv6Address
GROUP4 = A4("224.0.0.18")
SRC4 = A4("192.0.2.10")
SRC6 = A6("fe80::200:ff:fe00:10")
VIPS4 = (A4("192.0.2.1"), A4("198.51.100.7"), A4("10.255.0.254"))
VIPS6 = (A6("fe80::1"), A6("2001:db8::1"), A6("2001:db8:ffff::fe"))


def src_of(adv: AdvertV3):
    return SRC4 if adv.addresses[0].version == 4 else SRC6


def scapy_v3(adv: AdvertV3, **kw) -> VRRPv3:
    return VRRPv3(vrid=adv.vrid, priority=adv.priority, adv=adv.max_adver_int,
                  addrlist=[str(a) for a in adv.addresses], **kw)


def scapy_ip(adv: AdvertV3, src=None):
    src = src or src_of(adv)
    if src.version == 4:
        return IP(src=str(src), dst="224.0.0.18", ttl=255, tos=0xC0, proto=112)
    return IPv6(src=str(src), dst="ff02::12", hlim=255, tc=0xC0, nh=112)


# ---- checksum ----------------------------------------------------------------------------


def test_pseudo_header_layouts():
    assert pseudo_header(SRC4, GROUP4, 20) == SRC4.packed + GROUP4.packed + bytes([0, 112, 0, 20])
    ph6 = pseudo_header(SRC6, VRRP_GROUP_V6, 24)
    assert len(ph6) == 40
    assert ph6 == SRC6.packed + VRRP_GROUP_V6.packed + (24).to_bytes(4, "big") + bytes([0, 0, 0, 112])


@pytest.mark.parametrize("src,dst", [(SRC4, GROUP4), (SRC6, VRRP_GROUP_V6)], ids=["ipv4", "ipv6"])
def test_checksum_covers_the_pseudo_header(src, dst):
    adv = AdvertV3(vrid=7, priority=100, addresses=(VIPS4 if src.version == 4 else VIPS6)[:1])
    msg = build_advert_v3(adv, src, dst)
    assert checksum_v3(msg, src, dst) == 0
    other = A4("192.0.2.11") if src.version == 4 else A6("fe80::11")
    assert checksum_v3(msg, other, dst) != 0  # a different source fails it
    assert checksum(msg) != 0  # and the message alone does not verify


def test_ipv4_checksum_without_pseudo_header_is_the_v2_sum():
    adv = AdvertV3(vrid=7, priority=100, addresses=VIPS4)
    msg = build_advert_v3(adv, SRC4, ipv4_pseudo_header=False)
    assert checksum(msg) == 0
    assert checksum_v3(msg, SRC4, GROUP4) != 0
    # IPv6 always has its pseudo-header: the option does not apply
    adv6 = AdvertV3(vrid=7, priority=100, addresses=VIPS6)
    assert build_advert_v3(adv6, SRC6, ipv4_pseudo_header=False) == build_advert_v3(adv6, SRC6)


# ---- golden bytes from scapy's VRRPv3 layer -----------------------------------------------------

GOLDEN = [
    AdvertV3(vrid=1, priority=100, addresses=(A4("10.0.0.1"),)),
    AdvertV3(vrid=255, priority=255, addresses=VIPS4, max_adver_int=1),
    AdvertV3(vrid=42, priority=0, addresses=VIPS4[:2], max_adver_int=4095),
    AdvertV3(vrid=9, priority=200, addresses=(A6("fe80::1"),), max_adver_int=100),
    AdvertV3(vrid=200, priority=1, addresses=VIPS6, max_adver_int=1),
    AdvertV3(vrid=3, priority=254, addresses=VIPS6[:2], max_adver_int=4095),
]
ids = [f"ipv{a.addresses[0].version}-vrid{a.vrid}-prio{a.priority}-{a.max_adver_int}cs" for a in GOLDEN]


@pytest.mark.parametrize("adv", GOLDEN, ids=ids)
def test_message_bytes_match_scapy(adv):
    src = src_of(adv)
    theirs = bytes(scapy_ip(adv) / scapy_v3(adv))[20 if src.version == 4 else 40 :]
    ours = build_advert_v3(adv, src)
    assert ours == theirs
    # scapy reads ours field by field
    s = (IP if src.version == 4 else IPv6)(bytes(scapy_ip(adv) / Raw(ours)))[VRRPv3]
    assert (s.version, s.type, s.vrid, s.priority, s.ipcount, s.res, s.adv) == (
        3, 1, adv.vrid, adv.priority, len(adv.addresses), 0, adv.max_adver_int,
    )
    assert [str(a) for a in adv.addresses] == [str(type(adv.addresses[0])(a)) for a in s.addrlist]
    # scapy's bytes parse to the same advert
    assert parse_advert_v3(theirs, src) == dataclasses.replace(adv, src=src)


@pytest.mark.parametrize("adv", GOLDEN, ids=ids)
def test_frame_bytes_match_scapy(adv):
    src = src_of(adv)
    fam = src.version
    mac = vmac(adv.vrid, fam)
    ours = build_frame_v3(adv, src, mac, ident=77)
    ip = scapy_ip(adv)
    if fam == 4:
        ip.id = 77
    theirs = bytes(Ether(dst="01:00:5e:00:00:12" if fam == 4 else "33:33:00:00:00:12", src=P.mac_str(mac)) / ip / scapy_v3(adv))
    assert ours == theirs
    e = Ether(ours)
    assert e.src == P.mac_str(mac) == ("00:00:5e:00:01:" if fam == 4 else "00:00:5e:00:02:") + f"{adv.vrid:02x}"
    if fam == 4:
        assert e.type == 0x0800 and e[IP].ttl == 255 and e[IP].dst == "224.0.0.18"
    else:
        assert e.type == 0x86DD and e[IPv6].hlim == 255 and e[IPv6].dst == "ff02::12" and e[IPv6].nh == 112
        assert e[IPv6].plen == 8 + 16 * len(adv.addresses)
    assert parse_frame_with(ours, V3Codec(fam)) == dataclasses.replace(adv, src=src)


def test_interop_ipv4_checksum_without_pseudo_header_matches_scapy():
    """The Cisco/Juniper convention: scapy's VRRPv3 with the plain RFC 1071 sum of the message."""
    adv = GOLDEN[1]
    raw = bytearray(bytes(IP(src=str(SRC4), dst="224.0.0.18", proto=112) / scapy_v3(adv, chksum=0))[20:])
    raw[6:8] = struct.pack("!H", scapy_checksum(bytes(raw)))
    assert build_advert_v3(adv, SRC4, ipv4_pseudo_header=False) == bytes(raw)
    pkt = bytes(IP(src=str(SRC4), dst="224.0.0.18", ttl=255, proto=112) / Raw(bytes(raw)))
    # an instance configured for it accepts it ...
    assert parse_ipv4_packet_v3(pkt, ipv4_pseudo_header=False) == dataclasses.replace(adv, src=SRC4)
    assert parse_ipv4(pkt, V3Codec(4, ipv4_pseudo_header=False)) == dataclasses.replace(adv, src=SRC4)
    # ... one with the default refuses it, and says why
    r = parse_ipv4_packet_v3(pkt)
    assert r.reason is Reason.CHECKSUM and "only without the IPv4 pseudo-header" in r.detail
    # and the other way round
    std = bytes(IP(src=str(SRC4), dst="224.0.0.18", ttl=255, proto=112) / scapy_v3(adv))
    assert parse_ipv4_packet_v3(std) == dataclasses.replace(adv, src=SRC4)
    r = parse_ipv4_packet_v3(std, ipv4_pseudo_header=False)
    assert r.reason is Reason.CHECKSUM and "only with the IPv4 pseudo-header" in r.detail
    # a checksum wrong both ways says neither
    bad = bytearray(std)
    bad[-1] ^= 1
    r = parse_ipv4_packet_v3(bytes(bad))
    assert r.reason is Reason.CHECKSUM and r.detail == "VRRPv3 checksum does not verify"


def test_ipv4_pseudo_header_uses_the_packet_destination():
    """A sender to another destination (unicast VRRP) checksums with it: so do we."""
    adv = GOLDEN[0]
    to = A4("192.0.2.99")
    pkt = bytes(IP(src=str(SRC4), dst=str(to), ttl=255, proto=112) / scapy_v3(adv))
    assert parse_ipv4_packet_v3(pkt) == dataclasses.replace(adv, src=SRC4)
    assert parse_advert_v3(pkt[20:], SRC4, GROUP4).reason is Reason.CHECKSUM


def test_ipv6_destination_defaults_to_the_group():
    adv = GOLDEN[3]
    msg = build_advert_v3(adv, SRC6)
    assert parse_advert_v3(msg, SRC6) == parse_advert_v3(msg, SRC6, VRRP_GROUP_V6) == dataclasses.replace(adv, src=SRC6)
    assert parse_advert_v3(msg, SRC6, A6("ff02::1")).reason is Reason.CHECKSUM


# ---- tshark --------------------------------------------------------------------------------


def _tshark(pcap, fields, prefs=()):
    tshark = shutil.which("tshark")
    cmd = [tshark, "-n", "-r", str(pcap), "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    for p in prefs:
        cmd += ["-o", p]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.strip().splitlines()]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_our_v3_frames(tmp_path):
    from scapy.utils import wrpcap

    frames = [
        build_frame_v3(GOLDEN[1], SRC4, vmac(255), ident=1),
        build_frame_v3(GOLDEN[4], SRC6, vmac(200, 6)),
        build_frame_v3(GOLDEN[2], SRC4, vmac(42), ipv4_pseudo_header=False),
    ]
    bad = bytearray(build_frame_v3(GOLDEN[3], SRC6, vmac(9, 6)))
    bad[-1] ^= 0x01
    frames.append(bytes(bad))
    pcap = tmp_path / "v3.pcap"
    wrpcap(str(pcap), [Ether(f) for f in frames])
    fields = ["vrrp.version", "vrrp.virt_rtr_id", "vrrp.prio", "vrrp.addr_count", "vrrp.short_adver_int",
              "vrrp.checksum.status"]
    rows = _tshark(pcap, fields)
    assert rows == [
        ["3", "255", "255", "3", "1", "1"],
        ["3", "200", "1", "3", "1", "1"],
        ["3", "42", "0", "2", "4095", "0"],  # Wireshark's default sums the IPv4 pseudo-header too
        ["3", "9", "200", "1", "100", "0"],  # the corrupted one
    ]
    # Wireshark's "V3 checksum as in V2" (IPv4 only) flips the two IPv4 conventions
    rows = _tshark(pcap, ["vrrp.checksum.status"], ["vrrp.v3_checksum_as_in_v2:TRUE"])
    assert [r[0] for r in rows] == ["0", "1", "1", "0"]
    ttl = _tshark(pcap, ["ip.ttl", "ipv6.hlim"])
    assert [[x for x in r if x] for r in ttl] == [["255"]] * 4


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_our_neighbour_advertisements(tmp_path):
    from scapy.utils import wrpcap

    frames = [build_unsolicited_na(a, vmac(9, 6)) for a in VIPS6]
    pcap = tmp_path / "na.pcap"
    wrpcap(str(pcap), [Ether(f) for f in frames])
    rows = _tshark(pcap, ["icmpv6.type", "icmpv6.checksum.status", "icmpv6.nd.na.flag.r", "icmpv6.nd.na.flag.s",
                          "icmpv6.nd.na.flag.o", "icmpv6.nd.na.target_address", "icmpv6.opt.linkaddr", "ipv6.hlim",
                          "ipv6.dst"])
    assert rows == [["136", "1", "1", "0", "1", str(a), "00:00:5e:00:02:09", "255", "ff02::1"] for a in VIPS6]


# ---- round trips -------------------------------------------------------------------------------

v4 = st.integers(0, 2**32 - 1).map(A4)
v6 = st.integers(0, 2**128 - 1).map(A6)


@st.composite
def adverts_v3(draw):
    family = draw(st.sampled_from([4, 6]))
    addr = v4 if family == 4 else v6
    return AdvertV3(
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        addresses=tuple(draw(st.lists(addr, min_size=1, max_size=20))),
        max_adver_int=draw(st.integers(1, 4095)),
    ), draw(addr)


@given(adverts_v3(), st.booleans())
def test_round_trip(pair, pseudo):
    adv, src = pair
    got = parse_advert_v3(build_advert_v3(adv, src, ipv4_pseudo_header=pseudo), src, ipv4_pseudo_header=pseudo)
    assert got == dataclasses.replace(adv, src=src)
    codec = codec_for(3, src.version, pseudo)
    frame = codec.build_frame(adv, src, codec.vmac(adv.vrid), ident=5)
    assert parse_frame_with(frame, codec) == dataclasses.replace(adv, src=src)
    assert parse_frame_with(frame.ljust(60, b"\0") + bytes(5), codec) == dataclasses.replace(adv, src=src)


def test_interval_property():
    assert AdvertV3(1, 100, VIPS4, max_adver_int=1).interval == 0.01
    assert AdvertV3(1, 100, VIPS4, max_adver_int=4095).interval == 40.95
    assert Advert(1, 100, VIPS4, advert_interval=3).interval == 3.0
    assert (AdvertV3.version, Advert.version) == (3, 2)


@pytest.mark.parametrize(
    "bad",
    [dict(vrid=0), dict(vrid=256), dict(priority=-1), dict(priority=256), dict(max_adver_int=0),
     dict(max_adver_int=4096), dict(addresses=()), dict(addresses=tuple(A4(i) for i in range(256))),
     dict(addresses=(VIPS4[0], VIPS6[1]))],
    ids=lambda b: next(iter(b)) + "=" + str(next(iter(b.values())))[:20],
)
def test_build_rejects_out_of_range(bad):
    adv = dataclasses.replace(AdvertV3(vrid=1, priority=100, addresses=VIPS4[:1]), **bad)
    with pytest.raises(ValueError):
        build_advert_v3(adv, SRC4)


def test_build_rejects_family_mismatch_with_source():
    with pytest.raises(ValueError):
        build_advert_v3(AdvertV3(1, 100, VIPS6), SRC4)


def test_reserved_bits_are_ignored_on_receive():
    raw = bytearray(build_advert_v3(GOLDEN[0], SRC4))
    raw[4] |= 0xF0  # rsvd
    raw[6:8] = b"\0\0"
    raw[6:8] = struct.pack("!H", checksum_v3(bytes(raw), SRC4, GROUP4))
    assert parse_advert_v3(bytes(raw), SRC4) == dataclasses.replace(GOLDEN[0], src=SRC4)
    assert build_advert_v3(GOLDEN[0], SRC4)[4] >> 4 == 0  # and zero when we send


# ---- receive checks in RFC 5798 §7.1 order ------------------------------------------------------------


def make_message(faults: set[str], family: int) -> tuple[bytes, object, int]:
    """(VRRP message, source, ttl) with the given packet-level faults and no other."""
    src = SRC4 if family == 4 else SRC6
    adv = AdvertV3(vrid=5, priority=100, addresses=(VIPS4 if family == 4 else VIPS6)[:1])
    p = bytearray(build_advert_v3(adv, src))
    if "version" in faults:
        p[0] = (2 << 4) | (p[0] & 0x0F)
    if "type" in faults:
        p[0] = (p[0] & 0xF0) | 2
    if "count" in faults:
        p[3] = 4  # four addresses announced, one present
    p[6:8] = b"\0\0"
    p[6:8] = struct.pack("!H", checksum_v3(bytes(p), src, P.VRRP_GROUP if family == 4 else VRRP_GROUP_V6))
    if "checksum" in faults:
        p[-1] ^= 0x55
    if "short" in faults:
        p = p[:6]
    return bytes(p), src, 64 if "ttl" in faults else 255


ORDER = [
    ("ttl", Reason.TTL),
    ("version", Reason.VERSION),
    ("short", Reason.LENGTH),
    ("count", Reason.LENGTH),
    ("checksum", Reason.CHECKSUM),
    ("type", Reason.TYPE),
]


@pytest.mark.parametrize("family", [4, 6])
def test_clean_message_is_accepted(family):
    msg, src, ttl = make_message(set(), family)
    assert isinstance(parse_advert_v3(msg, src, None, ttl), AdvertV3)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("fault,reason", ORDER)
def test_single_fault_reason(fault, reason, family):
    msg, src, ttl = make_message({fault}, family)
    r = parse_advert_v3(msg, src, None, ttl)
    assert isinstance(r, Rejected)
    assert r.reason is reason
    assert (r.src, r.vrid) == (src, 5)
    assert r.detail


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    "first,second",
    [(a, b) for a, b in itertools.combinations(ORDER, 2) if {a[0], b[0]} != {"short", "count"}],
    ids=lambda x: x[0],
)
def test_earlier_check_wins(first, second, family):
    msg, src, ttl = make_message({first[0], second[0]}, family)
    assert parse_advert_v3(msg, src, None, ttl).reason is first[1]


def test_hop_limit_details_and_unknown_hop_limit():
    msg, src, _ = make_message(set(), 6)
    r = parse_advert_v3(msg, src, None, 1)
    assert r.reason is Reason.TTL and "IPv6 hop limit 1" in r.detail
    r = parse_advert_v3(msg, src, None, None)
    assert r.reason is Reason.TTL and "IPV6_HOPLIMIT" in r.detail
    msg4, src4, _ = make_message(set(), 4)
    assert "IP TTL 254" in parse_advert_v3(msg4, src4, None, 254).detail


def test_ipv6_message_needs_16_bytes_per_address():
    msg, src, ttl = make_message(set(), 6)
    r = parse_advert_v3(msg[:-1], src, None, ttl)
    assert r.reason is Reason.LENGTH and "1 IPv6 addresses need 24" in r.detail


def test_tiny_messages():
    assert parse_advert_v3(b"", SRC4).reason is Reason.LENGTH
    assert parse_advert_v3(b"", SRC4).vrid is None
    assert parse_advert_v3(b"\x31", SRC4).reason is Reason.LENGTH
    assert parse_advert_v3(b"\x21", SRC6).reason is Reason.VERSION
    r = parse_advert_v3(b"\x31\x09\x64", SRC6)
    assert (r.reason, r.vrid) == (Reason.LENGTH, 9)


def test_ipv4_packet_entry_point():
    pkt = bytes(IP(src=str(SRC4), dst="224.0.0.18", ttl=255, proto=112, options=[b"\x94\x04\x00\x00"])
                / scapy_v3(GOLDEN[0]))
    assert pkt[0] & 0x0F == 6  # the options are there and skipped
    assert parse_ipv4_packet_v3(pkt) == dataclasses.replace(GOLDEN[0], src=SRC4)
    assert parse_ipv4_packet_v3(pkt + bytes(9)) == dataclasses.replace(GOLDEN[0], src=SRC4)  # link padding
    assert parse_ipv4_packet_v3(pkt[:19]).reason is Reason.LENGTH
    ttl64 = bytes(IP(src=str(SRC4), dst="224.0.0.18", ttl=64, proto=112) / scapy_v3(GOLDEN[0]))
    assert parse_ipv4_packet_v3(ttl64).reason is Reason.TTL


def test_split_ipv6():
    payload = build_advert_v3(GOLDEN[3], SRC6)
    pkt = build_ipv6_header(len(payload), SRC6, VRRP_GROUP_V6, 112, 255) + payload + bytes(4)
    d = split_ipv6(pkt)
    assert (d.payload, d.src, d.dst, d.hop_limit, d.next_header) == (payload, SRC6, VRRP_GROUP_V6, 255, 112)
    assert split_ipv6(pkt[:39]).reason is Reason.LENGTH
    assert split_ipv6(b"\x45" + pkt[1:]).reason is Reason.LENGTH


def test_parse_frame_with_rejects_other_ethertypes_and_extension_headers():
    frame = build_frame_v3(GOLDEN[3], SRC6, vmac(9, 6))
    assert parse_frame_with(frame[:12] + b"\x08\x06" + frame[14:], V3Codec(6)).reason is Reason.LENGTH
    hbh = bytearray(frame)
    hbh[14 + 6] = 0  # next header: hop-by-hop options
    assert "next header 0" in parse_frame_with(bytes(hbh), V3Codec(6)).detail
    assert parse_frame_with(frame[:10], V3Codec(6)).reason is Reason.LENGTH


# ---- fuzz ------------------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=200), st.sampled_from([SRC4, SRC6]), st.integers(0, 255) | st.none(), st.booleans())
def test_parse_never_raises(data, src, ttl, pseudo):
    assert isinstance(parse_advert_v3(data, src, None, ttl, pseudo), (AdvertV3, Rejected))
    assert isinstance(parse_ipv4_packet_v3(data, pseudo), (AdvertV3, Rejected))
    for codec in (V2Codec(), V3Codec(4, pseudo), V3Codec(6)):
        assert isinstance(parse_frame_with(data, codec), (Advert, AdvertV3, Rejected))
        assert isinstance(parse_frame_with(bytes(12) + b"\x86\xdd" + data, codec), (Advert, AdvertV3, Rejected))


@settings(max_examples=300)
@given(adverts_v3(), st.integers(0, 400), st.integers(0, 255))
def test_single_byte_corruption_never_passes_unnoticed(pair, pos, value):
    """A changed byte is either rejected or, if accepted, decodes to what the bytes say."""
    adv, src = pair
    raw = bytearray(build_advert_v3(adv, src))
    pos %= len(raw)
    raw[pos] = value
    r = parse_advert_v3(bytes(raw), src)
    if isinstance(r, AdvertV3):
        # the reserved bits are the only thing a rebuild does not reproduce
        rebuilt = bytearray(build_advert_v3(dataclasses.replace(r, src=None), src))
        rebuilt[4] |= raw[4] & 0xF0
        rebuilt[6:8] = raw[6:8]
        assert bytes(rebuilt) == bytes(raw)


# ---- the codec strategies ---------------------------------------------------------------------------------


def test_codec_for():
    assert codec_for(2) == V2Codec()
    assert codec_for(3, 4) == V3Codec(4, True)
    assert codec_for(3, 6, ipv4_pseudo_header=False) == V3Codec(6, False)
    for bad in ((2, 6), (1, 4), (4, 4), (3, 5)):
        with pytest.raises(ValueError):
            codec_for(*bad)
    assert (V2Codec().vmac(7), V3Codec(4).vmac(7), V3Codec(6).vmac(7)) == (vmac(7), vmac(7), vmac(7, 6))
    assert V3Codec(6).group == VRRP_GROUP_V6 and V3Codec(4).group == P.VRRP_GROUP == V2Codec().group


def test_each_codec_refuses_the_other_version():
    v2 = build_ip_packet(build_advert(Advert(vrid=5, priority=100, addresses=VIPS4[:1])), SRC4)
    v3 = bytes(IP(src=str(SRC4), dst="224.0.0.18", ttl=255, proto=112) / scapy_v3(GOLDEN[0]))
    assert isinstance(parse_ipv4(v2, V2Codec()), Advert)
    assert isinstance(parse_ipv4(v3, V3Codec(4)), AdvertV3)
    r = parse_ipv4(v2, V3Codec(4))
    assert r.reason is Reason.VERSION and "expected 3" in r.detail
    r = parse_ipv4(v3, V2Codec())
    assert r.reason is Reason.VERSION and "expected 2" in r.detail
    assert V2Codec().parse(v2[20:], SRC4, GROUP4, None).reason is Reason.TTL
    assert peek_vrid(v2[20:]) == 5 and peek_vrid(v3[20:]) == 1 and peek_vrid(b"\x31") is None


def test_v2_codec_frames_are_the_v2_frames():
    adv = Advert(vrid=5, priority=100, addresses=VIPS4)
    assert V2Codec().build_frame(adv, SRC4, vmac(5), 9) == P.build_frame(adv, SRC4, vmac(5), 9)
    assert parse_frame_with(P.build_frame(adv, SRC4, vmac(5), 9), V2Codec()) == dataclasses.replace(adv, src=SRC4)


# ---- unsolicited neighbour advertisements --------------------------------------------------------------------


@pytest.mark.parametrize("target", VIPS6)
def test_unsolicited_na_matches_scapy(target):
    mac = vmac(42, 6)
    ours = build_unsolicited_na(target, mac)
    theirs = bytes(
        Ether(dst="33:33:00:00:00:01", src=P.mac_str(mac))
        / IPv6(src=str(target), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(R=1, S=0, O=1, tgt=str(target))
        / ICMPv6NDOptDstLLAddr(lladdr=P.mac_str(mac))
    )
    assert ours == theirs
    e = Ether(ours)
    assert e[IPv6].hlim == 255 and e[IPv6].dst == "ff02::1" and e[IPv6].nh == 58
    na = e[ICMPv6ND_NA]
    assert (na.type, na.code, na.R, na.S, na.O) == (136, 0, 1, 0, 1)
    assert A6(na.tgt) == target
    assert e[ICMPv6NDOptDstLLAddr].lladdr == "00:00:5e:00:02:2a"
    # the checksum is right: scapy recomputes the same one
    cksum = na.cksum
    del e[ICMPv6ND_NA].cksum
    assert Ether(bytes(e))[ICMPv6ND_NA].cksum == cksum


def test_unsolicited_na_options():
    t = VIPS6[1]
    na = Ether(build_unsolicited_na(t, vmac(1, 6), src=SRC6, router=False))
    assert na[IPv6].src == str(SRC6)
    assert (na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].O) == (0, 1)
    with pytest.raises(ValueError):
        build_unsolicited_na(A4("192.0.2.1"), vmac(1, 6))
    with pytest.raises(ValueError):
        build_unsolicited_na(t, b"\0" * 5)


def test_announcers():
    assert announcer_for(4) == ArpAnnouncer() and announcer_for(6) == NdAnnouncer()
    with pytest.raises(ValueError):
        announcer_for(5)
    garps = ArpAnnouncer().frames(VIPS4, vmac(3))
    assert [Ether(f)[ARP].psrc for f in garps] == [str(a) for a in VIPS4]
    assert garps == [P.build_garp(a, vmac(3)) for a in VIPS4]
    nas = NdAnnouncer().frames(VIPS6, vmac(3, 6))
    assert [A6(Ether(f)[ICMPv6ND_NA].tgt) for f in nas] == list(VIPS6)


def test_vmac_per_family():
    assert vmac(1) == vmac(1, 4) == bytes.fromhex("00005e000101")
    assert vmac(1, 6) == bytes.fromhex("00005e000201")
    assert vmac(255, 6) == bytes.fromhex("00005e0002ff")
