"""vrrpd speaking VRRPv3 (RFC 5798) on a real kernel, IPv4 and IPv6: election, hard and
graceful takeover timed on the wire, learned intervals, neighbour advertisements and the
host's neighbour entry, Accept_Mode, and malformed v3 adverts counted per reason.

Same topology as test_vrrpd.py (r1, r2, h on one bridge, VRID 7), with IPv6 on: each
host has its link-local address and 2001:db8::/64. Adverts every 0.1 s, so a takeover
takes Master_Down_Interval = 3 x 0.1 + (256 - 100) x 0.1 / 256 = 0.361 s.
"""

from __future__ import annotations

import ipaddress
import signal
import struct
import sys
import time

import pytest

from halab import wait_for
from halab.vrrp import read_pcap, wire_events
from vrrpd.machine import master_down_interval_v3, skew_time_v3
from vrrpd.packet import VRRP_GROUP, VRRP_GROUP_MAC, Advert, build_advert, build_ip_packet, mac_str, vmac
from vrrpd.packet_v3 import (
    VRRP_GROUP_MAC_V6,
    VRRP_GROUP_V6,
    AdvertV3,
    build_advert_v3,
    build_ipv6_header,
)
from vrrpd.status import COUNTER_NAMES

from .conftest import ADDRS, VIP, VRID

pytestmark = pytest.mark.netns

INTERVAL = 0.1
TOL = 0.150
VMAC4 = mac_str(vmac(VRID, 4))
VMAC6 = mac_str(vmac(VRID, 6))
VIPS6 = ["fe80::1/64", "2001:db8::100/64"]
VIP6 = "2001:db8::100"
ADDRS6 = {"r1": "2001:db8::2", "r2": "2001:db8::3", "h": "2001:db8::4"}
ERROR_COUNTERS = [n for n in COUNTER_NAMES if n.endswith(("errors", "failures", "discards")) and n != "send_errors"]


def v3(priority: int, **kw) -> dict:
    return {"priority": priority, "version": 3, "advert_interval": INTERVAL, **kw}


