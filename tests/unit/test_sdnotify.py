"""systemd's notify protocol (hacommon.sdnotify): message format, socket addresses
(paths and abstract names), $WATCHDOG_USEC / $WATCHDOG_PID, and the notify task's
STATUS= and WATCHDOG=1 against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing

from hacommon import sdnotify
from hacommon.sdnotify import Notifier, format_message, socket_address


def test_format():
    assert format_message({"READY": 1, "STATUS": "WAN master, LAN master"}) == b"READY=1\nSTATUS=WAN master, LAN master\n"
    assert format_message({"STATUS": "two\nlines\r"}) == b"STATUS=two lines \n"
    with pytest.raises(ValueError):
        format_message({"A=B": 1})


def test_addresses():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@hapair-test") == b"\0hapair-test"


def test_watchdog_from_environment():
    pid = str(os.getpid())
    n = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": pid})
    assert n.enabled and n.watchdog_interval == 2.0
    assert Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "junk"}).watchdog_interval is None
    off = Notifier.from_env({})
    assert not off.enabled and off.ready() is False  # outside systemd: nothing, no error


def test_from_env_unsets_for_children(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/x")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    n = Notifier.from_env()
    assert n.enabled and "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ


def receiver(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def test_datagrams_to_a_path_and_an_abstract_socket(tmp_path):
    path = str(tmp_path / "notify")
    with receiver(path) as r:
        n = Notifier(path)
        assert n.ready("backup, in sync, 3 entries") and n.stopping()
        assert r.recv(4096) == b"READY=1\nSTATUS=backup, in sync, 3 entries\n"
        assert r.recv(4096) == b"STOPPING=1\n"
        n.reloading()
        msg = r.recv(4096).decode()
        assert msg.startswith("RELOADING=1\nMONOTONIC_USEC=") and int(msg.split("=")[-1]) > 0
    name = f"@hapair-test-{os.getpid()}"
    with receiver(socket_address(name)) as r:
        assert Notifier(name).watchdog()
        assert r.recv(4096) == b"WATCHDOG=1\n"


def test_send_failure_is_logged_once_never_raised(tmp_path, caplog):
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.status("x") is False and n.status("y") is False
    assert sum("sd_notify" in r.message for r in caplog.records) == 1


def test_task_sends_status_changes_and_pings_only_while_healthy(tmp_path):
    path = str(tmp_path / "notify")
    got: list[tuple[float, bytes]] = []
    state = {"text": "WAN backup", "sick": None}

    async def main():
        n = Notifier(path, watchdog_usec=2_000_000)  # ping every 1 s
        with receiver(path) as r:
            r.setblocking(False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sdnotify.run, n, lambda: state["text"], lambda: state["sick"])
                await trio.sleep(2.5)
                state["text"] = "WAN master"
                await trio.sleep(1.0)
                state["sick"] = "stuck"
                await trio.sleep(3.0)
                nursery.cancel_scope.cancel()
            while True:
                try:
                    got.append(r.recv(4096))
                except BlockingIOError:
                    break

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    statuses = [m for m in got if m.startswith(b"STATUS=")]
    pings = [m for m in got if m == b"WATCHDOG=1\n"]
    assert statuses == [b"STATUS=WAN backup\n", b"STATUS=WAN master\n"]
    assert len(pings) == 4  # at 0, 1, 2, 3 s; none once unhealthy (3.5 s on)
