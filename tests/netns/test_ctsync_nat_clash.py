"""A NAT clash at commit, in the full HA pair (lab namespaces only).

r1 is master and replicates its flows (20 TCP connections and the UDP "SIP" flow, all
SNATed to the WAN VIP) to r2. Before r1 fails, a second LAN address of the client
sends one UDP datagram to the same server port *through r2*, and r2's NAT is forced
to give it the public port that r1 gave the SIP flow: r2 now has a local entry whose
translated reply tuple (server:5060 -> VIP:P) is the one the replicated SIP entry
needs. When r1 fails hard, r2's commit must report that clash (counter, status, log,
with both original tuples), and commit every other entry with its NAT: the 20 TCP
connections carry on through r2 with the same public ports.

Run with both transports of the sync link: unicast to the peer, and multicast to a
group joined on sync0 only (then the capture on sync0 must show only datagrams to the
group, and a datagram to the group from another source must be ignored and counted).
"""

from __future__ import annotations

import sys

import pytest

from ctsync.cli import ctsyncctl_main
from halab.ctsync import start_ctsync
from halab.hapair import CLIENT_IP, SERVER_IP, WAN_VIP, build_hapair
from halab.traffic import SIP_PORT, collect, start_tcp, start_udp

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CONNS = 20
SECOND_CLIENT = "192.168.100.20"  # a LAN host that reaches the server through r2
SECOND_SPORT = 40000
IPS_SRC_NAT = 0x10
GROUP = "225.0.0.50"
FOREIGN = "172.16.0.9"  # an extra address on r1's sync0: not the peer address


def _cache_entry(ctsync, proto: int, src: str, sport: int, dport: int) -> dict:
    """The entry of one flow in ctsync's external cache (`ctsyncctl dump`)."""
    from hacommon.control import request

    for e in request(ctsync.socket, "dump", timeout=10)["entries"]:
        if (e["proto"], e["src"], e["sport"], e["dport"]) == (proto, src, sport, dport):
            return e
    raise AssertionError(f"no cached entry for {src}:{sport} -> :{dport} (proto {proto})")


def _send_through_r2(p, public_port: int) -> None:
    """One datagram SECOND_CLIENT:SECOND_SPORT -> server:5060 routed via r2, whose NAT
    maps it to WAN_VIP:public_port: a local entry holding the replicated flow's mapping."""
    p.c.ip("addr", "add", f"{SECOND_CLIENT}/24", "dev", "eth0")
    p.c.ip("rule", "add", "from", SECOND_CLIENT, "lookup", "100")
    p.c.ip("route", "add", "default", "via", "192.168.100.3", "table", "100")
    p.r2.run(["nft", "insert", "rule", "ip", "nat", "postrouting", "ip", "saddr", SECOND_CLIENT,
              "udp", "dport", str(SIP_PORT), "snat", "to", f"{WAN_VIP}:{public_port}"], check=True)
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(({SECOND_CLIENT!r}, {SECOND_SPORT})); s.sendto(b'local', ({SERVER_IP!r}, {SIP_PORT}))")
    p.c.run([sys.executable, "-c", code], check=True)


def _send_foreign(p, dest: str) -> None:
    """A datagram to the sync port from r1's sync0, but not from the peer address."""
    p.r1.ip("addr", "add", f"{FOREIGN}/32", "dev", "sync0")
    code = ("import socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(({FOREIGN!r}, 0)); "
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, "
            f"struct.pack('4s4si', bytes(4), socket.inet_aton({FOREIGN!r}), socket.if_nametoindex('sync0'))); "
            f"s.sendto(b'CTS1' + bytes(100), ({dest!r}, 3780))")
    p.r1.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("transport", ["unicast", "multicast"])
