"""The classic two-router HA pair with NAT, in a lab.

::

      c 192.168.100.10  (default route via the LAN VIP 192.168.100.1)
          |
    ------+------------------------ bridge "lan"  192.168.100.0/24
          |                     |
     eth1 .2                 eth1 .3
        r1 ---- sync0 ------- r2        172.16.0.1/30 <-> 172.16.0.2/30 (direct veth)
     eth0 .2                 eth0 .3
          |                     |
    ------+---------------------+--+--- bridge "wan"  10.10.0.0/24
                                   |
                          s 10.10.0.200  (the "internet": no route back to the
                                          LAN, it only ever sees 10.10.0.101)

Both routers forward, SNAT the LAN to the WAN VIP 10.10.0.101 (as in Vyatta's
example) and, with ``ruleset="strict"``, only let established/related
traffic in from the WAN (stateful firewall, ``nf_conntrack_tcp_loose=0``): a
router that takes over *without* the conntrack state drops the packets of
the flows it does not know.  ``ruleset="permissive"`` accepts everything and
lets conntrack pick up TCP connections mid-stream (``tcp_loose=1``).

VRRP (see :meth:`HaPair.vrrpd_instances`): instance ``WAN`` on eth0 (VRID 1,
VIP 10.10.0.101/24) and ``LAN`` on eth1 (VRID 2, VIP 192.168.100.1/24), sync
group ``MAIN-GW``, like ``configs/r1.toml`` / ``configs/r2.toml``.

``family=6`` builds the same pair for IPv6 traffic (the IPv4 addresses stay, the
sync link keeps carrying ctsync over IPv4): LAN fd00:100::/64 (client ::10, routers
::2/::3), WAN 2001:db8:10::/64 (server ::200, routers ::2/::3), NAT66 of the LAN to
the WAN VIP 2001:db8:10::101 (nft ``snat ip6``), the same strict or permissive
filter for ``ip6``. The instances WAN and LAN are VRRPv3 with IPv6 VIPs, each list
starting with the virtual link-local address fe80::1 (RFC 5798 §5.2.9); the
client's default route is ``via fe80::1`` on its LAN link.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from dataclasses import dataclass, field

from .lab import Bridge, Host, Lab, LabError, Proc, wait_for
from .vrrp import Vrrpd
from .vrrp import start_vrrpd as _start_vrrpd

__all__ = [
    "HaPair", "build_hapair", "nft_ruleset", "RULESETS",
    "LAN_NET", "LAN_VIP", "WAN_NET", "WAN_VIP", "CLIENT_IP", "SERVER_IP",
    "LAN_NET6", "LAN_VIP6", "WAN_NET6", "WAN_VIP6", "CLIENT_IP6", "SERVER_IP6", "VIP_LINK_LOCAL",
    "ROUTER_ADDRS", "ROUTER_ADDRS6", "SYNC_ADDRS", "SYNC_GROUP", "INSTANCES",
]

LAN_NET = "192.168.100.0/24"
LAN_VIP = "192.168.100.1"
WAN_NET = "10.10.0.0/24"
WAN_VIP = "10.10.0.101"
CLIENT_IP = "192.168.100.10"
SERVER_IP = "10.10.0.200"
ROUTER_ADDRS = {
    "r1": {"eth0": "10.10.0.2/24", "eth1": "192.168.100.2/24", "sync0": "172.16.0.1/30"},
    "r2": {"eth0": "10.10.0.3/24", "eth1": "192.168.100.3/24", "sync0": "172.16.0.2/30"},
}
SYNC_ADDRS = {"r1": "172.16.0.1", "r2": "172.16.0.2"}
LAN_NET6 = "fd00:100::/64"
LAN_VIP6 = "fd00:100::1"
WAN_NET6 = "2001:db8:10::/64"
WAN_VIP6 = "2001:db8:10::101"
CLIENT_IP6 = "fd00:100::10"
SERVER_IP6 = "2001:db8:10::200"
VIP_LINK_LOCAL = "fe80::1"  # each IPv6 instance's first VIP: the hosts' router address
ROUTER_ADDRS6 = {
    "r1": {"eth0": "2001:db8:10::2/64", "eth1": "fd00:100::2/64"},
    "r2": {"eth0": "2001:db8:10::3/64", "eth1": "fd00:100::3/64"},
}
SYNC_GROUP = "MAIN-GW"
INSTANCES = ("WAN", "LAN")
RULESETS = ("strict", "permissive")
ROUTER_LINKS = ("eth0", "eth1", "sync0")


def nft_ruleset6(ruleset: str = "strict") -> str:
    """The IPv6 half of a ``family=6`` pair: NAT66 of the LAN to the WAN VIP, and the same
    filter as IPv4's (ICMPv6 errors of known flows are ``related``; neighbour discovery
    is not forwarded, so the forward chain never sees it)."""
    nat = f"""\
