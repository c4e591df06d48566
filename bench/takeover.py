"""Takeover delay beyond the protocol bound, measured on the wire.

One run = one fresh lab, the same stack on both routers: master on r1 at
priority 200, backup on r2 at priority 100, a capture on the bridge.

* hard: the master's whole process group is SIGKILLed (no priority-0 advert).
  RFC 3768 lets the backup wait Master_Down_Interval = 3 * 1 s + (256-100)/256
  = 3.609375 s after the last advert it heard.  Figures:
  ``hard_advert`` = (backup's first advert - master's last advert) - MDI and
  ``hard_garp``   = (backup's first GARP for the VIP - master's last advert) - MDI.
* graceful: the master is stopped with SIGTERM and sends a priority-0 advert;
  the backup may then wait Skew_Time = (256-100)/256 = 0.609375 s.  Figure:
  ``graceful_advert`` = (backup's first advert - the priority-0 advert) - Skew_Time.

All timestamps are tcpdump's on the bridge device of the switch namespace, so
they include neither the daemons' own clocks nor the test harness's polling.
"""

from __future__ import annotations

import random
import time

from halab import Lab
from halab.vrrp import WireEvent, wire_events
from vrrpd.machine import master_down_interval, skew_time

from .stacks import ADDRS, VIP, Stack, build_pair, deadline

MASTER_PRIO, BACKUP_PRIO = 200, 100
RUN_BUDGET = 60.0  # seconds; a run normally takes 8-12 s

FIGURES = ("hard_advert", "hard_garp", "graceful_advert")


class MeasureError(Exception):
    """The capture does not contain what a measurement needs."""


def _adverts(ev: list[WireEvent], src: str) -> list[WireEvent]:
    return [e for e in ev if e.kind == "advert" and e.src_ip == src]


def _setup(lab: Lab, stack: Stack):
    br, hosts = build_pair(lab)
    a = stack.start(hosts["r1"], MASTER_PRIO)
    stack.wait_master(a, timeout=15)
    b = stack.start(hosts["r2"], BACKUP_PRIO)
    stack.wait_backup(b, timeout=15)
    return br, hosts, a, b


def hard_run(stack: Stack, rng: random.Random) -> dict:
    with Lab() as lab:
        with deadline(RUN_BUDGET, f"{stack.name} hard-failure run"):
            br, hosts, a, b = _setup(lab, stack)
            b_mac = stack.announce_mac(hosts["r2"])
            time.sleep(1.0 + rng.random())  # the failure lands at a random advert phase
            cap = lab.capture(br, None, "lan.pcap", bpf="vrrp or arp")
            time.sleep(1.2)  # at least one advert of the master is captured
            a.proc.kill()
            stack.wait_master(b, timeout=10)
            time.sleep(0.3)
            cap.stop()
            ev = wire_events(cap.path)
    mdi = master_down_interval(1, BACKUP_PRIO)
    a_adv = _adverts(ev, ADDRS["r1"])
    if not a_adv or a_adv[-1].priority != MASTER_PRIO:
        raise MeasureError(f"no priority-{MASTER_PRIO} advert of the master in the capture")
    last_a = a_adv[-1]
    b_adv = [e for e in _adverts(ev, ADDRS["r2"]) if e.time > last_a.time]
    if not b_adv:
        raise MeasureError("no advert of the new master in the capture")
    # The dead master may have sent a GARP less than one advert interval after its
    # last advert (vrrpd shares the virtual MAC), so GARPs count from 1 s on.
    garps = [e for e in ev if e.kind == "garp" and e.src_ip == VIP and e.src_mac == b_mac
             and e.time > last_a.time + 1.0]
    if not garps:
        raise MeasureError("no GARP of the new master in the capture")
    return {
        "bound_s": mdi,
        "advert_delay_s": b_adv[0].time - last_a.time,
        "garp_delay_s": garps[0].time - last_a.time,
    }


def graceful_run(stack: Stack, rng: random.Random) -> dict:
    with Lab() as lab:
        with deadline(RUN_BUDGET, f"{stack.name} graceful-stop run"):
            br, hosts, a, b = _setup(lab, stack)
            time.sleep(1.0 + rng.random())
            cap = lab.capture(br, None, "lan.pcap", bpf="vrrp or arp")
            time.sleep(0.5)
            rc = a.proc.terminate(timeout=5)
            stack.wait_master(b, timeout=10)
            time.sleep(0.3)
            cap.stop()
            ev = wire_events(cap.path)
    skew = skew_time(BACKUP_PRIO)
    bye = [e for e in _adverts(ev, ADDRS["r1"]) if e.priority == 0]
    if len(bye) != 1:
        raise MeasureError(f"expected one priority-0 advert from the master, saw {len(bye)} (exit code {rc})")
    b_adv = [e for e in _adverts(ev, ADDRS["r2"]) if e.time > bye[0].time]
    if not b_adv:
        raise MeasureError("no advert of the new master after the priority-0 advert")
    return {"bound_s": skew, "advert_delay_s": b_adv[0].time - bye[0].time, "exit_code": rc}
