"""The kernel side of parking (ctsync/parking.py): iptables rules and an NFQUEUE binding.

Where packets wait: in the **raw** table's PREROUTING, before conntrack. A packet queued
after conntrack keeps the conntrack association it was given on arrival (none, or a NEW
entry) when it is re-injected: NF_REPEAT runs the queueing hook again, not conntrack's.
Queued before conntrack, a released packet goes through the conntrack lookup again and
meets the entry the commit just wrote. Conntrack state is not known yet at that point, so
every TCP and UDP packet arriving on the parking interfaces during a takeover waits, SYNs
included: a new connection accepted before the commit could take a public port that a
committed entry needs (a NAT clash).

The rules (IPv4 and IPv6, iptables' NFQUEUE target: nft's ``queue`` is not on every
kernel):

    raw CTSYNC-PARK:    -m mark --mark M/M -g CTSYNC-PARKED      (released: skip)
                        -i IFACE -p tcp -j NFQUEUE --queue-num Q --queue-bypass
                        -i IFACE -p udp -j NFQUEUE --queue-num Q --queue-bypass
    raw CTSYNC-PARKED:  -j MARK --set-xmark 0/M                  (clear our bit, go on)
    raw PREROUTING:     -j CTSYNC-PARK                           (only while armed)

A released packet gets verdict NF_REPEAT with mark bit M set: the raw table runs again,
skips parking, clears the bit, and the packet goes on to conntrack and the ruleset.
``--queue-bypass`` lets traffic through unqueued whenever no ctsync listens on the queue
(not running, killed). The interfaces default to ``vrrp+``: vrrpd's virtual-MAC macvlans,
which are down while the router is backup, so the rules can be armed in advance, at no
cost, whenever we are backup; they are disarmed once a takeover's commit is done.
ctsync removes its chains at start (a crashed run's leftovers) and on every exit.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from typing import Sequence

import trio

from .parking import ParkingLot, Verdict

log = logging.getLogger("ctsync")

CHAIN = "CTSYNC-PARK"
RELEASED_CHAIN = "CTSYNC-PARKED"
TOOLS = ("iptables", "ip6tables")


def rule_lines(queue: int, mark: int, interfaces: Sequence[str]) -> list[list[str]]:
    """The chains' rules, as iptables arguments after ``-t raw``."""
    m = f"0x{mark:x}/0x{mark:x}"
    rules = [["-A", CHAIN, "-m", "mark", "--mark", m, "-g", RELEASED_CHAIN],
             ["-A", RELEASED_CHAIN, "-j", "MARK", "--set-xmark", f"0x0/0x{mark:x}"]]
    for iface in interfaces or ("+",):
        for proto in ("tcp", "udp"):
            rules.append(["-A", CHAIN, "-i", iface, "-p", proto, "-j", "NFQUEUE", "--queue-num", str(queue),
                          "--queue-bypass"])
    return rules


class ParkingRules:
    """Install, arm, disarm and remove the chains, for every family whose tool exists."""

    def __init__(self, queue: int, mark: int, interfaces: Sequence[str]):
        self.queue, self.mark, self.interfaces = queue, mark, tuple(interfaces)
        self.tools = [t for t in TOOLS if shutil.which(t)]
        self.armed = False

    def _run(self, tool: str, *args: str, check: bool = True) -> bool:
        cp = subprocess.run([tool, "-w", "-t", "raw", *args], capture_output=True, text=True, timeout=30)
        if check and cp.returncode != 0:
            raise OSError(f"{tool} -t raw {' '.join(args)}: {cp.stderr.strip() or cp.returncode}")
        return cp.returncode == 0

    def remove(self) -> None:
        """Remove our jump and chains (also a crashed run's); never raises."""
        for tool in self.tools:
            try:
                while self._run(tool, "-D", "PREROUTING", "-j", CHAIN, check=False):
                    pass
                for chain in (CHAIN, RELEASED_CHAIN):
                    self._run(tool, "-F", chain, check=False)
                for chain in (CHAIN, RELEASED_CHAIN):
                    self._run(tool, "-X", chain, check=False)
            except (OSError, subprocess.SubprocessError) as e:
                log.error("parking: removing the %s rules failed: %s", tool, e)
        self.armed = False

    def install(self) -> None:
        if not self.tools:
            raise OSError("neither iptables nor ip6tables is installed")
        self.remove()
        for tool in self.tools:
            self._run(tool, "-N", CHAIN)
            self._run(tool, "-N", RELEASED_CHAIN)
            for r in rule_lines(self.queue, self.mark, self.interfaces):
                self._run(tool, *r)

    def arm(self) -> None:
        if not self.armed:
            for tool in self.tools:
                self._run(tool, "-I", "PREROUTING", "1", "-j", CHAIN)
            self.armed = True

    def disarm(self) -> None:
        if self.armed:
            for tool in self.tools:
                self._run(tool, "-D", "PREROUTING", "-j", CHAIN, check=False)
            self.armed = False


