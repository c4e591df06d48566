"""The demo: two vrrpd routers on one LAN elect a master, survive a hard failure of it,
and fail back when it returns. Prints the state timeline as it happens and a summary
measured on the wire (a capture on the LAN bridge).

    ./run demo [--keep] [--out DIR] [--advert-interval N]

Everything runs in network namespaces named hl-*; nothing touches the host's links.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from vrrpd.control import request
from vrrpd.machine import master_down_interval, skew_time

from . import Lab, require_root_and_netns
from .vrrp import start_vrrpd, wire_events

VIP = "10.0.0.100"
VRID = 7
ROUTERS = {"r1": ("10.0.0.2", 200), "r2": ("10.0.0.3", 100)}


class Timeline:
    """Prints events from both routers' `vrrpctl events` streams as they arrive."""

    def __init__(self):
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.events: list[dict] = []

    def say(self, text: str) -> None:
        with self.lock:
            print(f"[{time.time() - self.t0:7.3f}] {text}", flush=True)

    def follow(self, router: str, socket: str) -> None:
        def run():
            try:
                for ev in request(socket, "events"):
                    if "instance" not in ev:
                        continue
                    ev["router"] = router
                    self.events.append(ev)
                    self.say(f"{router}: {ev['old']:>10} -> {ev['new']:<7} {ev['reason']}")
            except OSError:
                pass  # the daemon went away (that is the point of the demo)

        threading.Thread(target=run, daemon=True).start()