def ipv6(pair) -> None:
    """Global addresses on the bridge (the link-local ones are there already)."""
    for name, addr in ADDRS6.items():
        getattr(pair, name).ip("-6", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad")


def start6(pair, router: str, priority: int, **kw):
    return pair.start(router, priority, version=3, advert_interval=INTERVAL, virtual_addresses=VIPS6, **kw)


def adverts(events, src, prio=None):
    return [e for e in events if e.kind == "advert" and e.src_ip == src and (prio is None or e.priority == prio)]


def link_local(host) -> str:
    for link in host._ip_json("-6", "addr", "show", "dev", "eth0", "scope", "link"):
        for a in link.get("addr_info", []):
            if a.get("scope") == "link" and "local" in a:
                return a["local"]
    raise AssertionError(f"{host.name} has no link-local address")


def test_v3_ipv4_election_hard_and_graceful_takeover(pair):
    r1 = pair.start("r1", **v3(200))
    r2 = pair.start("r2", **v3(100))
    r1.wait_state("V", "master", timeout=8)
    r2.wait_state("V", "backup")
    st2 = r2.status()["V"]
    assert st2["version"] == 3 and st2["master_adver_interval"] == pytest.approx(INTERVAL)
    assert st2["master_down_interval"] == pytest.approx(master_down_interval_v3(INTERVAL, 100))
    assert pair.r1.has_addr(f"vrrp{VRID}.eth0", VIP) and not pair.r2.ipv4_addrs(f"vrrp{VRID}.eth0")
    cap = pair.capture("v3.pcap")
    time.sleep(1.0)
    r1.proc.kill()  # no goodbye advert
    r2.wait_state("V", "master", timeout=5)
    time.sleep(0.3)
    cap.stop()
    ev = wire_events(cap.path)
    last_r1 = adverts(ev, ADDRS["r1"], 200)[-1]
    first_r2 = adverts(ev, ADDRS["r2"])[0]
    assert (last_r1.version, first_r2.version) == (3, 3)
    assert last_r1.interval == pytest.approx(INTERVAL) and first_r2.interval == pytest.approx(INTERVAL)
    mdi = master_down_interval_v3(INTERVAL, 100)
    delay = first_r2.time - last_r1.time
    assert abs(delay - mdi) <= TOL, f"takeover {delay:.3f}s after the last advert, expected {mdi:.3f}s"
    assert first_r2.src_mac == VMAC4
    assert [e for e in ev if e.kind == "garp" and e.src_ip == VIP and e.time >= first_r2.time and e.src_mac == VMAC4]
    # Graceful: r1 returns and preempts; SIGTERM makes it send priority 0, and r2 takes
    # over after Skew_Time of the learned interval.
    r1 = pair.start("r1", **v3(200))
    r1.wait_state("V", "master", timeout=5)
    r2.wait_state("V", "backup", timeout=5)
    cap = pair.capture("v3-graceful.pcap")
    time.sleep(0.5)
    r1.proc.signal(signal.SIGTERM)
    r2.wait_state("V", "master", timeout=5)
    time.sleep(0.3)
    cap.stop()
    ev = wire_events(cap.path)
    bye = adverts(ev, ADDRS["r1"], 0)
    assert bye, "no priority-0 advert from r1"
    first_r2 = [e for e in adverts(ev, ADDRS["r2"]) if e.time > bye[0].time][0]
    skew = skew_time_v3(100, INTERVAL)
    assert abs(first_r2.time - bye[0].time - skew) <= TOL
    assert r1.proc.wait(5) == 0


def test_v3_accept_mode_ipv4(pair):
    """Accept_Mode off (the v3 default): the master forwards but does not answer for the
    VIP; on: it does. ARP for the VIP is answered either way (the host learns the MAC)."""
    r1 = pair.start("r1", **v3(200))
    r1.wait_state("V", "master", timeout=8)
    assert not pair.h.ping(VIP, count=2, timeout=1)
    assert pair.h.neigh(VIP, dev="eth0")[0] == VMAC4
    r1.proc.terminate()
    r1 = pair.start("r1", **v3(200, accept_mode=True))
    r1.wait_state("V", "master", timeout=8)
    assert pair.h.ping(VIP, count=2)


def na_flags(path, target: str) -> list[tuple[str, int]]:
    """(source MAC, flags byte) of each Neighbour Advertisement for `target` in a capture."""
    out = []
    for _ts, frame in read_pcap(path):
        if len(frame) >= 78 and frame[12:14] == b"\x86\xdd" and frame[20] == 58 and frame[54] == 136:
            if str(ipaddress.IPv6Address(frame[62:78])) == target:
                out.append((":".join(f"{b:02x}" for b in frame[6:12]), frame[58]))
    return out


def test_v3_ipv6_election_neighbour_advertisements_and_takeover(pair):
    ipv6(pair)
    r1 = start6(pair, "r1", 200)  # Accept_Mode off: forwards, does not answer
    r2 = start6(pair, "r2", 100, accept_mode=True)
    r1.wait_state("V", "master", timeout=10)
    r2.wait_state("V", "backup", timeout=5)
    ll1, ll2 = link_local(pair.r1), link_local(pair.r2)
    # r2 is backup from its start; it knows the master once it has heard an advert (CI
    # caught the status read before the first one).
    wait_for(lambda: r2.status()["V"]["master_ip"] == ll1, timeout=5, what="r2 hearing r1's adverts")
    st1 = r1.status()["V"]
    assert st1["primary_ip"] == ll1
    assert st1["vmac"] == VMAC6 and pair.r1.link_mac(f"vrrp6.{VRID}.eth0") == VMAC6
    assert not pair.h.ping(VIP6, count=2, timeout=1)  # Accept_Mode off on r1
    # ... but it answers neighbour solicitations: the host knows the VIP at the virtual MAC.
    assert pair.h.neigh(VIP6, dev="eth0")[0] == VMAC6
    cap = pair.capture("v3-ipv6.pcap", bpf="ip6 proto 112 or icmp6")
    time.sleep(1.0)
    r1.proc.kill()
    r2.wait_state("V", "master", timeout=5)
    time.sleep(0.5)
    cap.stop()
    ev = wire_events(cap.path)
    last_r1 = adverts(ev, ll1, 200)[-1]
    first_r2 = adverts(ev, ll2)[0]
    assert first_r2.version == 3 and first_r2.src_mac == VMAC6
    mdi = master_down_interval_v3(INTERVAL, 100)
    assert abs(first_r2.time - last_r1.time - mdi) <= TOL
    # Unsolicited NAs for both VIPs from the virtual MAC: Router set, Solicited clear, Override set.
    for vip in ("fe80::1", VIP6):
        nas = [f for mac, f in na_flags(cap.path, vip) if mac == VMAC6]
        assert nas and all(f & 0xE0 == 0xA0 for f in nas), (vip, na_flags(cap.path, vip))
    wait_for(lambda: pair.lab.fdb_port(pair.br, VMAC6) == "r2-eth0", timeout=3, what="fdb to move to r2")
    assert pair.h.ping(VIP6, count=2)  # r2 accepts
    assert pair.h.neigh(VIP6, dev="eth0")[0] == VMAC6
    # Backup: the VIPs are on no up interface of r1's (r1 is dead); on r2 they are, nodad.
    addrs = {a["local"]: a for link in pair.r2._ip_json("-6", "addr", "show", "dev", f"vrrp6.{VRID}.eth0")
             for a in link["addr_info"] if "local" in a}
    assert {"fe80::1", VIP6} <= set(addrs) and all("tentative" not in a for a in addrs.values())


# ---- malformed VRRPv3 adverts ----------------------------------------------------------

SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for h in sys.argv[1:]:
    s.send(bytes.fromhex(h))
"""
H_MAC = bytes.fromhex("020000000004")


def inject(host, frames: list[bytes]) -> None:
    host.run([sys.executable, "-c", SENDER, *(f.hex() for f in frames)], check=True)


def frame4(payload: bytes, ttl: int = 255) -> bytes:
    ip = bytearray(build_ip_packet(payload, ipaddress.IPv4Address(ADDRS["h"])))
    ip[8] = ttl
    ip[10:12] = b"\0\0"
    from vrrpd.packet import checksum
    ip[10:12] = struct.pack("!H", checksum(bytes(ip[:20])))
    return VRRP_GROUP_MAC + H_MAC + b"\x08\x00" + bytes(ip)


def frame6(payload: bytes, src: ipaddress.IPv6Address, hop: int = 255) -> bytes:
    return VRRP_GROUP_MAC_V6 + H_MAC + b"\x86\xdd" + build_ipv6_header(len(payload), src, VRRP_GROUP_V6, 112, hop) + payload


def v3_variants(family: int, src, vips: tuple) -> dict[str, bytes]:
    def adv(vrid=VRID, prio=50, cs=10, addrs=vips) -> bytes:
        return build_advert_v3(AdvertV3(vrid, prio, addrs, cs), src)

    good = adv()
    dst = VRRP_GROUP if family == 4 else VRRP_GROUP_V6

    def resum(b: bytes) -> bytes:
        from vrrpd.packet_v3 import checksum_v3
        b = b[:6] + b"\0\0" + b[8:]
        return b[:6] + struct.pack("!H", checksum_v3(b, src, dst)) + b[8:]

    wrap = (lambda p, ttl=255: frame4(p, ttl)) if family == 4 else (lambda p, ttl=255: frame6(p, src, ttl))
    v2 = build_advert(Advert(VRID, 50, tuple(ipaddress.IPv4Address(a) for a in ("10.0.0.100",)), 1)) if family == 4 \
        else resum(bytes([0x21]) + good[1:])
    out = {
        "ttl_errors": wrap(good, 254),
        "version_errors": wrap(v2),
        "length_errors": wrap(resum(good[:3] + bytes([len(vips) + 1]) + good[4:])),
        "checksum_errors": wrap(good[:6] + bytes([good[6] ^ 0xFF, good[7]]) + good[8:]),
        "type_errors": wrap(resum(bytes([0x32]) + good[1:])),
        "vrid_errors": wrap(adv(vrid=99)),
        "interval_errors": wrap(resum(good[:4] + b"\0\0" + good[6:])),  # Max Adver Int 0: dropped
    }
    return out


def errors(d) -> dict[str, int]:
    c = d.counters("V")
    return {n: c[n] for n in ERROR_COUNTERS}


@pytest.mark.parametrize("family", [4, 6])
def test_v3_malformed_adverts_count_exactly_their_reason(pair, family):
    if family == 6:
        ipv6(pair)
        r1, r2 = start6(pair, "r1", 200), start6(pair, "r2", 100)
        src = ipaddress.IPv6Address(link_local(pair.h))
        vips = tuple(ipaddress.ip_interface(v).ip for v in VIPS6)
    else:
        r1, r2 = pair.start("r1", **v3(200)), pair.start("r2", **v3(100))
        src, vips = ipaddress.IPv4Address(ADDRS["h"]), (ipaddress.IPv4Address(VIP),)
    r1.wait_state("V", "master", timeout=10)
    r2.wait_state("V", "backup", timeout=5)
    for reason, f in v3_variants(family, src, vips).items():
        before = {"r1": errors(r1), "r2": errors(r2)}
        inject(pair.h, [f])
        time.sleep(0.3)
        for name, d in (("r1", r1), ("r2", r2)):
            after = errors(d)
            expected = dict(before[name], **{reason: before[name][reason] + 1})
            assert after == expected, f"{reason} on {name}: {after} != {expected}"
        assert r1.state("V") == "master" and r2.state("V") == "backup", f"state changed after {reason}"
    # Another interval, lower priority: counted in interval_errors and accepted (v3 learns
    # intervals), no state change on either.
    before = r2.counters("V")
    other = build_advert_v3(AdvertV3(VRID, 1, vips, 25), src)
    inject(pair.h, [frame4(other) if family == 4 else frame6(other, src)])
    time.sleep(0.3)
    after = r2.counters("V")
    assert after["interval_errors"] == before["interval_errors"] + 1
    assert after["adverts_rx"] > before["adverts_rx"]
    assert r1.state("V") == "master" and r2.state("V") == "backup"


def test_garp_refresh_while_master(pair):
    """garp_refresh (keepalived's garp_master_refresh): while master, one more gratuitous
    ARP per VIP every garp_refresh seconds, long after the bursts of the takeover."""
    r1 = pair.start("r1", **v3(200, garp_refresh=0.4, garp_count=1, garp_repeat_delay=0))
    r1.wait_state("V", "master", timeout=8)
    time.sleep(0.5)
    cap = pair.capture("refresh.pcap", bpf="arp")
    time.sleep(2.1)
    cap.stop()
    garps = [e.time for e in wire_events(cap.path) if e.kind == "garp" and e.src_ip == VIP and e.src_mac == VMAC4]
    assert 4 <= len(garps) <= 7, garps
    assert all(0.3 < b - a < 0.6 for a, b in zip(garps, garps[1:])), garps


def test_ipv6_instance_without_link_local_is_in_fault_until_it_has_one(pair):
    """The advert source of an IPv6 instance is its interface's link-local address: with
    IPv6 off on the interface the instance is in FAULT and says why; once the address is
    there (an rtnetlink notification) it starts, and the peer's interface going down is
    tracked as for IPv4."""
    ipv6(pair)
    pair.r1.sysctl("net.ipv6.conf.eth0.disable_ipv6", 1)
    r1 = start6(pair, "r1", 200)
    r1.wait_state("V", "fault", timeout=5)
    assert "no IPv6 link-local address on the interface" in r1.status()["V"]["fault_reasons"]
    r2 = start6(pair, "r2", 100)
    r2.wait_state("V", "master", timeout=5)
    pair.r1.sysctl("net.ipv6.conf.eth0.disable_ipv6", 0)  # the link-local address comes back
    r1.wait_state("V", "master", timeout=10)
    r2.wait_state("V", "backup", timeout=5)
    assert r1.status()["V"]["primary_ip"] == link_local(pair.r1)
    pair.lab.set_link(pair.r1, "eth0", False)
    r1.wait_state("V", "fault", timeout=5)
    r2.wait_state("V", "master", timeout=5)
