"""Dual-WAN in a lab: a router (or an HA pair) with two uplinks to two "ISPs" and a
shared "internet" host behind them.

::

        c 192.168.1.10  (default via 192.168.1.1)
        |
   -----+------------- bridge "lan"  192.168.1.0/24
        |          |
     eth1 r1    eth1 r2            (r2 only with routers=2; then 192.168.1.1 is a VIP,
     wan1 wan2  wan1 wan2           r1/r2 have .2/.3, and sync0 172.16.0.1 <-> .2)
        |    \\      |   \\
   -----+-----\\-----+----\\-------- bridge "isp1"  198.51.100.0/24, isp1 eth0 .1
               \\          \\
   -------------+----------+------ bridge "isp2"  198.51.101.0/24, isp2 eth0 .1

   isp1 eth1 203.0.113.1/30 ---- net eth1 203.0.113.2/30    (direct veths: the "far
   isp2 eth1 203.0.113.5/30 ---- net eth2 203.0.113.6/30     side" of each ISP)

   net: the internet. TARGET 192.0.2.53/32 (on lo: the probes' target and the
   servers' address), routes back to each ISP's customer prefix via that ISP.

The routers SNAT the LAN to their uplink address (``uplink_addr``: with one router its
own .2 on wan1/wan2, with two the VIP .10 of that segment) and forward TCP port
8080 arriving on either uplink address to c (a port forward, for return routing).
Each ISP filters what its customer sends (BCP 38): a packet from the router with a
source address that is not in that ISP's prefix is dropped. That is what makes the
dual-WAN failures visible: a flow NATed to ISP1's address that gets routed out via
ISP2 dies there, and a reply that leaves by the wrong uplink too.

"Killing ISP1's far side" (:meth:`DualWan.kill_far_side`) takes isp1's link to the
internet down: the router's own link to isp1 stays up, so only a probe *through* ISP1
can notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .lab import Bridge, Host, Lab, LabError

LAN_NET = "192.168.1.0/24"
LAN_GW = "192.168.1.1"
CLIENT_IP = "192.168.1.10"
TARGET = "192.0.2.53"
ISP_NET = {"isp1": "198.51.100", "isp2": "198.51.101"}
ISP_GW = {"isp1": "198.51.100.1", "isp2": "198.51.101.1"}
FAR = {"isp1": ("203.0.113.1/30", "203.0.113.2/30", "eth1"), "isp2": ("203.0.113.5/30", "203.0.113.6/30", "eth2")}
WAN_IF = {"isp1": "wan1", "isp2": "wan2"}
ROUTER_HOST_ID = {"r1": 2, "r2": 3}
VIP_HOST_ID = 10
FORWARD_PORT = 8080
SYNC = {"r1": "172.16.0.1/30", "r2": "172.16.0.2/30"}


def router_nft(uplink_addr: dict[str, str], strict: bool = False) -> str:
    """NAT of a router: SNAT out of each uplink to its address, port 8080 forwarded to c
    from both uplink addresses. `strict` (the HA pair): packets conntrack cannot place
    (ct state invalid: a mid-stream packet of a flow this router does not know, with
    nf_conntrack_tcp_loose=0) are dropped, so only replicated state carries a flow over."""
    filt = """\
table ip filter {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state invalid counter drop
    }
}
""" if strict else ""
    return filt + f"""\
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan1" ip saddr {LAN_NET} snat to {uplink_addr['isp1']}
        oifname "wan2" ip saddr {LAN_NET} snat to {uplink_addr['isp2']}
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {{ {uplink_addr['isp1']}, {uplink_addr['isp2']} }} tcp dport {FORWARD_PORT} dnat to {CLIENT_IP}:{FORWARD_PORT}
    }}
}}
"""


def isp_nft(isp: str) -> str:
    """BCP 38 at the ISP: only its own customer prefix may come in from the customer side."""
    return f"""\
