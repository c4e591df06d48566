"""Dual-WAN on a real kernel: probes pinned to an uplink, one route switch per real
change, the dead uplink's NAT entries flushed, return traffic by the arrival link.

Topology: halab/dualwan.py (router r1 with wan1 -> isp1 and wan2 -> isp2, a shared
internet host "net" behind both ISPs, each ISP dropping sources not its own: BCP 38).
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from hacommon.control import request
from halab import wait_for
from halab.dualwan import CLIENT_IP, FORWARD_PORT, TARGET, build_dualwan, uplinks_config
from halab.traffic import TrafficRun, collect, start_tcp_client, start_tcp_server, start_udp
from halab.vrrp import start_vrrpd

pytestmark = pytest.mark.netns

INTERVAL = 0.2


def start_router_vrrpd(dw, router=None, name="vrrpd", instances=None, sync_groups=None, **kw):
    r = router or dw.r1
    sock = f"{r.lab.workdir}/{name}-{r.name}.sock"
    cfg = {"vrrpd": {"control_socket": sock, **uplinks_config(dw, interval=INTERVAL, **kw)}}
    if instances:
        cfg["vrrpd"]["instance"] = instances
    if sync_groups:
        cfg["vrrpd"]["sync_group"] = {g: {"instances": m} for g, m in sync_groups.items()}
    return start_vrrpd(r, {}, config=cfg, name=name)


def uplinks(d) -> dict:
    return request(d.socket, "status", timeout=3)["uplinks"]


def probe(st: dict, name: str) -> dict:
    return next(p for p in st["probes"] if p["name"] == name)


def routed_to(st: dict, uplink: str) -> bool:
    """The selector chose ``uplink`` and the switch to it is done (the default route is
    set after the choice, by another task: "active" alone may be a few ms ahead)."""
    return st["active"] == uplink and (st.get("last_switch") or {}).get("new") == uplink


def wait_uplinks(d, pred, what, timeout=15.0) -> dict:
    def check():
        try:
            st = uplinks(d)
        except (OSError, ValueError, KeyError):
            return None
        return st if pred(st) else None

    try:
        return wait_for(check, timeout=timeout, interval=0.05, what=what)
    except Exception:
        print(d.proc.read_log()[-3000:])
        raise


def pinged_via_main_table(host) -> bool:
    """The naive probe: ping the target the way a script on the router would, following
    the main table's active default route."""
    return host.run(["ping", "-n", "-c", "1", "-W", "1", TARGET]).returncode == 0


