"""UDP: an echo server on one or more ports recording each source address:port it sees, the
"SIP" client (one flow from a fixed source port), and many short flows from distinct source
ports (each a conntrack entry on the router)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import selectors
import signal
import socket
import time
from collections.abc import Iterator

from .common import FLOWS_PORT, GapTracker, announce, errname, raise_nofile, rnd, stop_event, wait_stop, write_json

# --------------------------------------------------------------------------
# UDP: echo server (one or more ports), the "SIP" client, short flows


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, srv: "_UdpServer", port: int):
        self.srv = srv
        self.port = port
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.srv.seen(addr, self.port, len(data))
        try:
            self.transport.sendto(data, addr)
        except OSError:
            self.srv.errors["send"] += 1

    def error_received(self, exc) -> None:
        self.srv.errors[errname(exc) or "?"] += 1


class _UdpServer:
    def __init__(self) -> None:
        self.sources: dict[tuple[str, int, int], list] = {}
        self.order: list[tuple[str, int, int]] = []
        self.errors: collections.Counter = collections.Counter()
        self.packets = 0

    def seen(self, addr, port: int, nbytes: int) -> None:
        self.packets += 1
        key = (addr[0], addr[1], port)
        g = self.sources.get(key)
        if g is None:
            g = self.sources[key] = [GapTracker(), 0]
            self.order.append(key)
        g[0].tick(time.monotonic(), time.time())
        g[1] += nbytes


async def udp_server(port: int, report: str, nports: int = 1, duration: float | None = None,
                     bind: str = "0.0.0.0", max_sources: int = 1000) -> dict:
    loop = asyncio.get_running_loop()
    stop = stop_event(loop)
    srv = _UdpServer()
    transports = []
    for p in range(port, port + nports):
        t, _ = await loop.create_datagram_endpoint(lambda p=p: _UdpEcho(srv, p),
                                                   local_addr=(bind, p), reuse_port=False)
        with contextlib.suppress(OSError):
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        transports.append(t)
    started = time.time()
    announce("listening", proto="udp", port=port, nports=nports)
    why = await wait_stop(stop, duration)
    for t in transports:
        t.close()
    srcs = []
    for key in srv.order[:max_sources]:
        g, nbytes = srv.sources[key]
        srcs.append({"addr": key[0], "port": key[1], "local_port": key[2], "packets": g.count,
                     "bytes": nbytes, "first": rnd(g.first_epoch, 3), "last": rnd(g.last_epoch, 3),
                     "max_gap": rnd(g.max_gap), "max_gap_at": rnd(g.max_gap_at, 3)})
    rep = {
        "kind": "udp-server", "port": port, "nports": nports, "started": started,
        "ended": time.time(), "stopped_by": why,
        "summary": {
            "packets": srv.packets,
            "sources": len(srv.sources),
            "addrs": dict(collections.Counter(k[0] for k in srv.order)),
            "errors": dict(srv.errors),
            "sources_truncated": len(srv.order) > max_sources,
        },
        "sources": srcs,
    }
    write_json(report, rep)
    return rep


class _UdpClientProto(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport = None
        self.gaps = GapTracker()
        self.received = 0
        self.seqs: set[int] = set()
        self.dups = 0
        self.errors: collections.Counter = collections.Counter()
        self.max_rtt = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        now_ns = time.time_ns()
        try:
            seq, ts = (int(x) for x in data.split(b" ", 2)[:2])
        except ValueError:
            self.errors["garbage"] += 1
            return
        if seq in self.seqs:
            self.dups += 1
            return
        self.seqs.add(seq)
        self.received += 1
        self.max_rtt = max(self.max_rtt, (now_ns - ts) / 1e9)
        self.gaps.tick(time.monotonic(), now_ns / 1e9)

    def error_received(self, exc) -> None:
        self.errors[errname(exc) or "?"] += 1


def udp_progress(proto: _UdpClientProto, sent: int, mono: float, t0: float) -> dict:
    """The flow right now (the ``--progress`` file): what was sent and echoed, and how
    long ago the last echo came (or the start, before any)."""
    last = proto.gaps.last if proto.gaps.last is not None else t0
    return {"time": time.time(), "sent": sent, "received": proto.received,
            "last_reply_age": rnd(mono - last)}


async def udp_client(server: str, port: int, sport: int, interval: float, duration: float,
                     report: str, size: int = 0, drain: float = 0.5, progress: str | None = None,
                     progress_every: float = 0.5) -> dict:
    """Send a datagram every ``interval`` s from the fixed source port ``sport``; with
    ``progress``, :func:`udp_progress` is written there every ``progress_every`` s."""
    loop = asyncio.get_running_loop()
    stop = stop_event(loop)
    transport, proto = await loop.create_datagram_endpoint(
        _UdpClientProto, local_addr=("::" if ":" in server else "0.0.0.0", sport), remote_addr=(server, port))
    started = time.time()
    announce("established", proto="udp", sport=sport)
    sent = 0
    t0 = time.monotonic()
    t_end = t0 + duration
    next_progress = t0
    stopped_by = "duration"
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if stop.is_set():
            stopped_by = "signal"
            break
        if progress and now >= next_progress:
            write_json(progress, udp_progress(proto, sent, now, t0))
            next_progress = now + progress_every
        msg = b"%d %d" % (sent, time.time_ns())
        if size > len(msg) + 1:
            msg += b" " + b"x" * (size - len(msg) - 1)
        try:
            transport.sendto(msg)
        except OSError as e:
            proto.errors[errname(e) or "?"] += 1
        sent += 1
        target = t0 + sent * interval
        now = time.monotonic()
        if target < now - 1.0:  # hopelessly late (suspended?): do not burst
            t0 = now - sent * interval
            target = now
        if target > now:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=target - now)
    sent_end = time.monotonic()
    drain_end = sent_end + drain
    while proto.received < sent and time.monotonic() < drain_end:
        await asyncio.sleep(0.02)
    transport.close()
    # Longest run of consecutive sequence numbers without an echo.
    longest_miss, run = 0, 0
    for i in range(sent):
        if i in proto.seqs:
            run = 0
        else:
            run += 1
            longest_miss = max(longest_miss, run)
    g = proto.gaps
    # Silence at the end while we were still sending (a flow that never came back); the
    # drain after the last datagram is not silence (a datagram lost in a failover would
    # otherwise make every flow look 0.5 s silent at its end).
    trailing = None if g.last is None else max(0.0, sent_end - g.last)
    rep = {
        "kind": "udp-client", "server": server, "port": port, "sport": sport,
        "interval": interval, "duration": duration, "started": started, "ended": time.time(),
        "stopped_by": stopped_by,
        "summary": {
            "sent": sent, "received": proto.received, "lost": sent - proto.received,
            "dups": proto.dups, "longest_miss_run": longest_miss,
            "max_gap": rnd(g.max_gap), "max_gap_at": rnd(g.max_gap_at, 3),
            "trailing_silence": rnd(trailing), "max_rtt": rnd(proto.max_rtt),
            "errors": dict(proto.errors),
        },
    }
    write_json(report, rep)
    return rep


def iter_flows(rate: float, count: int, duration: float, sport_lo: int = 10000,
               sport_hi: int = 60999, port: int = FLOWS_PORT, nports: int = 1
               ) -> Iterator[tuple[int, float, int, int]]:
    """The schedule of short flows: ``(i, due, sport, dport)`` with ``due``
    seconds from the start, ``rate`` per second, at most ``count`` flows and
    none due after ``duration``.  Source ports cycle over
    ``[sport_lo, sport_hi]``; after each full cycle the destination port
    moves on (over ``nports`` ports), so flows stay distinct 5-tuples for
    ``(sport_hi - sport_lo + 1) * nports`` flows."""
    if rate <= 0 or count < 0 or not 0 < sport_lo <= sport_hi < 65536 or nports < 1:
        raise ValueError("bad flow parameters")
    span = sport_hi - sport_lo + 1
    for i in range(count):
        due = i / rate
        if due > duration:
            return
        yield i, due, sport_lo + i % span, port + (i // span) % nports


def udp_flows(server: str, port: int, rate: float, count: int, duration: float, report: str,
              nports: int = 1, packets: int = 1, hold: float = 0.2, sport_lo: int = 10000,
              sport_hi: int = 60999, size: int = 0) -> dict:
    """Start short UDP flows at ``rate``/s: each a new socket bound to its
    source port, ``packets`` datagrams sent back to back, the echo awaited for
    ``hold`` s, then closed.  Bounded by ``count`` and ``duration``
    (+ ``hold``).  Synchronous (selectors): cheap per flow."""
    raise_nofile(int(rate * hold * 1.5) + 256)
    stop = {"sig": None}

    def on_sig(signum, frame):
        stop["sig"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_sig)
    sel = selectors.DefaultSelector()
    open_: collections.deque = collections.deque()  # (expire, sock)
    replied: set[int] = set()
    st = collections.Counter()
    max_lag = 0.0

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            s = key.fileobj
            for _ in range(packets + 1):
                try:
                    s.recv(2048)
                except BlockingIOError:
                    break
                except OSError as e:
                    st["recv_" + (errname(e) or "?")] += 1
                    break
                st["replies"] += 1
                replied.add(key.data)
        now = time.monotonic()
        while open_ and open_[0][0] <= now:
            _, s = open_.popleft()
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            s.close()

    announce("established", proto="udp-flows", rate=rate, count=count)
    started = time.time()
    t0 = time.monotonic()
    flows = 0
    for i, due, sport, dport in iter_flows(rate, count, duration, sport_lo, sport_hi, port, nports):
        if stop["sig"] is not None:
            break
        while True:
            now = time.monotonic()
            wait = t0 + due - now
            if wait <= 0 or stop["sig"] is not None:
                break
            pump(min(wait, 0.05))  # epoll_wait sleeps even with nothing registered
        if stop["sig"] is not None:
            break
        max_lag = max(max_lag, time.monotonic() - (t0 + due))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sport))
        except OSError as e:
            st["bind_" + (errname(e) or "?")] += 1
            s.close()
            continue
        for p in range(packets):
            msg = b"%d %d %d" % (i, p, time.time_ns())
            if size > len(msg) + 1:
                msg += b" " + b"x" * (size - len(msg) - 1)
            try:
                s.sendto(msg, (server, dport))
                st["packets"] += 1
            except OSError as e:
                st["send_" + (errname(e) or "?")] += 1
        flows += 1
        sel.register(s, selectors.EVENT_READ, i)
        open_.append((time.monotonic() + hold, s))
        if flows % 64 == 0:
            pump(0)
    send_end = time.monotonic()
    end = send_end + (hold if stop["sig"] is None else 0)
    while open_ and time.monotonic() < end + 0.01:
        pump(min(0.05, max(0.0, end - time.monotonic())))
    for _, s in open_:
        s.close()
    sel.close()
    elapsed = send_end - t0
    rep = {
        "kind": "udp-flows", "server": server, "port": port, "nports": nports,
        "rate": rate, "count": count, "duration": duration, "packets_per_flow": packets,
        "hold": hold, "started": started, "ended": time.time(),
        "stopped_by": "signal" if stop["sig"] is not None else "done",
        "summary": {
            "flows": flows, "packets": st["packets"], "replies": st["replies"],
            "flows_replied": len(replied), "send_time": rnd(elapsed),
            "achieved_rate": rnd(flows / elapsed, 1) if elapsed > 0 else None,
            "max_lag": rnd(max_lag),
            "errors": {k: v for k, v in st.items() if k not in ("packets", "replies")},
        },
    }
    write_json(report, rep)
    return rep
