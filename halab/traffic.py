"""Traffic for the HA pair: long-lived TCP connections, a "SIP" UDP flow and
bursts of short UDP flows, each side writing a JSON report.

Command line (run *inside* lab namespaces, via ``host.start([...])``)::

    python -m halab.traffic tcp-server --port 9000 --report FILE [--duration S]
    python -m halab.traffic tcp-client --server 10.10.0.200 --port 9000 --conns 200 \\
        --interval 0.05 --duration 30 --report FILE [--dead-after 10]
    python -m halab.traffic udp-server --port 5060 --report FILE [--nports K]
    python -m halab.traffic udp-client --server 10.10.0.200 --port 5060 --sport 5060 \\
        --interval 0.02 --duration 30 --report FILE
    python -m halab.traffic udp-flows --server 10.10.0.200 --port 6000 --rate 2000 \\
        --count 20000 --duration 30 --report FILE

Every process is bounded in time: clients stop after ``--duration`` (plus a
short drain), servers after ``--duration`` if given, or on SIGTERM/SIGINT;
all write their report then (atomically: ``FILE.tmp`` renamed).  Each prints
one JSON line ``{"event": "listening" | "established" | ...}`` on stdout when
it is ready, which the lab helpers wait for.

Python helpers (in the test process): :func:`start_tcp`, :func:`start_udp`,
:func:`short_udp_flows` start the server in ``pair.s`` and the client in
``pair.c`` and return a :class:`TrafficRun`; :func:`collect` waits (bounded)
for the clients to end, stops the servers and returns the parsed reports.

Reports (all times are epoch seconds, comparable across namespaces; gaps in
seconds).  TCP client ``summary``: conns, established, kept, lost, rsts,
errors (by errno name), gap_max / gap_median / gap_p99 (over the longest gap
of each kept connection), and per connection: id, local_port, state
(``open`` | ``lost``), reason (``no_echo``, ``ECONNRESET``, ``ETIMEDOUT``,
``EPIPE``, ``EOF``, ``connect: ...``), rst, sent, echoed, max_gap, max_gap_at
(when the gap ended), max_rtt, last_echo_age.  TCP server: per connection the
peer address/port as seen by the server (the NATed public address/port),
client id, bytes in/out, eof, rst, error; ``summary.peers`` counts the peer
addresses.  UDP: sent/received/max gap on the client, and on the server per
source address:port seen (to check the public port survives a failover).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import errno
import itertools
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import sys
import time
from typing import Iterator

__all__ = [
    "TrafficRun", "start_tcp", "start_udp", "short_udp_flows", "collect",
    "start_tcp_server", "start_tcp_client", "start_udp_server", "start_udp_client",
    "iter_flows", "main",
    "TCP_PORT", "SIP_PORT", "FLOWS_PORT",
]

TCP_PORT = 9000
SIP_PORT = 5060
FLOWS_PORT = 6000

# --------------------------------------------------------------------------
# common


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


def _errname(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    code = getattr(exc, "errno", None)
    if code:
        return errno.errorcode.get(code, str(code))
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return type(exc).__name__


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))
    return v[k]


def _r(x: float | None, nd: int = 4) -> float | None:
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


def _stop_event(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An Event set by SIGTERM/SIGINT."""
    ev = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ev.set)
    return ev


async def _wait_stop(stop: asyncio.Event, duration: float | None) -> str:
    if duration is None:
        await stop.wait()
        return "signal"
    try:
        await asyncio.wait_for(stop.wait(), timeout=duration)
        return "signal"
    except asyncio.TimeoutError:
        return "duration"


# --------------------------------------------------------------------------
# TCP echo server