def ping_gaps(log: str) -> float:
    """Longest gap between replies in `ping -D` output."""
    times = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", log, re.M)]
    return max((b - a for a, b in zip(times, times[1:])), default=float("nan"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./run demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end for poking around (Ctrl-C tears it down)")
    ap.add_argument("--out", default="out/demo", help="folder for logs, the capture and summary.json (default out/demo)")
    ap.add_argument("--advert-interval", type=int, default=1, help="VRRP advert interval in seconds (default 1)")
    args = ap.parse_args(argv)
    require_root_and_netns()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tl = Timeline()
    summary: dict = {"advert_interval": args.advert_interval, "steps": {}}
    interval = args.advert_interval
    mdi = master_down_interval(interval, ROUTERS["r2"][1])
    with Lab() as lab:
        print(f"== vrrpd demo: two routers, one LAN, VRID {VRID}, VIP {VIP}, adverts every {interval}s ==")
        br = lab.add_bridge("lan")
        hosts = {}
        for name, (ip, _) in ROUTERS.items():
            hosts[name] = lab.add_host(name)
            lab.connect(hosts[name], br, "eth0", f"{ip}/24")
        h = lab.add_host("h")
        lab.connect(h, br, "eth0", "10.0.0.4/24")
        tl.say(f"lab {lab.id} up: r1 (priority 200), r2 (priority 100) and host h on bridge 'lan'")
        cap = lab.capture(br, None, "lan.pcap", bpf="vrrp or arp")

        def start(name):
            ip, prio = ROUTERS[name]
            d = start_vrrpd(hosts[name], {"V": {"interface": "eth0", "vrid": VRID, "priority": prio,
                                                 "advert_interval": interval, "virtual_addresses": [f"{VIP}/24"]}})
            tl.follow(name, d.socket)
            return d

        tl.say("step 1: election. Both start as backup and wait Master_Down_Interval for a master")
        d = {n: start(n) for n in ROUTERS}
        d["r1"].wait_state("V", "master", timeout=10 + 3 * interval)
        d["r2"].wait_state("V", "backup")
        pinger = h.start(["ping", "-D", "-n", "-i", "0.05", VIP], name="ping")
        time.sleep(1.5)
        mac, _ = h.neigh(VIP, dev="eth0")
        tl.say(f"host h reaches {VIP} at MAC {mac} (the virtual MAC 00:00:5e:00:01:{VRID:02x})")

        tl.say("step 2: hard failure of the master (r1's vrrpd killed with SIGKILL: no goodbye)")
        t_kill = time.time()
        d["r1"].proc.kill()
        d["r2"].wait_state("V", "master", timeout=mdi + 5)
        time.sleep(1)

        tl.say("step 3: r1 comes back; it preempts r2 once its own Master_Down_Interval has passed")
        t_back = time.time()
        d["r1"] = start("r1")
        d["r1"].wait_state("V", "master", timeout=mdi + 5)
        d["r2"].wait_state("V", "backup", timeout=5)
        time.sleep(1)

        tl.say("step 4: graceful stop of r1 (SIGTERM: one advert with priority 0, then r2 waits only Skew_Time)")
        t_stop = time.time()
        d["r1"].proc.terminate()
        d["r2"].wait_state("V", "master", timeout=5)
        time.sleep(0.5)
        pinger.terminate()
        cap.stop()

        ev = wire_events(cap.path)
        r1ip, r2ip = ROUTERS["r1"][0], ROUTERS["r2"][0]
        last_r1 = max((e.time for e in ev if e.kind == "advert" and e.src_ip == r1ip and e.time < t_back), default=None)
        first_r2 = min((e.time for e in ev if e.kind == "advert" and e.src_ip == r2ip and e.time > t_kill), default=None)
        garp_r2 = min((e.time for e in ev if e.kind == "garp" and e.time > t_kill), default=None)
        bye = min((e.time for e in ev if e.kind == "advert" and e.src_ip == r1ip and e.priority == 0 and e.time > t_stop), default=None)
        after_bye = min((e.time for e in ev if bye and e.kind == "advert" and e.src_ip == r2ip and e.time > bye), default=None)
        gap = ping_gaps(pinger.read_log())
        summary["steps"] = {
            "hard_failover": {
                "master_down_interval": mdi,
                "takeover_after_last_advert": (first_r2 - last_r1) if first_r2 and last_r1 else None,
                "first_garp_after_last_advert": (garp_r2 - last_r1) if garp_r2 and last_r1 else None,
            },
            "graceful_stop": {"skew_time": skew_time(100), "takeover_after_priority0": (after_bye - bye) if after_bye and bye else None},
            "longest_ping_gap_s": gap,
        }
        print()
        print("== what the capture on the LAN bridge shows ==")
        hf, gs = summary["steps"]["hard_failover"], summary["steps"]["graceful_stop"]
        if hf["takeover_after_last_advert"] is not None:
            print(f"hard failure: r2's first advert {hf['takeover_after_last_advert']:.3f}s after r1's last "
                  f"(Master_Down_Interval {mdi:.3f}s, {1000 * (hf['takeover_after_last_advert'] - mdi):+.0f} ms)")
        if hf["first_garp_after_last_advert"] is not None:
            print(f"              first gratuitous ARP {hf['first_garp_after_last_advert']:.3f}s after r1's last advert")
        if gs["takeover_after_priority0"] is not None:
            print(f"graceful stop: r2's first advert {gs['takeover_after_priority0']:.3f}s after r1's priority 0 "
                  f"(Skew_Time {skew_time(100):.3f}s)")
        print(f"longest gap in host h's pings to the VIP (every 50 ms) over the whole run: {gap:.2f}s")
        for name in ("r2",):
            st = request(d[name].socket, "status")["instances"][0]
            c = st["counters"]
            print(f"{name} counters: adverts rx {c['adverts_rx']} tx {c['adverts_tx']}, became master {c['became_master']}, "
                  f"prio0 rx {c['prio0_rx']}, garp tx {c['garp_tx']}")
        summary["events"] = tl.events
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        for f in Path(lab.workdir).iterdir():
            if f.suffix in (".pcap", ".log", ".toml"):
                shutil.copy(f, out / f.name)
        print(f"\nlogs, configs, the capture (lan.pcap, open it in Wireshark) and summary.json are in {out}/")
        if args.keep:
            d["r1"] = start("r1")
            print("\nthe lab stays up; enter a namespace with:")
            for hname in lab.hosts:
                print(f"  ip netns exec {lab.id}-{hname} bash")
            print(f"  vrrpctl -s {d['r1'].socket} status")
            print("press Ctrl-C to tear it down")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print("lab torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