class Parking:
    """Rules + queue + lot, driven by the daemon: ``takeover()`` before a takeover's
    commit, ``commit_done()`` after it, ``arm()`` on becoming backup, ``close()`` on exit."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.lot = ParkingLot(cfg.max_hold, cfg.max_packets, cfg.max_bytes)
        self.rules = ParkingRules(cfg.queue, cfg.mark, cfg.interfaces)
        self._queue = None
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self.error: str | None = None
        self.working = False

    # ---- life cycle ------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Bind the queue and install the rules (armed: we start as backup). A failure is
        logged and leaves ctsync running without parking."""
        try:
            from netfilterqueue import NetfilterQueue
        except ImportError as e:
            self.error = f"the netfilterqueue module is missing ({e}); run ./run setup"
            log.error("parking disabled: %s", self.error)
            return
        try:
            q = NetfilterQueue()
            q.bind(self.cfg.queue, self._arrive, max_len=self.cfg.max_packets + 1024)
            self._queue = q
            await trio.to_thread.run_sync(self.rules.install)
            await trio.to_thread.run_sync(self.rules.arm)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            self.error = str(e)
            log.error("parking disabled: %s", e)
            self.close()
            return
        self.working = True
        self._nursery = nursery
        nursery.start_soon(self._read)
        nursery.start_soon(self._timer)
        log.info("parking armed: TCP and UDP arriving on %s wait for a takeover's commit (queue %d, max %.1fs)",
                 ", ".join(self.cfg.interfaces), self.cfg.queue, self.cfg.max_hold)

    def close(self) -> None:
        """Every exit path: release what waits, unbind, remove the rules."""
        for pkt in self.lot.committed(trio.current_time() if _in_trio() else 0.0):
            self._release(pkt)
        if self._queue is not None:
            try:
                self._queue.unbind()
            except Exception as e:  # noqa: BLE001 - leaving must not fail halfway
                log.warning("parking: unbinding the queue failed: %s", e)
            self._queue = None
        self.rules.remove()
        self.working = False

    # ---- the takeover ------------------------------------------------------------------

    def takeover(self) -> bool:
        """A takeover's commit is about to run: arrivals wait for it. True if parking is
        armed (so the VIPs may move before the commit is done)."""
        if not self.working:
            return False
        self.lot.takeover(trio.current_time())
        return self.rules.armed

    def commit_done(self) -> None:
        """Release everything parked (oldest first), then disarm (in the background: what
        arrives meanwhile passes at once) until we are backup again."""
        if not self.working:
            return
        report = self.lot.current
        for pkt in self.lot.committed(trio.current_time()):
            self._release(pkt)
        if report is not None:
            log.info("parking: %s", report.describe())
        self._nursery.start_soon(self._disarm)

    async def _disarm(self) -> None:
        try:
            await trio.to_thread.run_sync(self.rules.disarm)
        except (OSError, subprocess.SubprocessError) as e:
            log.error("parking: disarming failed: %s", e)

    async def arm(self) -> None:
        if self.working:
            try:
                await trio.to_thread.run_sync(self.rules.arm)
            except (OSError, subprocess.SubprocessError) as e:
                log.error("parking: arming failed: %s", e)

    # ---- packets -----------------------------------------------------------------------

    def _arrive(self, pkt) -> None:
        verdict = self.lot.arrive(pkt, pkt.get_payload_len(), trio.current_time())
        if verdict is Verdict.RELEASE:
            self._release(pkt)
        elif verdict is Verdict.DROP:
            pkt.drop()
        else:
            self._changed.set()

    def _release(self, pkt) -> None:
        try:
            pkt.set_mark(pkt.get_mark() | self.cfg.mark)
            pkt.repeat()
        except (OSError, RuntimeError) as e:
            log.debug("parking: verdict failed: %s", e)

    async def _read(self) -> None:
        q = self._queue
        fd = q.get_fd()
        while self._queue is not None:
            await trio.lowlevel.wait_readable(fd)
            try:
                q.run(block=False)
            except OSError as e:
                log.warning("parking: reading the queue failed: %s", e)
                await trio.sleep(0.1)

    async def _timer(self) -> None:
        while True:
            deadline = self.lot.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._changed.wait()
            self._changed = trio.Event()
            for pkt in self.lot.handle_timer(trio.current_time()):
                self._release(pkt)

    def status(self) -> dict:
        c = self.lot.counters
        last = self.lot.last
        return {"enabled": True, "working": self.working, "error": self.error, "armed": self.rules.armed,
                "waiting": self.lot.waiting, "parked_now": len(self.lot), "parked": c.parked,
                "released_after_commit": c.released_after_commit, "released_on_timeout": c.released_on_timeout,
                "dropped_over_bound": c.dropped_over_bound, "passed": c.passed, "takeovers": c.takeovers,
                "longest_wait": round(c.longest_wait, 4), "last_takeover": last.describe() if last else None}


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
        return True
    except RuntimeError:
        return False