class _EchoConn(asyncio.Protocol):
    def __init__(self, server: "_TcpServer"):
        self.srv = server
        self.transport = None
        self.peer = ("", 0)
        self.local_port = 0
        self.client_id: int | None = None
        self._head = b""
        self.bytes_in = 0
        self.bytes_out = 0
        self.eof = False
        self.rst = False
        self.error: str | None = None
        self.opened = time.time()
        self.closed: float | None = None
        self.gaps = GapTracker()

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (peer[0], peer[1])
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.local_port = sock[1]
        self.srv.conns.append(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.gaps.tick(time.monotonic(), time.time())
        self.transport.write(data)
        self.bytes_out += len(data)
        if self.client_id is None and self._head is not None:
            self._head += data[:64]
            nl = self._head.find(b"\n")
            if nl >= 0 or len(self._head) >= 64:
                with contextlib.suppress(ValueError, IndexError):
                    self.client_id = int(self._head.split(b" ", 1)[0])
                self._head = None

    def eof_received(self):
        self.eof = True
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        self.closed = time.time()
        if exc is not None:
            self.error = _errname(exc)
            if isinstance(exc, ConnectionResetError):
                self.rst = True

    def record(self) -> dict:
        return {
            "peer": self.peer[0], "peer_port": self.peer[1], "local_port": self.local_port,
            "client_id": self.client_id, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "eof": self.eof, "rst": self.rst, "error": self.error,
            "open": self.closed is None, "opened": _r(self.opened, 3), "closed": _r(self.closed, 3),
            "max_gap": _r(self.gaps.max_gap), "max_gap_at": _r(self.gaps.max_gap_at, 3),
        }


class _TcpServer:
    def __init__(self) -> None:
        self.conns: list[_EchoConn] = []


async def tcp_server(port: int, report: str, duration: float | None = None,
                     bind: str = "0.0.0.0", backlog: int = 4096, max_conns: int = 20000) -> dict:
    raise_nofile(max_conns + 64)
    loop = asyncio.get_running_loop()
    stop = _stop_event(loop)
    srv = _TcpServer()
    server = await loop.create_server(lambda: _EchoConn(srv), bind, port,
                                      backlog=backlog, reuse_address=True)
    started = time.time()
    announce("listening", proto="tcp", port=port)
    why = await _wait_stop(stop, duration)
    server.close()
    recs = [c.record() for c in srv.conns]
    peers = collections.Counter(r["peer"] for r in recs)
    rep = {
        "kind": "tcp-server", "port": port, "started": started, "ended": time.time(),
        "stopped_by": why,
        "summary": {
            "conns": len(recs),
            "open": sum(r["open"] for r in recs),
            "eof": sum(r["eof"] for r in recs),
            "rsts": sum(r["rst"] for r in recs),
            "errors": dict(collections.Counter(r["error"] for r in recs if r["error"])),
            "peers": dict(peers),
            "bytes_in": sum(r["bytes_in"] for r in recs),
        },
        "conns": recs,
    }
    write_json(report, rep)
    for c in srv.conns:
        if c.transport is not None:
            c.transport.abort()
    return rep


# --------------------------------------------------------------------------
# TCP client


class _ClientConn(asyncio.Protocol):
    def __init__(self, cid: int, cl: "_TcpClient"):
        self.cid = cid
        self.cl = cl
        self.transport = None
        self.local_port: int | None = None
        self.state = "connecting"  # open, lost, closing, closed
        self.reason: str | None = None
        self.rst = False
        self.errors: list[str] = []
        self.buf = b""
        self.sent = 0
        self.echoed = 0
        self.out_of_order = 0
        self.skipped = 0
        self.max_rtt = 0.0
        self.established_mono: float | None = None
        self.established: float | None = None
        self.gaps = GapTracker()
        self.lost_at: float | None = None

    # -- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.local_port = (transport.get_extra_info("sockname") or ("", 0))[1]
        sock = transport.get_extra_info("socket")
        if sock is not None and self.cl.user_timeout_ms:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                self.cl.user_timeout_ms)
        self.state = "open"
        self.established_mono = time.monotonic()
        self.established = time.time()

    def data_received(self, data: bytes) -> None:
        mono, now_ns = time.monotonic(), time.time_ns()
        self.buf += data
        if b"\n" not in self.buf:
            return
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            try:
                _cid, seq, ts = line.split(b" ", 3)[:3]
                seq = int(seq)
                ts = int(ts)
            except ValueError:
                continue
            if seq != self.echoed:
                self.out_of_order += 1
            self.echoed += 1
            rtt = (now_ns - ts) / 1e9
            if rtt > self.max_rtt:
                self.max_rtt = rtt
            self.gaps.tick(mono, now_ns / 1e9)

    def eof_received(self):
        self._fail("EOF")
        return False

    def connection_lost(self, exc) -> None:
        if exc is not None:
            name = _errname(exc)
            self.errors.append(name)
            if isinstance(exc, ConnectionResetError):
                self.rst = True
            self._fail(name)
        elif self.state == "open":
            self._fail("EOF")
        if self.state == "closing":
            self.state = "closed"

    # -- actions
    def _fail(self, reason: str) -> None:
        if self.state in ("open", "connecting"):
            self.state = "lost"
            self.reason = reason
            self.lost_at = time.time()

    def send(self) -> None:
        if self.state != "open":
            return
        t = self.transport
        if t.is_closing():
            return
        if t.get_write_buffer_size() > 65536:  # stalled: do not pile up
            self.skipped += 1
            return
        msg = b"%d %d %d" % (self.cid, self.sent, time.time_ns())
        pad = self.cl.size - len(msg) - 1
        if pad > 0:
            msg += b" " + b"x" * (pad - 1)
        try:
            t.write(msg + b"\n")
        except OSError as e:  # pragma: no cover - asyncio reports via connection_lost
            self.errors.append(_errname(e))
            self._fail(_errname(e))
            return
        self.sent += 1

    def check_dead(self, mono: float) -> None:
        if self.state != "open":
            return
        ref = self.gaps.last if self.gaps.last is not None else self.established_mono
        if mono - ref > self.cl.dead_after:
            self._fail("no_echo")
            if self.transport is not None:
                self.transport.abort()

    def record(self, mono_end: float) -> dict:
        last_age = None
        if self.gaps.last is not None:
            last_age = mono_end - self.gaps.last
        return {
            "id": self.cid, "local_port": self.local_port,
            "state": "open" if self.state in ("open", "closing", "closed") and self.reason is None
            else "lost",
            "reason": self.reason, "rst": self.rst, "errors": self.errors,
            "sent": self.sent, "echoed": self.echoed, "unanswered": self.sent - self.echoed,
            "out_of_order": self.out_of_order, "skipped_sends": self.skipped,
            "max_gap": _r(self.gaps.max_gap), "max_gap_at": _r(self.gaps.max_gap_at, 3),
            "max_rtt": _r(self.max_rtt), "last_echo_age": _r(last_age),
            "established": _r(self.established, 3), "lost_at": _r(self.lost_at, 3),
        }


