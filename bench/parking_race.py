"""Figure 3b: the takeover race with a slow commit, and parking.

Figure 3's race (every connection and the UDP flow sending every 5 ms, hard failure of
the master) with a large table on the backup: ``entries`` SNATed UDP flows created in the
master's kernel and replicated before the failure, so the new master's commit takes about
a second. Variants, each on a fresh HA pair, with the ``strict`` ruleset (the forward
chain drops ``ct state invalid``) and the ``permissive`` one (it forwards them; the kernel
then answers the packets it cannot undo NAT for with RSTs):

* keepalived + conntrackd: keepalived adds its VIPs at once and its notify script runs
  ``conntrackd -c`` meanwhile: packets race the commit.
* vrrpd + ctsync, defaults: the VIPs wait for the commit (``transition_hold_timeout``
  2 s); a commit that fits in the hold leaves no race.
* vrrpd + ctsync, a commit later than the hold (``transition_hold_timeout`` 0.05 s: what
  a commit longer than the hold, or inject mode still catching up, looks like), parking off
  and on (``[ctsync.parking]``, max_hold 5 s).

Counted at the new master (bench/failover.py's counting table): packets in state INVALID
at prerouting, RSTs and ICMP errors it sends; at the client: connections kept, RSTs, the
longest gap; ctsync's parking counters.
"""

from __future__ import annotations

import random
import re
import time

from halab import Lab, wait_for
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair
from halab.traffic import collect, start_tcp, start_udp

from .failover import COUNTING_TABLE, delta, figures, read_counters
from .replication import create_in_kernel, lan_udp_flows
from .stacks import HA_STACKS, deadline

#: name -> (stack, transition_hold_timeout or None for the default, parking)
VARIANTS = {
    "keepalived + conntrackd": ("theirs", None, False),
    "vrrpd + ctsync": ("ours", None, False),
    "vrrpd + ctsync, late commit": ("ours", 0.05, False),
    "vrrpd + ctsync, late commit, parking": ("ours", 0.05, True),
}
PARKING = {"enabled": True, "max_hold": 5.0}


def _start_ours(p, router: str, priority: int, hold: float | None, parking: bool):
    top = {"transition_hold_timeout": hold} if hold is not None else None
    v = p.start_vrrpd(router, priority, top=top)
    c = start_ctsync(p.router(router), "commit", v.socket, **({"parking": PARKING} if parking else {}))
    return v, c


def slow_race_run(variant: str, ruleset: str, entries: int, conns: int, budget: float,
                  interval: float = 0.005, phase: float = 16.0, rng: random.Random | None = None) -> dict:
    stack_name, hold, parking = VARIANTS[variant]
    stack = HA_STACKS[stack_name]
    rng = rng or random.Random()
    out: dict = {"variant": variant, "ruleset": ruleset, "entries": entries, "conns": conns}
    with Lab() as lab:
        with deadline(budget, f"{variant} slow-commit race ({ruleset})"):
            p = build_hapair(lab, ruleset=ruleset)
            for r in p.routers:
                r.run(["nft", "-f", "-"], check=True, input=COUNTING_TABLE, timeout=15)
            if stack_name == "ours":
                _start_ours(p, "r1", 200, None, False)
                p.wait_master("r1")
                _, c2 = _start_ours(p, "r2", 100, hold, parking)
                p.wait_backup("r2")
                c2.wait(lambda s: s["in_sync"], 15, "in sync with r1")
                replica = lambda: c2.status()["external_entries"]  # noqa: E731
            else:
                r1, r2 = stack.start_pair(p)
                replica = lambda: stack.replica_entries(r2)  # noqa: E731
            _, _, failed = create_in_kernel(p.r1, lan_udp_flows(entries))
            if failed:
                raise RuntimeError(f"{failed} of {entries} entries not created in r1")
            wait_for(lambda: replica() >= entries, 120, 0.2, "the table replicated to r2")
            tcp = start_tcp(p, conns=conns, interval=interval, duration=phase, tag="tcp-race")
            udp = start_udp(p, duration=phase, interval=interval, tag="udp-race")
            wait_for(lambda: replica() >= entries + conns + 1, 20, 0.2, "the race's flows replicated")
            out["replicated_before_failure"] = replica()
            time.sleep(0.5 + rng.random())
            c0 = read_counters(p.r2)
            p.hard_fail("r1")
            if stack_name == "ours":
                p.wait_master("r2", timeout=10)
                st = c2.wait(lambda s: s if (s["last_commit"] or {}).get("count", 0) >= entries else None, 30,
                             "the takeover commit")
                out["commit_s"] = st["last_commit"].get("duration")
                out["parking"] = st.get("parking")
            else:
                stack.wait_master(p, r2, timeout=10)
            tr, ur = collect([tcp, udp])
            if stack_name == "theirs":  # what conntrackd -c (keepalived's notify) logged
                took = re.findall(r"commit has taken ([0-9.]+) seconds", r2.conntrackd.daemon_log())
                out["commit_s"] = float(took[-1]) if took else None
            out["failover"] = figures(tr, ur, conns)
            out["failover"]["router"] = delta(c0, read_counters(p.r2))
    return out


def slow_race_table(res: dict) -> str:
    lines = ["| ruleset | stack | commit s | INVALID at the new master | RSTs it sent | RSTs seen | kept | longest gap s | UDP gap s | parked (after commit / timeout) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for ruleset, per_variant in res.items():
        for variant, r in per_variant.items():
            if not r:
                lines.append(f"| {ruleset} | {variant} | run failed | | | | | | | |")
                continue
            f, rt = r["failover"], r["failover"]["router"]
            commit = _num(r.get("commit_s"))
            park = r.get("parking") or {}
            parked = (f"{park['parked']} ({park['released_after_commit']} / {park['released_on_timeout']})"
                      if park.get("enabled", True) and "parked" in park else "-")
            lines.append(f"| {ruleset} | {variant} | {commit} | {rt['invalid']} | {rt['rst_out']} | {f['rsts']} | "
                         f"{f['kept']}/{f['conns']} | {_num(f['gap_max_s'])} | {_num(f['udp_gap_s'])} | {parked} |")
    return "\n".join(lines)


def _num(x) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) else "-"
