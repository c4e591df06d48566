"""A soak of the HA pair under faults: steady traffic through the pair while the fault
injector (:mod:`halab.faults`) breaks something every so often, and the pair's invariants
checked after each fault settles.

The pair is the classic one (:mod:`halab.hapair`, as ``configs/r1.toml``/``r2.toml``):
r1 priority 200, r2 100, preempt, each instance tracking the other side's link (-150),
ctsync in commit mode following ``MAIN-GW`` with ``demote_when_not_ready = 150``.
Through it: long-lived TCP connections (a line every 0.2 s each), the "SIP" UDP flow
(every 50 ms) and churn (new short UDP flows every second), all for the whole run.

After each fault is healed the soak polls until every invariant holds (or gives up after
``settle_timeout``):

- every daemon runs, except those the injector killed and has not restarted yet (a dead
  one ends the run, its log's tail in the report); the traffic programs run;
- exactly one master per VRID, and it is the box the priorities say (r1), holding both
  VIPs, while the other holds none;
- the backup's ctsync is in sync and ready, the master's hears its peer, both follow
  their vrrpd (how long after the VRRP roles settled this took is measured: the goal is
  2 s, the bound asserted ``sync_bound``, which leaves room for a restarted daemon's
  resync of the table);
- every long-lived TCP connection echoes again (and none was lost: lost ones are counted,
  not waited for), and the SIP flow gets answers again.

Between faults the same invariants are checked every second (a role change or a lost
connection without a fault is a violation too), and each daemon's RSS and open file
descriptors are sampled (``/proc/PID/status`` VmRSS, ``/proc/PID/fd``). At the end each
daemon's growth over its first sample must stay within a generous bound.

:meth:`Soak.run` returns the report (also written as ``soak-report.json`` into the lab's
work directory): faults applied and survived by kind, connections lost, the worst
recovery time (fault applied -> every invariant true again), the worst resync of the
backup, per daemon RSS and fds min/max, and every violation. :func:`format_report` is its
text form.

Over 600 lines because the run, its invariants and its report share one state (the daemon
slots across restarts, the fault records, the violations); the faults themselves live in
:mod:`halab.faults`, the programs they start in a box in :mod:`halab.impair`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field

from .ctsync import Ctsync, start_ctsync
from .faults import KINDS, ROUTERS, Fault, FaultInjector
from .hapair import INSTANCES, LAN_VIP, SYNC_GROUP, WAN_VIP, HaPair, build_hapair
from .lab import Lab, LabError, Proc
from .traffic import TrafficRun, collect, short_udp_flows, start_tcp, start_udp
from .vrrp import Vrrpd

__all__ = ["DAEMONS", "Soak", "SoakConfig", "format_report", "growth"]

DAEMONS = ("vrrpd", "ctsync")
PRIORITY = {"r1": 200, "r2": 100}
MASTER, BACKUP = "r1", "r2"  # as the priorities say, once everything is healthy
DEMOTE = 150
VRIDS = {"WAN": 1, "LAN": 2}
FATAL = ("daemon-dead", "traffic-dead")
VRRP_INVARIANTS = ("one-master", "priorities", "vips")


@dataclass
class SoakConfig:
    duration: float = 600.0  # seconds of faults (the last one may settle after)
    seed: int = 0
    interval: tuple[float, float] = (20.0, 40.0)  # between the starts of two faults
    kinds: tuple[str, ...] = tuple(KINDS)
    distinct: bool = False  # draw kinds without replacement (see FaultInjector)
    max_faults: int | None = None
    warmup: float = 5.0  # traffic flowing before the first fault
    conns: int = 50
    tcp_interval: float = 0.2
    sip_interval: float = 0.05
    churn_rate: float = 10.0  # new short UDP flows per second
    settle_timeout: float = 60.0
    sync_target: float = 2.0  # the goal for the backup's resync after settling (reported)
    sync_bound: float = 15.0  # asserted
    flow_stall: float = 2.5  # an echo older than this: the flow does not go through (yet)
    rss_growth: tuple[float, int] = (1.5, 32 << 10)  # max RSS <= first * factor + KiB
    fd_growth: int = 16  # max fds <= first + this
    tick: float = 1.0  # between checks while no fault is active


@dataclass
class Incarnation:
    pid: int
    started: float  # seconds into the run
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss KiB, fds)


@dataclass
class DaemonSlot:
    """One daemon of one box across its restarts."""

    router: str
    name: str
    handle: Vrrpd | Ctsync
    incarnations: list[Incarnation] = field(default_factory=list)
    killed: bool = False  # by the injector, not restarted yet

    @property
    def proc(self) -> Proc:
        return self.handle.proc

    @property
    def label(self) -> str:
        return f"{self.router}/{self.name}"


def _daemon_pid(proc: Proc, name: str) -> int:
    """The daemon's own pid: under faketime, the child of the faketime process."""
    for pid in sorted(proc.group_pids()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if comm != "faketime" and name.encode() in cmd:
            return pid
    return proc.pid


def _usage(pid: int) -> tuple[int, int] | None:
    """(VmRSS in KiB, open fds) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None


def growth(samples: list[tuple[float, int, int]], rss_growth: tuple[float, int], fd_growth: int) -> list[str]:
    """What grew beyond its bound over one daemon process's samples ``(t, RSS KiB, fds)``:
    the largest RSS against ``first * factor + KiB``, the most fds against ``first + n``."""
    if len(samples) < 2:
        return []
    (_, rss0, fd0), factor, slack = samples[0], *rss_growth
    out = []
    t_rss, rss_max, _ = max(samples, key=lambda s: s[1])
    if rss_max > rss0 * factor + slack:
        out.append(f"RSS {rss0} -> {rss_max} KiB at {t_rss}s (bound {rss0 * factor + slack:.0f})")
    t_fd, _, fd_max = max(samples, key=lambda s: s[2])
    if fd_max > fd0 + fd_growth:
        out.append(f"fds {fd0} -> {fd_max} at {t_fd}s (bound {fd0 + fd_growth})")
    return out


class Soak:
    """The pair, its daemons, the traffic and the run (see the module docstring)."""

    def __init__(self, lab: Lab, cfg: SoakConfig, log=None):
        self.lab = lab
        self.cfg = cfg
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.injector = FaultInjector(cfg.seed, cfg.kinds, cfg.interval, cfg.distinct)
        self.pair: HaPair | None = None
        self.slots: dict[tuple[str, str], DaemonSlot] = {}
        self.clock_behind = {r: 0 for r in ROUTERS}
        self.traffic: dict[str, TrafficRun] = {}
        self.t0 = time.monotonic()
        self.records: list[dict] = []
        self.violations: list[dict] = []
        self._idle_problems: dict[str, str] = {}
        self._lost_seen = 0
        self._resync_floor = -1  # the backup's resyncs_received when the master's ctsync was killed
        self.aborted: str | None = None

    # ---- what the faults use ------------------------------------------------------------

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def vrrpd(self, router: str) -> Vrrpd:
        return self.slots[(router, "vrrpd")].handle

    def ctsync(self, router: str) -> Ctsync:
        return self.slots[(router, "ctsync")].handle

    def _clock(self, router: str) -> tuple[list[str] | None, dict | None]:
        behind = self.clock_behind[router]
        if not behind:
            return None, None
        # The wall clock only, as after a boot without RTC; trio's timers use the monotonic one.
        return ["faketime", "-f", f"-{behind}s"], {"DONT_FAKE_MONOTONIC": "1"}

    def set_clock_back(self, router: str, seconds: int) -> None:
        self.clock_behind[router] = seconds

    def _start(self, router: str, daemon: str) -> Vrrpd | Ctsync:
        prefix, env = self._clock(router)
        host = self.pair.router(router)
        if daemon == "vrrpd":
            return self.pair.start_vrrpd(router, PRIORITY[router], track_links=True, prefix=prefix, env=env)
        sock = self.pair.vrrpd[router].socket
        return start_ctsync(host, "commit", sock, prefix=prefix, env=env,
                            failover={"vrrp_sync_group": SYNC_GROUP, "vrrpd_socket": sock,
                                      "demote_when_not_ready": DEMOTE})

    def _register(self, router: str, daemon: str, handle: Vrrpd | Ctsync) -> None:
        slot = self.slots.get((router, daemon))
        if slot is None:
            slot = self.slots[(router, daemon)] = DaemonSlot(router, daemon, handle)
        slot.handle, slot.killed = handle, False
        slot.incarnations.append(Incarnation(_daemon_pid(handle.proc, daemon), self.now()))

    def kill(self, router: str, daemon: str) -> None:
        """SIGKILL a daemon (its whole process group): an exit the soak expects."""
        slot = self.slots[(router, daemon)]
        if daemon == "ctsync":
            # The backup's in_sync stays true until it notices the master's restart: it is
            # in sync again once it got a table push from the new incarnation.
            self._resync_floor = -1
            if router == MASTER:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self._resync_floor = self.ctsync(BACKUP).status()["counters"]["resyncs_received"]
        slot.killed = True
        slot.proc.kill()

    def restart(self, router: str, daemon: str) -> None:
        """Start a killed daemon again, with the box's clock."""
        self._register(router, daemon, self._start(router, daemon))

    def set_link(self, router: str, ifname: str, up: bool) -> None:
        self.lab.set_link(self.pair.router(router), ifname, up)

    def start_helper(self, router: str, args: list, name: str) -> Proc:
        """``python -m halab.impair ARGS`` in a box, once it says it is listening."""
        proc = self.pair.router(router).start([sys.executable, "-m", "halab.impair", *map(str, args)], name=name)
        deadline = time.monotonic() + 10
        while '"listening"' not in proc.read_log():
            if not proc.alive() or time.monotonic() > deadline:
                raise LabError(f"{name} in {router} did not start: {proc.read_log()[-1000:]}")
            time.sleep(0.05)
        return proc

    def run_helper(self, router: str, args: list) -> dict:
        """``python -m halab.impair ARGS`` in a box, to its end; its JSON line."""
        cp = self.pair.router(router).run([sys.executable, "-m", "halab.impair", *map(str, args)],
                                          check=True, timeout=120)
        return json.loads(cp.stdout.strip().splitlines()[-1])

    # ---- set-up ---------------------------------------------------------------------------

    def setup(self) -> None:
        self.pair = build_hapair(self.lab, ruleset="strict")
        for r in ROUTERS:
            self._register(r, "vrrpd", self._start(r, "vrrpd"))
        for r in ROUTERS:
            self._register(r, "ctsync", self._start(r, "ctsync"))
        self.pair.wait_master(MASTER, timeout=20)
        self.pair.wait_backup(BACKUP)
        self.ctsync(BACKUP).wait(lambda s: s["in_sync"], 15, "in sync with r1")
        long = self.cfg.duration + 900  # stopped at the end; long enough for the last fault
        self.traffic["tcp"] = start_tcp(self.pair, conns=self.cfg.conns, interval=self.cfg.tcp_interval,
                                        duration=long, dead_after=30, progress=True)
        self.traffic["sip"] = start_udp(self.pair, duration=long, interval=self.cfg.sip_interval, progress=True)
        self.traffic["churn"] = short_udp_flows(self.pair, rate=self.cfg.churn_rate,
                                                count=int(self.cfg.churn_rate * long), duration=long, hold=0.2)

    # ---- invariants -----------------------------------------------------------------------

    def check(self) -> dict[str, str]:
        """Every invariant that does not hold now: {name: what is wrong}."""
        problems: dict[str, str] = {}
        dead = [s for s in self.slots.values() if not s.killed and not s.proc.alive()]
        if dead:
            problems["daemon-dead"] = "; ".join(
                f"{s.label} exited ({s.proc.returncode}) without being killed; its log ends:\n"
                f"{s.proc.read_log()[-3000:]}" for s in dead)
        gone = [f"{k} {p.name}" for k, run in self.traffic.items() for p in (run.client, run.server)
                if p is not None and not p.alive()]
        if gone:
            problems["traffic-dead"] = f"traffic programs exited: {gone}"
        states, errors = {}, {}
        for r in ROUTERS:
            states[r], err = self._states(r)
            if err:
                errors[r] = err
        if errors:
            problems["vrrpd-status"] = f"vrrpctl status fails: {errors}"
        for inst in INSTANCES:
            masters = [r for r in ROUTERS if states[r][inst] == "MASTER"]
            if len(masters) != 1:
                problems["one-master"] = f"VRID {VRIDS[inst]} ({inst}): masters {masters}; states {states}"
        if (any(v != "MASTER" for v in states[MASTER].values())
                or any(v != "BACKUP" for v in states[BACKUP].values())):
            problems["priorities"] = f"not {MASTER} master and {BACKUP} backup: {states}"
        if "priorities" not in problems:
            held = {r: self.pair.holds_vips(r) for r in ROUTERS}
            stray = self._vips_on(BACKUP)
            if not held[MASTER] or stray:
                problems["vips"] = f"{MASTER} holds both VIPs: {held[MASTER]}; on {BACKUP}: {stray}"
        try:
            sb, sm = self.ctsync(BACKUP).status(), self.ctsync(MASTER).status()
            why = []
            if not (sb["in_sync"] and sb["ready"]):
                why.append(f"{BACKUP} in_sync={sb['in_sync']} ready={sb['ready']}")
            elif sb["counters"]["resyncs_received"] <= self._resync_floor:
                why.append(f"{BACKUP} has no table from {MASTER}'s restarted ctsync yet")
            if not sm["peer_alive"]:
                why.append(f"{MASTER} does not hear {BACKUP}")
            why += [f"{r} not following vrrpd" for r, s in ((MASTER, sm), (BACKUP, sb)) if not s["vrrpd_connected"]]
            if why:
                problems["backup-sync"] = "; ".join(why)
        except (OSError, ValueError, KeyError) as e:
            problems["backup-sync"] = f"ctsync status: {e}"
        tcp = self.traffic["tcp"].progress()
        if tcp is None or time.time() - tcp["time"] > 3:
            problems["tcp-flowing"] = "no fresh progress from the TCP client"
        elif (tcp["oldest_echo_age"] or 0) > self.cfg.flow_stall:
            problems["tcp-flowing"] = f"an open connection has had no echo for {tcp['oldest_echo_age']}s"
        sip = self.traffic["sip"].progress()
        if sip is None or time.time() - sip["time"] > 3:
            problems["sip-flowing"] = "no fresh progress from the SIP client"
        elif sip["last_reply_age"] > self.cfg.flow_stall:
            problems["sip-flowing"] = f"no SIP answer for {sip['last_reply_age']}s"
        return problems

    def _states(self, router: str) -> tuple[dict[str, str | None], str | None]:
        """{instance: state} of a box's vrrpd (None: no answer), and why it did not answer."""
        slot = self.slots[(router, "vrrpd")]
        if slot.killed:
            return {i: None for i in INSTANCES}, None
        try:
            st = slot.handle.status()
        except (OSError, ValueError, KeyError) as e:  # KeyError: a reply without instances
            return {i: None for i in INSTANCES}, f"{type(e).__name__}: {e}"
        return {i: (st.get(i, {}).get("state") or "").upper() or None for i in INSTANCES}, None

    def _vips_on(self, router: str) -> list[str]:
        host = self.pair.router(router)
        out = []
        for link in host._ip_json("-4", "addr", "show"):
            out += [a["local"] for a in link.get("addr_info", []) if a.get("local") in (WAN_VIP, LAN_VIP)]
        return out

    def _lost(self) -> tuple[int, list]:
        p = self.traffic["tcp"].progress() or {}
        return p.get("lost", 0), p.get("lost_conns", [])

    def _note_lost(self, where: str) -> None:
        lost, conns = self._lost()
        if lost > self._lost_seen:
            self._violation(where, "tcp-lost", f"{lost - self._lost_seen} TCP connections lost "
                            f"(total {lost}): {conns[:5]}")
            self._lost_seen = lost

    def _invalid_drops(self) -> dict[str, int | None]:
        """Packets each router's strict ruleset dropped as ``ct state invalid`` so far (a TCP
        flow whose conntrack entry lost track of its windows ends there)."""
        out: dict[str, int | None] = {}
        for r in ROUTERS:
            try:
                text = self.pair.router(r).run(["nft", "list", "chain", "ip", "filter", "forward"]).stdout
            except (OSError, LabError):
                text = ""
            m = re.search(r"ct state invalid counter packets (\d+)", text)
            out[r] = int(m.group(1)) if m else None
        return out

    def _violation(self, where: str, name: str, what: str) -> None:
        if name in ("tcp-flowing", "tcp-lost"):
            what += f" (dropped as ct state invalid so far: {self._invalid_drops()})"
        self.violations.append({"t": self.now(), "during": where, "invariant": name, "what": what})
        self.log(f"[{self.now():7.1f}s] VIOLATION ({where}) {name}: {what[:500]}")

    def sample(self) -> None:
        for slot in self.slots.values():
            if slot.killed or not slot.proc.alive():
                continue
            inc = slot.incarnations[-1]
            u = _usage(inc.pid)
            if u is not None:
                inc.samples.append((self.now(), *u))

    # ---- the run --------------------------------------------------------------------------

    def idle_until(self, t: float) -> None:
        """Between faults: every tick, sample the daemons and check the invariants (a
        violation without a fault is recorded once per episode; a dead daemon ends the run)."""
        while True:
            problems = self.check()
            self._fatal(problems, "between faults")
            for name, what in problems.items():
                if name not in self._idle_problems:
                    self._violation("between faults", name, what)
            self._idle_problems = problems
            self._note_lost("between faults")
            self.sample()
            left = t - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.cfg.tick, left))

    def _fatal(self, problems: dict[str, str], where: str) -> None:
        for name in FATAL:
            if name in problems:
                self._violation(where, name, problems[name])
                raise _Abort(f"{name} {where}")

    def _hold(self, fault: Fault, ridden_out: bool, until: float) -> None:
        """Until the heal: a fault the pair must ride out may not break the roles, the
        VIPs or the flows meanwhile (each broken invariant recorded once)."""
        seen: set[str] = set()
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            if not ridden_out:
                time.sleep(left)
                return
            problems = self.check()
            self._fatal(problems, fault.describe())
            for name, what in problems.items():
                if name != "backup-sync" and name not in seen:  # a gap on an impaired link may cost a resync
                    seen.add(name)
                    self._violation(f"{fault.describe()}, while it lasts", name, what)
            time.sleep(min(0.5, max(0.0, until - time.monotonic())))

    def run_fault(self, fault: Fault) -> dict:
        kind = KINDS[fault.kind]
        rec = {"n": fault.n, "kind": fault.kind, "router": fault.router, "params": fault.params,
               "applied_at": self.now()}
        self.records.append(rec)
        self.log(f"[{self.now():7.1f}s] fault {fault.describe()}")
        ctx: dict = {"notes": {}}
        rec["notes"] = ctx["notes"]
        t_apply = time.monotonic()
        kind.apply(self, fault, ctx)
        self._hold(fault, kind.ridden_out, t_apply + fault.hold)
        t_heal = time.monotonic()
        kind.heal(self, fault, ctx)
        t_vrrp = t_sync = None
        deadline = t_heal + self.cfg.settle_timeout
        while True:
            problems = self.check()
            self._fatal(problems, fault.describe())
            awaited = kind.settled(self, fault, ctx)
            now = time.monotonic()
            if any(k in problems for k in VRRP_INVARIANTS):
                t_vrrp = t_sync = None
            else:
                t_vrrp = t_vrrp or now
                if "backup-sync" not in problems:
                    t_sync = t_sync or now
            if not problems and awaited is None:
                break
            if now > deadline:
                what = "; ".join([*(f"{k}: {v}" for k, v in problems.items()), *([awaited] if awaited else [])])
                self._violation(fault.describe(), "settle", f"not settled {self.cfg.settle_timeout:.0f}s "
                                f"after the heal: {what}")
                rec["settled"] = False
                raise _Abort(f"{fault.describe()} did not settle")
            time.sleep(0.2)
        rec.update(settled=True, recovery_s=round(now - t_apply, 2), after_heal_s=round(now - t_heal, 2),
                   sync_lag_s=round(t_sync - t_vrrp, 2))
        if rec["sync_lag_s"] > self.cfg.sync_bound:
            self._violation(fault.describe(), "backup-sync",
                            f"the backup took {rec['sync_lag_s']}s to be in sync after the roles settled")
        lost_before = self._lost_seen
        self._note_lost(fault.describe())
        rec["tcp_lost"] = self._lost_seen - lost_before
        rec["survived"] = rec["tcp_lost"] == 0 and rec["sync_lag_s"] <= self.cfg.sync_bound
        self.sample()
        self._idle_problems = {}
        self.log(f"[{self.now():7.1f}s]   settled: recovery {rec['recovery_s']}s "
                 f"({rec['after_heal_s']}s after the heal), backup in sync {rec['sync_lag_s']}s after the roles"
                 f"{', ' + json.dumps(ctx['notes']) if ctx['notes'] else ''}")
        return rec

    def run(self) -> dict:
        """Set up, run the faults for ``duration`` s, stop the traffic; the report."""
        self.log(f"soak: seed {self.cfg.seed}, {self.cfg.duration:.0f}s, faults every "
                 f"{self.cfg.interval[0]:.0f}-{self.cfg.interval[1]:.0f}s from {', '.join(self.cfg.kinds)}")
        try:
            self.setup()
            self.t0 = time.monotonic()
            for slot in self.slots.values():
                for inc in slot.incarnations:
                    inc.started = 0.0
            end = self.t0 + self.cfg.duration
            next_at = self.t0 + self.cfg.warmup
            while next_at < end and (self.cfg.max_faults is None or len(self.records) < self.cfg.max_faults):
                self.idle_until(next_at)
                fault = self.injector.next_fault()
                self.run_fault(fault)
                next_at = max(self.t0 + self.records[-1]["applied_at"] + self.injector.next_interval(),
                              time.monotonic() + 2.0)
            self.idle_until(min(end, time.monotonic() + 3.0))
        except _Abort as e:
            self.aborted = str(e)
        finally:
            final = self._stop_traffic()
        return self.report(final)

    def _stop_traffic(self) -> dict:
        runs = list(self.traffic.items())
        for _, run in runs:
            run.stop_client()
        with contextlib.suppress(LabError):
            reps = collect([run for _, run in runs], grace=0, require=False)
            return dict(zip([k for k, _ in runs], reps))
        return {}

    # ---- the report -----------------------------------------------------------------------

    def _final_traffic(self, final: dict) -> dict:
        out: dict = {}
        tcp = (final.get("tcp") or {}).get("client")
        if tcp:
            s = tcp["summary"]
            out["tcp"] = {k: s[k] for k in ("conns", "established", "kept", "lost", "rsts", "reasons", "gap_max")}
            srv = (final.get("tcp") or {}).get("server") or {}
            ports = collections.defaultdict(set)
            for c in srv.get("conns", []):
                ports[c["client_id"]].add((c["peer"], c["peer_port"]))
            out["tcp"]["server_peers"] = (srv.get("summary") or {}).get("peers")
            out["tcp"]["reconnected"] = sum(1 for v in ports.values() if len(v) > 1)
        sip = (final.get("sip") or {}).get("client")
        if sip:
            s = sip["summary"]
            srv = (final.get("sip") or {}).get("server") or {}
            out["sip"] = {"sent": s["sent"], "received": s["received"], "max_gap": s["max_gap"],
                          "public_sources": [f"{x['addr']}:{x['port']}" for x in srv.get("sources", [])]}
        churn = (final.get("churn") or {}).get("client")
        if churn:
            s = churn["summary"]
            out["churn"] = {"flows": s["flows"], "flows_replied": s["flows_replied"]}
        return out

    def _resources(self) -> dict:
        out = {}
        for slot in self.slots.values():
            samples = [s for inc in slot.incarnations for s in inc.samples]
            for i, inc in enumerate(slot.incarnations):
                for g in growth(inc.samples, self.cfg.rss_growth, self.cfg.fd_growth):
                    self._violation("run", "resources", f"{slot.label} incarnation {i} (pid {inc.pid}): {g}")
            out[slot.label] = {
                "incarnations": len(slot.incarnations), "samples": len(samples),
                "rss_kib": [min(s[1] for s in samples), max(s[1] for s in samples)] if samples else None,
                "fds": [min(s[2] for s in samples), max(s[2] for s in samples)] if samples else None,
                "last_rss_kib": samples[-1][1] if samples else None, "last_fds": samples[-1][2] if samples else None,
            }
        return out

    def report(self, final: dict) -> dict:
        traffic = self._final_traffic(final)
        t = traffic.get("tcp") or {}
        if t and (t["lost"] or t["rsts"] or t["reconnected"]) and not any(
                v["invariant"] == "tcp-lost" for v in self.violations):
            self._violation("end", "tcp-lost", f"the TCP client's report: {t}")
        sip = traffic.get("sip")
        if sip and len(sip["public_sources"]) != 1:
            self._violation("end", "sip-source", f"the SIP flow reached the server from {sip['public_sources']}")
        resources = self._resources()
        done = [r for r in self.records if r.get("settled")]
        by_kind = collections.Counter(r["kind"] for r in self.records)
        survived = collections.Counter(r["kind"] for r in done if r.get("survived"))
        worst = max(done, key=lambda r: r["recovery_s"], default=None)
        worst_sync = max(done, key=lambda r: r["sync_lag_s"], default=None)
        worst_heal = max(done, key=lambda r: r["after_heal_s"], default=None)
        rep = {
            "seed": self.cfg.seed, "duration_s": self.cfg.duration, "ran_s": self.now(),
            "config": {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in ("seed", "duration")},
            "aborted": self.aborted,
            "faults_applied": dict(by_kind), "faults_survived": dict(survived),
            "faults_total": len(self.records), "survived_total": sum(survived.values()),
            "connections_lost": (t.get("lost", 0) if t else self._lost_seen)
            + (1 if sip and len(sip["public_sources"]) > 1 else 0),
            "worst_recovery_s": worst["recovery_s"] if worst else None,
            "worst_recovery_fault": f"#{worst['n']} {worst['kind']} on {worst['router']}" if worst else None,
            "worst_after_heal_s": worst_heal["after_heal_s"] if worst_heal else None,
            "worst_after_heal_fault": f"#{worst_heal['n']} {worst_heal['kind']} on {worst_heal['router']}"
            if worst_heal else None,
            "worst_sync_lag_s": worst_sync["sync_lag_s"] if worst_sync else None,
            "sync_over_target": sum(1 for r in done if r["sync_lag_s"] > self.cfg.sync_target),
            "traffic": traffic, "daemons": resources,
            "violations": self.violations, "faults": self.records,
        }
        path = os.path.join(self.lab.workdir, "soak-report.json")
        with open(path, "w") as f:
            json.dump(rep, f, indent=1)
        rep["path"] = path
        return rep