class _TcpClient:
    def __init__(self, dead_after: float, user_timeout_ms: int, size: int):
        self.dead_after = dead_after
        self.user_timeout_ms = user_timeout_ms
        self.size = size


async def tcp_client(server: str, port: int, conns: int, interval: float, duration: float,
                     report: str, dead_after: float = 10.0, connect_timeout: float = 5.0,
                     connect_parallel: int = 128, user_timeout: float | None = None,
                     size: int = 0, drain: float = 1.0) -> dict:
    """``conns`` connections, each sending a line every ``interval`` s for
    ``duration`` s (counted from when all connects are done)."""
    if conns < 1 or interval <= 0 or duration < 0:
        raise ValueError("conns >= 1, interval > 0, duration >= 0")
    raise_nofile(conns + 64)
    loop = asyncio.get_running_loop()
    stop = _stop_event(loop)
    ut = dead_after if user_timeout is None else user_timeout
    cl = _TcpClient(dead_after, int(ut * 1000), size)
    started = time.time()
    cs = [_ClientConn(i, cl) for i in range(conns)]
    sem = asyncio.Semaphore(max(1, connect_parallel))

    async def connect(c: _ClientConn) -> None:
        async with sem:
            if stop.is_set():
                c._fail("connect: stopped")
                return
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: c, server, port), timeout=connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                name = _errname(e) if isinstance(e, OSError) else "ETIMEDOUT"
                c.errors.append(name)
                c._fail(f"connect: {name}")

    await asyncio.gather(*(connect(c) for c in cs))
    established = time.time()
    n_est = sum(c.state == "open" for c in cs)
    announce("established", proto="tcp", conns=conns, established=n_est)

    # Sending: connections are spread over slots of ~5 ms so that the sends
    # of one interval are evenly spread, not one burst.
    nslots = max(1, min(conns, int(round(interval / 0.005))))
    slots = [cs[i::nslots] for i in range(nslots)]
    tick = interval / nslots
    t0 = time.monotonic()
    t_end = t0 + duration
    check_every = min(0.25, dead_after / 4)
    next_check = t0
    k = 0
    stopped_by = "duration"
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if stop.is_set():
            stopped_by = "signal"
            break
        for c in slots[k % nslots]:
            c.send()
        if now >= next_check:
            for c in cs:
                c.check_dead(now)
            next_check = now + check_every
        k += 1
        target = t0 + k * tick
        now = time.monotonic()
        if target < now - interval:  # fell behind by more than an interval: skip ahead
            k = int((now - t0) / tick)
            target = t0 + k * tick
        delay = target - now
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        else:
            await asyncio.sleep(0)

    # Drain: wait (bounded) for the echoes of what was sent.
    drain_end = time.monotonic() + (drain if stopped_by == "duration" else 0.2)
    while time.monotonic() < drain_end:
        if all(c.state != "open" or c.sent == c.echoed for c in cs):
            break
        await asyncio.sleep(0.02)
    mono_end = time.monotonic()
    for c in cs:
        c.check_dead(mono_end)
    recs = [c.record(mono_end) for c in cs]
    ended = time.time()
    # Close gracefully (FIN) and give the callbacks a moment.
    for c in cs:
        if c.state == "open":
            c.state = "closing"
            c.transport.close()
    await asyncio.sleep(0.1)
    for c in cs:
        if c.transport is not None and not c.transport.is_closing():
            c.transport.abort()

    kept = [r for r in recs if r["state"] == "open"]
    gaps = [r["max_gap"] for r in kept]
    rep = {
        "kind": "tcp-client", "server": server, "port": port, "interval": interval,
        "duration": duration, "dead_after": dead_after,
        "started": started, "established": established, "ended": ended, "stopped_by": stopped_by,
        "summary": {
            "conns": conns,
            "established": n_est,
            "kept": len(kept),
            "lost": conns - len(kept),
            "rsts": sum(r["rst"] for r in recs),
            "errors": dict(collections.Counter(e for r in recs for e in r["errors"])),
            "reasons": dict(collections.Counter(r["reason"] for r in recs if r["reason"])),
            "stalled_at_end": sum(1 for r in kept if r["unanswered"] > 0),
            "sent": sum(r["sent"] for r in recs),
            "echoed": sum(r["echoed"] for r in recs),
            "gap_max": max(gaps) if gaps else None,
            "gap_median": _r(statistics.median(gaps)) if gaps else None,
            "gap_p99": _percentile(gaps, 0.99),
        },
        "conns": recs,
    }
    write_json(report, rep)
    return rep


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
        self.srv.errors[_errname(exc) or "?"] += 1


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
    stop = _stop_event(loop)
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
    why = await _wait_stop(stop, duration)
    for t in transports:
        t.close()
    srcs = []
    for key in srv.order[:max_sources]:
        g, nbytes = srv.sources[key]
        srcs.append({"addr": key[0], "port": key[1], "local_port": key[2], "packets": g.count,
                     "bytes": nbytes, "first": _r(g.first_epoch, 3), "last": _r(g.last_epoch, 3),
                     "max_gap": _r(g.max_gap), "max_gap_at": _r(g.max_gap_at, 3)})
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
        self.errors[_errname(exc) or "?"] += 1


