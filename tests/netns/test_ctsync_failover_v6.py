"""Stateful NAT66 failover in the IPv6 HA pair (halab.hapair, family=6), through the
daemons: vrrpd (VRRPv3, IPv6 VIPs, 0.05 s adverts) and ctsync (its sync link stays IPv4).

200 TCP connections (data every 50 ms), a UDP "SIP" flow and an ICMPv6 echo flow go from
the client fd00:100::10 through r1, NATed to the WAN VIP 2001:db8:10::101, to the server.
The strict ruleset only lets established/related traffic in from the WAN and conntrack
picks nothing up mid-stream (tcp_loose=0): a router without the replicated IPv6 entries
would drop every packet of these flows. r1 fails hard; every TCP connection must carry on
through r2 with the same public address and port and no RST, the UDP flow with the same
source, the pings with their echo identifier. Commit mode (replicas committed on the
takeover) and inject mode (replicas already in r2's kernel).
"""

from __future__ import annotations

import re
import time

import pytest

from halab.ctsync import start_ctsync
from halab.hapair import SERVER_IP6, WAN_VIP6, build_hapair
from halab.traffic import collect, start_tcp, start_udp

pytestmark = pytest.mark.netns

CONNS = 200
INTERVAL = 0.05  # adverts: Master_Down_Interval 0.18 s at priority 100


def icmpv6_entries(p, router: str) -> list[str]:
    return [ln for ln in p.conntrack(router, "-f", "ipv6", "-p", "icmpv6") if f"dst={SERVER_IP6}" in ln]


# commit mode in the default run; inject mode (the same path but for where the replica
# lives) under -m slow, to keep the branch's lab tests within the default run's budget.
@pytest.mark.parametrize("mode", ["commit", pytest.param("inject", marks=pytest.mark.slow)])
def test_ipv6_flows_survive_a_hard_failure(lab, mode):
    p = build_hapair(lab, ruleset="strict", family=6)
    d = {"r1": p.start_vrrpd("r1", 200, advert_interval=INTERVAL)}
    p.wait_master("r1")
    d["r2"] = p.start_vrrpd("r2", 100, advert_interval=INTERVAL)
    c = {r: start_ctsync(getattr(p, r), mode, d[r].socket) for r in ("r1", "r2")}
    p.wait_backup("r2")
    c["r2"].wait(lambda s: s["in_sync"], 10, "in sync with r1")
    tcp = start_tcp(p, conns=CONNS, interval=0.05, duration=12)
    udp = start_udp(p, duration=12)
    ping = p.c.start(["ping", "-6", "-n", "-i", "0.05", "-w", "14", SERVER_IP6], name="ping6")
    c["r2"].wait(lambda s: s["external_entries"] >= CONNS + 2, 15, "the TCP, UDP and ICMPv6 flows replicated")
    if mode == "inject":  # the replicas are in r2's kernel before anything fails
        assert icmpv6_entries(p, "r2"), p.conntrack("r2", "-f", "ipv6")
        assert len([ln for ln in p.conntrack("r2", "-f", "ipv6", "-p", "tcp") if "dport=9000" in ln]) >= CONNS
    time.sleep(1)
    p.hard_fail("r1")
    p.wait_master("r2", timeout=10)
    st2 = c["r2"].wait(lambda s: s if s["last_commit"] or mode == "inject" else None, 10, "the failover commit")
    tcp_r, udp_r = collect([tcp, udp])
    ping.wait(20)
    # -- TCP: every connection kept, no RST, each seen by the server from the WAN VIP
    t, srv = tcp_r["client"]["summary"], tcp_r["server"]["summary"]
    print(f"TCP: kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, gap max {t['gap_max']}s median {t['gap_median']}s")
    assert t["established"] == CONNS and t["kept"] == CONNS and t["lost"] == 0, t
    assert t["rsts"] == 0 and srv["rsts"] == 0, (t, srv)
    assert srv["conns"] == CONNS and set(srv["peers"]) == {WAN_VIP6}, srv
    # -- UDP: one public source all along
    u, usrv = udp_r["client"]["summary"], udp_r["server"]["summary"]
    print(f"UDP: longest gap {u['max_gap']}s, lost {u['lost']} of {u['sent']}")
    assert usrv["sources"] == 1 and set(usrv["addrs"]) == {WAN_VIP6}, usrv
    assert u["max_gap"] < 3.0
    # -- ICMPv6: the echo flow went on through r2 under its replicated entry
    out = ping.read_log()
    seqs = sorted(int(m) for m in re.findall(r"icmp_seq=(\d+)", out))
    assert seqs and seqs[-1] > 200, out[-500:]  # still answered near the end (14 s at 20/s)
    assert icmpv6_entries(p, "r2"), "no ICMPv6 entry on the new master"
    if mode == "commit":
        assert st2["last_commit"]["committed"] >= CONNS + 2
        assert not st2["commit_errors"] and st2["nat_clashes"] == 0


def test_ipv6_failback_is_prepared_and_keeps_every_flow(lab):
    """r1 comes back to an IPv6 pair where r2 is master and preempts the make-before-break
    way: commit while backup, then the sync group's adverts in one burst (its IPv6
    macvlans come up right after it: coming up they send an MLD report from the virtual
    MAC, which would move one side's switch entry ahead of the other). Every connection
    and the UDP flow carry on, nothing is reset."""
    p = build_hapair(lab, ruleset="strict", family=6)
    d2 = p.start_vrrpd("r2", 100)
    start_ctsync(p.r2, "commit", d2.socket)
    p.wait_master("r2")
    tcp = start_tcp(p, conns=20, interval=0.05, duration=16)
    udp = start_udp(p, duration=16)
    wait_for_flows = time.monotonic() + 10
    while len([ln for ln in p.conntrack("r2", "-f", "ipv6", "-p", "tcp") if "dport=9000" in ln]) < 20:
        assert time.monotonic() < wait_for_flows, "r2's flows"
        time.sleep(0.1)
    d1 = p.start_vrrpd("r1", 200)
    c1 = start_ctsync(p.r1, "commit", d1.socket)
    p.wait_master("r1", timeout=15)
    p.wait_backup("r2", timeout=5)
    st = c1.wait(lambda s: s if s["role"] == "master" and s["last_commit"] else None, 10, "the failback commit")
    assert st["last_commit"].get("prepared"), st["last_commit"]  # committed while backup
    log = d1.proc.read_log()
    assert re.search(r"MAIN-GW: prepared move to master, adverts of (LAN, WAN|WAN, LAN) sent", log), log[-2000:]
    tcp_r, udp_r = collect([tcp, udp])
    t, srv = tcp_r["client"]["summary"], tcp_r["server"]["summary"]
    u = udp_r["client"]["summary"]
    print(f"TCP: kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, gap max {t['gap_max']}s; "
          f"UDP: lost {u['lost']} of {u['sent']}, gap {u['max_gap']}s")
    assert t["kept"] == 20 and t["rsts"] == 0 and srv["rsts"] == 0, (t, srv)
    # Generous bounds: 1 datagram lost and a 0.04 s gap in a sampled run; 9 lost and 0.2 s
    # when r2 removed its IPv6 VIPs with its macvlan up (the MLD report of that, from the
    # virtual MAC, took the switch's entry back from r1 until r1 sent from it again).
    assert u["lost"] <= 3 and u["max_gap"] < 0.5, u
