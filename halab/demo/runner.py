"""The demo's pair and its one step runner: the lab and the daemons, the known state each step
starts from, and the generic run of a step of :data:`halab.demo.steps.STEPS` (captures, traffic,
the step's deeds, the observation, the figures and files)."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hacommon.control import stream
from vrrpd.machine import master_down_interval, master_down_interval_v3

from .. import Lab, LabError
from ..boxconfig import BoxDaemons, write_box_config
from ..hapair import LAN_VIP, SERVER_IP, WAN_VIP, HaPair, build_hapair
from ..traffic import collect, start_tcp, start_udp
from . import flowstats, report, timeline_plot
from .steps import DEAD_AFTER, R1_FAILED, STEPS, Deed, Step

PARTITION_TABLE = "hl_demo_partition"
BIN_S = 0.25


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
                    if "instance" not in ev or ev.get("current"):
                        continue  # not a transition (a notice, or the state when we subscribed)
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
            self.set_uplink("r1", True)
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

    def set_uplink(self, r: str, up: bool) -> None:
        """Plug (or pull) ``r``'s WAN cable: its port on the WAN switch."""
        self.lab.set_link(self.p.wan, f"{r}-eth0", up)
        self.uplink_down = not up

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
        """Run step ``n`` of :data:`STEPS`: its starting state, traffic and captures for its whole
        length, its deeds, then the figures; returns the step's record of summary.json."""
        step = STEPS[n]
        con, p = self.con, self.p
        con.say(f"== step {n}: {step.title} ==")
        self.prepare(step)
        con.say(f"   ready: {self.states()}")
        sdir = self.out / f"step{n}-{step.name}"
        sdir.mkdir(parents=True, exist_ok=True)
        caps = self.start_captures(n)
        t_start = time.time()
        tcp = start_tcp(p, conns=self.opts.conns, interval=0.05, duration=600, dead_after=DEAD_AFTER,
                        tag=f"step{n}-tcp")
        udp = start_udp(p, duration=600, tag=f"step{n}-sip")
        ping = p.c.start(["ping", "-D", "-n", "-i", "0.05", SERVER_IP], name=f"step{n}-ping")
        con.say(f"   traffic: {self.opts.conns} TCP connections (a line every 50 ms each), "
                f"SIP UDP every 20 ms, ping every 50 ms")
        if step.ctsync and step.start != R1_FAILED:
            # The router about to take over has the flows before anything breaks.
            self.ctsync[step.new_master].wait(lambda s: s["external_entries"] >= self.opts.conns + 1,
                                              20, "the flows replicated")
        time.sleep(1.5)
        marks: list[tuple[float, str]] = []
        result: dict = {"step": n, "name": step.name, "title": step.title, "ctsync": step.ctsync,
                        "mode": self.opts.mode if step.ctsync else None, "t_start": t_start}
        t_action = time.time()
        stop_ticker = threading.Event()
        threading.Thread(target=self._ticker, args=(stop_ticker,), daemon=True).start()
        try:
            self.act(step.breaks, marks, result, t_action)
            t_heal = None
            if step.heals is not None and step.hold is not None:  # the failure ends before the outcome
                time.sleep(step.hold(self))
                t_heal = self.act(step.heals, marks, result)
            if step.figures is not None:
                step.figures(self, result, t_action, t_heal)
            t_master = time.time()
            result["new_master"] = step.new_master
            if t_heal is None:
                con.say(f"   {step.new_master} is master and holds the VIPs "
                        f"({t_master - t_action:.2f}s after the action)")
            commit = None
            if step.ctsync:
                c = self.ctsync.get(step.new_master)
                try:
                    commit = dict(c.wait_commit(after=t_action, timeout=10), router=step.new_master)
                except LabError:
                    commit = None
            result["commit"] = commit
            observe = self.opts.observe if step.observe is None else step.observe
            if step.heals is not None and step.hold is None:  # the failure ends while observing
                time.sleep(self.opts.observe / 2)
                self.act(step.heals, marks, result)
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
        report.measure(result, caps, tr_tcp, tr_udp, ping.read_log(), t_action, step.new_master)
        result["events"] = [e for e in self.con.events if t_start - 0.5 <= e.get("time", 0) <= t_end]
        result["files"] = report.save_step_files(self.out, sdir, caps, tr_tcp, tr_udp, ping)
        if self.opts.plot and timeline_plot.available():
            series = {r: flowstats.throughput(caps[f"{r}_lan"].path, t_start, t_end, BIN_S)
                      for r in ("r1", "r2")}
            png = timeline_plot.plot_step(sdir / "timeline.png", f"step {n}: {step.title}", t_start, BIN_S,
                                          series, result["events"], marks,
                                          [result["commit"]] if result["commit"] else [])
            result["files"]["timeline"] = str(png.relative_to(self.out))
        result["marks"] = [{"time": t, "label": lbl} for t, lbl in marks]
        con.say(f"   done: {report.one_line(result)}")
        return result

    def prepare(self, step: Step) -> None:
        """The pair as ``step`` starts from."""
        if step.start == R1_FAILED:
            self.r1_failed()
        else:
            self.baseline(ctsync=step.ctsync)
        if not step.ctsync:
            # A pair that never ran ctsync: the earlier steps' commits left entries in the
            # kernels (ESTABLISHED, long timeouts), and a new connection that happens to reuse
            # one of their 5-tuples would ride on it through r2.
            for r in ("r1", "r2"):
                self.p.conntrack_flush(r)
            self.con.say("   ctsync stopped on both routers; their conntrack tables flushed")

    def start_captures(self, n: int) -> dict:
        p = self.p
        return {
            "lan_vrrp": self.lab.capture(p.lan, None, f"step{n}-lan-vrrp.pcap", bpf="vrrp or arp"),
            "wan": self.lab.capture(p.wan, "s-eth0", f"step{n}-wan.pcap"),
            "sync": self.lab.capture(p.r2, "sync0", f"step{n}-sync.pcap"),
            "r1_lan": self.lab.capture(p.lan, "r1-eth1", f"step{n}-r1-lan.pcap", bpf="not vrrp and not arp"),
            "r2_lan": self.lab.capture(p.lan, "r2-eth1", f"step{n}-r2-lan.pcap", bpf="not vrrp and not arp"),
        }

    def act(self, deed: Deed, marks: list[tuple[float, str]], result: dict,
            t: float | None = None) -> float:
        """Do ``deed`` (it returns once its outcome is there), marked on the timeline at ``t``
        (default: now), its time recorded under ``deed.key`` if it has one; returns ``t``."""
        t = time.time() if t is None else t
        self.con.say(f"   ACTION: {deed.say}")
        marks.append((t, deed.mark))
        deed.do(self)
        if deed.key:
            result[deed.key] = t
        return t

    def _ticker(self, stop: threading.Event) -> None:
        while not stop.wait(2.0):
            try:
                self.con.say(f"   state: {self.states()}")
            except Exception:
                pass

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
