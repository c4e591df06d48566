"""The demo: the classic HA router pair, with real traffic, through the failures that matter.

    ./run demo [--steps 1,2,3,4,5,6] [--conns 200] [--vrrp-version 2|3] [--advert-interval 1]
               [--mode commit|inject] [--out DIR] [--keep] [--teardown]

    ./run demo --vrrp-version 3 --advert-interval 0.05   # the fast stateful failover

It builds the pair in network namespaces (client c, routers r1 and r2 with the
WAN and LAN VRIDs in sync group MAIN-GW, SNAT to the WAN VIP, the sync link,
the "internet" server s), starts vrrpd and ctsync in both routers from
configs/r1.toml and configs/r2.toml (mapped to the lab: see halab/boxconfig.py),
and for each step drives long-lived TCP connections, a UDP "SIP" flow to 5060
and pings through the pair while it breaks something:

  1  hard failure of the master (daemons killed, links down)
  2  r1 returns and preempts (failback)
  3  graceful stop of the master (vrrpd's priority-0 advert)
  4  the master's uplink (eth0) loses carrier while the box stays up
  5  a short partition of the VRRP LAN between r1 and r2 (dual master), then healing
  6  the hard failure of step 1 with ctsync off: what you lose without it

At the end it prints a table per step and leaves in the output folder: per step
the captures of the VRRP LAN, the WAN and the sync link (open them in
Wireshark; docs/ctsync-dissector.lua decodes the sync link), the traffic
reports, a timeline PNG; the daemons' logs and configs; summary.json with every
figure (layout: docs/demo.md).

Everything runs in network namespaces named hl-*; nothing touches the host's links.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hacommon.control import stream
from vrrpd.machine import master_down_interval, master_down_interval_v3

from . import Lab, LabError, flowstats, require_root_and_netns, timeline_plot, wait_for
from .boxconfig import BoxDaemons, write_box_config
from .hapair import LAN_VIP, ROUTER_ADDRS, SERVER_IP, WAN_VIP, HaPair, build_hapair
from .traffic import collect, start_tcp, start_udp
from .vrrp import wire_events

STEPS = {
    1: ("hard-failure", "hard failure of the master r1 (daemons killed, links down)"),
    2: ("failback", "r1 returns and preempts (failback)"),
    3: ("graceful-stop", "graceful stop of the master r1 (priority 0)"),
    4: ("uplink-down", "r1's uplink eth0 loses carrier, the box stays up (tracking)"),
    5: ("lan-partition", "partition of the VRRP LAN between r1 and r2 (dual master), then healing"),
    6: ("hard-failure-no-ctsync", "hard failure of r1 with ctsync off (what you lose without it)"),
}
LAN_IPS = {r: a["eth1"].split("/")[0] for r, a in ROUTER_ADDRS.items()}
PARTITION_TABLE = "hl_demo_partition"
BIN_S = 0.25
DEAD_AFTER = 10.0  # a TCP connection without an echo for this long is lost
STALL_S = 2.0  # ... and one without an echo for this long when the step ends is stalled


class Console:
    """Progress lines with the time since the demo started; keeps the VRRP events."""

    def __init__(self, quiet: bool = False):
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.quiet = quiet

    def say(self, text: str) -> None:
        if self.quiet:
            return
        with self.lock:
            print(f"[{time.time() - self.t0:7.2f}] {text}", flush=True)

    def follow(self, router: str, socket: str) -> None:
        """Print (and keep) the transitions of a vrrpd, until it goes away."""
        def run():
            try:
                for ev in stream(socket, "events"):
                    if "instance" not in ev:
                        continue
                    ev["router"] = router
                    with self.lock:
                        self.events.append(ev)
                    self.say(f"  {router} {ev['instance']:>3}: {ev['old']:>7} -> {ev['new']:<7} "
                             f"prio {ev.get('priority')}  ({ev['reason']})")
            except (OSError, ValueError):
                pass  # the daemon went away (the point of some steps)

        threading.Thread(target=run, daemon=True, name=f"events-{router}").start()


@dataclass
class Options:
    steps: list[int] = field(default_factory=lambda: list(STEPS))
    conns: int = 200
    advert_interval: float = 1
    vrrp_version: int = 2
    mode: str = "commit"
    plot: bool = True
    observe: float = 6.0  # seconds of traffic after the new master holds the VIPs


class Demo:
    def __init__(self, lab: Lab, opts: Options, out: Path, con: Console):
        self.lab, self.opts, self.out, self.con = lab, opts, out, con
        self.p: HaPair | None = None
        self.box: dict[str, BoxDaemons] = {}
        self.vrrpd: dict = {}
        self.ctsync: dict = {}
        self.uplink_down = False
        self.partitioned = False

    # ---- the lab ------------------------------------------------------------------------
    def build(self) -> None:
        self.p = build_hapair(self.lab, ruleset="strict")
        for r in ("r1", "r2"):
            self.box[r] = write_box_config(self.p.router(r), advert_interval=self.opts.advert_interval,
                                           mode=self.opts.mode,
                                           version=self.opts.vrrp_version if self.opts.vrrp_version != 2 else None)
        self.con.say(f"lab {self.lab.id} up: c {self.p.c.netns}, r1, r2, s; LAN VIP {LAN_VIP}, "
                     f"WAN VIP {WAN_VIP} (SNAT), server {SERVER_IP}")
        self.con.say("daemons run configs/r1.toml and configs/r2.toml, mapped to the lab: "
                     + "; ".join(self.box["r1"].changes))

    def mdi(self) -> float:
        if self.opts.vrrp_version == 3:
            return master_down_interval_v3(self.opts.advert_interval, 100)
        return master_down_interval(self.opts.advert_interval, 100)

    def alive(self, table: dict, r: str) -> bool:
        d = table.get(r)
        return d is not None and d.proc.alive()

    def start_daemons(self, r: str, ctsync: bool) -> None:
        # vrrpd first (ctsync follows its sync group over vrrpd's socket); a fresh vrrpd
        # waits Master_Down_Interval before it can become master, ctsync subscribes sooner.
        if not self.alive(self.vrrpd, r):
            self.vrrpd[r] = self.box[r].start_vrrpd()
            self.p.vrrpd[r] = self.vrrpd[r]
            self.con.follow(r, self.vrrpd[r].socket)
        if ctsync and not self.alive(self.ctsync, r):
            self.ctsync[r] = self.box[r].start_ctsync()

    def links_up(self, r: str) -> bool:
        return all(self.p.router(r).link_up(i) for i in self.p.links(r))

    def baseline(self, ctsync: bool = True) -> None:
        """r1 master and r2 backup, with (or without) ctsync in sync; every link up."""
        self.heal_partition()
        if self.uplink_down:
            self.lab.set_link(self.p.wan, "r1-eth0", True)
            self.uplink_down = False
        for r in ("r1", "r2"):
            if not self.links_up(r):
                self.p.revive(r)
            if not ctsync and self.alive(self.ctsync, r):
                self.ctsync[r].proc.terminate()
        for r in ("r2", "r1"):
            self.start_daemons(r, ctsync)
        if ctsync:
            self.ctsync["r1"].wait(lambda s: s["in_sync"] or s["role"] == "master", 20, "in sync")
        self.p.wait_master("r1", timeout=15 + 4 * self.mdi())
        self.p.wait_backup("r2", timeout=10)
        if ctsync:
            self.ctsync["r2"].wait(lambda s: s["in_sync"], 20, "in sync with r1")

    def r1_failed(self) -> None:
        """Step 2's starting point: r1 dead, r2 master."""
        if self.alive(self.vrrpd, "r1") or self.links_up("r1"):
            self.baseline()
            self.con.say("(step 2 starts with r1 failed: failing it first)")
            self.p.hard_fail("r1")
            self.p.wait_master("r2", timeout=10 + self.mdi())
        else:
            self.start_daemons("r2", True)
            self.p.wait_master("r2", timeout=10 + self.mdi())

    def partition(self) -> None:
        rules = (f"table bridge {PARTITION_TABLE} {{\n chain forward {{\n"
                 "  type filter hook forward priority 0; policy accept;\n"
                 '  iifname "r1-eth1" oifname "r2-eth1" drop\n'
                 '  iifname "r2-eth1" oifname "r1-eth1" drop\n }\n}\n')
        self.lab.switch.run(["nft", "-f", "-"], input=rules, check=True)
        self.partitioned = True

    def heal_partition(self) -> None:
        if self.partitioned:
            self.lab.switch.run(["nft", "delete", "table", "bridge", PARTITION_TABLE], check=True)
            self.partitioned = False

    def states(self) -> str:
        parts = []
        for r in ("r1", "r2"):
            st = self.p.state(r) if self.alive(self.vrrpd, r) else {"WAN": "-", "LAN": "-"}
            extra = ""
            c = self.ctsync.get(r)
            if c is not None and c.proc.alive():
                try:
                    s = c.status()
                    extra = f" ctsync {s['role']} ext {s['external_entries']}"
                except (OSError, ValueError, KeyError):
                    pass
            parts.append(f"{r} WAN {st['WAN'] or '?'} LAN {st['LAN'] or '?'}{extra}")
        return " | ".join(parts)

    # ---- one step ------------------------------------------------------------------------
    def run_step(self, n: int) -> dict:
        name, title = STEPS[n]
        con, p = self.con, self.p
        with_sync = n != 6
        con.say(f"== step {n}: {title} ==")
        if n == 2:
            self.r1_failed()
        else:
            self.baseline(ctsync=with_sync)
        if not with_sync:
            # A pair that never ran ctsync: the earlier steps' commits left entries in the
            # kernels (ESTABLISHED, long timeouts), and a new connection that happens to reuse
            # one of their 5-tuples would ride on it through r2.
            for r in ("r1", "r2"):
                p.conntrack_flush(r)
            con.say("   ctsync stopped on both routers; their conntrack tables flushed")
        con.say(f"   ready: {self.states()}")
        sdir = self.out / f"step{n}-{name}"
        sdir.mkdir(parents=True, exist_ok=True)
        caps = {
            "lan_vrrp": self.lab.capture(p.lan, None, f"step{n}-lan-vrrp.pcap", bpf="vrrp or arp"),
            "wan": self.lab.capture(p.wan, "s-eth0", f"step{n}-wan.pcap"),
            "sync": self.lab.capture(p.r2, "sync0", f"step{n}-sync.pcap"),
            "r1_lan": self.lab.capture(p.lan, "r1-eth1", f"step{n}-r1-lan.pcap", bpf="not vrrp and not arp"),
            "r2_lan": self.lab.capture(p.lan, "r2-eth1", f"step{n}-r2-lan.pcap", bpf="not vrrp and not arp"),
        }
        t_start = time.time()
        tcp = start_tcp(p, conns=self.opts.conns, interval=0.05, duration=600, dead_after=DEAD_AFTER,
                        tag=f"step{n}-tcp")
        udp = start_udp(p, duration=600, tag=f"step{n}-sip")
        ping = p.c.start(["ping", "-D", "-n", "-i", "0.05", SERVER_IP], name=f"step{n}-ping")
        con.say(f"   traffic: {self.opts.conns} TCP connections (a line every 50 ms each), "
                f"SIP UDP every 20 ms, ping every 50 ms")
        master0 = "r2" if n == 2 else "r1"
        backup0 = "r1" if n == 2 else "r2"
        if with_sync and n != 2:
            self.ctsync[backup0].wait(lambda s: s["external_entries"] >= self.opts.conns + 1, 20,
                                      "the flows replicated")
        time.sleep(1.5)
        marks: list[tuple[float, str]] = []
        result: dict = {"step": n, "name": name, "title": title, "ctsync": with_sync,
                        "mode": self.opts.mode if with_sync else None, "t_start": t_start}
        t_action = time.time()
        new_master = backup0
        stop_ticker = threading.Event()
        threading.Thread(target=self._ticker, args=(stop_ticker,), daemon=True).start()
        try:
            if n in (1, 6):
                con.say("   ACTION: r1 hard failure (SIGKILL to its daemons, eth0/eth1/sync0 down)")
                marks.append((t_action, "r1 fails"))
                p.hard_fail("r1")
                p.wait_master("r2", timeout=10 + self.mdi())
            elif n == 2:
                con.say("   ACTION: r1's links up, its ctsync and vrrpd start")
                marks.append((t_action, "r1 back"))
                p.revive("r1")
                self.start_daemons("r1", True)
                self.ctsync["r1"].wait(lambda s: s["in_sync"], 20, "in sync with r2")
                p.wait_master("r1", timeout=15 + 2 * self.mdi())
                p.wait_backup("r2", timeout=10)
            elif n == 3:
                con.say("   ACTION: vrrpd on r1 stopped with SIGTERM (sends priority 0, drops the VIPs)")
                marks.append((t_action, "r1 vrrpd stops"))
                self.vrrpd["r1"].proc.terminate()
                p.wait_master("r2", timeout=10)
            elif n == 4:
                con.say("   ACTION: r1's WAN cable pulled (switch port r1-eth0 down; r1 keeps running)")
                marks.append((t_action, "r1 uplink down"))
                self.lab.set_link(p.wan, "r1-eth0", False)
                self.uplink_down = True
                p.wait_master("r2", timeout=10 + self.mdi())
            elif n == 5:
                con.say("   ACTION: LAN partitioned between r1 and r2 (bridge drops frames between their ports)")
                marks.append((t_action, "partition"))
                self.partition()
                time.sleep(max(4.0, 2.5 * self.mdi()))
                t_heal = time.time()
                marks.append((t_heal, "healed"))
                con.say("   ACTION: partition healed")
                self.heal_partition()
                time.sleep(1.5 * self.mdi())
                wait_for(lambda: all(v == "MASTER" for v in p.state("r1").values())
                         and all(v == "BACKUP" for v in p.state("r2").values()),
                         timeout=10 + 2 * self.mdi(), interval=0.05, what="one master again")
                self._partition_figures(result, t_action, t_heal)
                new_master = "r2"
            t_master = time.time()
            result["new_master"] = new_master
            if n != 5:
                con.say(f"   {new_master} is master and holds the VIPs ({t_master - t_action:.2f}s after the action)")
            commit = None
            if with_sync:
                c = self.ctsync.get(new_master)
                try:
                    commit = dict(c.wait_commit(after=t_action, timeout=10), router=new_master)
                except LabError:
                    commit = None
            result["commit"] = commit
            observe = self.opts.observe if n != 6 else DEAD_AFTER + 3
            if n == 4:
                time.sleep(self.opts.observe / 2)
                t_back = time.time()
                marks.append((t_back, "uplink back"))
                con.say("   ACTION: r1's WAN cable back; r1 preempts")
                self.lab.set_link(p.wan, "r1-eth0", True)
                self.uplink_down = False
                p.wait_master("r1", timeout=10 + 2 * self.mdi())
                result["t_uplink_back"] = t_back
            time.sleep(observe)
        finally:
            stop_ticker.set()
            tcp.stop_client()
            udp.stop_client()
            ping.signal(2)
        tr_tcp, tr_udp = collect([tcp, udp], grace=10)
        try:
            ping.wait(5)
        except Exception:
            ping.kill()
        t_end = time.time()
        for cap in caps.values():
            cap.stop()
        result["t_action"] = t_action
        result["t_end"] = t_end
        self._measure(result, caps, tr_tcp, tr_udp, ping.read_log(), t_action, new_master)
        result["events"] = [e for e in self.con.events if t_start - 0.5 <= e.get("time", 0) <= t_end]
        result["files"] = self._save_step_files(sdir, caps, tcp, udp, tr_tcp, tr_udp, ping)
        if self.opts.plot and timeline_plot.available():
            series = {r: flowstats.throughput(caps[f"{r}_lan"].path, t_start, t_end, BIN_S)
                      for r in ("r1", "r2")}
            png = timeline_plot.plot_step(sdir / "timeline.png", f"step {n}: {title}", t_start, BIN_S,
                                          series, result["events"], marks,
                                          [result["commit"]] if result["commit"] else [])
            result["files"]["timeline"] = str(png.relative_to(self.out))
        result["marks"] = [{"time": t, "label": lbl} for t, lbl in marks]
        con.say(f"   done: {self._one_line(result)}")
        return result

    def _partition_figures(self, res: dict, t_action: float, t_heal: float) -> None:
        """Dual master as vrrpd reported it: r2's LAN instance claiming master while
        r1 still is (episodes: how many times), and when r2 last moved after the heal."""
        with self.con.lock:
            evs = [e for e in self.con.events if e["router"] == "r2" and e["time"] >= t_action]
        claims = [e["time"] for e in evs if e["instance"] == "LAN" and e["new"] == "master" and e["time"] < t_heal]
        after = [e["time"] for e in evs if e["time"] >= t_heal]
        res["dual_master"] = bool(claims)
        res["dual_master_after_s"] = round(claims[0] - t_action, 3) if claims else None
        res["dual_master_episodes"] = len(claims)
        res["converged_after_heal_s"] = round(max(after) - t_heal, 3) if after else 0.0
        res["t_heal"] = t_heal
        self.con.say(f"   r2 claimed LAN master {len(claims)} time(s) during the partition; "
                     f"one master {res['converged_after_heal_s']:.2f}s after healing")

    def _ticker(self, stop: threading.Event) -> None:
        while not stop.wait(2.0):
            try:
                self.con.say(f"   state: {self.states()}")
            except Exception:
                pass

    def _measure(self, res: dict, caps: dict, tr_tcp: dict, tr_udp: dict, ping_log: str,
                 t_action: float, new_master: str) -> None:
        ev = wire_events(caps["lan_vrrp"].path)
        new_ip = LAN_IPS[new_master]
        old_ip = LAN_IPS["r2" if new_master == "r1" else "r1"]
        first_new = min((e.time for e in ev if e.kind == "advert" and e.vrid == 2 and e.src_ip == new_ip
                         and e.priority and e.time > t_action), default=None)
        last_old = max((e.time for e in ev if e.kind == "advert" and e.vrid == 2 and e.src_ip == old_ip
                        and e.priority and e.time < (first_new or 1e12)), default=None)
        # The VMAC is the same on both routers: a GARP is the new master's when it comes
        # with its first adverts (not, e.g., the old master's repeat burst).
        garp = min((e.time for e in ev if e.kind == "garp" and e.src_ip == LAN_VIP and first_new
                    and e.time > max(t_action, first_new - 0.5)), default=None)
        res["takeover_s"] = round(first_new - t_action, 3) if first_new else None
        res["takeover_after_last_advert_s"] = (round(first_new - last_old, 3)
                                               if first_new and last_old and last_old > t_action - 5 else None)
        res["garp_s"] = round(garp - t_action, 3) if garp else None
        t = tr_tcp["client"]["summary"]
        srv = tr_tcp["server"]["summary"]
        u = tr_udp["client"]["summary"]
        sources = [f"{s['addr']}:{s['port']}" for s in tr_udp["server"].get("sources", [])]
        sent, received = flowstats.ping_counts(ping_log)
        # The client calls a connection lost after DEAD_AFTER s without an echo; one that
        # went silent less than that before the end is not kept either: it is stalled.
        conns = tr_tcp["client"]["conns"]
        open_ = [c for c in conns if c["state"] == "open"]
        stalled = [c for c in open_ if c["last_echo_age"] is None or c["last_echo_age"] > STALL_S]
        kept = len(open_) - len(stalled)
        res["tcp"] = {"conns": t["conns"], "established": t["established"], "kept": kept,
                      "lost": t["conns"] - kept, "lost_by_client": t["lost"], "stalled_at_end": len(stalled),
                      "rsts": t["rsts"], "reasons": t["reasons"],
                      "gap_max_s": t["gap_max"], "gap_median_s": t["gap_median"],
                      "server_conns": srv["conns"], "server_peers": srv["peers"]}
        res["sip"] = {"sent": u["sent"], "received": u["received"], "lost": u["lost"],
                      "max_gap_s": u["max_gap"], "trailing_silence_s": u["trailing_silence"],
                      "public_sources": sources}
        res["icmp"] = {"sent": sent, "received": received,
                       "max_gap_s": flowstats.ping_gap(ping_log)}
        # Longest gap per flow class, silence at the end included: for TCP the worst
        # connection (a lost one: from the action to the end, it never resumed).
        tcp_gap = max([t["gap_max"] or 0.0] + [c["last_echo_age"] or 0.0 for c in open_])
        if t["lost"]:
            tcp_gap = max(tcp_gap, res_end(res) - t_action)
        res["gaps_s"] = {"tcp": round(tcp_gap, 3),
                         "sip": round(max(u["max_gap"] or 0.0, u["trailing_silence"] or 0.0), 3),
                         "icmp": res["icmp"]["max_gap_s"]}
        res["public_port_unchanged"] = {
            "tcp": srv["conns"] == t["established"] and set(srv["peers"]) <= {WAN_VIP},
            "sip": len(sources) == 1,
        }
        res["connections_kept"] = kept
        res["connections_lost"] = t["conns"] - kept
        res["rsts"] = t["rsts"]

    def _save_step_files(self, sdir: Path, caps: dict, tcp, udp, tr_tcp, tr_udp, ping) -> dict:
        files = {}
        names = {"lan_vrrp": "lan-vrrp.pcap", "wan": "wan.pcap", "sync": "sync.pcap",
                 "r1_lan": "r1-lan-port.pcap", "r2_lan": "r2-lan-port.pcap"}
        for k, cap in caps.items():
            dst = sdir / names[k]
            shutil.copy(cap.path, dst)
            files[k] = str(dst.relative_to(self.out))
        for label, rep in (("tcp", tr_tcp), ("sip", tr_udp)):
            dst = sdir / f"traffic-{label}.json"
            dst.write_text(json.dumps(rep, indent=1))
            files[f"traffic_{label}"] = str(dst.relative_to(self.out))
        dst = sdir / "ping.log"
        dst.write_text(ping.read_log())
        files["ping"] = str(dst.relative_to(self.out))
        return files

    @staticmethod
    def _one_line(r: dict) -> str:
        cm = r.get("commit") or {}
        return (f"takeover {fmt(r.get('takeover_s'))}s, TCP kept {r['tcp']['kept']}/{r['tcp']['conns']} "
                f"RSTs {r['tcp']['rsts']}, gaps TCP {fmt(r['gaps_s']['tcp'])}s SIP {fmt(r['gaps_s']['sip'])}s "
                f"ICMP {fmt(r['gaps_s']['icmp'])}s, commit {cm.get('committed', '-')}")

    def keep_up(self) -> None:
        self.baseline(ctsync=True)
        print("\nthe lab stays up. Enter a namespace with:")
        for hname, host in self.lab.hosts.items():
            print(f"  ip netns exec {host.netns} bash        # {hname}")
        bindir = Path(sys.executable).parent
        for r in ("r1", "r2"):
            ns = self.p.router(r).netns
            print(f"  ip netns exec {ns} {bindir / 'vrrpctl'} -s {self.box[r].vrrpd_socket} status")
            print(f"  ip netns exec {ns} {bindir / 'ctsyncctl'} -s {self.box[r].ctsync_socket} status")
            print(f"  ip netns exec {ns} {bindir / 'vrrpctl'} -s {self.box[r].vrrpd_socket} capture LAN")
        print(f"  ip netns exec {self.p.r1.netns} conntrack -L")
        print("press Ctrl-C to tear it down (or, from another shell after a crash: ./run demo --teardown)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def res_end(res: dict) -> float:
    return res.get("t_end") or time.time()


def fmt(x, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def yesno(x) -> str:
    return "-" if x is None else ("yes" if x else "no")


def table(results: list[dict]) -> str:
    head = ["step", "takeover s", "GARP s", "gap TCP s", "gap SIP s", "gap ICMP s", "TCP kept",
            "lost", "RSTs", "public port same", "committed", "commit ms"]
    rows = []
    for r in results:
        cm = r.get("commit") or {}
        pp = r.get("public_port_unchanged", {})
        rows.append([
            f"{r['step']} {r['name']}", fmt(r.get("takeover_s")), fmt(r.get("garp_s")),
            fmt(r["gaps_s"]["tcp"]), fmt(r["gaps_s"]["sip"]), fmt(r["gaps_s"]["icmp"]),
            f"{r['tcp']['kept']}/{r['tcp']['conns']}", str(r["tcp"]["lost"]), str(r["tcp"]["rsts"]),
            f"TCP {yesno(pp.get('tcp'))}, SIP {yesno(pp.get('sip'))}",
            str(cm.get("committed", cm.get("count", "-"))) if cm else ("off" if not r["ctsync"] else "-"),
            f"{1000 * cm['duration']:.0f}" if cm.get("duration") is not None else "-",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for r in results:
        if r["name"] == "lan-partition":
            out.append(f"step 5: r2 claimed LAN master {r.get('dual_master_episodes', 0)} time(s) during the "
                       f"partition (first {fmt(r.get('dual_master_after_s'))}s after it); one master again "
                       f"{fmt(r.get('converged_after_heal_s'))}s after healing")
    return "\n".join(out)


def run_demo(lab: Lab, opts: Options, out: Path, con: Console | None = None) -> dict:
    """Build the pair in ``lab``, run ``opts.steps``, write ``out``; returns the summary."""
    con = con or Console()
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(lab, opts, out, con)
    summary: dict = {"options": vars(opts).copy(), "lab": lab.id, "started": time.time(),
                     "master_down_interval_s": None, "steps": []}
    try:
        demo.build()
        summary["master_down_interval_s"] = round(demo.mdi(), 3)
        summary["config_changes"] = {r: b.changes for r, b in demo.box.items()}
        for n in opts.steps:
            summary["steps"].append(demo.run_step(n))
            (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    finally:
        summary["ended"] = time.time()
        _save_common(lab, demo, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if summary["steps"]:
        text = table(summary["steps"])
        (out / "report.txt").write_text(text + "\n")
    summary["_demo"] = demo
    return summary


def _save_common(lab: Lab, demo: Demo, out: Path) -> None:
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for f in Path(lab.workdir).iterdir():
        if f.suffix == ".log" and not f.name.startswith("step"):
            shutil.copy(f, logs / f.name)
        elif f.suffix == ".toml":
            (out / "configs").mkdir(exist_ok=True)
            shutil.copy(f, out / "configs" / f.name)


def parse_steps(text: str) -> list[int]:
    steps: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            steps += range(int(a), int(b) + 1)
        elif part:
            steps.append(int(part))
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise argparse.ArgumentTypeError(f"no step {bad[0]} (steps are 1-6)")
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./run demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=parse_steps, default=list(STEPS),
                    help="which steps, e.g. 1,2 or 1-3 (default: all, 1-6)")
    ap.add_argument("--conns", type=int, default=200, help="long-lived TCP connections (default 200)")
    ap.add_argument("--vrrp-version", type=int, choices=(2, 3), default=2,
                    help="VRRP version of every instance (default 2; 3: RFC 5798, centisecond adverts)")
    ap.add_argument("--advert-interval", type=float, default=1,
                    help="VRRP advert interval in s (default 1; VRRPv2: whole seconds 1-255, "
                         "VRRPv3: 0.01-40.95, e.g. 0.05)")
    ap.add_argument("--mode", choices=("commit", "inject"), default="commit",
                    help="ctsync failover mode (default commit)")
    ap.add_argument("--out", help="output folder (default out/demo-YYYYmmdd-HHMMSS)")
    ap.add_argument("--keep", action="store_true",
                    help="leave the lab up at the end for poking around (Ctrl-C tears it down)")
    ap.add_argument("--teardown", action="store_true",
                    help="only remove labs a killed demo left behind, then exit")
    ap.add_argument("--no-plot", action="store_true", help="skip the timeline PNGs")
    args = ap.parse_args(argv)
    require_root_and_netns()
    if args.teardown:
        from .cli import main as lab_cli
        return lab_cli(["clean"])
    if args.conns < 1:
        ap.error("--conns must be >= 1")
    if args.vrrp_version == 2 and (not args.advert_interval.is_integer() or not 1 <= args.advert_interval <= 255):
        ap.error("--advert-interval: VRRPv2 takes whole seconds, 1-255 (fractions need --vrrp-version 3)")
    cs = args.advert_interval * 100
    if args.vrrp_version == 3 and (not 1 <= round(cs) <= 4095 or abs(cs - round(cs)) > 1e-6):
        ap.error("--advert-interval: VRRPv3 takes 0.01-40.95 s in steps of 0.01")
    if args.vrrp_version == 2:
        args.advert_interval = int(args.advert_interval)
    out = Path(args.out or time.strftime("out/demo-%Y%m%d-%H%M%S"))
    opts = Options(steps=args.steps, conns=args.conns, advert_interval=args.advert_interval,
                   vrrp_version=args.vrrp_version, mode=args.mode, plot=not args.no_plot)
    if opts.plot and not timeline_plot.available():
        print("note: matplotlib is not installed: no timeline PNGs (./run demo installs it)")
    con = Console()
    print(f"== the HA pair demo: steps {', '.join(map(str, opts.steps))}; output in {out}/ ==")
    with Lab() as lab:
        summary = run_demo(lab, opts, out, con)
        demo = summary.pop("_demo")
        print()
        print(table(summary["steps"]))
        print(f"\nin {out}/: summary.json (every figure), report.txt (this table), per step "
              "lan-vrrp.pcap / wan.pcap / sync.pcap (Wireshark; docs/ctsync-dissector.lua decodes the "
              "sync link), timeline.png, traffic reports; logs/ and configs/")
        if args.keep:
            demo.keep_up()
    print("lab torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
