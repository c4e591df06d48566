"""HTTP requests to the metrics endpoint (metrics_listen): whatever the request head, an
answer (status line, content type, body), never an exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from hacommon.metrics_http import MetricsServer

from .mutate import QUICK, SLOW, apply_edits, run

SEEDS = [b"GET /metrics HTTP/1.1\r\nHost: router\r\nAccept: application/openmetrics-text; version=1.0.0; charset=utf-8",
         b"GET /metrics?x=1 HTTP/1.0\r\nAccept: text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
         b"HEAD / HTTP/1.1", b"POST /metrics HTTP/1.1\r\nContent-Length: 0"]


def server() -> MetricsServer:
    reg = CollectorRegistry()
    Counter("fuzz_things", "things", ["kind"], registry=reg).labels("a").inc()
    return MetricsServer(reg, ("127.0.0.1", 0), "fuzz")


def target():
    srv = server()

    def respond(head: bytes) -> None:
        status, ctype, body = srv.respond(head)
        assert status[:3].isdigit() and isinstance(ctype, str) and isinstance(body, bytes)

    return respond


def test_mutants():
    run(target(), SEEDS, (), QUICK * 5, seed=7, what="metrics request")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_million_mutants():
    run(target(), SEEDS, (), SLOW, seed=1, what="metrics request")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(i=st.integers(0, 10), accept=st.text(max_size=60),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 200), st.integers(0, 0xFFFF)), max_size=4))
def test_edited_requests(i, accept, edits):
    head = apply_edits(SEEDS[i % len(SEEDS)], edits) + b"\r\nAccept: " + accept.encode("utf-8", "replace")
    target()(head)
