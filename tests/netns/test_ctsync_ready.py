"""A backup that is not ready lowers its VRRP priority (pfsync demoting CARP), in the HA pair.

r2 (priority 100) is master and carries flows. r1 (priority 200, preempt on) comes back
with `failover.demote_when_not_ready = 150`; r2 drops its large sync datagrams, so r1
hears r2's heartbeats (the peer is alive) but never gets its whole table. r1 must stay
backup at priority 50 well past Master_Down_Interval, and say why (ctsyncctl and vrrpctl
status). Once r2's table gets through, r1 is ready, its priority returns to 200, it
preempts (adverts with 200 on the wire) and its commit carries every flow: the
connections survive the failback, and the UDP flow loses at most one datagram.
"""

from __future__ import annotations

import re
import time

import pytest

from ctsync import wire
from halab import wait_for
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair
from halab.traffic import collect, start_tcp, start_udp
from vrrpd.cli import vrrpctl_main

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CONNS = 10
WEIGHT = 150
# r2 -> r1 sync datagrams larger than this (IP length) are dropped: heartbeats (121
# bytes), bare acks (112), RESYNC_BEGIN/END (123) and DESTROYs (131) pass; a datagram
# with even one ENTRY does not (an IPv4 entry's compact form is at least 25 bytes: 140
# and more). At 220, datagrams of up to three entries passed, and CI once saw r1's table
# completed by such small updates before the test had looked at the demotion.
BIG = 135
_IP_UDP = 28
_TLV = 3
assert _IP_UDP + wire.overhead() + _TLV + 6 <= BIG  # a heartbeat passes
assert _IP_UDP + wire.overhead() + _TLV + 16 <= BIG  # a DESTROY (IPv4 key) passes
assert _IP_UDP + wire.overhead() + _TLV + 25 > BIG  # the smallest IPv4 ENTRY does not


def _adverts(cap, src: str) -> list[int]:
    """Priorities of the VRRP adverts from `src` (WAN, VRID 1) in a capture."""
    out = []
    for line in cap.lines(f"host {src} and proto 112"):
        m = re.search(r"vrid 1, prio (\d+)", line)
        if m:
            out.append(int(m.group(1)))
    return out


def test_not_ready_backup_is_demoted_until_its_resync_completes(lab, capsys):
    p = build_hapair(lab, ruleset="strict")
    d2 = p.start_vrrpd("r2", 100)
    c2 = start_ctsync(p.r2, "commit", d2.socket)
    p.wait_master("r2")
    tcp = start_tcp(p, conns=CONNS, interval=0.05, duration=25)
    udp = start_udp(p, duration=25)
    wait_for(lambda: len(p.conntrack("r2", "-p", "tcp")) >= CONNS, timeout=10, what="r2's flows")
    p.r2.run(["nft", "-f", "-"], check=True, input=f"""
table inet impair {{
    chain out {{
        type filter hook output priority 0; policy accept;
        oifname "sync0" udp dport 3780 ip length > {BIG} drop
    }}
}}
""")
    cap = lab.capture(p.wan, None, "wan-vrrp.pcap", bpf="proto 112")

    t_start = time.monotonic()
    d1 = p.start_vrrpd("r1", 200)
    c1 = start_ctsync(p.r1, "commit", d1.socket,
                      failover={"vrrp_sync_group": "MAIN-GW", "vrrpd_socket": d1.socket, "demote_when_not_ready": WEIGHT})
    st = c1.wait(lambda s: s if s["peer_alive"] and s["demoting_vrrpd"] == WEIGHT else None, 10, "demoting while not ready")
    assert not st["ready"] and st["not_ready"] and st["role"] == "backup"
    wait_for(lambda: all(i["effective_priority"] == 200 - WEIGHT for i in d1.status().values()),
             timeout=5, what="r1's priority lowered")
    for inst in d1.status().values():
        assert inst["priority"] == 200 and inst["state"] == "backup"
        assert inst["demotions"] == [f"-{WEIGHT} ctsync: ctsync not ready: no complete table from the peer yet"]
    assert vrrpctl_main(["-s", d1.socket, "status"]) == 0
    text = capsys.readouterr().out
    assert f"priority        {200 - WEIGHT} (configured 200)" in text
    assert f"demoted         -{WEIGHT} ctsync: ctsync not ready" in text, text

    # Master_Down_Interval for priority 200 is 3.2 s: without the demotion r1 would have
    # preempted by now. It stays backup as long as its table is incomplete.
    time.sleep(max(0.0, t_start + 8.0 - time.monotonic()))
    assert p.state("r1") == {"WAN": "BACKUP", "LAN": "BACKUP"}
    assert p.state("r2") == {"WAN": "MASTER", "LAN": "MASTER"}
    st = c1.status()
    assert st["peer_alive"] and not st["ready"] and st["demoting_vrrpd"] == WEIGHT, st

    # The impairment ends: resends complete r1's table, the demotion is withdrawn, r1
    # preempts with its full priority and commits r2's flows before its VIPs appear.
    p.r2.run(["nft", "delete", "table", "inet", "impair"], check=True)
    c1.wait(lambda s: s["ready"] and not s["not_ready"] and s["demoting_vrrpd"] == 0, 15, "ready")
    p.wait_master("r1", timeout=10)
    p.wait_backup("r2", timeout=5)
    for inst in d1.status().values():
        assert inst["effective_priority"] == 200 and inst["demotions"] == []
    st1 = c1.wait(lambda s: s if s["role"] == "master" and s["last_commit"] else None, 10, "the failback commit")
    assert st1["last_commit"]["committed"] >= CONNS + 1, st1["last_commit"]
    time.sleep(1.5)  # a few adverts of the new master
    cap.stop()
    r1_prios = _adverts(cap, "10.10.0.2")
    assert r1_prios and set(r1_prios) == {200}, r1_prios  # none sent while demoted (backup)
    assert set(_adverts(cap, "10.10.0.3")) <= {100, 0}

    tcp_r, udp_r = collect([tcp, udp])
    t, u = tcp_r["client"]["summary"], udp_r["client"]["summary"]
    print(f"TCP through the failback after the resync: kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, gap {t['gap_max']}s")
    print(f"UDP: lost {u['lost']} of {u['sent']}, gap {u['max_gap']}s")
    # The prepared move sends the adverts of LAN and WAN in one burst, after r1's macvlans
    # are up: had one side moved alone, r2 would have reset connections (INVALID replies
    # to the VIP it still held), and a link still down would have dropped the UDP flow's
    # datagrams until the VIPs (2-4 of them at its 20 ms interval).
    assert t["kept"] == CONNS and t["rsts"] == 0, t
    assert u["lost"] <= 1, u
