"""Figure 9: fast stateful failover, VRRPv3 with 0.05 s adverts, IPv4 and IPv6.

One run = one fresh HA pair (halab.hapair, ``strict`` ruleset, ``family`` 4 or 6: NAT66
for IPv6), one stack on both routers with adverts every 0.05 s (vrrpd ``version = 3``;
keepalived ``vrrp_version 3``, ``advert_int 0.05``), its sync daemon in ``commit`` or
``inject`` mode (conntrackd: external cache + commit, or ``DisableExternalCache On``).
r1 master (priority 200), r2 backup (100): Master_Down_Interval = 3 x 0.05 + 156/256 x
0.05 = 0.1805 s.

Traffic as in figure 2 (N TCP connections with a message every 50 ms, a UDP flow every
20 ms). Once r2 holds every flow (its external cache in commit mode, its kernel in inject
mode), r1 fails hard (halab.hapair.hard_fail: frozen, links down together, killed) at a
random phase of the advert cycle. Figures:

* takeover: on the bridges, r2's first advert - r1's last advert (of the sync group's
  instance that times out first), and its excess over Master_Down_Interval (the goal:
  within 10 ms); and the first GARP / unsolicited NA for the LAN VIP (the moment the LAN's
  hosts are told);
* the UDP flow's longest gap, the TCP connections' longest gaps (median and worst),
  connections kept, RSTs, public address and port unchanged, router counters (as figure 2).
"""

from __future__ import annotations

import random
import time

from halab import Lab
from halab.hapair import build_hapair
from halab.traffic import collect, start_tcp, start_udp
from halab.vrrp import wire_events
from vrrpd.machine import master_down_interval_v3

from .failover import ICMP_ERRORS, ICMP6_ERRORS, counting_table, figures, icmp_examples, read_counters, delta
from .stacks import HaStack, deadline

ADVERT_INTERVAL = 0.05
TCP_PORT = 9000


def kernel_flows(p, router: str, conns: int) -> int:
    """Entries of the test's TCP connections (to port 9000) and UDP flow in a router's kernel."""
    fam = "ipv6" if p.family == 6 else "ipv4"
    tcp = p.conntrack(router, "-f", fam, "-p", "tcp", "--dport", str(TCP_PORT))
    udp = p.conntrack(router, "-f", fam, "-p", "udp", "--dport", "5060")
    return len(tcp) + len(udp)


def takeover(paths: list[str], lan_vip: str, advert_interval: float) -> dict:
    """From the captures of both bridges: when the new master (priority 100) first
    advertised, against the old master's (priority 200) adverts. The two instances are one
    sync group: the group moves as soon as the *first* of them has heard nothing for
    Master_Down_Interval, so the reference is the earlier of the old master's last WAN and
    last LAN advert (their phases differ by up to one interval)."""
    ev = sorted((e for p in paths for e in wire_events(p)), key=lambda e: e.time)
    last = {}
    for e in ev:
        if e.kind == "advert" and e.priority == 200:
            last[e.vrid] = e.time
    if set(last) != {1, 2}:
        raise RuntimeError(f"adverts of the old master for VRIDs {sorted(last)} only, not both instances")
    ref = min(last.values())
    new = [e for e in ev if e.kind == "advert" and e.priority == 100 and e.time > ref]
    if not new:
        raise RuntimeError("no advert of the new master in the captures")
    first = new[0]
    announce = [e for e in ev if e.announce and e.src_ip == lan_vip and e.time > ref]
    mdi = master_down_interval_v3(advert_interval, 100)
    out = {
        "master_down_interval_s": mdi,
        "takeover_s": first.time - ref,
        "takeover_excess_ms": (first.time - ref - mdi) * 1000,
        "instances_phase_s": abs(last[1] - last[2]),
        "version": first.version,
    }
    if announce:
        out["announce_s"] = announce[0].time - ref
    return out


def fast_run(stack: HaStack, family: int, mode: str, conns: int, budget: float, phase: float = 8.0,
             advert_interval: float = ADVERT_INTERVAL, rng: random.Random | None = None) -> dict:
    rng = rng or random.Random()
    out: dict = {"conns": conns, "family": family, "mode": mode, "advert_interval_s": advert_interval}
    with Lab() as lab:
        with deadline(budget, f"{stack.name} fast failover IPv{family} {mode} with {conns} connections"):
            p = build_hapair(lab, ruleset="strict", family=family)
            for r in p.routers:
                r.run(["nft", "-f", "-"], check=True, input=counting_table(p), timeout=15)
            r1, r2 = stack.start_pair(p, mode, advert_interval)
            tcp = start_tcp(p, conns=conns, interval=0.05, duration=phase, tag="tcp", port=TCP_PORT)
            udp = start_udp(p, duration=phase, interval=0.02, tag="udp")
            t0 = time.monotonic()
            held = (lambda: kernel_flows(p, "r2", conns)) if mode == "inject" else (lambda: stack.replica_entries(r2))
            while held() < conns + 1 and time.monotonic() - t0 < 15:
                time.sleep(0.1)
            out["replicated_before_failure"] = held()
            time.sleep(0.5 + rng.random())
            c0 = read_counters(p.r2, family)
            bpf = "vrrp or arp or ip6 proto 112 or icmp6"
            cap = lab.capture(p.lan, None, "lan.pcap", bpf=bpf)
            wcap = lab.capture(p.wan, None, "wan.pcap", bpf="vrrp or ip6 proto 112")
            icmp = lab.capture(p.r2, "any", "r2-icmp.pcap", bpf=ICMP6_ERRORS if family == 6 else ICMP_ERRORS)
            time.sleep(0.3 + rng.random() * advert_interval)  # the failure at a random phase of the cycle
            p.hard_fail("r1")
            stack.wait_master(p, r2, timeout=10)
            tr, ur = collect([tcp, udp])
            cap.stop()
            wcap.stop()
            icmp.stop()
            out["failover"] = figures(tr, ur, conns, p.vips["WAN"])
            out["failover"]["router"] = delta(c0, read_counters(p.r2, family))
            out["failover"]["icmp_sent_examples"] = icmp_examples(icmp, p.r2, p)
            out["failover"].update(takeover([cap.path, wcap.path], p.vips["LAN"], advert_interval))
    return out
