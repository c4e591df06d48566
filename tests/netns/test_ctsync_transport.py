"""ctsync's multicast transport over IPv6 (the IPv4 one runs in the HA pair, in
test_ctsync_nat_clash.py): two routers joined by a sync link with IPv6 addresses only,
ctsync sending to ff02::3780 joined on sync0. They must sync (an entry made in r1's
kernel reaches r2's cache), every sync datagram on the wire goes to the group from the
configured local address, and nothing goes unicast.
"""

from __future__ import annotations

import pytest

from halab.ctsync import start_ctsync

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

ADDR = {"r1": "fd00:16::1", "r2": "fd00:16::2"}
GROUP = "ff02::3780"


def test_ipv6_multicast_sync(lab):
    r1, r2 = lab.add_host("r1"), lab.add_host("r2")
    lab.link(r1, "sync0", None, r2, "sync0", None)
    for h in (r1, r2):
        h.ip("addr", "add", f"{ADDR[h.name]}/64", "dev", "sync0", "nodad")  # usable at once
    cap = lab.capture(r2, "sync0", "sync0.pcap", bpf="udp port 3780")
    c = {}
    for h, peer in ((r1, r2), (r2, r1)):
        c[h.name] = start_ctsync(h, "commit", None, group=None, local_address=ADDR[h.name],
                                 peer_address=ADDR[peer.name], multicast_group=GROUP)
    for name in ("r1", "r2"):
        c[name].wait(lambda s: s["in_sync"] and s["peer_alive"], 10, "in sync over IPv6 multicast")
    assert c["r2"].status()["transport"] == f"multicast {GROUP}"
    r1.run(["conntrack", "-I", "-p", "udp", "-s", "192.0.2.1", "-d", "198.51.100.1", "--sport", "1000",
            "--dport", "2000", "-t", "120", "-u", "SEEN_REPLY"], check=True)
    c["r2"].wait(lambda s: s["external_entries"] == 1, 10, "the entry replicated")
    cap.stop()
    to_group = {h: cap.count(f"ip6 and src host {ADDR[h]} and dst host {GROUP}") for h in ("r1", "r2")}
    unicast = cap.count(f"ip6 and not dst host {GROUP}")
    print(f"datagrams to {GROUP}: {to_group}, unicast: {unicast}")
    assert to_group["r1"] > 2 and to_group["r2"] > 2 and unicast == 0
    for name in ("r1", "r2"):
        st = c[name].status()
        assert st["channel"]["malformed"] == 0 and st["channel"]["auth_failures"] == 0
        assert st["own_datagrams"] == 0  # IPV6_MULTICAST_LOOP off
