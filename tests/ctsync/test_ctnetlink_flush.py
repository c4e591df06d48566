"""ctnetlink.flush: which entries belong to a dead uplink (pure), and deleting them
through ctnetlink in a lab namespace."""

from __future__ import annotations

import ipaddress

import pytest
import trio

from ctnetlink import constants as C
from ctnetlink.codec import Entry, Tuple
from ctnetlink.flush import flush_nat_address, matches
from ctnetlink.socket import CtSocket

A = ipaddress.ip_address
ISP1, ISP2 = A("198.51.100.2"), A("198.51.101.2")
SNAT = C.IPS_CONFIRMED | C.IPS_SRC_NAT


def snat(proto, sport, dport, to, src="192.168.1.10", dst="192.0.2.53", mark=0):
    return Entry(Tuple(C.AF_INET, proto, A(src), A(dst), sport, dport),
                 Tuple(C.AF_INET, proto, A(dst), to, dport, sport), SNAT, 60, mark=mark)


SIP1 = snat(17, 5060, 5060, ISP1)
DNS1 = snat(17, 40000, 53, ISP1)
WEB1 = snat(6, 40001, 443, ISP1)
SIP2 = snat(17, 5061, 5060, ISP2)
PLAIN = Entry(Tuple(C.AF_INET, 17, A("192.168.1.10"), A("192.0.2.53"), 5062, 5060),
              Tuple(C.AF_INET, 17, A("192.0.2.53"), A("192.168.1.10"), 5060, 5062), C.IPS_CONFIRMED, 60)
ALL = [SIP1, DNS1, WEB1, SIP2, PLAIN]


def test_matches_only_entries_natted_to_the_address_and_the_filter():
    assert [e for e in ALL if matches(e, ISP1)] == [SIP1, DNS1, WEB1]
    assert [e for e in ALL if matches(e, ISP1, "udp")] == [SIP1, DNS1]
    assert [e for e in ALL if matches(e, ISP1, "udp", 5060)] == [SIP1]
    assert [e for e in ALL if matches(e, ISP2, "udp", 5060)] == [SIP2]
    assert not any(matches(e, A("10.0.0.1")) for e in ALL)  # not NATed to it: untouched


@pytest.mark.netns
def test_flush_deletes_exactly_the_matching_entries_and_keeps_marks(lab):
    r = lab.add_host("r", ipv6=False)
    entries = [snat(17, 5060, 5060, ISP1, mark=1), snat(17, 5070, 5060, ISP1, src="192.168.1.11", mark=1),
               snat(17, 40000, 53, ISP1, mark=1), snat(17, 5061, 5060, ISP2, mark=2)]

    async def main():
        with CtSocket.open(netns=r.netns) as s:
            for e in entries:
                assert await s.commit(e) == 0
            # a committed entry keeps its connmark (what return routing after a failover needs)
            assert [(await s.get(e.orig)).mark for e in entries] == [1, 1, 1, 2]
            res = await flush_nat_address(s, ISP1, "udp", 5060)
            assert (res.matched, res.deleted, res.errors) == (2, 2, [])
            assert sorted(res.flows) == ["udp 192.168.1.10:5060 -> 192.0.2.53:5060 (SNAT 198.51.100.2)",
                                         "udp 192.168.1.11:5070 -> 192.0.2.53:5060 (SNAT 198.51.100.2)"]
            left = {(e.orig.sport, e.orig.dport) for e in await s.dump(C.AF_INET)}
            assert left == {(40000, 53), (5061, 5060)}
            again = await flush_nat_address(s, ISP1, "udp", 5060)
            assert again.matched == 0

    trio.run(main)
