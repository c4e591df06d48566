"""A daemon that crashes still leaves the way SIGTERM makes it leave (issue #6).

The fixes of issue #6 left no input known to crash vrrpd, so the crash is injected:
vrrpd runs in process in a lab router (trio, its real sockets and netlink), with one of
its tasks (the link refresher) replaced by one that raises once the instance is master
with its VIP. The daemon must then send priority 0, remove the VIP and the macvlan, and
only then end with the error; the backup takes over at once (Skew_Time, not
Master_Down_Interval). ctsync, crashed the same way, unlinks its control socket."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from halab import wait_for
from halab.vrrp import Vrrpd, toml_dump, vrrpd_config

from .conftest import VIP, instance

pytestmark = pytest.mark.netns

CRASHING_VRRPD = r"""
import sys, trio
from hacommon import log
from vrrpd import config, daemon

async def crash_once_master(self):
    while not any(i.machine.state.value == "master" for i in self.instances.values()):
        await trio.sleep(0.05)
    await trio.sleep(1.0)  # the VIP is added (no subscriber holds it)
    raise RuntimeError("injected crash (test)")

daemon.Daemon._refresher = crash_once_master
log.setup("text", "info", name="vrrpd")
trio.run(daemon.serve, config.load(sys.argv[1]))
"""


def links(host) -> dict[str, list[str]]:
    out = json.loads(host.run(["ip", "-j", "addr", "show"], check=True).stdout)
    return {l["ifname"]: [a["local"] for a in l.get("addr_info", [])] for l in out}


def test_vrrpd_crash_leaves_like_sigterm(pair):
    workdir = Path(pair.lab.workdir)
    sock = str(workdir / "crash-r1.sock")
    cfg = workdir / "crash-r1.toml"
    cfg.write_text(toml_dump(vrrpd_config(sock, {"V": instance(200)})) + "\n")
    r2 = pair.start("r2", 100)
    r2.wait_state("V", "backup", timeout=10)
    proc = pair.r1.start([sys.executable, "-c", CRASHING_VRRPD, str(cfg)], name="vrrpd-crash")
    r1 = Vrrpd(pair.r1, proc, cfg, sock)
    r1.wait_ready()
    wait_for(lambda: VIP in links(pair.r1).get("vrrp7.eth0", []), timeout=15, what="the VIP on r1's macvlan")
    r2.wait_state("V", "backup", timeout=5)
    proc.wait(timeout=15)
    t_end = time.monotonic()
    log = proc.read_log()
    assert proc.returncode != 0
    assert "vrrp7.eth0" not in links(pair.r1), "the macvlan is still there"
    assert not any(VIP in addrs for addrs in links(pair.r1).values()), "the VIP is still there"
    assert "injected crash (test)" in log and "leaving as on SIGTERM first" in log, log[-3000:]
    # Priority 0 was sent: r2 takes over after Skew_Time (< 1 s), well before
    # Master_Down_Interval (3 s and more); generous bound.
    r2.wait_state("V", "master", timeout=10)
    assert time.monotonic() - t_end < 2.5


CRASHING_CTSYNC = r"""
import sys, trio
from hacommon import log
from ctsync import config, daemon

async def crash(self):
    await trio.sleep(1.0)
    raise RuntimeError("injected crash (test)")

daemon.Daemon._pump = crash
log.setup("text", "info", name="ctsync")
trio.run(daemon.Daemon(config.load(sys.argv[1])).run)
"""


def test_ctsync_crash_closes_and_unlinks_its_control_socket(pair):
    from halab.ctsync import KEY

    workdir = Path(pair.lab.workdir)
    sock = workdir / "crash-ctsync.sock"
    cfg = workdir / "crash-ctsync.toml"
    cfg.write_text(toml_dump({"ctsync": {"sync_interface": "eth0", "local_address": "10.0.0.2", "peer_address": "10.0.0.3",
                                         "key": KEY, "control_socket": str(sock)}}) + "\n")
    proc = pair.r1.start([sys.executable, "-c", CRASHING_CTSYNC, str(cfg)], name="ctsync-crash")
    wait_for(sock.exists, timeout=10, what="ctsync's control socket")
    proc.wait(timeout=15)
    log = proc.read_log()
    assert proc.returncode != 0
    assert not sock.exists(), "the control socket was left behind"
    assert "injected crash (test)" in log and "ctsync is ending on an unexpected error" in log, log[-3000:]
