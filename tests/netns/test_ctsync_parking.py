"""Parking (docs/ctsync.md, "Parking"): no packet meets the new master before its state.

r2 takes over with a large replica (a slow commit) and a transition hold far shorter than
that commit, so its VIPs appear while the commit still runs: the race of benchmark figure
3, made certain. 50 TCP connections and a UDP flow send every 5 ms through the pair, strict
ruleset (ct state invalid drop, counted). Without parking the packets that beat the commit
are dropped as INVALID at r2, and the server's replies to the VIP, with no entry to undo
their SNAT, reach r2's own TCP stack, which resets the connections; with parking they wait
in the queue and go on once the commit is done: none is INVALID, no connection is lost, no
RST. Then ctsync is killed
with SIGKILL while packets wait: the queue is bypassed, traffic goes on, and a restarted
ctsync leaves exactly its own rules.
"""

from __future__ import annotations

import re
import time

import pytest

from bench.replication import create_in_kernel, lan_udp_flows
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair
from halab.lab import wait_for
from halab.traffic import collect, start_tcp, start_udp
from halab.vrrp import start_vrrpd, vrrpd_config

pytestmark = pytest.mark.netns

RACE_CONNS = 50
ENTRIES = 60_000  # r2's commit of these takes far longer than its 0.05 s hold
PARKING = {"enabled": True, "max_hold": 5.0}


def _vrrpd(p, router: str, priority: int, hold: float, advert_interval: float = 1):
    host = p.router(router)
    sock = f"{host.lab.workdir}/vrrpd-{router}.sock"
    cfg = vrrpd_config(sock, p.vrrpd_instances(priority, advert_interval), p.sync_groups())
    cfg["vrrpd"]["transition_hold_timeout"] = hold
    d = start_vrrpd(host, {}, config=cfg)
    p.vrrpd[router] = d
    return d


def _race(lab, parking: bool, advert_interval: float = 1):
    p = build_hapair(lab, ruleset="strict")
    d1, d2 = _vrrpd(p, "r1", 200, 2.0, advert_interval), _vrrpd(p, "r2", 100, 0.05, advert_interval)
    c1 = start_ctsync(p.r1, "commit", d1.socket)
    c2 = start_ctsync(p.r2, "commit", d2.socket, **({"parking": PARKING} if parking else {}))
    p.wait_master("r1")
    p.wait_backup("r2")
    c2.wait(lambda s: s["in_sync"], 15, "in sync with r1")
    if parking:
        assert c2.status()["parking"]["armed"], c2.status()["parking"]
    _, _, failed = create_in_kernel(p.r1, lan_udp_flows(ENTRIES))
    assert failed == 0
    c2.wait(lambda s: s["external_entries"] >= ENTRIES, 60, "the table replicated")
    tcp = start_tcp(p, conns=RACE_CONNS, interval=0.005, duration=16)
    udp = start_udp(p, duration=16, interval=0.005)
    c2.wait(lambda s: s["external_entries"] >= ENTRIES + RACE_CONNS + 1, 15, "the flows replicated")
    time.sleep(1)
    invalid0 = p.invalid_drops("r2")
    p.hard_fail("r1")
    p.wait_master("r2", timeout=10)
    st = c2.wait(lambda s: s if (s["last_commit"] or {}).get("count", 0) >= ENTRIES else None, 20, "the takeover commit")
    tcp_r, udp_r = collect([tcp, udp])
    return p, c1, c2, st, p.invalid_drops("r2") - invalid0, tcp_r["client"]["summary"], udp_r["client"]["summary"]


def test_without_parking_packets_beat_the_commit_and_are_dropped_as_invalid(lab):
    # VRRPv3 at 0.05 s: r2 takes over 0.18 s after r1 dies, before the connections' first
    # retransmissions, which then meet the commit for certain. With 1 s adverts the takeover
    # comes 2.6-3.6 s after the failure, and whether a retransmission (backed off to 3.0 s,
    # then 6.2 s) falls inside the 0.8 s commit depends on the advert phase: the race this
    # test must show was missed now and then.
    p, _, _, st, invalid, t, u = _race(lab, parking=False, advert_interval=0.05)
    print(f"commit {st['last_commit']['duration']:.3f}s; INVALID at r2 {invalid}; TCP kept {t['kept']}/{t['conns']}, "
          f"RSTs {t['rsts']}")
    assert st["parking"] == {"enabled": False}
    # The race parking is for: VIPs up, state not there yet. Client packets are INVALID
    # (dropped); the server's replies to the VIP, with no entry to undo their SNAT, are
    # delivered to r2 itself, whose TCP stack answers with a RST: connections die.
    assert invalid > 0 and t["rsts"] > 0


