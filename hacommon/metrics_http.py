"""Prometheus metrics over HTTP for a trio daemon (``metrics_listen = "127.0.0.1:9650"``).

A small HTTP/1.1 responder in the daemon's own trio loop: ``GET /metrics`` answers with
prometheus_client's exposition of the daemon's registry (text format, or OpenMetrics when
the scraper asks for it), one response per connection. Collectors read the daemon's live
status objects, so the exposition is built in the trio thread, between two events, in
well under a millisecond per instance; prometheus_client's own threaded server would
read them from another thread. Requests are bounded (size, time, concurrent
connections): a scraper, or anything else that connects, cannot stall or grow the
daemon.
"""

from __future__ import annotations

import logging
import socket

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("hapair")

MAX_REQUEST = 8192  # request line and headers
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 16


def format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_listener(listen: tuple[str, int]) -> trio.SocketListener:
    """Bind (OSError naming nothing: the caller says which key it came from)."""
    host, port = listen
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((host, port))
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


class MetricsServer:
    """Serves ``registry`` on ``listen``; :meth:`start` binds (and logs, but does not
    raise, a failure: a router keeps routing without its metrics endpoint)."""

    def __init__(self, registry: CollectorRegistry, listen: tuple[str, int], prog: str):
        self.registry = registry
        self.listen = listen
        self.prog = prog
        self.listener: trio.SocketListener | None = None
        self.scrapes = 0
        self.rejected = 0
        self._active = 0

    @property
    def address(self) -> tuple:
        return self.listener.socket.getsockname() if self.listener else ()

    async def start(self, nursery: trio.Nursery) -> bool:
        try:
            self.listener = await open_listener(self.listen)
        except OSError as e:
            log.error("%s: metrics_listen %s: cannot listen: %s; running without the metrics endpoint",
                      self.prog, format_listen(self.listen), e.strerror or e)
            return False
        log.info("%s: Prometheus metrics on http://%s/metrics", self.prog, format_listen(self.listen))
        nursery.start_soon(self._accept, nursery)
        return True

    def close(self) -> None:
        if self.listener is not None:
            self.listener.socket.close()

    async def _accept(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await self.listener.accept()
            except (OSError, trio.ClosedResourceError) as e:
                if isinstance(e, trio.ClosedResourceError):
                    return
                await trio.sleep(0.1)
                continue
            if self._active >= MAX_CONNECTIONS:
                self.rejected += 1
                await stream.aclose()
                continue
            nursery.start_soon(self._serve, stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self._active += 1
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                async with stream:
                    head = await _read_head(stream)
                    if head is None:
                        return
                    try:
                        status, ctype, body = self.respond(head)
                    except Exception:  # a collector's bug: this scrape fails, the daemon serves on
                        log.exception("%s: metrics: the scrape failed", self.prog)
                        status, ctype, body = "500 Internal Server Error", "text/plain", b"internal error\n"
                    await stream.send_all(
                        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                        f"Connection: close\r\n\r\n".encode() + (b"" if head.startswith(b"HEAD ") else body))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._active -= 1

    def respond(self, head: bytes) -> tuple[str, str, bytes]:
        """The status line, content type and body for a request head (pure but for the
        registry read)."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        if target not in ("/metrics", "/"):
            return "404 Not Found", "text/plain", b"not found; try /metrics\n"
        if target == "/":
            return "200 OK", "text/plain", f"{self.prog}: metrics at /metrics\n".encode()
        accept = ""
        for h in lines[1:]:
            name, _, value = h.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        try:
            encoder, ctype = choose_encoder(accept)
        except (TypeError, ValueError):  # e.g. "version=x.0.0": prometheus_client compares it as numbers
            encoder, ctype = choose_encoder("")
        self.scrapes += 1
        return "200 OK", ctype, encoder(self.registry)


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_REQUEST:
            await stream.send_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n")
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        buf += chunk
    return bytes(buf[:buf.index(b"\r\n\r\n")])