def test_nat_clash_is_reported_and_every_other_entry_commits(lab, capsys, transport):
    p = build_hapair(lab, ruleset="strict")
    extra = {"multicast_group": GROUP} if transport == "multicast" else {}
    cap = lab.capture(p.r2, "sync0", "sync0.pcap", bpf="udp port 3780")
    d = {"r1": p.start_vrrpd("r1", 200), "r2": p.start_vrrpd("r2", 100)}
    c = {r: start_ctsync(getattr(p, r), "commit", d[r].socket, **extra) for r in ("r1", "r2")}
    p.wait_master("r1")
    p.wait_backup("r2")
    c["r2"].wait(lambda s: s["in_sync"], 10, "in sync with r1")
    assert c["r2"].status()["transport"] == ("unicast" if transport == "unicast" else f"multicast {GROUP}")
    before = c["r2"].status()["channel"]["malformed"]
    _send_foreign(p, GROUP if transport == "multicast" else "172.16.0.2")
    c["r2"].wait(lambda s: s["channel"]["malformed"] == before + 1, 5, "the foreign datagram counted")
    tcp = start_tcp(p, conns=CONNS, interval=0.05, duration=14)
    udp = start_udp(p, duration=14)
    c["r2"].wait(lambda s: s["external_entries"] >= CONNS + 1, 15, "the flows replicated")

    sip = _cache_entry(c["r2"], 17, CLIENT_IP, SIP_PORT, SIP_PORT)
    vip, public_port = sip["snat"].split(":")
    assert vip == WAN_VIP
    _send_through_r2(p, int(public_port))
    local = [ln for ln in p.conntrack("r2", "-p", "udp", "--orig-src", SECOND_CLIENT)]
    assert len(local) == 1 and f"dst={WAN_VIP}" in local[0] and f"dport={public_port}" in local[0], local

    p.hard_fail("r1")
    cap.stop()
    from_r1 = cap.lines("src host 172.16.0.1")
    to_group, to_peer = cap.count(f"src host 172.16.0.1 and dst host {GROUP}"), cap.count("src host 172.16.0.1 and dst host 172.16.0.2")
    print(f"{transport}: r1 -> group {to_group}, r1 -> r2 {to_peer} of {len(from_r1)} datagrams")
    if transport == "multicast":
        assert to_group > 10 and to_peer == 0
        assert cap.count(f"src host 172.16.0.2 and dst host {GROUP}") > 10
        assert cap.count("src host 172.16.0.2 and dst host 172.16.0.1") == 0
        assert c["r2"].status()["own_datagrams"] == 0  # IP_MULTICAST_LOOP off
    else:
        assert to_peer > 10 and to_group == 0
    p.wait_master("r2", timeout=10)
    st = c["r2"].wait(lambda s: s if s["last_commit"] else None, 10, "the failover commit")
    lc = st["last_commit"]
    print("last commit:", lc)
    print("clashes:", st["last_clashes"])

    # Counted once, as a clash (and among the commit errors by reason), nothing else failed.
    assert st["nat_clashes"] == 1, st
    assert st["commit_errors"] == {"nat_clash": 1}, st["commit_errors"]
    assert lc["clashes"] == 1 and lc["committed"] == lc["count"] - 1 >= CONNS, lc
    # Both tuples: the replicated flow and the local entry that holds its public port.
    (line,) = st["last_clashes"]
    for part in (f"src={CLIENT_IP} dst={SERVER_IP} sport={SIP_PORT} dport={SIP_PORT}",
                 f"{WAN_VIP}:{public_port}",
                 f"src={SECOND_CLIENT} dst={SERVER_IP} sport={SECOND_SPORT} dport={SIP_PORT}"):
        assert part in line, (part, line)
    assert f"NAT clash: {line}" in c["r2"].proc.read_log()
    assert ctsyncctl_main(["-s", c["r2"].socket, "status"]) == 0
    text = capsys.readouterr().out
    print(text)
    assert "nat_clash 1" in text and "NAT clashes 1" in text and f"clash: {line}" in text, text

    # Every other replicated entry is in r2's kernel with its source NAT, same public port.
    tcp_cache = {(e["src"], e["sport"]): e["snat"] for e in _dump_all(c["r2"]) if e["proto"] == 6}
    kernel = _kernel_tcp(p)
    assert len(tcp_cache) >= CONNS
    for key, snat in tcp_cache.items():
        assert key in kernel, f"replicated {key} not committed"
        status, public = kernel[key]
        assert status & IPS_SRC_NAT and public == snat, (key, hex(status), public, snat)

    tcp_r, udp_r = collect([tcp, udp])
    t = tcp_r["client"]["summary"]
    print(f"TCP: kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, longest gap {t['gap_max']}s")
    assert t["established"] == CONNS and t["kept"] == CONNS and t["rsts"] == 0, t


def _dump_all(ctsync) -> list[dict]:
    from hacommon.control import request

    return request(ctsync.socket, "dump", timeout=10)["entries"]


def _kernel_tcp(p) -> dict[tuple[str, int], tuple[int, str]]:
    """r2's TCP entries from the client: (src, sport) -> (status, "public addr:port")."""
    import trio

    from ctnetlink.socket import CtSocket

    async def go():
        with CtSocket.open(netns=p.r2.netns) as s:
            return await s.dump()

    out = {}
    for e in trio.run(go):
        if e.proto == 6 and str(e.orig.src) == CLIENT_IP:
            out[(str(e.orig.src), e.orig.sport)] = (e.status, f"{e.reply.dst}:{e.reply.dport}")
    return out
