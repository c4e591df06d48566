"""vrrpd and keepalived in the same virtual router: interop on a real kernel.

keepalived (the reference VRRPv2 implementation on Linux) and vrrpd share VRID 7
and VIP 10.0.0.100 in the ``pair`` topology (r1 10.0.0.2, r2 10.0.0.3, host h
10.0.0.4 on bridge "lan").  keepalived runs with its defaults: VRRPv2,
multicast to 224.0.0.18 (no unicast_peer), no ``vrrp_strict``, the VIP on the
parent interface (eth0) and its adverts/GARPs sent from eth0's own MAC; vrrpd
uses its virtual-MAC macvlan.  Neither checks the other's source MAC.

Timings are measured on the wire (a capture on the bridge):

* keepalived master killed (kill -9 of its process group): vrrpd's first advert
  comes Master_Down_Interval (3.609375 s at priority 100) after keepalived's
  last advert, +/- 150 ms.
* vrrpd master stopped with SIGTERM: keepalived's first advert comes Skew_Time
  (0.609375 s at priority 100) after vrrpd's priority-0 advert, +/- 150 ms.
  keepalived is not systematically late: bench/ measured it 0.3-2 ms after
  Skew_Time (docs/benchmarks.md), so no extra margin is needed.
"""

from __future__ import annotations

import shutil
import socket
import struct
import time

import pytest

from halab import wait_for
from halab.daemons import keepalived_vrrp_conf, start_keepalived
from halab.vrrp import read_pcap, wire_events
from vrrpd.machine import master_down_interval, skew_time
from vrrpd.packet import VRRP_PROTO, mac_str, vmac

from .conftest import ADDRS, VIP, VRID

pytestmark = [
    pytest.mark.netns,
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed"),
]

VMAC = mac_str(vmac(VRID))
VMAC_IF = f"vrrp{VRID}.eth0"
TOL = 0.150
PASSWORD = "secret"
# Every counter that says "a received packet was wrong".
ERROR_COUNTERS = (
    "ttl_errors", "version_errors", "length_errors", "checksum_errors", "type_errors",
    "vrid_errors", "owner_discards", "auth_type_errors", "auth_failures",
    "address_list_errors", "interval_errors", "send_errors",
)


def kconf(priority: int, password: str | None = None, vips: list[str] | None = None,
          router_id: str = "k") -> str:
    """keepalived config for our virtual router: eth0, VRID 7, advert_int 1,
    multicast (no unicast_peer), no vrrp_strict, optional PASS authentication."""
    extra = ""
    if password is not None:
        extra = ("    authentication {\n"
                 "        auth_type PASS\n"
                 f"        auth_pass {password}\n"
                 "    }\n")
    text = keepalived_vrrp_conf(iface="eth0", vrid=VRID, priority=priority,
                                vips=vips or [f"{VIP}/24"], advert_int=1,
                                router_id=router_id, extra=extra)
    assert "unicast" not in text and "vrrp_strict" not in text
    return text


def vauth(password: str | None) -> dict:
    return {"auth": {"type": "pass", "password": password}} if password is not None else {}


def adverts(events, src, prio=None):
    return [e for e in events
            if e.kind == "advert" and e.src_ip == src and (prio is None or e.priority == prio)]


def vrrp_frames_from(path, src_ip: str) -> list[tuple[str, str, int]]:
    """(destination MAC, destination IP, TTL) of every VRRP packet from ``src_ip``."""
    out = []
    src = socket.inet_aton(src_ip)
    for _, frame in read_pcap(path):
        if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        if ip[9] == VRRP_PROTO and ip[12:16] == src:
            out.append((mac_str(frame[0:6]), socket.inet_ntoa(ip[16:20]), ip[8]))
    return out


def assert_keepalived_multicast(cap_path, src_ip: str, kproc) -> None:
    """keepalived in the lab really speaks multicast VRRPv2 on eth0."""
    frames = vrrp_frames_from(cap_path, src_ip)
    assert frames, f"no VRRP packet from keepalived at {src_ip}"
    assert set(frames) == {("01:00:5e:00:00:12", "224.0.0.18", 255)}, frames
    log = kproc.read_log()
    assert "multicast, address(224.0.0.18)" in log, "keepalived did not open a multicast socket"
    assert "unicast" not in log.split("Startup complete")[-1].lower()


def no_errors(counters: dict) -> dict:
    return {k: counters[k] for k in ERROR_COUNTERS if counters[k]}