async def udp_client(server: str, port: int, sport: int, interval: float, duration: float,
                     report: str, size: int = 0, drain: float = 0.5) -> dict:
    """Send a datagram every ``interval`` s from the fixed source port ``sport``."""
    loop = asyncio.get_running_loop()
    stop = _stop_event(loop)
    transport, proto = await loop.create_datagram_endpoint(
        _UdpClientProto, local_addr=("::" if ":" in server else "0.0.0.0", sport), remote_addr=(server, port))
    started = time.time()
    announce("established", proto="udp", sport=sport)
    sent = 0
    t0 = time.monotonic()
    t_end = t0 + duration
    stopped_by = "duration"
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if stop.is_set():
            stopped_by = "signal"
            break
        msg = b"%d %d" % (sent, time.time_ns())
        if size > len(msg) + 1:
            msg += b" " + b"x" * (size - len(msg) - 1)
        try:
            transport.sendto(msg)
        except OSError as e:
            proto.errors[_errname(e) or "?"] += 1
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
            "max_gap": _r(g.max_gap), "max_gap_at": _r(g.max_gap_at, 3),
            "trailing_silence": _r(trailing), "max_rtt": _r(proto.max_rtt),
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
                    st["recv_" + (_errname(e) or "?")] += 1
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
            st["bind_" + (_errname(e) or "?")] += 1
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
                st["send_" + (_errname(e) or "?")] += 1
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
            "flows_replied": len(replied), "send_time": _r(elapsed),
            "achieved_rate": _r(flows / elapsed, 1) if elapsed > 0 else None,
            "max_lag": _r(max_lag),
            "errors": {k: v for k, v in st.items() if k not in ("packets", "replies")},
        },
    }
    write_json(report, rep)
    return rep


# --------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m halab.traffic",
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


# --------------------------------------------------------------------------
# lab helpers (run in the test process; start the tools in lab namespaces)

_RUN_COUNTER = itertools.count()


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "halab.traffic", *map(str, args)]


