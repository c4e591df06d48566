"""Load sharing (configs/loadshare-r1.toml, loadshare-r2.toml): two virtual routers per
side, each box master of one sync group, both forwarding; either box can die and the
other serves both gateways, and the returning box takes its half back.

    c1 192.168.100.10 (gw .1)   c2 192.168.100.200 (gw .254)
          |                         |
    ------+------------ lan --------+-----       r1 .2 / r2 .3 on both bridges
          |                         |
         r1 (A master)            r2 (B master)
          |                         |
    ------+------------ wan --------+-----
          |
          s 10.10.0.200: 192.168.100.0/25 via .101 (A), 192.168.100.128/25 via .102 (B)

The example files run as they are, mapped to the lab by halab.boxconfig (control sockets;
VRRPv3 at 0.1 s instead of 1 s adverts, to keep the test short).
"""

from __future__ import annotations

import pytest

from halab import wait_for
from halab.boxconfig import CONFIG_DIR, write_box_config
from vrrpd.packet import mac_str, vmac

pytestmark = pytest.mark.netns

ADDRS = {"r1": ("10.10.0.2/24", "192.168.100.2/24"), "r2": ("10.10.0.3/24", "192.168.100.3/24")}
GROUPS = {"A": ("WAN-A", "LAN-A"), "B": ("WAN-B", "LAN-B")}


def build(lab):
    lan, wan = lab.add_bridge("lan"), lab.add_bridge("wan")
    hosts = {n: lab.add_host(n, ipv6=False) for n in ("c1", "c2", "s", "r1", "r2")}
    lab.connect(hosts["c1"], lan, "eth0", "192.168.100.10/24")
    hosts["c1"].ip("route", "add", "default", "via", "192.168.100.1")
    lab.connect(hosts["c2"], lan, "eth0", "192.168.100.200/24")
    hosts["c2"].ip("route", "add", "default", "via", "192.168.100.254")
    lab.connect(hosts["s"], wan, "eth0", "10.10.0.200/24")
    hosts["s"].ip("route", "add", "192.168.100.0/25", "via", "10.10.0.101")
    hosts["s"].ip("route", "add", "192.168.100.128/25", "via", "10.10.0.102")
    for r in ("r1", "r2"):
        h = hosts[r]
        for key in ("net.ipv4.conf.default.rp_filter", "net.ipv4.conf.all.rp_filter"):
            h.sysctl(key, 0)
        lab.connect(h, wan, "eth0", ADDRS[r][0])
        lab.connect(h, lan, "eth1", ADDRS[r][1])
        h.sysctl("net.ipv4.ip_forward", 1)
    return hosts, lan


def states(d) -> dict[str, str]:
    try:
        return {n: i["state"] for n, i in d.status().items()}
    except (OSError, ValueError):
        return {}


def masters_of(d) -> set[str]:
    st = states(d)
    return {g for g, members in GROUPS.items() if all(st.get(m) == "master" for m in members)}


def serves_both(hosts) -> bool:
    return hosts["c1"].ping("10.10.0.200", count=1, timeout=1) and hosts["c2"].ping("10.10.0.200", count=1, timeout=1)


def start(hosts, boxes, r):
    return boxes[r].start_vrrpd()


def test_both_gateways_served_and_either_box_can_die(lab):
    hosts, lan = build(lab)
    boxes = {r: write_box_config(hosts[r], advert_interval=0.1, version=3,
                                 source=CONFIG_DIR / f"loadshare-{r}.toml") for r in ("r1", "r2")}
    d = {r: start(hosts, boxes, r) for r in ("r1", "r2")}
    wait_for(lambda: masters_of(d["r1"]) == {"A"} and masters_of(d["r2"]) == {"B"}, timeout=15,
             what="r1 master of group A, r2 of group B")
    assert serves_both(hosts)
    # each half goes through its own box: the gateways' virtual MACs sit on different ports
    assert lab.fdb_port(lan, mac_str(vmac(2))) == "r1-eth1" and lab.fdb_port(lan, mac_str(vmac(4))) == "r2-eth1"
    for dead, alive in (("r1", "r2"), ("r2", "r1")):
        d[dead].proc.kill()  # a crash: no goodbye advert
        for ifname in ("eth0", "eth1"):
            lab.set_link(hosts[dead], ifname, False)
        wait_for(lambda: masters_of(d[alive]) == {"A", "B"}, timeout=10, what=f"{alive} master of both groups")
        wait_for(lambda: serves_both(hosts), timeout=10, what=f"both gateways through {alive}")
        # the box comes back and takes its half again (after its preempt_delay)
        for ifname in ("eth0", "eth1"):
            lab.set_link(hosts[dead], ifname, True)
        d[dead] = start(hosts, boxes, dead)
        wait_for(lambda: masters_of(d["r1"]) == {"A"} and masters_of(d["r2"]) == {"B"}, timeout=15,
                 what="each box back to its own group")
        wait_for(lambda: serves_both(hosts), timeout=10, what="both gateways, shared again")