def test_pinned_probe_reports_down_where_a_naive_probe_says_up_and_the_route_switches_once(lab):
    dw = build_dualwan(lab)
    r1 = dw.r1
    udp = start_udp(dw, duration=22, interval=0.05)  # the "SIP" flow, c:5060 -> net:5060
    d = start_router_vrrpd(dw, flush={"proto": "udp", "dport": 5060})
    st = wait_uplinks(d, lambda s: routed_to(s, "ISP1"), "ISP1 chosen and routed")
    assert st["switches"] == 1 and dw.default_route(r1) == "wan1"
    assert all(p["state"] == "up" for p in st["probes"])
    assert any(f"reply dst={dw.uplink_addr['isp1']}" in ln or f"dst={dw.uplink_addr['isp1']}" in ln
               for ln in r1.run(["conntrack", "-L", "-p", "udp", "--dport", "5060"]).stdout.splitlines())

    # ISP1 loses the internet; the router's own link to ISP1 stays up.
    t_kill = time.time()
    dw.kill_far_side("isp1")
    st = wait_uplinks(d, lambda s: routed_to(s, "ISP2"), "switch to ISP2")
    assert r1.link_up("wan1"), "the router's link stays up: only a probe through ISP1 can tell"
    assert dw.default_route(r1) == "wan2"
    assert probe(st, "ISP1")["state"] == "down" and probe(st, "ISP2")["state"] == "up"
    assert st["switches"] == 2

    # The trap: now that the default route leads through ISP2, a probe that follows the
    # main table reaches the target and would call ISP1 "up" (and switch back, and
    # flap). The pinned probe keeps failing, because it can only leave through ISP1.
    assert pinged_via_main_table(r1), "the naive probe through the main table answers"
    before = probe(uplinks(d), "ISP1")["failures"]
    time.sleep(6 * INTERVAL)
    st = uplinks(d)
    assert probe(st, "ISP1")["state"] == "down" and probe(st, "ISP1")["failures"] >= before + 3
    assert st["active"] == "ISP2" and st["switches"] == 2

    # The SIP flow's entry pointed at ISP1's address: flushed, so it continues via ISP2.
    lf = st["last_flush"]
    assert lf and lf["uplink"] == "ISP1" and lf["address"] == dw.uplink_addr["isp1"] and lf["deleted"] >= 1, lf
    wait_for(lambda: any(f"dst={dw.uplink_addr['isp2']}" in ln for ln in
                         r1.run(["conntrack", "-L", "-p", "udp", "--dport", "5060"]).stdout.splitlines()),
             timeout=5, what="the SIP flow re-NATed to ISP2's address")

    # ISP1 comes back: exactly one switch back, and it stays.
    drops_isp1 = dw.bcp38_drops("isp1")
    dw.restore_far_side("isp1")
    st = wait_uplinks(d, lambda s: routed_to(s, "ISP1"), "switch back to ISP1")
    assert dw.default_route(r1) == "wan1"
    time.sleep(8 * INTERVAL)
    st = uplinks(d)
    assert st["switches"] == 3 and st["active"] == "ISP1"
    # Without flush_on_return or return_routing, the flow still NATed to ISP2's address now
    # leaves through ISP1, which drops it (see the next test for both remedies).
    assert dw.bcp38_drops("isp1") > drops_isp1 + 5

    rep = collect(udp)
    srcs = {s["addr"]: s for s in rep["server"]["sources"]}
    print("UDP sources seen by the server:", json.dumps(srcs))
    via2 = srcs.get(dw.uplink_addr["isp2"])
    assert via2 is not None and via2["first"] > t_kill and via2["packets"] > 20, srcs
    # Its echoes came back through ISP2 after the switch: the gap was about fall x interval.
    u = rep["client"]["summary"]
    print(f"SIP flow: longest gap {u['max_gap']}s, silent at the end {u['trailing_silence']}s, lost {u['lost']} of {u['sent']}")
    assert u["max_gap"] is not None and u["max_gap"] < 5 and u["trailing_silence"] > 2
    log = d.proc.read_log()
    assert log.count("uplinks: switch ") == 3, log
    assert "flushed" in log and "udp dport 5060" in log


def test_without_flush_the_sip_flow_stays_stuck_on_the_dead_uplink(lab):
    """Documents why the flush exists: the entry keeps SNATing to ISP1's address; routed
    out via ISP2 it is dropped (BCP 38) until the entry would time out."""
    dw = build_dualwan(lab)
    udp = start_udp(dw, duration=8, interval=0.05)
    d = start_router_vrrpd(dw, flush=False)
    wait_uplinks(d, lambda s: s["active"] == "ISP1", "ISP1 chosen")
    t_kill = time.time()
    dw.kill_far_side("isp1")
    wait_uplinks(d, lambda s: s["active"] == "ISP2", "switch to ISP2")
    drops0 = dw.bcp38_drops("isp2")
    time.sleep(2)
    assert dw.bcp38_drops("isp2") > drops0 + 10, "ISP2 drops the flow still NATed to ISP1's address"
    rep = collect(udp)
    addrs = {s["addr"] for s in rep["server"]["sources"] if s["last"] and s["last"] > t_kill + 1}
    assert dw.uplink_addr["isp2"] not in addrs
    assert uplinks(d)["last_flush"] is None if d.proc.alive() else True



