"""The demo's steps, one record each: what the pair starts from, what breaks, how it heals,
what to watch.  :meth:`halab.demo.runner.Demo.run_step` runs any of them the same way:

    start state -> captures and traffic -> (the flows replicated) -> ``breaks``
    -> [``hold`` s, ``heals``] -> the new master holds the VIPs -> ctsync's commit
    -> observe (``heals`` half-way through if no ``hold``) -> figures, files, timeline

A deed returns once its outcome is there (e.g. the new master holds the VIPs), so the runner
only sequences them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import wait_for

if TYPE_CHECKING:
    from .runner import Demo

#: Where a step starts from: r1 master and r2 backup (ctsync in sync unless the step runs
#: without it), or r1 failed and r2 master alone.
R1_MASTER = "r1 master"
R1_FAILED = "r1 failed"

DEAD_AFTER = 10.0  # a TCP connection without an echo for this long is lost


@dataclass(frozen=True)
class Deed:
    """Something done to the pair: the console's ACTION line, the label on the timeline, and
    the deed, which returns once its outcome is there.  ``key``: the field of the step's record
    that keeps when it was done (the action's own time is always ``t_action``)."""

    say: str
    mark: str
    do: Callable[[Demo], None]
    key: str | None = None


@dataclass(frozen=True)
class Step:
    name: str                   # the step's folder (stepN-NAME) and its name in summary.json
    title: str
    breaks: Deed                # what fails; returns once ``new_master`` holds the VIPs (at once
                                # with a ``hold``: the outcome is read after the heal)
    new_master: str = "r2"      # who takes over (ctsync's commit is awaited there)
    start: str = R1_MASTER      # R1_MASTER or R1_FAILED
    ctsync: bool = True         # False: ctsync stopped and both conntrack tables flushed first
    heals: Deed | None = None   # how the failure ends within the step (None: the next step's start)
    hold: Callable[[Demo], float] | None = None
    """With ``heals``: how long the failure lasts; it heals before the outcome is read.
    None: it heals half-way through the observation, after the takeover."""
    observe: float | None = None  # seconds of traffic at the end (None: Options.observe)
    figures: Callable[[Demo, dict, float, float | None], None] | None = None
    """Step-specific figures: (demo, the step's record, t_action, t_heal)."""


# ---- the deeds -----------------------------------------------------------------------------

def fail_r1(d: Demo) -> None:
    d.p.hard_fail("r1")
    d.p.wait_master("r2", timeout=10 + d.mdi())


def return_r1(d: Demo) -> None:
    d.p.revive("r1")
    d.start_daemons("r1", True)
    d.ctsync["r1"].wait(lambda s: s["in_sync"], 20, "in sync with r2")
    d.p.wait_master("r1", timeout=15 + 2 * d.mdi())
    d.p.wait_backup("r2", timeout=10)


def stop_vrrpd_r1(d: Demo) -> None:
    d.vrrpd["r1"].proc.terminate()
    d.p.wait_master("r2", timeout=10)


def pull_uplink_r1(d: Demo) -> None:
    d.set_uplink("r1", False)
    d.p.wait_master("r2", timeout=10 + d.mdi())


def plug_uplink_r1(d: Demo) -> None:
    d.set_uplink("r1", True)
    d.p.wait_master("r1", timeout=10 + 2 * d.mdi())


def partition_lan(d: Demo) -> None:
    d.partition()


def heal_lan(d: Demo) -> None:
    d.heal_partition()
    time.sleep(1.5 * d.mdi())
    wait_for(lambda: all(v == "MASTER" for v in d.p.state("r1").values())
             and all(v == "BACKUP" for v in d.p.state("r2").values()),
             timeout=10 + 2 * d.mdi(), interval=0.05, what="one master again")


def dual_master_figures(d: Demo, res: dict, t_action: float, t_heal: float | None) -> None:
    """Dual master as vrrpd reported it: r2's LAN instance claiming master while
    r1 still is (episodes: how many times), and when r2 last moved after the heal."""
    with d.con.lock:
        evs = [e for e in d.con.events if e["router"] == "r2" and e["time"] >= t_action]
    claims = [e["time"] for e in evs if e["instance"] == "LAN" and e["new"] == "master" and e["time"] < t_heal]
    after = [e["time"] for e in evs if e["time"] >= t_heal]
    res["dual_master"] = bool(claims)
    res["dual_master_after_s"] = round(claims[0] - t_action, 3) if claims else None
    res["dual_master_episodes"] = len(claims)
    res["converged_after_heal_s"] = round(max(after) - t_heal, 3) if after else 0.0
    res["t_heal"] = t_heal
    d.con.say(f"   r2 claimed LAN master {len(claims)} time(s) during the partition; "
              f"one master {res['converged_after_heal_s']:.2f}s after healing")


HARD_FAILURE = Deed("r1 hard failure (SIGKILL to its daemons, eth0/eth1/sync0 down)", "r1 fails", fail_r1)

# ---- the table -----------------------------------------------------------------------------

STEPS: dict[int, Step] = {
    1: Step("hard-failure", "hard failure of the master r1 (daemons killed, links down)",
            breaks=HARD_FAILURE),
    2: Step("failback", "r1 returns and preempts (failback)",
            start=R1_FAILED, new_master="r1",
            breaks=Deed("r1's links up, its ctsync and vrrpd start", "r1 back", return_r1)),
    3: Step("graceful-stop", "graceful stop of the master r1 (priority 0)",
            breaks=Deed("vrrpd on r1 stopped with SIGTERM (sends priority 0, drops the VIPs)",
                        "r1 vrrpd stops", stop_vrrpd_r1)),
    4: Step("uplink-down", "r1's uplink eth0 loses carrier, the box stays up (tracking)",
            breaks=Deed("r1's WAN cable pulled (switch port r1-eth0 down; r1 keeps running)",
                        "r1 uplink down", pull_uplink_r1),
            heals=Deed("r1's WAN cable back; r1 preempts", "uplink back", plug_uplink_r1,
                       key="t_uplink_back")),
    5: Step("lan-partition", "partition of the VRRP LAN between r1 and r2 (dual master), then healing",
            breaks=Deed("LAN partitioned between r1 and r2 (bridge drops frames between their ports)",
                        "partition", partition_lan),
            hold=lambda d: max(4.0, 2.5 * d.mdi()),
            heals=Deed("partition healed", "healed", heal_lan),
            figures=dual_master_figures),
    6: Step("hard-failure-no-ctsync", "hard failure of r1 with ctsync off (what you lose without it)",
            ctsync=False, breaks=HARD_FAILURE,
            observe=DEAD_AFTER + 3),  # long enough for the client to give the connections up
}
