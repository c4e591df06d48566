"""Who may change what through a control socket (issue #10, in part): the peer's
credentials (SO_PEERCRED, SO_PEERGROUPS) at connect time. Reading is for whoever can
connect; commit, flush, resync, flush-uplink, holding transitions and demoting are for
uid 0 or a member of control_group. The clients here are real processes running as
`nobody` (setpriv), talking to the server in this process (no network namespace)."""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import tempfile
from types import SimpleNamespace

import pytest
import trio

from ctsync.control import ControlServer as CtsyncControl
from hacommon.control import Peer
from vrrpd.control import ControlServer as VrrpdControl

from .test_control_input import FakeVrrpd as InputFakeVrrpd

SETPRIV = shutil.which("setpriv")
PYTHON = "/usr/bin/python3"  # readable by nobody (this venv's interpreter may live under /root)
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None or not os.path.exists(PYTHON),
                                reason="needs root, setpriv and /usr/bin/python3 (clients run as nobody)")
NOBODY = 65534
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in {g.gr_name for g in grp.getgrall()} else None

# One request per line of argv; prints each reply line (or the error) as it comes.
CLIENT = r"""
import json, socket, sys
path = sys.argv[1]
for req in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
    except OSError as e:
        print(json.dumps({"connect_error": e.errno}), flush=True)
        continue
    lines = req.split("\n")
    s.sendall(lines[0].encode() + b"\n")
    f = s.makefile("rb")
    print(f.readline().decode().strip(), flush=True)
    for more in lines[1:]:  # further lines on the same connection (a subscriber's), one reply each
        s.sendall(more.encode() + b"\n")
        print(f.readline().decode().strip(), flush=True)
    s.close()
"""


def as_user(path: str, requests: list[str], gid: int = 0, groups: str = "") -> list[dict]:
    argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={gid}"]
    argv += [f"--groups={groups}"] if groups else ["--clear-groups"]
    cp = subprocess.run([*argv, PYTHON, "-c", CLIENT, path, *requests], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return [json.loads(line) for line in cp.stdout.splitlines()]


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


class FakeVrrpd(InputFakeVrrpd):
    def set_demotion(self, key, demotion):
        if demotion is not None:
            self.demotions[key] = demotion  # kept: the test asks whether one was ever set


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="hapair-ctl-")
    os.chmod(d, 0o711)  # nobody may reach the socket; the socket's own mode decides the rest
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_with_server(server, body):
    async def main():
        async with trio.open_nursery() as n:
            await server.start(n)
            try:
                await trio.to_thread.run_sync(body)
            finally:
                server.close()
                n.cancel_scope.cancel()

    trio.run(main)


def test_ctsync_reads_for_anyone_who_connects_changes_only_for_root(sockdir):
    srv = CtsyncControl(FakeCtsync(), os.path.join(sockdir, "ctsync.sock"))
    out = {}

    def body():
        # uid nobody, gid root: the socket (0660 root:root) lets it connect.
        out["nobody"] = as_user(srv.path, ['{"cmd": "status"}', '{"cmd": "dump"}', '{"cmd": "resync"}', '{"cmd": "flush"}'])
        # another group: not even a connection
        out["other"] = as_user(srv.path, ['{"cmd": "status"}'], gid=NOBODY)

    run_with_server(srv, body)
    status, dump, resync, flush = out["nobody"]
    assert status["ok"] and dump == {"ok": True, "entries": []}
    assert resync == {"ok": False, "error": "permission denied: resync needs root (control_group)"}
    assert flush["ok"] is False and flush["error"].startswith("permission denied: flush")
    assert srv.daemon.backups == 0
    assert srv.stats.refused == 2 and srv.stats.last_refused.startswith(f"flush from pid ")
    assert f"uid {NOBODY} gid 0" in srv.stats.last_refused
    assert out["other"] == [{"connect_error": 13}]  # EACCES: the file system's say


@pytest.mark.skipif(NOGROUP is None, reason="no group 'nogroup'")
def test_ctsync_control_group_members_may_change_things(sockdir):
    srv = CtsyncControl(FakeCtsync(), os.path.join(sockdir, "ctsync.sock"), "nogroup", NOGROUP)
    out = {}

    def body():
        out["primary"] = as_user(srv.path, ['{"cmd": "resync"}'], gid=NOGROUP)
        out["supplementary"] = as_user(srv.path, ['{"cmd": "resync"}'], gid=1, groups=str(NOGROUP))
        out["not_member"] = as_user(srv.path, ['{"cmd": "status"}'], gid=0)

    run_with_server(srv, body)
    assert os.stat(srv.path).st_gid == NOGROUP if os.path.exists(srv.path) else True
    assert out["primary"] == [{"ok": True}] and out["supplementary"] == [{"ok": True}]
    assert srv.daemon.backups == 2 and srv.stats.refused == 0
    assert out["not_member"] == [{"connect_error": 13}]  # the socket's group is nogroup now


def test_vrrpd_holding_and_demoting_only_for_root(sockdir):
    srv = VrrpdControl(FakeVrrpd(), os.path.join(sockdir, "vrrpd.sock"))
    out = {}

    def body():
        out["hold"] = as_user(srv.path, ['{"cmd": "events", "name": "x", "hold": ["G"]}'])
        out["watch"] = as_user(srv.path, ['{"cmd": "events", "name": "x"}\n{"demote": 50, "scope": ["G"]}'])
        out["status"] = as_user(srv.path, ['{"cmd": "status"}', '{"cmd": "metrics"}'])

    run_with_server(srv, body)
    assert out["hold"] == [{"ok": False, "error": "permission denied: events holding G needs root (control_group)"}]
    subscribed, demote = out["watch"]
    assert subscribed["subscribed"] is True
    assert demote == {"ok": False, "error": "permission denied: demote needs root (control_group)"}
    assert srv.daemon.demotions == {}
    assert all(r["ok"] for r in out["status"])
    assert srv.stats.refused == 2


def test_peer_of_a_root_connection():
    import socket

    from hacommon.control import peer_of

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        p = peer_of(a)
    assert p == Peer(os.getpid(), 0, 0, p.groups) and 0 in p.groups | {p.gid}
