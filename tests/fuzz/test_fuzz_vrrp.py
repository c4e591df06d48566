"""VRRP adverts from the wire: the packet parsers (v2, v3 over IPv4 and IPv6, frames) and
the state machine behind them. Nothing may raise: a parser answers Advert or Rejected,
the machine answers actions."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrpd.machine import RouterParams, VirtualRouter
from vrrpd.packet import Advert, Rejected, checksum, parse_frame, parse_ip_packet
from vrrpd.packet_v3 import AdvertV3, checksum_v3, parse_advert_v3, parse_ipv4_packet_v3, split_ipv6

from . import corpus
from .mutate import QUICK, SLOW, apply_edits, run

A = ipaddress.ip_address


class Routers:
    """A v2 and a v3 router (IPv4 and IPv6) that take every parsed advert, with time moving."""

    def __init__(self):
        self.now = 0.0
        self.adverts = 0
        self.v2 = VirtualRouter(RouterParams("V2", 7, 100, (A("10.0.0.100"),)))
        self.v3 = VirtualRouter(RouterParams("V3", 7, 100, (A("10.0.0.100"),), 1, version=3))
        self.v6 = VirtualRouter(RouterParams("V6", 7, 100, (A("2001:db8::100"),), 1, version=3))
        for m in (self.v2, self.v3, self.v6):
            m.primary_ip = A("10.0.0.3") if m is not self.v6 else A("fe80::3")
            m.start(0.0)

    def feed(self, got) -> None:
        assert isinstance(got, (Advert, AdvertV3, Rejected)), got
        self.now += 0.05
        self.adverts += not isinstance(got, Rejected)
        if isinstance(got, Advert):
            self.v2.receive(got, self.now)
        elif isinstance(got, AdvertV3):
            (self.v6 if got.src.version == 6 else self.v3).receive(got, self.now)
        for m in (self.v2, self.v3, self.v6):
            m.handle_timer(self.now)


def targets():
    r = Routers()

    def v2(data):
        r.feed(parse_ip_packet(data))

    def v3_ipv4(data):
        r.feed(parse_ipv4_packet_v3(data))
        r.feed(parse_ipv4_packet_v3(data, ipv4_pseudo_header=False))

    def v3_ipv6(data):
        d = split_ipv6(data)
        if isinstance(d, Rejected):
            return r.feed(d)
        r.feed(parse_advert_v3(d.payload, d.src, d.dst, d.hop_limit))

    def frame(data):
        r.feed(parse_frame(data))

    # The checksum covers everything: most mutants stop there. These two recompute it
    # (what a sender that means harm does), so the odd ones reach the state machine.
    def v2_v3_ipv4_summed(data):
        if len(data) >= 28 and data[0] >> 4 == 4 and 20 <= (data[0] & 15) * 4 <= len(data) - 8:
            ihl = (data[0] & 15) * 4
            b = bytearray(data)
            b[ihl + 6:ihl + 8] = b"\0\0"
            src, dst = A(bytes(b[12:16])), A(bytes(b[16:20]))
            s = checksum(bytes(b[ihl:])) if b[ihl] >> 4 == 2 else checksum_v3(bytes(b[ihl:]), src, dst)
            b[ihl + 6:ihl + 8] = s.to_bytes(2, "big")
            data = bytes(b)
        v2(data)
        v3_ipv4(data)

    def v3_ipv6_summed(data):
        d = split_ipv6(data)
        if isinstance(d, Rejected) or len(d.payload) < 8:
            return v3_ipv6(data)
        p = bytearray(d.payload)
        p[6:8] = b"\0\0"
        p[6:8] = checksum_v3(bytes(p), d.src, d.dst).to_bytes(2, "big")
        r.feed(parse_advert_v3(bytes(p), d.src, d.dst, d.hop_limit))

    return {"v2_ipv4": (v2, corpus.vrrp_ipv4_packets, r), "v3_ipv4": (v3_ipv4, corpus.vrrp_ipv4_packets, r),
            "v3_ipv6": (v3_ipv6, corpus.vrrp_ipv6_packets, r), "frame": (frame, corpus.vrrp_frames, r),
            "ipv4_summed": (v2_v3_ipv4_summed, corpus.vrrp_ipv4_packets, r),
            "v3_ipv6_summed": (v3_ipv6_summed, corpus.vrrp_ipv6_packets, r)}


NAMES = list(targets())


@pytest.mark.parametrize("name", NAMES)
def test_mutants(name):
    target, seeds, routers = targets()[name]
    run(target, seeds(), (), QUICK, seed=len(name), what=name)
    # the mutants reach the machine too, not only the parser
    assert routers.adverts > (QUICK // 10 if name.endswith("summed") else len(seeds()))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", NAMES)
def test_a_million_mutants(name):
    target, seeds, _ = targets()[name]
    run(target, seeds(), (), SLOW, seed=1, what=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), data=st.binary(max_size=300))
def test_random_bytes(name, data):
    targets()[name][0](data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), i=st.integers(0, 100),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 400), st.integers(0, 0xFFFF)), max_size=6))
def test_edited_adverts(name, i, edits):
    target, seeds, _ = targets()[name]
    target(apply_edits(seeds()[i % len(seeds())], edits))
