"""Two routers and a host on one bridge: the VRRP test topology.

    r1 10.0.0.2 ─┐
    r2 10.0.0.3 ─┼─ bridge "lan" (in the lab's switch namespace, snooping off)
    h  10.0.0.4 ─┘           VIP 10.0.0.100, VRID 7
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import halab
from halab.vrrp import Vrrpd, start_vrrpd

VIP = "10.0.0.100"
VRID = 7
ADDRS = {"r1": "10.0.0.2", "r2": "10.0.0.3", "h": "10.0.0.4"}


def instance(priority: int, **kw) -> dict:
    inst = {
        "interface": "eth0",
        "vrid": VRID,
        "priority": priority,
        "advert_interval": 1,
        "virtual_addresses": [f"{VIP}/24"],
    }
    inst.update(kw)
    return inst


@dataclass
class Pair:
    lab: halab.Lab
    r1: halab.Host
    r2: halab.Host
    h: halab.Host
    br: halab.Bridge
    daemons: dict[str, Vrrpd] = field(default_factory=dict)

    def start(self, router: str, priority: int, name: str = "V", **kw) -> Vrrpd:
        host = getattr(self, router)
        d = start_vrrpd(host, {name: instance(priority, **kw)})
        self.daemons[router] = d
        return d

    def capture(self, filename: str = "lan.pcap", bpf: str = "vrrp or arp"):
        return self.lab.capture(self.br, None, filename, bpf=bpf)


@pytest.fixture
def pair(lab):
    br = lab.add_bridge("lan")
    hosts = {}
    for name, ip in ADDRS.items():
        hosts[name] = lab.add_host(name)
        lab.connect(hosts[name], br, "eth0", f"{ip}/24")
    return Pair(lab, hosts["r1"], hosts["r2"], hosts["h"], br)
