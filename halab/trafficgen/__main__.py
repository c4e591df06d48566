"""``python -m halab.trafficgen``: the command line of the traffic programs (see the
package's docstring)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from .common import FLOWS_PORT, SIP_PORT, TCP_PORT
from .tcp import tcp_client, tcp_server
from .udp import udp_client, udp_flows, udp_server


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m halab.trafficgen",
                                description="Traffic tools for the HA pair lab (JSON reports).")
    sub = p.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("tcp-server", help="TCP echo server")
    a.add_argument("--port", type=int, default=TCP_PORT)
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--report", required=True)
    a.add_argument("--duration", type=float, default=None, help="stop after S s (default: on SIGTERM)")

    a = sub.add_parser("tcp-client", help="N long-lived TCP connections")
    a.add_argument("--server", required=True)
    a.add_argument("--port", type=int, default=TCP_PORT)
    a.add_argument("--conns", type=int, default=100)
    a.add_argument("--interval", type=float, default=0.05)
    a.add_argument("--duration", type=float, default=30.0)
    a.add_argument("--dead-after", type=float, default=10.0)
    a.add_argument("--connect-timeout", type=float, default=5.0)
    a.add_argument("--connect-parallel", type=int, default=128)
    a.add_argument("--user-timeout", type=float, default=None,
                   help="TCP_USER_TIMEOUT in s (default: --dead-after; 0: off)")
    a.add_argument("--size", type=int, default=0, help="pad each message to this many bytes")
    a.add_argument("--report", required=True)

    a = sub.add_parser("udp-server", help="UDP echo server on --port .. --port+nports-1")
    a.add_argument("--port", type=int, default=SIP_PORT)
    a.add_argument("--nports", type=int, default=1)
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--max-sources", type=int, default=1000)
    a.add_argument("--report", required=True)
    a.add_argument("--duration", type=float, default=None)

    a = sub.add_parser("udp-client", help="one UDP flow from a fixed source port (SIP-like)")
    a.add_argument("--server", required=True)
    a.add_argument("--port", type=int, default=SIP_PORT)
    a.add_argument("--sport", type=int, default=SIP_PORT)
    a.add_argument("--interval", type=float, default=0.02)
    a.add_argument("--duration", type=float, default=30.0)
    a.add_argument("--size", type=int, default=0)
    a.add_argument("--report", required=True)

    a = sub.add_parser("udp-flows", help="many short UDP flows from distinct source ports")
    a.add_argument("--server", required=True)
    a.add_argument("--port", type=int, default=FLOWS_PORT)
    a.add_argument("--nports", type=int, default=1)
    a.add_argument("--rate", type=float, default=1000.0)
    a.add_argument("--count", type=int, default=10000)
    a.add_argument("--duration", type=float, default=30.0)
    a.add_argument("--packets", type=int, default=1)
    a.add_argument("--hold", type=float, default=0.2)
    a.add_argument("--sport-lo", type=int, default=10000)
    a.add_argument("--sport-hi", type=int, default=60999)
    a.add_argument("--size", type=int, default=0)
    a.add_argument("--report", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "tcp-server":
        asyncio.run(tcp_server(args.port, args.report, args.duration, args.bind))
    elif args.cmd == "tcp-client":
        asyncio.run(tcp_client(args.server, args.port, args.conns, args.interval, args.duration,
                               args.report, args.dead_after, args.connect_timeout,
                               args.connect_parallel, args.user_timeout, args.size))
    elif args.cmd == "udp-server":
        asyncio.run(udp_server(args.port, args.report, args.nports, args.duration, args.bind,
                               args.max_sources))
    elif args.cmd == "udp-client":
        asyncio.run(udp_client(args.server, args.port, args.sport, args.interval, args.duration,
                               args.report, args.size))
    elif args.cmd == "udp-flows":
        udp_flows(args.server, args.port, args.rate, args.count, args.duration, args.report,
                  args.nports, args.packets, args.hold, args.sport_lo, args.sport_hi, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
