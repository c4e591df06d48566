"""The metrics endpoint is an input surface too (metrics_listen may face a network): a
request it cannot answer gets an error response, never an exception in the daemon's
task group. Found by fuzzing `respond`: an Accept header whose OpenMetrics version is
not numbers made prometheus_client's choose_encoder raise TypeError, which left the
server's connection task and ended the daemon (vrrpd then left as on SIGTERM)."""

from __future__ import annotations

import socket

import pytest
import trio
from prometheus_client import CollectorRegistry, Counter

from hacommon.metrics_http import MetricsServer

BAD_ACCEPT = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=x.0.0\r\n\r\n"


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("fuzz_things", "things", registry=reg).inc(3)
    return reg


def http(port: int, req: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(req)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_a_bad_accept_version_gets_the_default_format():
    status, ctype, body = MetricsServer(registry(), ("127.0.0.1", 0), "x").respond(BAD_ACCEPT.split(b"\r\n\r\n")[0])
    assert status == "200 OK" and ctype.startswith("text/plain") and b"fuzz_things_total 3.0" in body


def test_the_server_survives_a_request_it_cannot_answer():
    """A collector that raises (a bug) and a bad Accept: each request is answered (200 in
    the default format, or 500), the server keeps serving, nothing leaves its nursery."""
    results = []

    class Broken:
        def collect(self):
            raise KeyError("bug")

    async def main():
        reg = registry()
        srv = MetricsServer(reg, ("127.0.0.1", 0), "x")
        async with trio.open_nursery() as n:
            assert await srv.start(n)
            port = srv.address[1]
            results.append(await trio.to_thread.run_sync(http, port, BAD_ACCEPT))
            reg.register(Broken())
            results.append(await trio.to_thread.run_sync(http, port, b"GET /metrics HTTP/1.1\r\n\r\n"))
            results.append(await trio.to_thread.run_sync(http, port, b"GET / HTTP/1.1\r\n\r\n"))
            srv.close()
            n.cancel_scope.cancel()

    trio.run(main)
    assert results[0].startswith(b"HTTP/1.1 200 OK")
    assert results[1].startswith(b"HTTP/1.1 500")
    assert results[2].startswith(b"HTTP/1.1 200 OK")
