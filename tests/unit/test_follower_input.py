"""ctsync's follower reads vrrpd's event stream with a bound (issue #7): a line over
MAX_LINE ends the connection (and it reconnects), a line nested too deep is ignored,
and what follows a bad line still works. A stand-in vrrpd in process."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import trio

from ctsync.follower import VrrpdFollower
from ctsync.replicator import Role
from hacommon import handshake as hs


class FakeCtsync:
    def __init__(self, path):
        self.cfg = SimpleNamespace(failover=SimpleNamespace(vrrp_sync_group="G", vrrpd_socket=path, demote_when_not_ready=0))
        self.rep = SimpleNamespace(role=Role.BACKUP, preparation=None)
        self.commits = []

    def takeover_parks(self):
        return False  # no parking (ctsync/nfqueue.py): commit before acking

    async def commit(self, reason):
        self.commits.append(reason)
        self.rep.role = Role.MASTER

    def verify_nat_later(self):
        pass

    def become_backup(self, reason):
        self.rep.role = Role.BACKUP


def test_follower_survives_a_flood_and_deep_lines(tmp_path):
    path = str(tmp_path / "vrrpd.sock")
    d = FakeCtsync(path)
    seen = {"connections": 0, "acks": []}

    async def main():
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await listener.bind(path)
        listener.listen(4)
        async with trio.open_nursery() as n:
            n.start_soon(VrrpdFollower(d).run)
            with trio.fail_after(20):
                # 1st connection: 1 MiB without a newline -> the follower hangs up.
                conn, _ = await listener.accept()
                seen["connections"] += 1
                async with trio.SocketStream(conn) as s:
                    assert b'"cmd": "events"' in await s.receive_some(4096)
                    await s.send_all(hs.encode(hs.Subscribed(("G",))))
                    try:
                        await s.send_all(b"x" * (1 << 20))
                    except trio.BrokenResourceError:
                        pass
                    try:
                        while await s.receive_some(4096):
                            pass
                    except trio.BrokenResourceError:
                        pass
                # 2nd connection (it came back): deep lines are skipped, a transition works.
                conn, _ = await listener.accept()
                seen["connections"] += 1
                async with trio.SocketStream(conn) as s:
                    await s.receive_some(4096)
                    await s.send_all(hs.encode(hs.Subscribed(("G",))))
                    await s.send_all(b"[" * 1000 + b"]" * 1000 + b"\n" + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"\n")
                    t = hs.Transition(0.0, "WAN", "G", "eth0", 1, "backup", "master", "test", 100, hold_id=7)
                    await s.send_all(hs.encode(t))
                    line = await s.receive_some(4096)
                    seen["acks"].append(line)
            n.cancel_scope.cancel()

    trio.run(main)
    assert seen["connections"] == 2
    assert seen["acks"] == [b'{"ack": 7}\n']
    assert d.commits == ["vrrpd: WAN became master"]
