"""Control-socket requests, in process: vrrpd's and ctsync's servers (hacommon.control,
the real request handling) behind an in-memory stream, a stand-in daemon behind them.
Whatever a client writes, as root or as nobody, the server answers with JSON lines and
closes; nothing is raised out of the connection, no request fails internally (the
server's `errors` count stays 0), none hangs. flush-uplink runs against a stand-in
conntrack socket: nothing here touches the kernel."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from hypothesis import example, HealthCheck, given, settings
from hypothesis import strategies as st

from ctnetlink import socket as ct_socket
from ctsync.cache import ExternalCache
from ctsync.control import ControlServer as CtsyncControl
from hacommon.control import Peer
from vrrpd.control import ControlServer as VrrpdControl
from vrrpd.publisher import Publisher

from . import corpus
from .mutate import HANG_SECONDS, QUICK, SLOW, FuzzFailure, Mutants

ROOT, NOBODY = Peer(1, 0, 0, frozenset({0})), Peer(2, 65534, 65534, frozenset())


class FakeVrrpd:
    def __init__(self):
        self.cfg = SimpleNamespace(path="fuzz.toml")
        self.started_at = time.time()
        self.publisher = Publisher(lambda member, cmd: None, lambda hook: None)
        self.uplinkd = None
        self.demotions: dict = {}

    def status(self):
        return []

    def metrics_registry(self):
        from vrrpd.metrics import registry_for

        return registry_for(self)

    def set_demotion(self, key, demotion):
        if demotion is None:
            self.demotions.pop(key, None)
        else:
            self.demotions[key] = demotion


class FakeCtsync:
    def __init__(self):
        cache = ExternalCache()
        for i, body in enumerate(corpus.commit_bodies()):
            cache.put(bytes([i]) * 8, body, 1e9)
        self.rep = SimpleNamespace(cache=cache)

    def status(self):
        return {"role": "backup", "counters": {}}

    async def commit(self, reason):
        await trio.lowlevel.checkpoint()
        return {"reason": reason, "count": 0, "duration": 0.0}

    def become_backup(self, reason):
        pass

    def metrics_registry(self):
        from prometheus_client import CollectorRegistry

        return CollectorRegistry()  # (the real one renders ctsync's whole status)


class FakeCtSocket:
    """Stands in for ctnetlink.socket.CtSocket in flush-uplink: a table, no kernel."""

    @classmethod
    def open(cls, *a, **kw):
        return cls()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    async def dump(self, family=None):
        return list(corpus.entries())

    async def request(self, msg):
        return 0


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch):
    monkeypatch.setattr(ct_socket, "CtSocket", FakeCtSocket)


async def exchange(server, data: bytes, peer: Peer) -> bytes:
    client, end = trio.testing.memory_stream_pair()
    out = b""
    async with trio.open_nursery() as n:
        n.start_soon(server.serve_stream, end, peer)
        await client.send_all(data)
        await client.send_eof()
        while chunk := await client.receive_some(65536):
            out += chunk
    await client.aclose()
    return out


def check_reply(out: bytes) -> None:
    assert out.endswith(b"\n"), out[-200:]
    for line in out.splitlines():
        assert isinstance(json.loads(line), dict), line


async def fuzz(server, inputs, count: int, what: str) -> None:
    for i, data in inputs.take(count):
        peer = ROOT if i % 3 else NOBODY
        try:
            with trio.fail_after(HANG_SECONDS):
                out = await exchange(server, data, peer)
            check_reply(out)
            if server.stats.errors:
                raise AssertionError(f"the request failed inside the server ({server.stats.errors} internal errors)")
        except trio.TooSlowError:
            raise FuzzFailure(f"{what}: input #{i} ({peer}) still running after {HANG_SECONDS} s\ninput: {data!r}") from None
        except Exception as e:  # noqa: BLE001
            raise FuzzFailure(f"{what}: input #{i} ({peer}): {type(e).__name__}: {e}\ninput: {data!r}") from e
        inputs.keep(data)


SERVERS = {"vrrpd": (VrrpdControl, FakeVrrpd, corpus.VRRPD_REQUESTS),
           "ctsync": (CtsyncControl, FakeCtsync, corpus.CTSYNC_REQUESTS)}


def fuzz_server(name: str, count: int, seed: int) -> None:
    cls, daemon, seeds = SERVERS[name]
    server = cls(daemon(), "/nonexistent/fuzz.sock")
    trio.run(fuzz, server, Mutants(seeds, seed), count, name)
    assert server.stats.connections == count


@pytest.mark.parametrize("name", SERVERS)
def test_mutants(name):
    fuzz_server(name, QUICK, len(name))


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("name", SERVERS)
def test_a_million_mutants(name):
    fuzz_server(name, SLOW, 1)


# ---- well-formed JSON with values of any type -------------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=10)
_keys = st.sampled_from(["cmd", "name", "hold", "uplinks", "prepare", "address", "proto", "dport", "ack", "demote", "reason",
                         "scope"])
_commands = st.sampled_from(["status", "metrics", "events", "commit", "flush", "resync", "dump", "flush-uplink", "nope"])


@st.composite
def requests(draw):
    first = {"cmd": draw(_commands)} | draw(st.dictionaries(_keys, _json, max_size=4))
    lines = [first] + draw(st.lists(st.dictionaries(_keys, _json, max_size=3), max_size=3))
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SERVERS)), data=requests(), root=st.booleans())
# found by this test: a list as flush-uplink's proto was looked up in a dict (TypeError)
@example(name="ctsync", data=b'{"cmd": "flush-uplink", "address": false, "proto": []}\n', root=True)
@example(name="ctsync", data=b'{"cmd": "flush-uplink", "address": "198.51.100.2", "proto": {}}\n', root=True)
def test_requests_with_values_of_any_type(name, data, root):
    cls, daemon, _ = SERVERS[name]
    server = cls(daemon(), "/nonexistent/fuzz.sock")

    async def one():
        with trio.fail_after(HANG_SECONDS):
            out = await exchange(server, data, ROOT if root else NOBODY)
        check_reply(out)

    trio.run(one)
    assert server.stats.errors == 0