table ip6 nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip6 saddr {LAN_NET6} snat to {WAN_VIP6}
    }}
}}
"""
    if ruleset == "strict":
        filt = f"""\
table ip6 filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state invalid drop
        ct state established,related accept
        iifname {{ "eth1", "vrrp6.2.eth1" }} oifname "eth0" ip6 saddr {LAN_NET6} ct state new accept
    }}
}}
"""
    else:
        filt = """\
table ip6 filter {
    chain forward {
        type filter hook forward priority filter; policy accept;
    }
}
"""
    return nat + filt


def nft_ruleset(ruleset: str = "strict") -> str:
    """The nftables ruleset loaded on both routers (``nft -f``), as text.

    The NAT table is the same for both: LAN sources leaving by eth0 are
    SNATed to the WAN VIP.  (VRRP puts the VIPs on macvlans ``vrrpN.ethX``
    with ``noprefixroute``, so the route to the WAN still leaves by eth0;
    packets *to* a VIP arrive on the macvlan, hence the interface sets.)
    """
    if ruleset not in RULESETS:
        raise ValueError(f"ruleset must be one of {RULESETS}, got {ruleset!r}")
    nat = f"""\
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr {LAN_NET} snat to {WAN_VIP}
    }}
}}
"""
    if ruleset == "strict":
        filt = f"""\
table ip filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state invalid counter drop
        ct state established,related accept
        iifname {{ "eth1", "vrrp2.eth1" }} oifname "eth0" ip saddr {LAN_NET} ct state new accept
    }}
}}
"""
    else:
        filt = """\