@pytest.mark.parametrize("way_back", ["flush_on_return", "return_routing"])
def test_a_flow_moved_to_the_backup_keeps_working_when_the_preferred_uplink_returns(lab, way_back):
    """flush_on_return: the flow's entry NATed to ISP2's address is flushed on the way back,
    so the flow moves back to ISP1. return_routing: the flow is marked with the uplink it
    left by and stays on ISP2 until it ends. Either way it keeps working."""
    dw = build_dualwan(lab)
    udp = start_udp(dw, duration=10, interval=0.05)
    d = start_router_vrrpd(dw, flush={"proto": "udp", "dport": 5060},
                           flush_on_return=way_back == "flush_on_return", return_routing=way_back == "return_routing")

    def sip_nat():
        out = dw.r1.run(["conntrack", "-L", "-p", "udp", "--src", CLIENT_IP, "--dport", "5060"]).stdout
        return {isp for isp, a in dw.uplink_addr.items() if f"dst={a} " in out}

    wait_uplinks(d, lambda s: s["active"] == "ISP1", "ISP1 chosen")
    assert sip_nat() == {"isp1"}
    dw.kill_far_side("isp1")
    wait_uplinks(d, lambda s: s["active"] == "ISP2", "switch to ISP2")
    wait_for(lambda: sip_nat() == {"isp2"}, timeout=5, what="the flow on ISP2")
    drops = dw.bcp38_drops("isp1")
    dw.restore_far_side("isp1")
    st = wait_uplinks(d, lambda s: s["active"] == "ISP1", "switch back")
    if way_back == "flush_on_return":
        st = wait_uplinks(d, lambda s: s["last_flush"]["uplink"] == "ISP2", "the flush of ISP2's entries")
        assert st["last_flush"]["deleted"] >= 1
        wait_for(lambda: sip_nat() == {"isp1"}, timeout=5, what="the flow back on ISP1")
    else:
        time.sleep(1)
        assert sip_nat() == {"isp2"} and st["last_flush"]["uplink"] == "ISP1"
    assert st["switches"] == 3
    u = collect(udp)["client"]["summary"]
    print(f"SIP flow: longest gap {u['max_gap']}s, silent at the end {u['trailing_silence']}s, lost {u['lost']} of {u['sent']}")
    assert u["trailing_silence"] is not None and u["trailing_silence"] < 3 and u["max_gap"] < 5
    assert dw.bcp38_drops("isp1") <= drops + 1  # at most the packet in flight at the switch

def test_flapping_target_does_not_flap_the_route(lab):
    dw = build_dualwan(lab)
    d = start_router_vrrpd(dw, rise=3, fall=3)
    wait_uplinks(d, lambda s: s["active"] == "ISP1", "ISP1 chosen")
    before = probe(uplinks(d), "ISP1")
    dw.drop_every_other_echo("isp1")
    time.sleep(30 * INTERVAL)
    st = uplinks(d)
    p = probe(st, "ISP1")
    assert p["failures"] >= before["failures"] + 10, "the target really lost every other echo"
    assert p["state"] == "up" and p["transitions"] == before["transitions"]
    assert st["switches"] == 1 and st["active"] == "ISP1"
    # A real change while it still flaps: one switch away. Then the path heals but keeps
    # losing every other echo: never `rise` answers in a row, so ISP1 is not taken back.
    dw.kill_far_side("isp1")
    wait_uplinks(d, lambda s: s["active"] == "ISP2", "switch to ISP2")
    dw.restore_far_side("isp1")
    time.sleep(20 * INTERVAL)
    st = uplinks(d)
    assert st["switches"] == 2 and st["active"] == "ISP2" and probe(st, "ISP1")["state"] == "down", st
    # The loss stops: one switch back, and no more.
    dw.stop_flapping("isp1")
    wait_uplinks(d, lambda s: s["active"] == "ISP1", "switch back to ISP1")
    time.sleep(20 * INTERVAL)
    st = uplinks(d)
    assert st["switches"] == 3, st
    assert d.proc.read_log().count("uplinks: switch ") == 3


CONNECT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"ping")
    s.settimeout(3)
    print("ok" if s.recv(4) == b"ping" else "bad")
except OSError as e:
    print("fail", e)