def stays(predicate, seconds: float, what: str, interval: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert predicate(), what
        time.sleep(interval)


def start_keepalived_master(pair, priority: int = 200, **kw):
    """keepalived on r1, waited until it is master (VIP on r1's eth0)."""
    k = start_keepalived(pair.r1, kconf(priority, router_id="r1", **kw))
    wait_for(lambda: pair.r1.has_addr("eth0", VIP), timeout=15, what="keepalived on r1 to become master")
    return k


# ---------------------------------------------------------------------------
# keepalived master, vrrpd backup


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["noauth", "auth-pass"])
def test_vrrpd_backs_up_keepalived_and_takes_over_on_crash(pair, password):
    cap = pair.capture()
    k = start_keepalived_master(pair, 200, password=password)
    # The host talks to the VIP while keepalived holds it (ARP entry -> r1's MAC).
    assert pair.h.ping(VIP)
    assert pair.h.neigh(VIP, dev="eth0")[0] == pair.r1.link_mac("eth0")

    d = pair.start("r2", 100, **vauth(password))
    d.wait_state("V", "backup")
    before = d.counters("V")
    stays(lambda: d.state("V") == "backup", 4.5, "vrrpd left backup under a priority-200 keepalived")
    st = d.status()["V"]
    after = st["counters"]
    assert after["adverts_rx"] >= before["adverts_rx"] + 3
    assert no_errors(after) == {}, f"error counters rose: {no_errors(after)}"
    assert after["adverts_tx"] == 0 and after["became_master"] == 0
    assert st["master_ip"] == ADDRS["r1"]
    assert not pair.r2.ipv4_addrs(VMAC_IF)

    k.kill()  # crash: parent and VRRP child die at once, no priority-0 advert
    # A crashed keepalived leaves its VIP configured; a dead box does not answer
    # for it, so take it away (else r1's kernel would still answer ARP for it).
    pair.r1.ip("addr", "del", f"{VIP}/24", "dev", "eth0")
    d.wait_state("V", "master", timeout=8)
    time.sleep(0.5)
    cap.stop()

    ev = wire_events(cap.path)
    last_k = adverts(ev, ADDRS["r1"])[-1]
    first_v = adverts(ev, ADDRS["r2"])[0]
    assert last_k.priority == 200
    mdi = master_down_interval(1, 100)
    delay = first_v.time - last_k.time
    assert abs(delay - mdi) <= TOL, f"vrrpd took over {delay:.3f}s after keepalived's last advert, expected {mdi:.3f}s"
    assert first_v.src_mac == VMAC and first_v.priority == 100
    garps = [e for e in ev if e.kind == "garp" and e.src_ip == VIP and e.time >= first_v.time]
    assert garps and garps[0].src_mac == VMAC and garps[0].time - first_v.time < 0.1
    assert_keepalived_multicast(cap.path, ADDRS["r1"], k)

    # The GARP moved the host's ARP entry from r1's MAC to the virtual MAC.
    wait_for(lambda: pair.h.neigh(VIP, dev="eth0")[0] == VMAC, timeout=3, what="h's ARP entry to move to the VMAC")
    assert pair.h.ping(VIP, count=2)
    c = d.counters("V")
    assert c["became_master"] == 1 and c["garp_tx"] >= 5
    assert no_errors(c) == {}


# ---------------------------------------------------------------------------
# vrrpd master, keepalived backup


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["noauth", "auth-pass"])
def test_keepalived_backs_up_vrrpd_and_takes_over_on_sigterm(pair, password):
    d = pair.start("r1", 200, **vauth(password))
    d.wait_state("V", "master", timeout=8)
    cap = pair.capture()
    k = start_keepalived(pair.r2, kconf(100, password=password, router_id="r2"))
    wait_for(lambda: "Entering BACKUP STATE" in k.read_log(), timeout=10, what="keepalived to start as backup")
    # Longer than keepalived's own Master_Down_Interval (3.61 s): it hears vrrpd.
    stays(lambda: not pair.r2.has_addr("eth0", VIP) and d.state("V") == "master", 5,
          "keepalived took the VIP from a priority-200 vrrpd master")
    assert "Entering MASTER STATE" not in k.read_log()
    c = d.counters("V")
    assert c["adverts_rx"] == 0  # a keepalived backup is silent
    assert no_errors(c) == {}

    assert d.proc.terminate(timeout=5) == 0  # priority-0 advert, VIP and macvlan removed
    wait_for(lambda: pair.r2.has_addr("eth0", VIP), timeout=5, what="keepalived to take the VIP")
    time.sleep(0.5)
    cap.stop()

    ev = wire_events(cap.path)
    bye = adverts(ev, ADDRS["r1"], prio=0)
    assert len(bye) == 1, "vrrpd sends exactly one priority-0 advert when it leaves"
    first_k = adverts(ev, ADDRS["r2"])[0]
    assert first_k.priority == 100
    delay = first_k.time - bye[0].time
    skew = skew_time(100)
    assert abs(delay - skew) <= TOL, (
        f"keepalived took over {delay:.3f}s after vrrpd's priority-0 advert, expected {skew:.3f}s")
    assert_keepalived_multicast(cap.path, ADDRS["r2"], k)
    assert VMAC_IF not in pair.r1.run(["ip", "-br", "link"]).stdout

    # keepalived announces the VIP with r2's own MAC.
    r2_mac = pair.r2.link_mac("eth0")
    garps = [e for e in ev if e.kind == "garp" and e.src_ip == VIP and e.time >= bye[0].time]
    assert garps and garps[0].src_mac == r2_mac
    assert pair.h.ping(VIP, count=2)
    assert pair.h.neigh(VIP, dev="eth0")[0] == r2_mac