table ip bcp38 {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "eth0" ip saddr != {ISP_NET[isp]}.0/24 counter drop
    }}
}}
"""


@dataclass
class DualWan:
    lab: Lab
    c: Host
    net: Host
    isp1: Host
    isp2: Host
    routers: list[Host]
    lan: Bridge
    isp_bridges: dict[str, Bridge]
    uplink_addr: dict[str, str] = field(default_factory=dict)  # isp -> the router side's (NAT) address
    server_ip: str = TARGET

    @property
    def r1(self) -> Host:
        return self.routers[0]

    @property
    def r2(self) -> Host:
        if len(self.routers) < 2:
            raise LabError("this dual-WAN lab has one router")
        return self.routers[1]

    @property
    def s(self) -> Host:
        """The internet host, under the name halab.traffic's helpers use for the server."""
        return self.net

    def isp(self, name: str) -> Host:
        return {"isp1": self.isp1, "isp2": self.isp2}[name]

    def router_addr(self, router: Host, isp: str) -> str:
        return f"{ISP_NET[isp]}.{ROUTER_HOST_ID[router.name]}"

    # -- failures
    def kill_far_side(self, isp: str) -> None:
        """The ISP loses its link to the internet; the router's link to it stays up."""
        self.lab.set_link(self.isp(isp), "eth1", False)

    def restore_far_side(self, isp: str) -> None:
        """Link up again, and the routes the kernel dropped with it back."""
        self.lab.set_link(self.isp(isp), "eth1", True)
        _far_routes(self.isp(isp), self.net, isp)

    def drop_every_other_echo(self, isp: str) -> None:
        """A flapping path: the internet host drops every second ICMP echo arriving from
        `isp` (alternating loss: no sch_netem in this kernel, nftables numgen instead)."""
        ifname = FAR[isp][2]
        self.net.run(["nft", "-f", "-"], check=True, input=f"""\
table ip flap_{isp} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{ifname}" icmp type echo-request numgen inc mod 2 == 0 counter drop
    }}
}}
""")

    def stop_flapping(self, isp: str) -> None:
        self.net.run(["nft", "delete", "table", "ip", f"flap_{isp}"], check=True)

    # -- observation
    def default_route(self, router: Host) -> str | None:
        """The interface the main table's default route leaves by, or None."""
        routes = router._ip_json("-4", "route", "show", "default")
        return routes[0].get("dev") if routes else None

    def bcp38_drops(self, isp: str) -> int:
        """Packets the ISP dropped because their source was not its customer's prefix."""
        out = self.isp(isp).run(["nft", "list", "table", "ip", "bcp38"], check=True).stdout
        for line in out.splitlines():
            if "counter packets" in line:
                return int(line.split("counter packets", 1)[1].split()[0])
        return 0


def _far_routes(isp_host: Host, net: Host, isp: str) -> None:
    near, far, _ = FAR[isp]
    isp_host.ip("route", "replace", "default", "via", far.split("/")[0])
    # Answers come from the target address (what a server on the internet would use).
    net.ip("route", "replace", f"{ISP_NET[isp]}.0/24", "via", near.split("/")[0], "src", TARGET)


def _router(lab: Lab, r: Host, lan: Bridge, bridges: dict[str, Bridge], vips: bool) -> None:
    r.sysctl("net.ipv4.conf.default.rp_filter", 0)
    r.sysctl("net.ipv4.conf.all.rp_filter", 0)
    hid = ROUTER_HOST_ID[r.name]
    lab.connect(r, lan, "eth1", f"192.168.1.{hid if vips else 1}/24")
    for isp, ifname in WAN_IF.items():
        lab.connect(r, bridges[isp], ifname, f"{ISP_NET[isp]}.{hid}/24")
    r.sysctl("net.ipv4.ip_forward", 1)