"""


def connect_from_internet(dw, addr: str) -> bool:
    out = dw.net.run([sys.executable, "-c", CONNECT, addr, str(FORWARD_PORT)], timeout=15).stdout.strip()
    return out == "ok"


@pytest.mark.parametrize("return_routing", [False, True])
def test_replies_leave_by_the_link_the_connection_arrived_on(lab, return_routing):
    dw = build_dualwan(lab)
    start_tcp_server(dw.c, FORWARD_PORT, tag="fwd")
    d = start_router_vrrpd(dw, return_routing=return_routing)
    st = wait_uplinks(d, lambda s: s["active"] == "ISP1", "ISP1 chosen")
    assert st["return_routing"] is return_routing
    assert connect_from_internet(dw, dw.uplink_addr["isp1"])
    via2 = connect_from_internet(dw, dw.uplink_addr["isp2"])
    if not return_routing:
        # The trap: the reply follows the main default route (ISP1), whose BCP 38 filter
        # drops a source address of ISP2's prefix.
        assert not via2 and dw.bcp38_drops("isp1") > 0
        return
    assert via2
    assert dw.bcp38_drops("isp1") == 0 and dw.bcp38_drops("isp2") == 0
    marks = dw.r1.run(["conntrack", "-L", "-p", "tcp", "--dport", str(FORWARD_PORT)]).stdout
    assert "mark=1" in marks and "mark=2" in marks, marks
    # On exit vrrpd removes its rules and its nftables table.
    d.proc.signal(15)
    d.proc.wait(10)
    rules = dw.r1.run(["ip", "rule"]).stdout
    assert "lookup 100" not in rules and "fwmark" not in rules, rules
    assert dw.r1.run(["nft", "list", "table", "inet", "hapair_uplinks"]).returncode != 0


def test_return_routing_survives_a_failover_to_the_second_router(lab):
    """Two routers, two uplinks each, VRRP VIPs as the NAT addresses, ctsync between
    them. Long-lived connections arrive on both uplinks (port forward to c); r1 fails
    hard; on r2 the replicated entries carry their connmark, so replies still leave by
    the uplink each connection arrived on (ISP1 would drop ISP2's source, BCP 38)."""
    from halab.ctsync import start_ctsync
    from halab.dualwan import VRRP_GROUP, vrrp_instances

    dw = build_dualwan(lab, routers=2)
    d = {}
    for r, prio in ((dw.r1, 200), (dw.r2, 100)):
        d[r.name] = start_router_vrrpd(dw, router=r, instances=vrrp_instances(prio),
                                       sync_groups={VRRP_GROUP: ["LAN", "WAN1", "WAN2"]}, return_routing=True)
    ignore = ["172.16.0.0/30", "192.168.1.2/32", "192.168.1.3/32", "198.51.100.2/32", "198.51.100.3/32",
              "198.51.101.2/32", "198.51.101.3/32"]
    ct = {r.name: start_ctsync(r, "commit", d[r.name].socket, group=VRRP_GROUP, ignore_addresses=ignore)
          for r in (dw.r1, dw.r2)}
    for r in ("r1", "r2"):
        wait_uplinks(d[r], lambda s: s["active"] == "ISP1" and s["return_routing"], f"{r}: ISP1 chosen")
    wait_for(lambda: all(d["r1"].state(i) == "master" for i in ("LAN", "WAN1", "WAN2")), timeout=15, what="r1 master")
    ct["r2"].wait(lambda s: s["in_sync"], 15, "r2 in sync with r1")

    server, _ = start_tcp_server(dw.c, FORWARD_PORT, tag="fwd")
    runs = []
    for isp in ("isp1", "isp2"):
        client, rep = start_tcp_client(dw.net, dw.uplink_addr[isp], conns=10, interval=0.1, duration=16,
                                       port=FORWARD_PORT, dead_after=8, tag=f"in-{isp}")
        runs.append((isp, client, rep))
    ct["r2"].wait(lambda s: s["external_entries"] >= 20, 15, "the connections replicated to r2")
    marks = dw.r1.run(["conntrack", "-L", "-p", "tcp", "--dport", str(FORWARD_PORT)]).stdout
    assert marks.count("mark=1") >= 10 and marks.count("mark=2") >= 10, marks

    # ctsyncctl flush-uplink on r1: five UDP flows from c, SNATed to ISP1's VIP, go -- on r2
    # too (the deletions replicate); the port-forwarded connections (DNAT: not NATed *to*
    # the uplink address) stay.
    from hacommon.control import request as ct_request

    send = ("import socket\nfor p in range(6000, 6005):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"    s.bind(('', p)); s.sendto(b'x', ('{TARGET}', 5060))\n")
    dw.c.run([sys.executable, "-c", send], check=True)

    def entries(*args):
        return dw.r1.run(["conntrack", "-L", *args]).stdout

    def replicated_udp():
        return {e["sport"] for e in ct_request(ct["r2"].socket, "dump")["entries"] if 6000 <= e["sport"] < 6005}
    assert entries("-p", "udp", "--dport", "5060").count(f"dst={dw.uplink_addr['isp1']}") == 5
    wait_for(lambda: len(replicated_udp()) == 5, timeout=5, what="the UDP flows replicated to r2")
    dnat_before = entries("-p", "tcp", "--dport", str(FORWARD_PORT)).count("dport=8080")
    reply = ct_request(ct["r1"].socket, "flush-uplink", address=dw.uplink_addr["isp1"], proto="udp", dport=5060)
    assert reply["ok"] and reply["flush"]["deleted"] == 5, reply
    assert f"dst={dw.uplink_addr['isp1']}" not in entries("-p", "udp", "--dport", "5060")
    assert entries("-p", "tcp", "--dport", str(FORWARD_PORT)).count("dport=8080") == dnat_before
    assert ct["r1"].status()["uplink_flush"]["deleted"] == 5
    wait_for(lambda: not replicated_udp(), timeout=5, what="the deletions replicated to r2")
    bad = ct_request(ct["r1"].socket, "flush-uplink", address="nope")
    assert not bad["ok"] and "address must be an IPv4 address" in bad["error"]
    time.sleep(1)

    # r1 fails hard: daemons killed, links down.
    for p in [p for p in lab.procs if p.host is dw.r1 and p.alive()]:
        p.kill()
    for ifname in ("eth1", "wan1", "wan2", "sync0"):
        lab.set_link(dw.r1, ifname, False)
    wait_for(lambda: all(d["r2"].state(i) == "master" for i in ("LAN", "WAN1", "WAN2")), timeout=10, what="r2 master")
    ct["r2"].wait(lambda s: s["last_commit"], 10, "r2's failover commit")
    drops_before = dw.bcp38_drops("isp1") + dw.bcp38_drops("isp2")
    time.sleep(4)
    r2_marks = dw.r2.run(["conntrack", "-L", "-p", "tcp", "--dport", str(FORWARD_PORT)]).stdout
    assert r2_marks.count("mark=2") >= 10, r2_marks

    reports = {isp: collect(TrafficRun("tcp", client, None, rep, None, time.monotonic() + 20, {}), require=False)["client"]
               for isp, client, rep in runs}
    server.terminate()
    for isp, r in reports.items():
        assert r is not None, f"no report from the client connecting via {isp}"
        s = r["summary"]
        print(f"{isp}: kept {s['kept']}/{s['conns']}, longest gap {s['gap_max']}s, RSTs {s['rsts']}")
        assert s["established"] == 10 and s["kept"] == 10, (isp, s)
    assert dw.bcp38_drops("isp1") + dw.bcp38_drops("isp2") == drops_before, "a reply left by the wrong uplink"


def test_tracked_probes_lower_priority_or_fault_run_hooks_and_stream_events(lab):
    """track_probes: ISP1's probe with weight -60, ISP2's with weight 0 (FAULT); the probe
    notify hook runs; `events` with uplinks=true streams probe and uplink events."""
    import socket as _socket

    dw = build_dualwan(lab)
    hook_log = f"{lab.workdir}/probe-hook.log"
    hook = f"{lab.workdir}/probe-hook.sh"
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\necho "$1 $3 $PROBE_STATE $PROBE_INTERFACE" >> {hook_log}\n')
    import os
    os.chmod(hook, 0o755)
    lan = {"LAN": {"interface": "eth1", "vrid": 13, "priority": 200, "use_vmac": False,
                   "virtual_addresses": ["192.168.1.254/24"],
                   "track_probes": [{"probe": "ISP1", "weight": -60}, {"probe": "ISP2"}]}}
    sock = f"{lab.workdir}/vrrpd-r1.sock"
    cfg = {"vrrpd": {"control_socket": sock, "instance": lan, **uplinks_config(dw, interval=INTERVAL)}}
    for p in cfg["vrrpd"]["probe"].values():
        p["notify"] = hook
    d = start_vrrpd(dw.r1, {}, config=cfg)
    ev = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ev.settimeout(10)
    ev.connect(sock)
    ev.sendall(b'{"cmd": "events", "name": "test", "uplinks": true}\n')
    evf = ev.makefile("rb")
    assert json.loads(evf.readline())["subscribed"]
    try:
        d.wait_state("LAN", "master", timeout=10)
        assert d.status()["LAN"]["effective_priority"] == 200
        dw.kill_far_side("isp1")
        wait_for(lambda: d.status()["LAN"]["effective_priority"] == 140, timeout=10, what="priority 200 - 60")
        dw.kill_far_side("isp2")
        d.wait_state("LAN", "fault", timeout=10)
        assert "tracked probe ISP2 is down" in d.status()["LAN"]["fault_reasons"]
        dw.restore_far_side("isp2")
        dw.restore_far_side("isp1")
        d.wait_state("LAN", "master", timeout=15)
        wait_for(lambda: d.status()["LAN"]["effective_priority"] == 200, timeout=10, what="priority back to 200")
        events = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(e.get("kind") == "uplink" for e in events) < 3:
            events.append(json.loads(evf.readline()))
    finally:
        ev.close()
    kinds = [(e.get("kind"), e.get("probe") or e.get("new"), e.get("state")) for e in events if e.get("kind")]
    assert ("probe", "ISP1", "down") in kinds and ("probe", "ISP2", "down") in kinds
    assert [k[1] for k in kinds if k[0] == "uplink"] == ["ISP1", "ISP2", "ISP1"], kinds
    transitions = [e for e in events if "instance" in e]
    assert any(e["new"] == "fault" for e in transitions)
    wait_for(lambda: os.path.exists(hook_log) and open(hook_log).read().count("\n") >= 6, timeout=5, what="hooks")
    lines = open(hook_log).read().splitlines()
    assert "ISP1 down down wan1" in lines and "ISP2 down down wan2" in lines and "ISP1 up up wan1" in lines

    # SIGHUP with a changed instance and a changed probe: the instance restarts and learns the
    # probes' current health at once (no FAULT "no result yet"); probe changes wait for a restart.
    cfg["vrrpd"]["instance"]["LAN"]["priority"] = 190
    cfg["vrrpd"]["probe"]["ISP1"]["rise"] = 5
    d.write_config(cfg)
    log_before = len(d.proc.read_log())
    d.proc.signal(1)
    wait_for(lambda: "SIGHUP: reloaded" in d.proc.read_log(), timeout=5, what="the reload")
    assert "probe and uplink changes only take effect on restart" in d.proc.read_log()
    wait_for(lambda: d.status()["LAN"]["priority"] == 190, timeout=5, what="the new priority")
    d.wait_state("LAN", "master", timeout=10)
    assert d.status()["LAN"]["effective_priority"] == 190
    assert "has no result yet" not in d.proc.read_log()[log_before:]


def test_tcp_probe_is_pinned_too(lab):
    """kind = "tcp": a connect to the target's port 9000, bound to the uplink's device."""
    dw = build_dualwan(lab)
    start_tcp_server(dw.net, 9000, tag="probe-target")
    sock = f"{lab.workdir}/vrrpd-r1.sock"
    cfg = {"vrrpd": {"control_socket": sock, **uplinks_config(dw, interval=INTERVAL)}}
    for p in cfg["vrrpd"]["probe"].values():
        p.update(kind="tcp", port=9000)
    d = start_vrrpd(dw.r1, {}, config=cfg)
    st = wait_uplinks(d, lambda s: s["active"] == "ISP1", "ISP1 chosen")
    assert all(p["kind"] == "tcp" and p["state"] == "up" for p in st["probes"])
    dw.kill_far_side("isp1")
    st = wait_uplinks(d, lambda s: s["active"] == "ISP2", "switch to ISP2")
    time.sleep(5 * INTERVAL)
    st = uplinks(d)
    assert probe(st, "ISP1")["state"] == "down" and probe(st, "ISP2")["state"] == "up" and st["switches"] == 2
