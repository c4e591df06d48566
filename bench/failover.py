"""Figures 2 and 3: stateful NAT failover (and failback) with live traffic.

One run = one fresh HA pair (halab.hapair, ``strict`` ruleset: the WAN side
only lets established/related traffic in, ``nf_conntrack_tcp_loose=0``, so a
router without the state drops or resets what it does not know), one stack on
both routers: r1 master (priority 200), r2 backup (priority 100).

Traffic (halab.trafficgen, the same programs for both stacks): N long-lived TCP
connections from the client to the server through the LAN VIP and the SNAT to
the WAN VIP, each sending a small message every ``interval`` and counting
its echoes (longest gap per connection, RSTs, errors), plus one UDP "SIP"
flow (5060 -> 5060) counting its longest gap.  The server records the
public address and port it sees for every connection and UDP source.

* failover: once the backup holds all N + 1 entries, r1 fails hard (every
  process SIGKILLed, its links down); r2 takes over.  Connections kept, RSTs
  (seen by the client or the server), public port unchanged (the server saw
  exactly N connections and one UDP source, all from the WAN VIP), longest
  gap per connection (median and worst over connections), UDP gap.
* failback (figure 2 only): with new traffic (new connections, through r2),
  r1 comes back (links up, daemons started) and preempts; the same figures.
* race (figure 3): the failover with every connection (and the UDP flow)
  sending every 5 ms.

Counters on the routers (an extra nftables table ``bench`` that only counts,
policy accept): packets in state INVALID and server packets in state NEW at
prerouting (after conntrack; the strict ruleset drops both: the "dropped as
invalid/unknown"), and RSTs and ICMP errors the router itself sends (output
hook: a packet for the WAN VIP without its NAT entry is delivered to the
router, whose TCP answers RST and UDP port-unreachable; the sync link is not
counted: there the survivor's daemon gets host-unreachable for its dead peer).  Read on the new
master, over the transition.
"""

from __future__ import annotations

import json
import random
import time

from halab import Lab
from halab.hapair import ROUTER_ADDRS6, SERVER_IP, WAN_VIP, build_hapair
from halab.traffic import collect, start_tcp, start_udp

from .stacks import HaStack, deadline


def counting_table(pair=None) -> str:
    """The nftables table that only counts (policy accept), for the pair's address
    family (``table ip bench``, or ``table ip6 bench`` in an IPv6 pair)."""
    if pair is not None and pair.family == 6:
        return f"""\
table ip6 bench {{
    counter invalid {{ }}
    counter wan_new {{ }}
    counter rst_out {{ }}
    counter icmp_err_out {{ }}
    counter icmp_port_unreach_out {{ }}
    counter icmp_host_unreach_out {{ }}
    chain pre {{
        type filter hook prerouting priority -150; policy accept;
        ct state invalid counter name "invalid"
        ip6 saddr {pair.server_ip} ct state new counter name "wan_new"
    }}
    chain out {{
        type filter hook output priority 0; policy accept;
        tcp flags & rst == rst counter name "rst_out"
        icmpv6 type destination-unreachable icmpv6 code port-unreachable counter name "icmp_port_unreach_out"
        icmpv6 type destination-unreachable icmpv6 code addr-unreachable counter name "icmp_host_unreach_out"
        icmpv6 type {{ destination-unreachable, time-exceeded, parameter-problem }} counter name "icmp_err_out"
    }}
}}
"""
    return f"""\
table ip bench {{
    counter invalid {{ }}
    counter wan_new {{ }}
    counter rst_out {{ }}
    counter icmp_err_out {{ }}
    counter icmp_port_unreach_out {{ }}
    counter icmp_host_unreach_out {{ }}
    chain pre {{
        type filter hook prerouting priority -150; policy accept;
        ct state invalid counter name "invalid"
        ip saddr {SERVER_IP} ct state new counter name "wan_new"
    }}
    chain out {{
        type filter hook output priority 0; policy accept;
        ip daddr 172.16.0.0/30 accept  # the sync link: a daemon calling its dead peer
        tcp flags & rst == rst counter name "rst_out"
        icmp type destination-unreachable icmp code port-unreachable counter name "icmp_port_unreach_out"
        icmp type destination-unreachable icmp code host-unreachable counter name "icmp_host_unreach_out"
        icmp type {{ destination-unreachable, time-exceeded, parameter-problem }} counter name "icmp_err_out"
    }}
}}
"""


COUNTING_TABLE = counting_table()
COUNTERS = ("invalid", "wan_new", "rst_out", "icmp_err_out", "icmp_port_unreach_out", "icmp_host_unreach_out")


ICMP_ERRORS = "icmp[icmptype] == icmp-unreach or icmp[icmptype] == icmp-timxceed"
ICMP6_ERRORS = "icmp6 and (ip6[40] == 1 or ip6[40] == 3)"  # destination unreachable, time exceeded