def build_dualwan(lab: Lab, routers: int = 1) -> DualWan:
    """Build the topology (see the module docstring). Nothing runs; every router starts
    with its default route via ISP1 (what a static configuration would have)."""
    if routers not in (1, 2):
        raise ValueError("routers must be 1 or 2")
    lan = lab.add_bridge("lan")
    bridges = {isp: lab.add_bridge(isp) for isp in ISP_NET}
    c = lab.add_host("c", ipv6=False)
    net = lab.add_host("net", ipv6=False)
    isps = {isp: lab.add_host(isp, ipv6=False) for isp in ISP_NET}
    rs = [lab.add_host(f"r{i + 1}", ipv6=False) for i in range(routers)]
    lab.connect(c, lan, "eth0", f"{CLIENT_IP}/24")
    c.ip("route", "add", "default", "via", LAN_GW)
    net.ip("addr", "add", f"{TARGET}/32", "dev", "lo")
    for isp, h in isps.items():
        near, far, net_if = FAR[isp]
        lab.connect(h, bridges[isp], "eth0", f"{ISP_GW[isp]}/24")
        lab.link(h, "eth1", near, net, net_if, far)
        _far_routes(h, net, isp)
        h.sysctl("net.ipv4.ip_forward", 1)
        h.run(["nft", "-f", "-"], check=True, input=isp_nft(isp))
    vips = routers == 2
    for r in rs:
        _router(lab, r, lan, bridges, vips)
    if vips:
        lab.link(rs[0], "sync0", SYNC["r1"], rs[1], "sync0", SYNC["r2"])
        uplink_addr = {isp: f"{ISP_NET[isp]}.{VIP_HOST_ID}" for isp in ISP_NET}
    else:
        uplink_addr = {isp: f"{ISP_NET[isp]}.{ROUTER_HOST_ID['r1']}" for isp in ISP_NET}
    for r in rs:
        r.run(["nft", "-f", "-"], check=True, input=router_nft(uplink_addr, strict=vips))
        r.sysctl("net.netfilter.nf_conntrack_events", 1)
        if vips:
            r.sysctl("net.netfilter.nf_conntrack_tcp_loose", 0)
        r.ip("route", "add", "default", "via", ISP_GW["isp1"], "dev", "wan1")
    return DualWan(lab, c, net, isps["isp1"], isps["isp2"], rs, lan, bridges, uplink_addr)


VRRP_GROUP = "GW"


def vrrp_instances(priority: int) -> dict[str, dict]:
    """The pair's instances (two routers): a VIP on each uplink segment (the NAT
    addresses) and the LAN gateway, in one sync group. No virtual MAC: the VIPs sit on
    wan1/wan2/eth1 themselves, so the return-routing rules see the uplink as iifname."""
    common = {"priority": priority, "advert_interval": 1, "use_vmac": False}
    inst = {"LAN": {"interface": "eth1", "vrid": 13, "virtual_addresses": [f"{LAN_GW}/24"], **common}}
    for i, (isp, ifname) in enumerate(WAN_IF.items()):
        inst[ifname.upper()] = {"interface": ifname, "vrid": 11 + i,
                                "virtual_addresses": [f"{ISP_NET[isp]}.{VIP_HOST_ID}/24"], **common}
    return inst


def uplinks_config(dw: DualWan, *, interval: float = 0.2, rise: int = 3, fall: int = 3, flush=None,
                   return_routing: bool = False, flush_on_return: bool = False) -> dict:
    """The [vrrpd] probe and uplinks tables for a router of `dw` (ISP1 preferred)."""
    probes, links = {}, {}
    for isp, pref in (("isp1", 200), ("isp2", 100)):
        name = isp.upper()
        probes[name] = {"interface": WAN_IF[isp], "gateway": ISP_GW[isp], "target": TARGET,
                        "interval": interval, "timeout": min(interval, 0.5), "rise": rise, "fall": fall}
        links[name] = {"interface": WAN_IF[isp], "gateway": ISP_GW[isp], "probe": name, "preference": pref,
                       "snat_address": dw.uplink_addr[isp]}
    up: dict = {"return_routing": return_routing, "flush_on_return": flush_on_return}
    if flush is not None:
        up["flush"] = flush
    up["link"] = links
    return {"probe": probes, "uplinks": up}