@dataclasses.dataclass
class TrafficRun:
    """A traffic server and/or client started in lab namespaces.

    ``expected_end``: time.monotonic() by which the client should have
    written its report (duration + connect/dead/drain margins); :func:`collect`
    waits until then plus ``grace``."""

    kind: str
    client: object | None  # halab.Proc
    server: object | None  # halab.Proc
    client_report: str | None
    server_report: str | None
    expected_end: float
    info: dict = dataclasses.field(default_factory=dict)

    def wait_established(self, timeout: float = 30.0) -> dict:
        """Wait for the client's ``established`` line; returns it."""
        return _wait_event(self.client, "established", timeout)

    def stop_client(self) -> None:
        """Ask the client to end now (it still writes its report)."""
        if self.client is not None:
            self.client.signal(signal.SIGTERM)


def _wait_event(proc, event: str, timeout: float) -> dict:
    from .lab import LabError
    deadline = time.monotonic() + timeout
    while True:
        for line in proc.read_log().splitlines():
            if line.startswith("{") and f'"event": "{event}"' in line:
                with contextlib.suppress(ValueError):
                    return json.loads(line)
        if not proc.alive():
            raise LabError(f"{proc!r} exited before '{event}':\n{proc.read_log()[-2000:]}")
        if time.monotonic() >= deadline:
            raise LabError(f"{proc!r}: no '{event}' after {timeout}s:\n{proc.read_log()[-2000:]}")
        time.sleep(0.02)


def _report_path(host, tag: str, role: str) -> str:
    return os.path.join(host.lab.workdir, f"{tag}-{role}-{next(_RUN_COUNTER)}.json")


def start_tcp_server(host, port: int = TCP_PORT, tag: str = "tcp", timeout: float = 15.0, bind: str = "0.0.0.0"):
    """TCP echo server in ``host``; returns (Proc, report path) once listening."""
    rep = _report_path(host, tag, "server")
    proc = host.start(_cmd("tcp-server", "--port", port, "--report", rep, "--bind", bind), name=f"{tag}-server")
    _wait_event(proc, "listening", timeout)
    return proc, rep


def start_udp_server(host, port: int = SIP_PORT, nports: int = 1, tag: str = "udp",
                     timeout: float = 15.0, max_sources: int = 1000, bind: str = "0.0.0.0"):
    rep = _report_path(host, tag, "server")
    proc = host.start(_cmd("udp-server", "--port", port, "--nports", nports,
                           "--max-sources", max_sources, "--report", rep, "--bind", bind), name=f"{tag}-server")
    _wait_event(proc, "listening", timeout)
    return proc, rep


def start_tcp_client(host, server: str, conns: int, interval: float, duration: float,
                     port: int = TCP_PORT, dead_after: float = 10.0, tag: str = "tcp",
                     extra: list[str] | None = None):
    rep = _report_path(host, tag, "client")
    proc = host.start(_cmd("tcp-client", "--server", server, "--port", port, "--conns", conns,
                           "--interval", interval, "--duration", duration,
                           "--dead-after", dead_after, "--report", rep, *(extra or [])),
                      name=f"{tag}-client")
    return proc, rep


def start_udp_client(host, server: str, duration: float, interval: float = 0.02,
                     port: int = SIP_PORT, sport: int = SIP_PORT, tag: str = "udp"):
    rep = _report_path(host, tag, "client")
    proc = host.start(_cmd("udp-client", "--server", server, "--port", port, "--sport", sport,
                           "--interval", interval, "--duration", duration, "--report", rep),
                      name=f"{tag}-client")
    return proc, rep


def _server_ip(pair) -> str:
    from .hapair import SERVER_IP
    return getattr(pair, "server_ip", SERVER_IP)


def _bind(pair) -> str:
    """What the servers listen on: the wildcard of the pair's address family."""
    return "::" if getattr(pair, "family", 4) == 6 else "0.0.0.0"


