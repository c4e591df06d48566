"""The soak's invariants (halab.soak.Soak.check) and the junk flood's settle check
(halab.faults) on a pair of stand-ins: each broken invariant is named, a healthy pair has none.

The lab run (tests/netns/test_soak.py) only passes when nothing breaks; these show that what it
checks can fail."""

from __future__ import annotations

import time

import pytest

from halab import faults
from halab.faults import Fault
from halab.hapair import INSTANCES, LAN_VIP, WAN_VIP
from halab.soak import BACKUP, MASTER, DaemonSlot, Soak, SoakConfig


class Proc:
    def __init__(self, alive=True):
        self._alive, self.returncode, self.name = alive, None if alive else 1, "p"

    def alive(self):
        return self._alive

    def read_log(self):
        return "Traceback: the end"


class Vrrpd:
    def __init__(self, state):
        self.proc, self.state, self.error = Proc(), state, None

    def status(self):
        if self.error:
            raise self.error
        return {i: {"name": i, "state": self.state} for i in INSTANCES}


class Ctsync:
    def __init__(self):
        self.proc = Proc()
        self.st = {"in_sync": True, "ready": True, "peer_alive": True, "vrrpd_connected": True,
                   "counters": {"resyncs_received": 1}, "channel": {"malformed": 0, "auth_failures": 0}}

    def status(self):
        return self.st


class Run:
    def __init__(self, progress):
        self.client, self.server, self.p = Proc(), Proc(), progress

    def progress(self):
        return self.p


class Box:
    def __init__(self, vips):
        self.vips = vips
        self.rcvbuf_errors = 0

    def _ip_json(self, *args):
        return [{"addr_info": [{"local": a} for a in self.vips]}]

    def run(self, argv, check=False):  # `cat /proc/net/snmp`
        return type("CP", (), {"stdout": f"Udp: InDatagrams RcvbufErrors\nUdp: 5 {self.rcvbuf_errors}\n"})()


class Pair:
    def __init__(self):
        self.boxes = {MASTER: Box([WAN_VIP, LAN_VIP]), BACKUP: Box([])}

    def router(self, r):
        return self.boxes[r]

    def holds_vips(self, r):
        return {WAN_VIP, LAN_VIP} <= set(self.boxes[r].vips)


@pytest.fixture
def soak():
    s = Soak(None, SoakConfig())
    s.pair = Pair()
    for r, state in ((MASTER, "master"), (BACKUP, "backup")):
        s.slots[(r, "vrrpd")] = DaemonSlot(r, "vrrpd", Vrrpd(state))
        s.slots[(r, "ctsync")] = DaemonSlot(r, "ctsync", Ctsync())
    s.traffic = {"tcp": Run({"time": time.time(), "oldest_echo_age": 0.2, "lost": 0}),
                 "sip": Run({"time": time.time(), "last_reply_age": 0.05})}
    return s


def test_a_healthy_pair_breaks_nothing(soak):
    assert soak.check() == {}


def test_a_daemon_that_exits_on_its_own_is_fatal_one_killed_is_not(soak):
    slot = soak.slots[(BACKUP, "ctsync")]
    slot.handle.proc = Proc(alive=False)
    assert "r2/ctsync exited (1) without being killed" in soak.check()["daemon-dead"]
    slot.killed = True
    assert "daemon-dead" not in soak.check()


def test_two_masters_the_wrong_master_and_stray_vips(soak):
    soak.vrrpd(BACKUP).state = "master"
    p = soak.check()
    assert "masters ['r1', 'r2']" in p["one-master"] and "priorities" in p
    soak.vrrpd(BACKUP).state = "backup"
    soak.pair.boxes[BACKUP].vips = [WAN_VIP]
    assert set(soak.check()) == {"vips"}


def test_a_vrrpd_that_does_not_answer(soak):
    soak.vrrpd(MASTER).error = OSError("connection refused")
    p = soak.check()
    assert "OSError: connection refused" in p["vrrpd-status"] and "one-master" in p


def test_the_backup_out_of_sync_or_without_the_restarted_masters_table(soak):
    soak.ctsync(BACKUP).st["in_sync"] = False
    assert "r2 in_sync=False" in soak.check()["backup-sync"]
    soak.ctsync(BACKUP).st["in_sync"] = True
    soak._resync_floor = 1  # r1's ctsync was killed when r2 had received 1 table push
    assert "no table from r1's restarted ctsync" in soak.check()["backup-sync"]
    soak.ctsync(BACKUP).st["counters"]["resyncs_received"] = 2
    assert soak.check() == {}


def test_stalled_flows(soak):
    soak.traffic["tcp"].p["oldest_echo_age"] = 4.0
    soak.traffic["sip"].p["last_reply_age"] = 3.0
    assert set(soak.check()) == {"tcp-flowing", "sip-flowing"}
    soak.traffic["tcp"].p = None
    assert soak.check()["tcp-flowing"] == "no fresh progress from the TCP client"


def test_the_junk_flood_must_be_counted_by_the_daemon(soak):
    f = Fault(1, "sync-garbage", {"router": BACKUP, "hold": 0.0})
    ctx = {"before": (0, 0), "sent": 100, "notes": {}}
    st, box = soak.ctsync(BACKUP).st, soak.pair.boxes[BACKUP]
    box.rcvbuf_errors = 100  # the kernel dropped it all: the daemon saw nothing
    assert "counted none of 100" in faults._garbage_counted(soak, f, ctx)
    box.rcvbuf_errors, st["channel"]["malformed"] = 0, 40
    assert "counted 40 of 100" in faults._garbage_counted(soak, f, ctx)
    st["channel"]["auth_failures"] = 50
    box.rcvbuf_errors = 10
    assert faults._garbage_counted(soak, f, ctx) is None
    assert ctx["notes"] == {"counted": 90, "kernel_dropped": 10}
