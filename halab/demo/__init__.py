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

# (This docstring is also ./run demo --help.)  The package: steps.py holds the table of
# steps (what each starts from, breaks, heals, observes), runner.py the lab, the daemons and the
# one generic step runner, report.py the figures, the table and the output folder;
# flowstats.py and timeline_plot.py read throughput from captures and draw the timelines.

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .. import Lab, require_root_and_netns
from . import report, timeline_plot
from .runner import Console, Demo, Options
from .steps import STEPS

__all__ = ["STEPS", "Console", "Options", "main", "run_demo"]


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
        report.save_common(lab, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if summary["steps"]:
        text = report.table(summary["steps"])
        (out / "report.txt").write_text(text + "\n")
    summary["_demo"] = demo
    return summary


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
        from ..cli import main as lab_cli
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
        print(report.table(summary["steps"]))
        print(f"\nin {out}/: summary.json (every figure), report.txt (this table), per step "
              "lan-vrrp.pcap / wan.pcap / sync.pcap (Wireshark; docs/ctsync-dissector.lua decodes the "
              "sync link), timeline.png, traffic reports; logs/ and configs/")
        if args.keep:
            demo.keep_up()
    print("lab torn down")
    return 0