def start_tcp(pair, conns: int = 20, interval: float = 0.05, duration: float = 10.0, *,
              port: int = TCP_PORT, dead_after: float = 10.0, tag: str = "tcp",
              wait_established: bool = True, extra: list[str] | None = None) -> TrafficRun:
    """Echo server in ``pair.s``, ``conns`` connections from ``pair.c`` to it
    (through the VIPs and the NAT).  With ``wait_established`` returns once
    every connect has finished (the traffic phase of ``duration`` s then
    starts)."""
    server, srep = start_tcp_server(pair.s, port, tag, bind=_bind(pair))
    connect_budget = 5.0 * (1 + conns // 128) + 5.0
    client, crep = start_tcp_client(pair.c, _server_ip(pair), conns, interval, duration, port,
                                    dead_after, tag, extra)
    run = TrafficRun("tcp", client, server, crep, srep,
                     time.monotonic() + connect_budget + duration + 3.0,
                     {"conns": conns, "interval": interval, "duration": duration, "port": port})
    if wait_established:
        run.info["established"] = run.wait_established(connect_budget + 10)
        run.expected_end = time.monotonic() + duration + 3.0
    return run


def start_udp(pair, duration: float = 10.0, interval: float = 0.02, *, port: int = SIP_PORT,
              sport: int = SIP_PORT, tag: str = "udp", wait_established: bool = True) -> TrafficRun:
    """The "SIP" flow: ``pair.c``:``sport`` -> ``pair.s``:``port`` every ``interval`` s."""
    server, srep = start_udp_server(pair.s, port, 1, tag, bind=_bind(pair))
    client, crep = start_udp_client(pair.c, _server_ip(pair), duration, interval, port, sport, tag)
    run = TrafficRun("udp", client, server, crep, srep, time.monotonic() + duration + 10.0,
                     {"interval": interval, "duration": duration, "port": port, "sport": sport})
    if wait_established:
        run.info["established"] = run.wait_established(15)
        run.expected_end = time.monotonic() + duration + 3.0
    return run


def short_udp_flows(pair, rate: float, count: int, duration: float, *, port: int = FLOWS_PORT,
                    nports: int = 1, packets: int = 1, hold: float = 0.2,
                    sport_lo: int = 10000, sport_hi: int = 60999, tag: str = "flows",
                    start_server: bool = True) -> TrafficRun:
    """Many short UDP flows from ``pair.c`` (distinct source ports, see
    :func:`iter_flows`) at ``rate`` flows/s, at most ``count`` and for at
    most ``duration`` s, to an echo server in ``pair.s`` (started unless
    ``start_server=False``).  Each flow creates a conntrack entry (and its
    events) on the master."""
    server = srep = None
    if start_server:
        server, srep = start_udp_server(pair.s, port, nports, tag, max_sources=0)
    crep = _report_path(pair.c, tag, "client")
    client = pair.c.start(_cmd("udp-flows", "--server", _server_ip(pair), "--port", port,
                               "--nports", nports, "--rate", rate, "--count", count,
                               "--duration", duration, "--packets", packets, "--hold", hold,
                               "--sport-lo", sport_lo, "--sport-hi", sport_hi, "--report", crep),
                          name=f"{tag}-client")
    return TrafficRun("udp-flows", client, server, crep, srep,
                      time.monotonic() + min(duration, count / rate) + hold + 10.0,
                      {"rate": rate, "count": count, "duration": duration})


def _read_report(path: str | None, proc, require: bool = True) -> dict | None:
    from .lab import LabError
    if path is None:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        if not require:
            return None
        log = proc.read_log()[-3000:] if proc is not None else ""
        raise LabError(f"no report {path} from {proc!r}: {e}\n{log}") from None


def collect(runs, grace: float = 15.0, server_timeout: float = 10.0, require: bool = True):
    """Wait for the client(s) of ``runs`` (a TrafficRun or a list) to end --
    at most until their ``expected_end`` + ``grace``, then they are SIGTERMed
    (and killed 5 s later) -- then stop the servers (SIGTERM, they write their
    report) and return ``{"client": report, "server": report}`` (a list of
    them for a list).  A missing report raises LabError (with the process's
    log), or is None with ``require=False`` (e.g. a server you killed)."""
    import subprocess
    single = isinstance(runs, TrafficRun)
    runs = [runs] if single else list(runs)
    for run in runs:
        if run.client is None:
            continue
        left = max(0.0, run.expected_end + grace - time.monotonic())
        try:
            run.client.wait(left)
        except subprocess.TimeoutExpired:
            run.client.signal(signal.SIGTERM)
            try:
                run.client.wait(5)
            except subprocess.TimeoutExpired:
                run.client.kill()
    for run in runs:
        if run.server is not None and run.server.alive():
            run.server.signal(signal.SIGTERM)
    for run in runs:
        if run.server is not None:
            try:
                run.server.wait(server_timeout)
            except subprocess.TimeoutExpired:
                run.server.kill()
    out = [{"client": _read_report(r.client_report, r.client, require),
            "server": _read_report(r.server_report, r.server, require)} for r in runs]
    return out[0] if single else out


if __name__ == "__main__":
    sys.exit(main())
