"""What the traffic programs share: default ports, file limits, the JSON report and the
ready line, errno names, the gap tracker, stopping on a signal or after a duration."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import signal
import time

#: Default ports of the traffic: the long-lived TCP connections, the "SIP" flow, the short flows.
TCP_PORT = 9000
SIP_PORT = 5060
FLOWS_PORT = 6000


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to at least ``needed`` (up to the
    hard limit; as root also the hard limit if needed).  Returns the soft
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    want = needed
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON atomically (``path.tmp`` then rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def announce(event: str, **kw) -> None:
    """One JSON line on stdout (the lab helpers wait for these)."""
    print(json.dumps({"event": event, "time": time.time(), **kw}), flush=True)


def errname(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    code = getattr(exc, "errno", None)
    if code:
        return errno.errorcode.get(code, str(code))
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return type(exc).__name__


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))
    return v[k]


def rnd(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


class GapTracker:
    """Longest gap between consecutive events (monotonic clock) and when it
    ended (epoch)."""

    __slots__ = ("last", "max_gap", "max_gap_at", "count", "first_epoch", "last_epoch")

    def __init__(self) -> None:
        self.last: float | None = None
        self.max_gap = 0.0
        self.max_gap_at: float | None = None
        self.count = 0
        self.first_epoch: float | None = None
        self.last_epoch: float | None = None

    def tick(self, mono: float, epoch: float) -> None:
        if self.last is not None:
            gap = mono - self.last
            if gap > self.max_gap:
                self.max_gap = gap
                self.max_gap_at = epoch
        else:
            self.first_epoch = epoch
        self.last = mono
        self.last_epoch = epoch
        self.count += 1


def stop_event(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An Event set by SIGTERM/SIGINT."""
    ev = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ev.set)
    return ev


async def wait_stop(stop: asyncio.Event, duration: float | None) -> str:
    if duration is None:
        await stop.wait()
        return "signal"
    try:
        await asyncio.wait_for(stop.wait(), timeout=duration)
        return "signal"
    except asyncio.TimeoutError:
        return "duration"