class _Abort(Exception):
    pass


def format_report(rep: dict) -> str:
    """The report as text (one screen)."""
    lines = [f"soak seed {rep['seed']}: {rep['faults_total']} faults in {rep['ran_s']:.0f}s, "
             f"{rep['survived_total']} survived" + (f"; ABORTED: {rep['aborted']}" if rep["aborted"] else "")]
    for kind, n in sorted(rep["faults_applied"].items()):
        lines.append(f"  {kind:13} applied {n}, survived {rep['faults_survived'].get(kind, 0)}")
    lines.append(f"connections lost: {rep['connections_lost']}; worst recovery {rep['worst_recovery_s']}s "
                 f"({rep['worst_recovery_fault']}), {rep['worst_after_heal_s']}s after a heal "
                 f"({rep['worst_after_heal_fault']}); worst resync of the backup after the roles settled "
                 f"{rep['worst_sync_lag_s']}s ({rep['sync_over_target']} over {rep['config']['sync_target']}s)")
    for f in rep["faults"]:
        if f.get("settled"):
            lines.append(f"  #{f['n']:<3} {f['applied_at']:7.1f}s {f['kind']:13} {f['router']:4} recovery "
                         f"{f['recovery_s']:5.1f}s (after heal {f['after_heal_s']:4.1f}s) sync {f['sync_lag_s']:4.1f}s "
                         f"lost {f['tcp_lost']}")
        else:
            lines.append(f"  #{f['n']:<3} {f['applied_at']:7.1f}s {f['kind']:13} {f['router']:4} NOT SETTLED")
    for label, d in rep["daemons"].items():
        lines.append(f"  {label:10} incarnations {d['incarnations']}, RSS {d['rss_kib']} KiB, fds {d['fds']}")
    for k, v in rep["traffic"].items():
        lines.append(f"  {k}: {v}")
    for v in rep["violations"]:
        lines.append(f"VIOLATION at {v['t']}s ({v['during']}) {v['invariant']}: {v['what'][:2000]}")
    lines.append(f"report: {rep.get('path')}")
    return "\n".join(lines)
