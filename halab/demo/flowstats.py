"""Traffic through each router over time, read from captures (for the demo's timeline).

A capture on a router's LAN port (in the switch namespace, so it keeps running
while the router's own links are down) holds every packet of the flows that
router forwards, both directions.  :func:`throughput` bins their bytes per flow
class: ``tcp`` (the long-lived connections, port 9000), ``sip`` (the UDP flow
to 5060) and ``icmp`` (the pings).
"""

from __future__ import annotations

import re
import struct
from collections import defaultdict

from ..trafficgen.common import SIP_PORT, TCP_PORT
from ..vrrp import read_pcap

FLOW_CLASSES = ("tcp", "sip", "icmp")


def flow_class(frame: bytes) -> str | None:
    """The flow class of an Ethernet frame, or None (VRRP, ARP, anything else)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    if proto == 1:
        return "icmp"
    if proto in (6, 17) and len(frame) >= 14 + ihl + 4:
        sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
        if proto == 6 and TCP_PORT in (sport, dport):
            return "tcp"
        if proto == 17 and SIP_PORT in (sport, dport):
            return "sip"
    return None


def throughput(path: str, t0: float, t1: float, bin_s: float = 0.25) -> dict[str, list[float]]:
    """Bytes per second of each flow class in bins of ``bin_s`` from ``t0`` to
    ``t1`` (epoch seconds; capture timestamps are epoch too)."""
    n = max(1, int((t1 - t0) / bin_s + 0.999))
    out = {c: [0.0] * n for c in FLOW_CLASSES}
    for ts, frame in read_pcap(path):
        k = int((ts - t0) / bin_s)
        if not 0 <= k < n:
            continue
        c = flow_class(frame)
        if c is not None:
            out[c][k] += len(frame) / bin_s
    return out


def packets_by_class(path: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for _, frame in read_pcap(path):
        c = flow_class(frame)
        if c is not None:
            counts[c] += 1
    return dict(counts)


def ping_gap(log: str, t0: float | None = None, t1: float | None = None) -> float | None:
    """Longest time between replies in ``ping -D`` output (only replies within
    [t0, t1] if given; no two replies in a given window: the window)."""
    times = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*bytes from", log, re.M)]
    if t0 is not None:
        times = [t for t in times if t >= t0]
    if t1 is not None:
        times = [t for t in times if t <= t1]
    if len(times) < 2:
        return None if t0 is None or t1 is None else round(t1 - t0, 3)
    return round(max(b - a for a, b in zip(times, times[1:])), 3)


def ping_counts(log: str) -> tuple[int, int]:
    """(transmitted, received) from ping's final statistics line (0, 0 if absent)."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", log)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
