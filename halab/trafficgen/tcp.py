"""TCP: an echo server that records each connection as the server sees it (the public
address and port after NAT), and a client of N long-lived connections, each sending a line
every interval and timing the echoes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import statistics
import time

from .common import GapTracker, announce, errname, percentile, raise_nofile, rnd, stop_event, wait_stop, write_json

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
            self.error = errname(exc)
            if isinstance(exc, ConnectionResetError):
                self.rst = True

    def record(self) -> dict:
        return {
            "peer": self.peer[0], "peer_port": self.peer[1], "local_port": self.local_port,
            "client_id": self.client_id, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "eof": self.eof, "rst": self.rst, "error": self.error,
            "open": self.closed is None, "opened": rnd(self.opened, 3), "closed": rnd(self.closed, 3),
            "max_gap": rnd(self.gaps.max_gap), "max_gap_at": rnd(self.gaps.max_gap_at, 3),
        }


class _TcpServer:
    def __init__(self) -> None:
        self.conns: list[_EchoConn] = []


async def tcp_server(port: int, report: str, duration: float | None = None,
                     bind: str = "0.0.0.0", backlog: int = 4096, max_conns: int = 20000) -> dict:
    raise_nofile(max_conns + 64)
    loop = asyncio.get_running_loop()
    stop = stop_event(loop)
    srv = _TcpServer()
    server = await loop.create_server(lambda: _EchoConn(srv), bind, port,
                                      backlog=backlog, reuse_address=True)
    started = time.time()
    announce("listening", proto="tcp", port=port)
    why = await wait_stop(stop, duration)
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
            name = errname(exc)
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
            self.errors.append(errname(e))
            self._fail(errname(e))
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
            "max_gap": rnd(self.gaps.max_gap), "max_gap_at": rnd(self.gaps.max_gap_at, 3),
            "max_rtt": rnd(self.max_rtt), "last_echo_age": rnd(last_age),
            "established": rnd(self.established, 3), "lost_at": rnd(self.lost_at, 3),
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
    stop = stop_event(loop)
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
                name = errname(e) if isinstance(e, OSError) else "ETIMEDOUT"
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
            "gap_median": rnd(statistics.median(gaps)) if gaps else None,
            "gap_p99": percentile(gaps, 0.99),
        },
        "conns": recs,
    }
    write_json(report, rep)
    return rep
