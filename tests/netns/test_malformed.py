"""Malformed adverts injected from the host: each is dropped with exactly its counter,
on both routers, and never changes state; random garbage never crashes the daemons."""

from __future__ import annotations

import ipaddress
import os
import random
import struct
import sys
import time

import pytest

from vrrpd.packet import (
    AUTH_SIMPLE,
    VRRP_GROUP,
    VRRP_GROUP_MAC,
    Advert,
    build_advert,
    checksum,
    encode_auth,
)
from vrrpd.status import COUNTER_NAMES

from .conftest import ADDRS, VIP, VRID

pytestmark = pytest.mark.netns

ERROR_COUNTERS = [n for n in COUNTER_NAMES if n.endswith(("errors", "failures", "discards")) and n != "send_errors"]
SRC = ipaddress.IPv4Address(ADDRS["h"])
GOOD = Advert(VRID, 50, (ipaddress.IPv4Address(VIP),), 1)

SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for h in sys.argv[1:]:
    s.send(bytes.fromhex(h))
"""


def ip_packet(payload: bytes, ttl: int = 255, src=SRC, total: int | None = None) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, total or 20 + len(payload), 0, 0, ttl, 112, 0, src.packed, VRRP_GROUP.packed)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def frame(ip: bytes) -> bytes:
    return VRRP_GROUP_MAC + bytes.fromhex("020000000004") + b"\x08\x00" + ip


def fix_checksum(payload: bytes) -> bytes:
    p = payload[:6] + b"\0\0" + payload[8:]
    return p[:6] + struct.pack("!H", checksum(p)) + p[8:]


def variants() -> dict[str, bytes]:
    good = build_advert(GOOD)
    v3 = fix_checksum(bytes([0x31]) + good[1:])
    short = build_advert(Advert(VRID, 50, (ipaddress.IPv4Address(VIP), ipaddress.IPv4Address("10.0.0.101")), 1))[:-12]
    bad_sum = good[:6] + bytes([good[6] ^ 0xFF, good[7]]) + good[8:]
    type2 = fix_checksum(bytes([0x22]) + good[1:])
    return {
        "ttl_errors": frame(ip_packet(good, ttl=254)),
        "version_errors": frame(ip_packet(v3)),
        "length_errors": frame(ip_packet(short)),
        "checksum_errors": frame(ip_packet(bad_sum)),
        "type_errors": frame(ip_packet(type2)),
        "vrid_errors": frame(ip_packet(build_advert(Advert(99, 50, GOOD.addresses, 1)))),
        "auth_type_errors": frame(ip_packet(build_advert(Advert(VRID, 50, GOOD.addresses, 1, AUTH_SIMPLE, encode_auth("x"))))),
        "interval_errors": frame(ip_packet(build_advert(Advert(VRID, 50, GOOD.addresses, 3)))),
    }


def inject(host, frames: list[bytes]) -> None:
    host.run([sys.executable, "-c", SENDER, *(f.hex() for f in frames)], check=True)


def errors(d) -> dict[str, int]:
    c = d.counters("V")
    return {n: c[n] for n in ERROR_COUNTERS}


def test_each_malformed_advert_counts_exactly_its_reason(pair):
    r1 = pair.start("r1", 200)
    r2 = pair.start("r2", 100)
    r1.wait_state("V", "master", timeout=8)
    r2.wait_state("V", "backup")
    for reason, f in variants().items():
        before = {"r1": errors(r1), "r2": errors(r2)}
        inject(pair.h, [f])
        time.sleep(0.3)
        for name, d in (("r1", r1), ("r2", r2)):
            after = errors(d)
            expected = dict(before[name], **{reason: before[name][reason] + 1})
            assert after == expected, f"{reason} on {name}: {after} != {expected}"
        assert r1.state("V") == "master" and r2.state("V") == "backup", f"state changed after {reason}"
    # Address list mismatch: counted, accepted (default), no state change.
    odd = frame(ip_packet(build_advert(Advert(VRID, 1, (ipaddress.IPv4Address("10.0.0.222"),), 1))))
    before = r2.counters("V")
    inject(pair.h, [odd])
    time.sleep(0.3)
    after = r2.counters("V")
    assert after["address_list_errors"] == before["address_list_errors"] + 1
    assert r1.state("V") == "master" and r2.state("V") == "backup"


def test_wrong_password_and_owner_discard(pair):
    auth = {"type": "pass", "password": "s3cret"}
    r1 = pair.start("r1", 255, auth=auth)  # the owner discards every advert
    r2 = pair.start("r2", 100, auth=auth)
    r1.wait_state("V", "master", timeout=5)
    r2.wait_state("V", "backup", timeout=5)
    wrong = frame(ip_packet(build_advert(Advert(VRID, 254, GOOD.addresses, 1, AUTH_SIMPLE, encode_auth("guess")))))
    right = frame(ip_packet(build_advert(Advert(VRID, 50, GOOD.addresses, 1, AUTH_SIMPLE, encode_auth("s3cret")))))
    b1, b2 = errors(r1), errors(r2)
    inject(pair.h, [wrong])
    time.sleep(0.3)
    assert errors(r2) == dict(b2, auth_failures=b2["auth_failures"] + 1)
    assert errors(r1) == dict(b1, owner_discards=b1["owner_discards"] + 1)
    inject(pair.h, [right])
    time.sleep(0.3)
    assert errors(r1)["owner_discards"] == b1["owner_discards"] + 2
    assert r1.state("V") == "master" and r2.state("V") == "backup"


def test_random_garbage_never_crashes(pair):
    r1 = pair.start("r1", 200)
    r1.wait_state("V", "master", timeout=8)
    rng = random.Random(1234)
    good = build_advert(GOOD)
    frames = []
    for i in range(300):
        if i % 3 == 0:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
        else:  # mutate a valid advert: the interesting corner of the input space
            b = bytearray(good + os.urandom(rng.randint(0, 12)))
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.getrandbits(8)
            payload = bytes(b)
        frames.append(frame(ip_packet(payload, ttl=rng.choice((255, 255, 1)))))
    for k in range(0, len(frames), 50):
        inject(pair.h, frames[k:k + 50])
    time.sleep(0.5)
    assert r1.proc.alive()
    assert r1.state("V") == "master"
    total = sum(errors(r1).values()) + r1.counters("V")["adverts_rx"]
    assert total >= 250  # nearly every frame was seen and judged (a few may pass all checks)
