"""Impairment programs that run *inside* a lab namespace (``python -m halab.impair ...``),
started by the fault injector (:mod:`halab.faults`) where the kernel has no tool for it.

``reorder``: this kernel has no ``sch_netem``, so nothing in tc delays a packet. Instead
an iptables rule sends a random share of the sync datagrams to an NFQUEUE (the iptables
target works here, nft's ``queue`` does not), and this program holds each queued packet
for a random time before accepting it: the datagrams sent meanwhile overtake it, a real
reordering on the wire. It exits on SIGTERM/SIGINT, releasing what it holds first, and
prints one JSON line: ``{"event": "reorder", "queued": N, "released": N}``.

``garbage``: a flood of datagrams to a UDP port (the sync port), sent from an address of
this namespace bound to one device: half random bytes, half a valid-looking header
(``CTS1``, version 1) followed by random bytes, random lengths, paced at ``--rate``.
Prints ``{"event": "garbage", "sent": N, "errors": N}``.

The standard library only (and netfilterqueue for ``reorder``): nothing here imports the
lab or the product.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time

SO_BINDTODEVICE = 25  # Linux; Python 3.11's socket module lacks it
HEADER_PREFIX = b"CTS1\x01"  # what a sync datagram starts with (ctsync.wire: magic, version)


def reorder(queue: int, hold_min: float, hold_max: float, seed: int) -> dict:
    from netfilterqueue import NetfilterQueue

    rng = random.Random(seed)
    held: list[tuple[float, int, object]] = []  # (release at, tiebreak, packet)
    counts = {"queued": 0, "released": 0}
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))

    def arrive(pkt) -> None:
        counts["queued"] += 1
        heapq.heappush(held, (time.monotonic() + rng.uniform(hold_min, hold_max), counts["queued"], pkt))

    def release(until: float) -> None:
        while held and held[0][0] <= until:
            _, _, pkt = heapq.heappop(held)
            try:
                pkt.accept()
                counts["released"] += 1
            except (OSError, RuntimeError):
                pass

    nfq = NetfilterQueue()
    nfq.bind(queue, arrive, max_len=4096)
    fd = nfq.get_fd()
    print(json.dumps({"event": "listening", "queue": queue}), flush=True)
    try:
        while not stop:
            timeout = 0.2 if not held else max(0.0, min(0.2, held[0][0] - time.monotonic()))
            try:
                ready, _, _ = select.select([fd], [], [], timeout)
            except InterruptedError:
                continue
            if ready:
                nfq.run(block=False)
            release(time.monotonic())
    finally:
        release(float("inf"))
        nfq.unbind()
    return counts


def garbage(src: str, dst: str, port: int, device: str, count: int, rate: float, seed: int) -> dict:
    rng = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
    s.bind((src, 0))
    sent = errors = 0
    t0 = time.monotonic()
    for i in range(count):
        n = rng.randint(1, 1400)
        body = rng.randbytes(n)
        if i % 2:
            body = HEADER_PREFIX + body
        try:
            s.sendto(body, (dst, port))
            sent += 1
        except OSError:
            errors += 1
        delay = t0 + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    s.close()
    return {"sent": sent, "errors": errors, "seconds": round(time.monotonic() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halab.impair", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("reorder", help="hold NFQUEUE'd packets a random time, then accept them")
    a.add_argument("--queue", type=int, required=True)
    a.add_argument("--hold-min", type=float, default=0.02)
    a.add_argument("--hold-max", type=float, default=0.2)
    a.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("garbage", help="a flood of junk datagrams to a UDP port")
    a.add_argument("--src", required=True)
    a.add_argument("--dst", required=True)
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--device", required=True)
    a.add_argument("--count", type=int, default=2000)
    a.add_argument("--rate", type=float, default=2000.0)
    a.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "reorder":
        out = reorder(args.queue, args.hold_min, args.hold_max, args.seed)
    else:
        out = garbage(args.src, args.dst, args.port, args.device, args.count, args.rate, args.seed)
    print(json.dumps({"event": args.cmd, **out}), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