def icmp_examples(cap, host, pair=None, top: int = 3) -> list[str]:
    """The most frequent ICMP errors the router itself sent (source address is
    one of its own), as tcpdump prints them (minus time and interface)."""
    import collections
    import re
    if pair is not None and pair.family == 6:
        own = {a.split("/")[0] for r in ROUTER_ADDRS6.values() for a in r.values()} | set(pair.vips.values())
        pat = r"IP6 ([0-9a-f:]+) > (.*)$"
    else:
        vips = set(pair.vips.values()) if pair is not None else {WAN_VIP, "192.168.100.1"}
        own = {a.split("/")[0] for ifname in ("eth0", "eth1") for a in host.ipv4_addrs(ifname)} | vips
        pat = r"IP (\d+\.\d+\.\d+\.\d+) > (.*)$"
    seen: collections.Counter = collections.Counter()
    for ln in cap.lines():
        m = re.search(pat, ln)
        if m and m.group(1) in own:
            seen[re.sub(r"(length|id) \d+", r"\1 _", m.group(0))] += 1
    return [f"{n} x {what}" for what, n in seen.most_common(top)]


def read_counters(host, family: int = 4) -> dict[str, int]:
    table = "ip6" if family == 6 else "ip"
    cp = host.run(["nft", "-j", "list", "counters", "table", table, "bench"], check=True, timeout=15)
    out = {}
    for item in json.loads(cp.stdout).get("nftables", []):
        c = item.get("counter")
        if c:
            out[c["name"]] = c["packets"]
    return out


def delta(a: dict, b: dict) -> dict:
    return {k: b.get(k, 0) - a.get(k, 0) for k in COUNTERS}



def figures(tcp_r: dict, udp_r: dict, conns: int, public: str = WAN_VIP) -> dict:
    """The per-transition figures of one run (``public``: the WAN VIP the server must see)."""
    t = tcp_r["client"]["summary"]
    srv = tcp_r["server"]["summary"]
    u = udp_r["client"]["summary"]
    usrv = udp_r["server"]["summary"]
    peers = srv.get("peers", {})
    return {
        "conns": conns,
        "established": t["established"],
        "kept": t["kept"],
        "kept_percent": 100.0 * t["kept"] / conns,
        "rsts": t["rsts"] + srv.get("rsts", 0),
        "client_rsts": t["rsts"],
        "server_rsts": srv.get("rsts", 0),
        "errors": t["errors"],
        # A connection that survived kept its server-side socket, i.e. its public
        # address and port; a port change shows as more connections at the server.
        "public_port_unchanged": srv["conns"] == conns and set(peers) == {public} and usrv["sources"] == 1,
        "server_conns": srv["conns"],
        "udp_sources": usrv["sources"],
        "gap_median_s": t["gap_median"],
        "gap_max_s": t["gap_max"],
        "udp_gap_s": u["max_gap"],
        "udp_lost": u["lost"],
        "udp_sent": u["sent"],
    }



def failover_run(stack: HaStack, conns: int, budget: float, interval: float = 0.05,
                 udp_interval: float = 0.02, failback: bool = True, phase: float = 11.0,
                 rng: random.Random | None = None) -> dict:
    """One run; ``phase``: seconds of traffic for the failover (the failback
    gets 3 s more: the returning router's daemons start first).  The failure
    lands at a random phase of the advert cycle (``rng``): the outage then
    lasts 2.6-3.6 s, and where it ends relative to TCP's retransmission
    backoff (a retransmission 3.0 s after the first lost segment, the next
    one 6.2 s after) decides whether a connection's gap is about 3.2 or 6.5 s;
    a fixed phase would make that the same for every run of a stack."""
    rng = rng or random.Random()
    out: dict = {"conns": conns, "interval_s": interval}
    with Lab() as lab:
        with deadline(budget, f"{stack.name} failover run with {conns} connections"):
            p = build_hapair(lab, ruleset="strict")
            for r in p.routers:
                r.run(["nft", "-f", "-"], check=True, input=COUNTING_TABLE, timeout=15)
            r1, r2 = stack.start_pair(p)
            # -- failover
            tcp = start_tcp(p, conns=conns, interval=interval, duration=phase, tag="tcp-a")
            udp = start_udp(p, duration=phase, interval=udp_interval, tag="udp-a")
            t0 = time.monotonic()
            while stack.replica_entries(r2) < conns + 1 and time.monotonic() - t0 < 15:
                time.sleep(0.1)
            out["replicated_before_failure"] = stack.replica_entries(r2)
            time.sleep(0.5 + rng.random())
            c0 = read_counters(p.r2)
            cap = lab.capture(p.r2, "any", "r2-icmp.pcap", bpf=ICMP_ERRORS)
            p.hard_fail("r1")
            stack.wait_master(p, r2, timeout=10)
            tr, ur = collect([tcp, udp])
            cap.stop()
            out["failover"] = figures(tr, ur, conns)
            out["failover"]["router"] = delta(c0, read_counters(p.r2))
            out["failover"]["icmp_sent_examples"] = icmp_examples(cap, p.r2)
            if not failback:
                return out
            # -- failback: new connections through r2, then r1 returns and preempts
            tcp = start_tcp(p, conns=conns, interval=interval, duration=phase + 3, tag="tcp-b",
                            port=9001)
            udp = start_udp(p, duration=phase + 3, interval=udp_interval, tag="udp-b",
                            port=5061, sport=5061)
            time.sleep(1.0)
            p.revive("r1")
            c1 = read_counters(p.r1)
            r1 = stack.start(p, "r1", 200)
            stack.wait_master(p, r1, timeout=20)
            stack.wait_backup(p, r2, timeout=10)
            tr, ur = collect([tcp, udp])
            out["failback"] = figures(tr, ur, conns)
            out["failback"]["router"] = delta(c1, read_counters(p.r1))
    return out
