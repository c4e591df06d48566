"""The demo's figures and files: what a step measured (from its captures, the traffic
reports and ping's log), the table of report.txt, and what goes in the output folder."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .. import Lab
from ..hapair import LAN_VIP, ROUTER_ADDRS, WAN_VIP
from ..vrrp import wire_events
from . import flowstats

LAN_IPS = {r: a["eth1"].split("/")[0] for r, a in ROUTER_ADDRS.items()}
STALL_S = 2.0  # a connection without an echo for this long when the step ends is stalled


def measure(res: dict, caps: dict, tr_tcp: dict, tr_udp: dict, ping_log: str,
            t_action: float, new_master: str) -> None:
    """The figures of a step into its record ``res``: takeover and GARP from the LAN capture,
    per flow class kept/lost, gaps and public ports from the traffic reports and ping's log."""
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
    # The client calls a connection lost after steps.DEAD_AFTER s without an echo; one that
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


def save_step_files(out: Path, sdir: Path, caps: dict, tr_tcp: dict, tr_udp: dict, ping) -> dict:
    """Copy a step's captures, traffic reports and ping log into ``sdir``; returns their
    paths relative to ``out``, by kind."""
    files = {}
    names = {"lan_vrrp": "lan-vrrp.pcap", "wan": "wan.pcap", "sync": "sync.pcap",
             "r1_lan": "r1-lan-port.pcap", "r2_lan": "r2-lan-port.pcap"}
    for k, cap in caps.items():
        dst = sdir / names[k]
        shutil.copy(cap.path, dst)
        files[k] = str(dst.relative_to(out))
    for label, rep in (("tcp", tr_tcp), ("sip", tr_udp)):
        dst = sdir / f"traffic-{label}.json"
        dst.write_text(json.dumps(rep, indent=1))
        files[f"traffic_{label}"] = str(dst.relative_to(out))
    dst = sdir / "ping.log"
    dst.write_text(ping.read_log())
    files["ping"] = str(dst.relative_to(out))
    return files


def one_line(r: dict) -> str:
    cm = r.get("commit") or {}
    return (f"takeover {fmt(r.get('takeover_s'))}s, TCP kept {r['tcp']['kept']}/{r['tcp']['conns']} "
            f"RSTs {r['tcp']['rsts']}, gaps TCP {fmt(r['gaps_s']['tcp'])}s SIP {fmt(r['gaps_s']['sip'])}s "
            f"ICMP {fmt(r['gaps_s']['icmp'])}s, commit {cm.get('committed', '-')}")


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


def save_common(lab: Lab, out: Path) -> None:
    """The daemons' logs and configs of the whole run: ``out/logs``, ``out/configs``."""
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for f in Path(lab.workdir).iterdir():
        if f.suffix == ".log" and not f.name.startswith("step"):
            shutil.copy(f, logs / f.name)
        elif f.suffix == ".toml":
            (out / "configs").mkdir(exist_ok=True)
            shutil.copy(f, out / "configs" / f.name)
