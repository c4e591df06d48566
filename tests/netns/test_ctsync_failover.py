"""Stateful NAT failover in the full HA pair (client, r1, r2, server, sync link).

200 long-lived TCP connections (data every 50 ms) and a UDP "SIP" flow to 5060 go
through r1 with SNAT to the WAN VIP. r1 fails hard (daemons killed, links down): every
connection must carry on through r2 with the same public port and no RST. Then r1
returns and preempts (failback): the connections must survive that too. Both rulesets
(strict: WAN accepts only established/related; permissive: accept all + tcp_loose),
both failover modes. The baseline without ctsync is in tests/lab/test_hapair.py.
"""

from __future__ import annotations

import time

import pytest

from halab.ctsync import start_ctsync
from halab.hapair import build_hapair
from halab.traffic import collect, start_tcp, start_udp

pytestmark = pytest.mark.netns

CONNS = 200


def run_failover_failback(lab, ruleset: str, mode: str, conns: int = CONNS):
    p = build_hapair(lab, ruleset=ruleset)
    d = {"r1": p.start_vrrpd("r1", 200), "r2": p.start_vrrpd("r2", 100)}
    c = {r: start_ctsync(getattr(p, r), mode, d[r].socket) for r in ("r1", "r2")}
    p.wait_master("r1")
    p.wait_backup("r2")
    c["r2"].wait(lambda s: s["in_sync"], 10, "in sync with r1")
    tcp = start_tcp(p, conns=conns, interval=0.05, duration=34)
    udp = start_udp(p, duration=34)
    c["r2"].wait(lambda s: s["external_entries"] >= conns + 1, 15, "the flows replicated")
    time.sleep(1)
    # 1. hard failure of r1
    p.hard_fail("r1")
    p.wait_master("r2", timeout=10)
    st2 = c["r2"].wait(lambda s: s if s["last_commit"] else None, 10, "the failover commit")
    time.sleep(6)
    # 2. r1 comes back and preempts: its ctsync gets r2's table first, then commits
    p.revive("r1")
    d["r1"] = p.start_vrrpd("r1", 200)
    c["r1"] = start_ctsync(p.r1, mode, d["r1"].socket)
    c["r1"].wait(lambda s: s["in_sync"], 15, "in sync with r2")
    p.wait_master("r1", timeout=15)
    p.wait_backup("r2", timeout=5)
    # vrrpd is master at once; the commit (and then the VIPs) follow
    st1 = c["r1"].wait(lambda s: s if s["role"] == "master" and s["last_commit"] else None, 10, "the failback commit")
    if mode == "commit":
        # r2, backup again, shortens its copies once r1's table is in (conntrackd -t):
        # no TCP entry of the flows keeps its 5-day established timeout there.
        c["r2"].wait(lambda s: s["aged_out"] >= conns, 15, "r2 to age out the entries r1 now holds")
        to = [int(ln.split()[2]) for ln in p.conntrack("r2", "-p", "tcp", "--dport", "9000")]
        assert len(to) >= conns and max(to) <= 60, sorted(to)[-5:]
    tcp_r, udp_r = collect([tcp, udp])
    return tcp_r, udp_r, st1, st2


def check(tcp_r, udp_r, st1, st2, mode, conns=CONNS):
    t = tcp_r["client"]["summary"]
    print(f"TCP: kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, longest gap max {t['gap_max']}s median {t['gap_median']}s")
    u = udp_r["client"]["summary"]
    print(f"UDP: longest gap {u['max_gap']}s, lost {u['lost']} of {u['sent']}")
    assert t["established"] == conns
    assert t["kept"] == conns and t["lost"] == 0, t
    assert t["rsts"] == 0, t
    # The server saw each connection from one public address and port, never a new one.
    srv = tcp_r["server"]
    assert all(s["rst"] is False for s in srv["conns"]) if "conns" in srv else True
    peers = udp_r["server"].get("sources") or udp_r["server"].get("peers")
    if peers is not None:
        assert len(peers) == 1, f"the UDP flow changed its public source: {peers}"
    assert u["max_gap"] < 6.0  # Master_Down_Interval (3.6 s) + the commit, and back
    if mode == "commit":
        assert st2["last_commit"]["committed"] >= conns
        assert st1["last_commit"]["committed"] >= conns
        assert not st2["commit_errors"] and st2["nat_clashes"] == 0


@pytest.mark.parametrize("ruleset,mode", [("strict", "commit"), ("permissive", "commit"), ("strict", "inject")])
def test_failover_and_failback_keep_every_connection(lab, ruleset, mode):
    check(*run_failover_failback(lab, ruleset, mode), mode)
