"""Who may do what on the real daemons' control sockets (issue #10, in part), with
clients that are really not root: `setpriv` runs them as nobody inside the lab router.
Reading works for whoever the socket's mode lets in; commits, flushes, resyncs,
holding transitions and demotions are refused unless root or control_group."""

from __future__ import annotations

import grp
import json
import os
import shutil
from pathlib import Path

import pytest

from halab import wait_for
from halab.ctsync import KEY, ctsync_binary
from halab.vrrp import toml_dump

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("setpriv") is None or not os.path.exists("/usr/bin/python3"),
                                 reason="needs setpriv and /usr/bin/python3 (the clients run as nobody)")]

NOBODY = 65534
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in {g.gr_name for g in grp.getgrall()} else None

# Requests on one connection each (lines of one request separated by \n): prints each reply
# line. vrrpd's event stream starts with each instance's current state ("current": true, not
# an answer): skipped.
CLIENT = r"""
import json, socket, sys
for req in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print(json.dumps({"connect_error": e.errno}), flush=True)
        continue
    f = s.makefile("rb")
    for line in req.split("\n"):
        s.sendall(line.encode() + b"\n")
        out = f.readline().decode().strip()
        while out and json.loads(out).get("current") is True:
            out = f.readline().decode().strip()
        print(out, flush=True)
    s.close()
"""


def as_nobody(host, sock: str, requests: list[str], gid: int = 0) -> list[dict]:
    cp = host.run(["setpriv", f"--reuid={NOBODY}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-c", CLIENT,
                   sock, *requests], check=True)
    return [json.loads(line) for line in cp.stdout.splitlines()]


def start_ctsync(pair, name: str, **extra):
    workdir = Path(pair.lab.workdir)
    sock = str(workdir / f"{name}.sock")
    cfg = workdir / f"{name}.toml"
    cfg.write_text(toml_dump({"ctsync": {"sync_interface": "eth0", "local_address": "10.0.0.2", "peer_address": "10.0.0.3",
                                         "key": KEY, "control_socket": sock, **extra}}) + "\n")
    proc = pair.r1.start([*ctsync_binary(), "-c", str(cfg)], name=name)
    wait_for(lambda: os.path.exists(sock) or not proc.alive(), timeout=10, what="ctsync's control socket")
    assert proc.alive(), proc.read_log()
    return sock, proc


def test_real_daemons_refuse_state_changes_to_nobody(pair):
    os.chmod(pair.lab.workdir, 0o711)  # nobody may reach the sockets in it; their own mode decides
    sock, ctsync = start_ctsync(pair, "ctsync-access")
    status, dump, commit, resync = as_nobody(pair.r1, sock, ['{"cmd": "status"}', '{"cmd": "dump"}', '{"cmd": "commit"}',
                                                             '{"cmd": "resync"}'])
    assert status["ok"] and dump["ok"]
    assert commit == {"ok": False, "error": "permission denied: commit needs root (control_group)"}
    assert resync["ok"] is False
    control = as_nobody(pair.r1, sock, ['{"cmd": "status"}'])[0]["status"]["control"]
    assert control["refused"] == 2 and f"uid {NOBODY} gid 0" in control["last_refused"]
    assert "commit refused to pid" in ctsync.read_log()

    v = pair.start("r1", 200)
    v.wait_state("V", "master", timeout=10)
    hold, watch, status = as_nobody(pair.r1, v.socket, ['{"cmd": "events", "name": "x", "hold": ["V"]}',
                                                        '{"cmd": "events", "name": "x"}', '{"cmd": "status"}'])
    assert hold["ok"] is False and hold["error"].startswith("permission denied: events holding V")
    assert watch["subscribed"] is True and status["ok"]
    demote = as_nobody(pair.r1, v.socket, ['{"cmd": "events", "name": "x"}\n{"demote": 100, "scope": ["V"]}'])[1]
    assert demote["ok"] is False and demote["error"].startswith("permission denied: demote")
    assert v.status()["V"]["effective_priority"] == 200
    assert v.status()["V"]["state"] == "master"


@pytest.mark.skipif(NOGROUP is None, reason="no group 'nogroup'")
def test_control_group_members_may_commit(pair):
    os.chmod(pair.lab.workdir, 0o711)
    sock, _ = start_ctsync(pair, "ctsync-group", control_group="nogroup")
    # the socket exists from its bind; its group is set just after (hacommon.control)
    wait_for(lambda: os.stat(sock).st_gid == NOGROUP, timeout=5, what="the socket's group")
    [commit] = as_nobody(pair.r1, sock, ['{"cmd": "commit"}'], gid=NOGROUP)
    assert commit["ok"] is True and commit["commit"]["count"] == 0
    assert as_nobody(pair.r1, sock, ['{"cmd": "status"}'], gid=0) == [{"connect_error": 13}]  # not in the socket's group
