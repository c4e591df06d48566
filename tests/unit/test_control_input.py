"""Both daemons' control sockets, in process (trio, a socket in a temporary folder, a
stand-in for the daemon): bad input fails alone and the daemon keeps serving (issues
#6 and #7). A request longer than MAX_LINE (1 MiB without a newline), JSON nested 1000
deep, a subscriber that floods or stops reading; whatever happens, the next client
gets its answer and nothing leaves the server's task group."""

from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace

import pytest
import trio

from ctsync.control import ControlServer as CtsyncControl
from hacommon import handshake as hs
from hacommon.control import MAX_LINE
from vrrpd.control import ControlServer as VrrpdControl
from vrrpd.publisher import Publisher

DEEP = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"cmd": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001


class FakeVrrpd:
    def __init__(self):
        self.cfg = SimpleNamespace(path="r1.toml")
        self.started_at = time.time()
        self.publisher = Publisher(lambda member, cmd: None, lambda hook: None)
        self.demotions = {}
        self.uplinkd = None

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
        self.rep = SimpleNamespace(cache=SimpleNamespace(messages=lambda: [], clear=lambda: None, __len__=lambda: 0))
        self.backups = 0

    def status(self):
        return {"role": "backup"}

    def become_backup(self, reason):
        self.backups += 1

    def metrics_registry(self):
        from prometheus_client import CollectorRegistry

        return CollectorRegistry()  # (the real one renders ctsync's whole status)


async def client(path: str, data: bytes, read_reply: bool = True) -> dict | None:
    """Send ``data`` (in the background: the server may answer and close before it has
    read it all), return the first reply line as JSON."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(path)
    stream = trio.SocketStream(sock)
    async with stream:
        async with trio.open_nursery() as n:
            async def send():
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            n.start_soon(send)
            if not read_reply:
                return None
            buf = b""
            with trio.fail_after(10):
                while b"\n" not in buf:
                    try:
                        chunk = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        chunk = b""
                    if not chunk:
                        break
                    buf += chunk
            n.cancel_scope.cancel()
    return json.loads(buf.split(b"\n", 1)[0]) if buf else None


def serve(server_cls, daemon, tmp_path, body):
    path = str(tmp_path / "ctl.sock")

    async def main():
        async with trio.open_nursery() as n:
            srv = server_cls(daemon, path)
            await srv.start(n)
            try:
                await body(srv, path)
            finally:
                srv.close()
                n.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.parametrize("server_cls,daemon", [(VrrpdControl, FakeVrrpd), (CtsyncControl, FakeCtsync)], ids=["vrrpd", "ctsync"])
def test_long_and_deep_requests_get_an_error_and_the_daemon_keeps_serving(tmp_path, server_cls, daemon):
    async def body(srv, path):
        r = await client(path, b"x" * (1 << 20))
        assert r["ok"] is False and r["error"].startswith("request too long: over 65536 bytes without a newline")
        r = await client(path, b"{" + b" " * (MAX_LINE + 10) + b"}\n")
        assert r["ok"] is False and r["error"].startswith("request too long")
        for deep in (DEEP, DEEP_OBJECT):
            r = await client(path, deep + b"\n")
            assert r["ok"] is False and "RecursionError" in r["error"], r
        r = await client(path, b"\xff\xfe not json\n")
        assert r["ok"] is False and r["error"].startswith("bad request: not a JSON object")
        r = await client(path, b'{"cmd": "status"}\n')
        assert r["ok"] is True
        assert srv.stats.bad_requests == 5 and srv.stats.errors == 0

    serve(server_cls, daemon(), tmp_path, body)


def test_vrrpd_subscriber_that_floods_is_disconnected(tmp_path):
    async def body(srv, path):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(path)
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(hs.encode(hs.Subscribe("flood", ("G",))))
            assert b'"subscribed": true' in await stream.receive_some(4096)
            with trio.fail_after(10):
                try:
                    await stream.send_all(b"a" * (1 << 20))  # an ack line that never ends
                except trio.BrokenResourceError:
                    pass
                try:
                    while await stream.receive_some(4096):  # vrrpd closes the subscription
                        pass
                except trio.BrokenResourceError:  # closed with our flood unread: a reset
                    pass
        assert not srv.daemon.publisher.subscribers
        r = await client(path, b'{"cmd": "status"}\n')
        assert r["ok"] is True

    serve(VrrpdControl, FakeVrrpd(), tmp_path, body)


def test_vrrpd_subscriber_lines_nested_too_deep_are_ignored(tmp_path):
    async def body(srv, path):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(path)
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(hs.encode(hs.Subscribe("deep", ("G",))))
            await stream.receive_some(4096)
            await stream.send_all(DEEP + b"\n" + DEEP_OBJECT + b"\n")
            await stream.send_all(b'{"demote": 20, "reason": "test"}\n')
            with trio.fail_after(5):
                while not srv.daemon.demotions:
                    await trio.sleep(0.01)
            assert srv.stats.bad_requests == 2

    serve(VrrpdControl, FakeVrrpd(), tmp_path, body)


def test_vrrpd_subscriber_that_stopped_reading_fails_alone(tmp_path):
    """A subscriber that shut its reading side down: vrrpd's next write to it fails
    (EPIPE) inside the subscription's task group. That error, wrapped in an exception
    group, once left the connection and ended the daemon."""
    async def body(srv, path):
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(path)
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(hs.encode(hs.Subscribe("deaf", (), uplinks=True)))
            await stream.receive_some(4096)
            sock.shutdown(socket.SHUT_RD)
            srv.daemon.publisher.notice({"kind": "uplink", "name": "ISP1"})
            with trio.fail_after(5):
                while srv.daemon.publisher.subscribers:
                    await trio.sleep(0.01)
        r = await client(path, b'{"cmd": "status"}\n')
        assert r["ok"] is True

    serve(VrrpdControl, FakeVrrpd(), tmp_path, body)


def test_a_failing_request_is_answered_and_logged_not_raised(tmp_path, caplog):
    """Whatever goes wrong while a request is served stays in its connection: the client
    is told, the traceback is logged, the next client is served. (A stand-in daemon whose
    status raises: no real input is known to do that any more.)"""
    class Broken(FakeCtsync):
        def status(self):
            raise KeyError("bug")

    async def body(srv, path):
        r = await client(path, b'{"cmd": "status"}\n')
        assert r == {"ok": False, "error": "internal error: KeyError: 'bug'; see the daemon's log"}
        assert srv.stats.errors == 1
        r = await client(path, b'{"cmd": "resync"}\n')
        assert r == {"ok": True}

    serve(CtsyncControl, Broken(), tmp_path, body)
    assert any("request of pid" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("server_cls,daemon", [(VrrpdControl, FakeVrrpd), (CtsyncControl, FakeCtsync)], ids=["vrrpd", "ctsync"])
def test_a_command_that_is_not_a_string(tmp_path, server_cls, daemon):
    """Found by tests/fuzz/test_fuzz_control.py: {"cmd": [...]} (unhashable) once made
    ctsync's permission check raise TypeError (an internal error, not a crash)."""
    async def body(srv, path):
        for req in (b'{"cmd": ["commit"]}\n', b'{"cmd": {"a": 1}}\n', b'{"cmd": 5}\n', b'{"cmd": null}\n'):
            r = await client(path, req)
            assert r["ok"] is False and r["error"].startswith("unknown request"), r
        assert srv.stats.errors == 0 and srv.stats.bad_requests == 4

    serve(server_cls, daemon(), tmp_path, body)