# ---------------------------------------------------------------------------
# authentication mismatch: the counters explain the dual master


@pytest.mark.parametrize("vrrpd_password, counter", [("wrong", "auth_failures"), (None, "auth_type_errors")],
                         ids=["other-password", "no-auth-on-vrrpd"])
def test_auth_mismatch_dual_master_explained_by_counters(pair, vrrpd_password, counter):
    k = start_keepalived_master(pair, 200, password=PASSWORD)
    t0 = time.monotonic()
    d = pair.start("r2", 100, **vauth(vrrpd_password))
    d.wait_state("V", "master", timeout=8)
    # vrrpd heard nothing it could accept, so it waited out its whole Master_Down_Interval.
    assert time.monotonic() - t0 >= master_down_interval(1, 100) - 0.3
    at_master = d.counters("V")
    time.sleep(2.5)
    # Dual master: both hold the VIP...
    assert pair.r1.has_addr("eth0", VIP)
    assert f"{VIP}/24" in pair.r2.ipv4_addrs(VMAC_IF)
    assert d.state("V") == "master" and k.alive()
    # ...and vrrpd's counters say why: every keepalived advert was refused.  Only the
    # ones before the takeover are certain: keepalived 2.2.7 as master restarts its
    # advert timer at each advert it refuses, so once vrrpd advertises every second
    # it sends at most one more advert and then none (observed: no advert from
    # keepalived for 4 s and more while both are master; CI caught the one late
    # advert landing before `at_master` was read).
    c = d.counters("V")
    assert c["adverts_rx"] == 0
    assert at_master[counter] >= 3, at_master
    assert set(no_errors(c)) == {counter}
    assert counter in d.proc.read_log()
    # keepalived refuses vrrpd's adverts too (it stays master despite them).
    assert "Entering BACKUP STATE (init)" in k.read_log()
    assert k.read_log().count("Entering MASTER STATE") == 1


# ---------------------------------------------------------------------------
# address-list mismatch: counted and accepted by default, dropped with strict


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_address_list_mismatch(pair, strict):
    extra_vip = "10.0.0.101/24"
    k = start_keepalived_master(pair, 200, vips=[f"{VIP}/24", extra_vip])
    kw = {"strict": True} if strict else {}
    d = pair.start("r2", 100, **kw)
    d.wait_state("V", "backup")
    if not strict:
        stays(lambda: d.state("V") == "backup", 5, "vrrpd left backup: the advert was not accepted")
        c = d.counters("V")
        assert c["adverts_rx"] >= 4
        assert c["address_list_errors"] == c["adverts_rx"]  # each one counted, each one accepted
        assert set(no_errors(c)) == {"address_list_errors"}
        assert d.status()["V"]["master_ip"] == ADDRS["r1"]
        assert "(accepted)" in d.proc.read_log()
        assert not pair.r2.ipv4_addrs(VMAC_IF)
    else:
        d.wait_state("V", "master", timeout=master_down_interval(1, 100) + 2)
        at_master = d.counters("V")
        time.sleep(2.5)
        c = d.counters("V")
        assert c["adverts_rx"] == 0  # dropped before being accepted
        # Only the adverts before the takeover are certain: once vrrpd advertises, keepalived
        # restarts its advert timer at each advert it refuses and goes silent (see the auth
        # mismatch test above; CI caught this one too).
        assert at_master["address_list_errors"] >= 3
        assert set(no_errors(c)) == {"address_list_errors"}
        assert "strict: dropped" in d.proc.read_log()
        assert f"{VIP}/24" in pair.r2.ipv4_addrs(VMAC_IF)
        assert pair.r1.has_addr("eth0", VIP) and k.alive()  # dual master, explained by the counter