table ip filter {
    chain forward {
        type filter hook forward priority filter; policy accept;
    }
}
"""
    return nat + filt


def _sysctls(ruleset: str) -> dict[str, object]:
    """Sysctls of both routers (set after the ruleset is loaded, so that the
    nf_conntrack ones exist)."""
    return {
        "net.ipv4.ip_forward": 1,
        "net.ipv4.conf.all.rp_filter": 0,
        "net.ipv4.conf.default.rp_filter": 0,
        "net.netfilter.nf_conntrack_events": 1,
        "net.netfilter.nf_conntrack_tcp_loose": 0 if ruleset == "strict" else 1,
    }


@dataclass
class HaPair:
    """The built topology (see the module docstring) and helpers to run it."""

    lab: Lab
    c: Host
    s: Host
    r1: Host
    r2: Host
    lan: Bridge
    wan: Bridge
    ruleset: str = "strict"
    sync: bool = True
    vrrpd: dict[str, Vrrpd] = field(default_factory=dict)
    family: int = 4  # of the traffic and the VIPs (see the module doc)

    @property
    def server_ip(self) -> str:
        return SERVER_IP6 if self.family == 6 else SERVER_IP

    @property
    def client_ip(self) -> str:
        return CLIENT_IP6 if self.family == 6 else CLIENT_IP

    @property
    def vips(self) -> dict[str, str]:
        """{'WAN': public VIP, 'LAN': the clients' gateway VIP} of the pair's family."""
        if self.family == 6:
            return {"WAN": WAN_VIP6, "LAN": LAN_VIP6}
        return {"WAN": WAN_VIP, "LAN": LAN_VIP}

    # -- lookups
    def router(self, router: Host | str) -> Host:
        """``"r1"``/``"r2"`` or one of the router Hosts -> the Host."""
        if isinstance(router, str):
            if router not in ("r1", "r2"):
                raise LabError(f"no router {router!r} (r1 or r2)")
            return getattr(self, router)
        if router is self.r1 or router is self.r2:
            return router
        raise LabError(f"{router!r} is not a router of this pair")

    @property
    def routers(self) -> tuple[Host, Host]:
        return (self.r1, self.r2)

    # -- vrrpd
    def vrrpd_instances(self, priority: int, advert_interval: float = 1, track_links: bool = False,
                        **extra) -> dict[str, dict]:
        """The two instances for :func:`halab.vrrp.start_vrrpd` (``extra`` keys,
        e.g. ``preempt=False``, go into both).  ``track_links``: each instance
        tracks the other side's link with weight -150, as in ``configs/r1.toml``.
        IPv6, or an interval that is not whole seconds: VRRPv3, accepting packets to
        the VIPs as v2 does (``accept_mode``: what keepalived and FRR do by default),
        so the versions differ in nothing else."""
        common = {"priority": priority, "advert_interval": advert_interval, "preempt": True}
        if self.family == 6 or not float(advert_interval).is_integer():
            common.update(version=3, accept_mode=True)
        common.update(extra)
        track = ({"WAN": {"track_interfaces": [{"interface": "eth1", "weight": -150}]},
                  "LAN": {"track_interfaces": [{"interface": "eth0", "weight": -150}]}}
                 if track_links else {"WAN": {}, "LAN": {}})
        if self.family == 6:
            wan, lan = [f"{VIP_LINK_LOCAL}/64", f"{WAN_VIP6}/64"], [f"{VIP_LINK_LOCAL}/64", f"{LAN_VIP6}/64"]
        else:
            wan, lan = [f"{WAN_VIP}/24"], [f"{LAN_VIP}/24"]
        return {
            "WAN": {"interface": "eth0", "vrid": 1, **common, **track["WAN"], "virtual_addresses": wan},
            "LAN": {"interface": "eth1", "vrid": 2, **common, **track["LAN"], "virtual_addresses": lan},
        }

    def sync_groups(self) -> dict[str, list[str]]:
        return {SYNC_GROUP: list(INSTANCES)}

    def start_vrrpd(self, router: Host | str, priority: int, *, advert_interval: float = 1,
                    name: str = "vrrpd", extra_args: list[str] | None = None,
                    wait: bool = True, env: dict[str, str] | None = None, prefix: list[str] | None = None,
                    top: dict | None = None, **instance_kw) -> Vrrpd:
        """Start vrrpd with both instances and the sync group in ``router``;
        the handle is also kept in ``self.vrrpd[router name]`` (``env``, ``prefix``,
        ``top``: see halab.vrrp.start_vrrpd)."""
        host = self.router(router)
        d = _start_vrrpd(host, self.vrrpd_instances(priority, advert_interval, **instance_kw),
                         self.sync_groups(), name=name, extra_args=extra_args, wait=wait, env=env, prefix=prefix,
                         top=top)
        self.vrrpd[host.name] = d
        return d

    def state(self, router: Host | str) -> dict[str, str | None]:
        """{'WAN': state, 'LAN': state} of the vrrpd started in ``router``,
        upper case ('MASTER', 'BACKUP', 'FAULT', ...; None for an
        instance/daemon that does not answer)."""
        d = self.vrrpd.get(self.router(router).name)
        if d is None:
            return {i: None for i in INSTANCES}
        try:
            st = d.status()
        except (OSError, ValueError):
            return {i: None for i in INSTANCES}
        out = {}
        for i in INSTANCES:
            v = st.get(i, {}).get("state")
            out[i] = v.upper() if isinstance(v, str) else None
        return out

    def holds_vips(self, router: Host | str) -> bool:
        """Both VIPs configured on an interface that is up (what the kernel
        says, not what vrrpd reports)."""
        host = self.router(router)
        held = set()
        for link in host._ip_json(f"-{self.family}", "addr", "show", "up"):
            if "UP" not in link.get("flags", []) or "LOWER_UP" not in link.get("flags", []):
                continue
            held.update(a.get("local") for a in link.get("addr_info", []))
        return set(self.vips.values()) <= held

    def wait_master(self, router: Host | str, timeout: float = 15.0,
                    vip_timeout: float | None = 5.0) -> None:
        """Wait until both instances of ``router`` are MASTER, then (unless
        ``vip_timeout`` is None) until the VIPs are really on an up interface
        there: vrrpd adds them after a holding subscriber (ctsync's commit)
        confirms, at most ``transition_hold_timeout`` (2 s) later."""
        host = self.router(router)
        wait_for(lambda: all(v == "MASTER" for v in self.state(host).values()),
                 timeout=timeout, interval=0.05, what=f"{host.name} MASTER on WAN and LAN")
        if vip_timeout is None:
            return
        try:
            wait_for(lambda: self.holds_vips(host), timeout=vip_timeout, interval=0.05,
                     what=f"{host.name} to hold both VIPs")
        except LabError:
            addrs = host.run(["ip", f"-{self.family}", "-br", "addr"]).stdout
            d = self.vrrpd.get(host.name)
            log = d.proc.read_log()[-2000:] if d is not None else ""
            raise LabError(f"{host.name}: vrrpd reports MASTER on WAN and LAN but the VIPs "
                           f"are not both on an up interface:\n{addrs}\nvrrpd log:\n{log}") from None

    def wait_backup(self, router: Host | str, timeout: float = 15.0) -> None:
        host = self.router(router)
        wait_for(lambda: all(v == "BACKUP" for v in self.state(host).values()),
                 timeout=timeout, interval=0.05, what=f"{host.name} BACKUP on WAN and LAN")

    # -- failures
    def procs_in(self, router: Host | str) -> list[Proc]:
        """Live processes the lab started in ``router``."""
        host = self.router(router)
        return [p for p in self.lab.procs if p.host is host and p.alive()]

    def links(self, router: Host | str | None = None) -> list[str]:
        """The links hard_fail/revive act on (sync0 only if built)."""
        return [i for i in ROUTER_LINKS if i != "sync0" or self.sync]

    def hard_fail(self, router: Host | str) -> list[Proc]:
        """A crash/power loss: every process the lab started in ``router`` is frozen
        (SIGSTOP to its process group: no goodbye advert, no reaction to what follows),
        its eth0, eth1 (and sync0) go down together (one ``ip -batch``: the box stops
        forwarding the moment it stops advertising, give or take a few ms), then the
        processes are SIGKILLed -- no cleanup, VIPs stay configured.  Returns the
        killed Procs."""
        host = self.router(router)
        killed = self.procs_in(host)
        for p in killed:
            try:
                os.killpg(p.pgid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pass
        batch = "".join(f"link set dev {ifname} down\n" for ifname in self.links(host))
        self.lab._check_target(host)
        cp = subprocess.run(["ip", "-n", host.netns, "-batch", "-"], input=batch, capture_output=True, text=True,
                            timeout=30)
        if cp.returncode != 0:
            raise LabError(f"{host.name}: taking the links down failed: {cp.stderr.strip()}")
        for p in killed:
            p.kill()
        return killed

    def revive(self, router: Host | str) -> None:
        """Links up again (restart the daemons yourself)."""
        host = self.router(router)
        for ifname in self.links(host):
            self.lab.set_link(host, ifname, True)

    # -- state
    def conntrack(self, router: Host | str, *args: str, timeout: float = 30) -> list[str]:
        """``conntrack -L ARGS`` in ``router`` (e.g. ``"-n"`` for SNATed
        entries, ``"-p", "tcp"``); returns the entry lines."""
        host = self.router(router)
        cp = host.run(["conntrack", "-L", *args], timeout=timeout)
        if cp.returncode != 0:
            raise LabError(f"conntrack -L on {host.name} failed: {cp.stderr.strip()}")
        return [ln for ln in cp.stdout.splitlines() if ln.strip() and "=" in ln]

    def invalid_drops(self, router: Host | str) -> int:
        """Packets the strict ruleset's forward chain dropped as ct state invalid so far."""
        cp = self.router(router).run(["nft", "-j", "list", "chain", "ip", "filter", "forward"], timeout=15)
        if cp.returncode != 0:
            raise LabError(f"nft list chain on {self.router(router).name} failed: {cp.stderr.strip()}")
        for item in json.loads(cp.stdout).get("nftables", []):
            rule = item.get("rule")
            if rule and any("drop" in e for e in rule["expr"]) and "invalid" in json.dumps(rule["expr"]):
                return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return 0

    def conntrack_flush(self, router: Host | str) -> None:
        self.router(router).run(["conntrack", "-F"], timeout=30)


def _setup_router(r: Host, ruleset: str, family: int = 4) -> None:
    r.run(["nft", "-f", "-"], check=True, input=nft_ruleset(ruleset), timeout=30)
    if family == 6:
        r.run(["nft", "-f", "-"], check=True, input=nft_ruleset6(ruleset), timeout=30)
        r.sysctl("net.ipv6.conf.all.forwarding", 1)
    for key, value in _sysctls(ruleset).items():
        r.sysctl(key, value)
    for ifname in ("eth0", "eth1", "sync0"):
        if r.run(["test", "-d", f"/proc/sys/net/ipv4/conf/{ifname}"]).returncode == 0:
            r.sysctl(f"net.ipv4.conf.{ifname}.rp_filter", 0)


def build_hapair(lab: Lab, ruleset: str = "strict", sync: bool = True, family: int = 4) -> HaPair:
    """Build the pair in ``lab`` (hosts c, s, r1, r2; bridges lan, wan).

    ``sync``: create the direct ``sync0`` veth between r1 and r2 (the
    conntrack replication link); no daemon is started.  ``family=4``: IPv6 is
    off in all hosts (less noise on the wire); ``family=6``: the IPv6 pair of
    the module doc, on top of the IPv4 addresses.  Nothing runs until you
    start vrrpd (:meth:`HaPair.start_vrrpd`)."""
    if ruleset not in RULESETS:
        raise ValueError(f"ruleset must be one of {RULESETS}, got {ruleset!r}")
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, got {family!r}")
    v6 = family == 6
    lan = lab.add_bridge("lan")
    wan = lab.add_bridge("wan")
    c = lab.add_host("c", ipv6=v6)
    s = lab.add_host("s", ipv6=v6)
    r1 = lab.add_host("r1", ipv6=v6)
    r2 = lab.add_host("r2", ipv6=v6)
    if v6:
        for h in (c, s, r1, r2):
            # Before the links exist: no duplicate address detection to wait for (the
            # link-local addresses are the routers' advert sources).
            h.sysctl("net.ipv6.conf.default.accept_dad", 0)
            h.sysctl("net.ipv6.conf.all.accept_dad", 0)
    for r in (r1, r2):
        # Before the links exist, so that every interface inherits it.
        r.sysctl("net.ipv4.conf.default.rp_filter", 0)
        r.sysctl("net.ipv4.conf.all.rp_filter", 0)
    lab.connect(c, lan, "eth0", f"{CLIENT_IP}/24")
    c.ip("route", "add", "default", "via", LAN_VIP)
    lab.connect(s, wan, "eth0", f"{SERVER_IP}/24")
    for r in (r1, r2):
        addrs = ROUTER_ADDRS[r.name]
        lab.connect(r, wan, "eth0", addrs["eth0"])
        lab.connect(r, lan, "eth1", addrs["eth1"])
    if sync:
        lab.link(r1, "sync0", ROUTER_ADDRS["r1"]["sync0"], r2, "sync0", ROUTER_ADDRS["r2"]["sync0"])
    if v6:
        c.ip("-6", "addr", "add", f"{CLIENT_IP6}/64", "dev", "eth0", "nodad")
        c.ip("-6", "route", "add", "default", "via", VIP_LINK_LOCAL, "dev", "eth0")
        s.ip("-6", "addr", "add", f"{SERVER_IP6}/64", "dev", "eth0", "nodad")
        for r in (r1, r2):
            for ifname, a in ROUTER_ADDRS6[r.name].items():
                r.ip("-6", "addr", "add", a, "dev", ifname, "nodad")
    for r in (r1, r2):
        _setup_router(r, ruleset, family)
    return HaPair(lab, c, s, r1, r2, lan, wan, ruleset=ruleset, sync=sync, family=family)