def test_with_parking_no_packet_meets_the_new_master_before_its_state(lab):
    p, _, c2, st, invalid, t, u = _race(lab, parking=True)
    park = st["parking"]
    print(f"commit {st['last_commit']['duration']:.3f}s; parking {park}; INVALID at r2 {invalid}; "
          f"TCP kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, gap max {t['gap_max']}s; UDP gap {u['max_gap']}s")
    assert park["working"] and park["takeovers"] == 1
    assert park["parked"] > 0 and park["released_after_commit"] == park["parked"]
    assert park["released_on_timeout"] == 0 and park["dropped_over_bound"] == 0
    assert invalid == 0
    assert t["kept"] == RACE_CONNS and t["rsts"] == 0 and t["lost"] == 0, t
    assert not c2.status()["parking"]["armed"]  # disarmed once the commit was done
    assert _jumps(p, "r2") == 0


def _queued(p, router: str) -> int:
    """Packets waiting in the kernel's NFQUEUE queues of ``router`` now."""
    out = p.router(router).run(["cat", "/proc/net/netfilter/nfnetlink_queue"], timeout=5).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if line.strip())


def _jumps(p, router: str) -> int:
    out = p.router(router).run(["iptables-save", "-t", "raw"], timeout=15).stdout
    return len(re.findall(r"^-A PREROUTING -j CTSYNC-PARK$", out, re.M))


def test_killed_while_packets_wait_traffic_goes_on_and_a_restart_leaves_no_stale_rule(lab):
    """SIGKILL in the middle of a takeover's commit, while packets wait: they die with the
    queue (the senders retransmit), new ones bypass it (--queue-bypass), so traffic goes on
    within a second; the next ctsync removes the killed one's rules and installs its own."""
    p = build_hapair(lab, ruleset="permissive")
    d1, d2 = _vrrpd(p, "r1", 200, 2.0), _vrrpd(p, "r2", 100, 0.05)
    start_ctsync(p.r1, "commit", d1.socket)
    c2 = start_ctsync(p.r2, "commit", d2.socket, parking={"enabled": True, "max_hold": 30.0})
    p.wait_master("r1")
    c2.wait(lambda s: s["in_sync"] and s["parking"]["armed"], 15, "in sync, parking armed")
    assert _jumps(p, "r2") == 1
    _, _, failed = create_in_kernel(p.r1, lan_udp_flows(3 * ENTRIES))  # a long commit
    assert failed == 0
    c2.wait(lambda s: s["external_entries"] >= 3 * ENTRIES, 90, "the table replicated")
    udp = start_udp(p, duration=14, interval=0.005)
    c2.wait(lambda s: s["external_entries"] > 3 * ENTRIES, 15, "the UDP flow replicated")
    time.sleep(1)
    p.hard_fail("r1")
    p.wait_master("r2", timeout=10)
    wait_for(lambda: _queued(p, "r2") > 0, timeout=10, interval=0.02,
             what="packets waiting in r2's queue during the takeover's commit")
    c2.proc.kill()  # SIGKILL to its process group: no cleanup
    t_kill = time.time()
    u = collect([udp])[0]["client"]["summary"]
    print(f"UDP: longest gap {u['max_gap']}s, ended {u['max_gap_at'] - t_kill:+.3f}s after SIGKILL")
    assert u["max_gap_at"] - t_kill < 1.0, u  # flowing again within a second of the kill
    assert _jumps(p, "r2") == 1  # the killed run's jump is still there, bypassed: harmless
    c2 = start_ctsync(p.r2, "commit", d2.socket, name="ctsync2", parking={"enabled": True})
    c2.wait(lambda s: s["parking"]["working"], 10, "parking working again")
    assert _jumps(p, "r2") <= 1  # the old rules were replaced, not added to
    c2.proc.terminate()  # SIGTERM: ctsync removes its rules on the way out
    assert "CTSYNC-PARK" not in p.r2.run(["iptables-save", "-t", "raw"], timeout=15).stdout
