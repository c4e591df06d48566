"""Command lines: `vrrpd` (the daemon) and `vrrpctl` (status, events, metrics, capture).

Kept lean: `vrrpctl status` imports socket and _json (hacommon.client) and, for the text
view, vrrpd.status_text; not argparse (hacommon.client.quick_args takes the common
command lines), not the json package, never trio or the protocol cores. The daemon side
(hacommon.entry, vrrpd.config, vrrpd.daemon) is imported only by `vrrpd` itself. The
benchmark's "CLI start-up" row measures it (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys

DEFAULT_CONTROL_SOCKET = "/run/hapair/vrrpd.sock"  # hacommon.paths.VRRPD_CONTROL_SOCKET, not imported: start-up


async def _serve(cfg) -> None:
    from .daemon import serve

    await serve(cfg)


def vrrpd_main(argv: list[str] | None = None) -> int:
    from hacommon.entry import daemon_main

    from .config import TABLE

    return daemon_main(argv, prog="vrrpd", description="VRRPv2 (RFC 3768) router daemon",
                       config_help="TOML configuration file (its [vrrpd] table; the others are checked too)", table=TABLE,
                       root_reason="raw sockets, addresses, macvlan", run=_serve)


def _socket_path(args) -> str:
    if args.socket:
        return args.socket
    if args.config:
        from hacommon.client import socket_from_file

        return socket_from_file(args.config, "vrrpd", DEFAULT_CONTROL_SOCKET)
    return os.environ.get("VRRPCTL_SOCKET", DEFAULT_CONTROL_SOCKET)


#: VRRP (v2, v3 over IPv4 and IPv6), ARP, and IPv6 Neighbour Solicitations and
#: Advertisements (without extension headers, as ND packets are sent).
CAPTURE_FILTER = "vrrp or arp or ip6 proto 112 or (icmp6 and (ip6[40] == 135 or ip6[40] == 136))"


def _capture(path: str, args) -> int:
    """Find the instance's interface from the running daemon, then become tcpdump."""
    import shutil

    from hacommon.client import request

    reply = request(path, "status", timeout=5)
    names = [i["name"] for i in reply.get("instances", [])]
    inst = next((i for i in reply.get("instances", []) if i["name"] == args.instance), None)
    if inst is None:
        print(f"vrrpctl: no instance named {args.instance} (instances: {', '.join(names) or 'none'})",
              file=sys.stderr)
        return 1
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        print("vrrpctl: capture needs tcpdump (apt-get install tcpdump)", file=sys.stderr)
        return 1
    if args.count is not None and args.count < 1:
        print("vrrpctl: --count must be at least 1", file=sys.stderr)
        return 1
    argv = [tcpdump, "-n", "-i", inst["interface"]]
    argv += ["-U", "-w", args.write] if args.write else ["-l", "-e"]
    if args.count:
        argv += ["-c", str(args.count)]
    argv.append(CAPTURE_FILTER)
    sys.stdout.flush()
    os.execv(tcpdump, argv)
    return 0  # not reached


#: the command lines hacommon.client.quick_args takes without argparse: command -> (flags, positional)
QUICK = {"status": (("--json",), "instance"), "metrics": ((), None)}


def vrrpctl_parser():
    import argparse

    ap = argparse.ArgumentParser(prog="vrrpctl", description="query a running vrrpd")
    ap.add_argument("-s", "--socket", help=f"control socket (default {DEFAULT_CONTROL_SOCKET} or $VRRPCTL_SOCKET)")
    ap.add_argument("-c", "--config", help="read the control socket path from this config file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="state, priorities, timers and counters of every instance")
    st.add_argument("--json", action="store_true")
    st.add_argument("instance", nargs="?", help="only this instance")
    ev = sub.add_parser("events", help="stream transitions as JSON lines")
    ev.add_argument("--uplinks", action="store_true", help="also probe, uplink switch and flush events")
    sub.add_parser("metrics", help="Prometheus text exposition")
    cap = sub.add_parser("capture", help="tcpdump the instance's interface, filtered to VRRP, ARP and IPv6 neighbour discovery "
                         "(run it in the namespace where vrrpd runs)")
    cap.add_argument("instance", help="instance name (its interface is read from vrrpd's status)")
    cap.add_argument("-w", "--write", metavar="FILE", help="write a pcap file instead of printing")
    cap.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    return ap


def vrrpctl_main(argv: list[str] | None = None) -> int:
    from hacommon.client import SocketPathError, quick_args, request, stream

    if argv is None:
        argv = sys.argv[1:]
    args = quick_args(argv, QUICK) or vrrpctl_parser().parse_args(argv)
    try:
        path = _socket_path(args)
        if args.cmd == "capture":
            return _capture(path, args)
        if args.cmd == "events":
            import json

            for event in stream(path, "events", **({"uplinks": True} if args.uplinks else {})):
                print(json.dumps(event), flush=True)
            return 0
        reply = request(path, args.cmd, timeout=5)
    except SocketPathError as e:
        print(f"vrrpctl: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"vrrpctl: cannot talk to vrrpd on {path}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    if not reply.get("ok"):
        print(f"vrrpctl: {reply.get('error', 'no answer')}", file=sys.stderr)
        return 1
    if args.cmd == "metrics":
        sys.stdout.write(reply["text"])
        return 0
    instances = reply["instances"]
    if args.instance:
        instances = [i for i in instances if i["name"] == args.instance]
        if not instances:
            print(f"vrrpctl: no instance named {args.instance}", file=sys.stderr)
            return 1
    if args.json:
        import json

        out = {"daemon": reply["daemon"], "instances": instances}
        if "uplinks" in reply:
            out["uplinks"] = reply["uplinks"]
        print(json.dumps(out, indent=2))
    else:
        from .status_text import from_json, render_text, render_uplinks_text

        print(render_text(from_json(instances)), end="")
        ctl = reply["daemon"].get("control") or {}
        if (ctl.get("refused") or ctl.get("errors")) and not args.instance:
            print(f"control socket: {ctl['refused']} request(s) refused (last: {ctl['last_refused']}), "
                  f"{ctl['errors']} failed")
        if "uplinks" in reply and not args.instance:
            print(render_uplinks_text(from_json(reply["uplinks"])), end="")
    return 0
