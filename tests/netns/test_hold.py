"""The commit-before-VIP hand-shake on vrrpd's side: a subscriber that holds a group's
moves to master delays the VIPs and GARPs (not the adverts) until it acks, bounded by
transition_hold_timeout."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from halab import wait_for
from halab.vrrp import start_vrrpd, vrrpd_config, wire_events

from .conftest import ADDRS, VIP, instance

pytestmark = pytest.mark.netns


class Holder(threading.Thread):
    """A stand-in for ctsync: subscribes with a hold and acks after `delay` (or never)."""

    def __init__(self, path: str, delay: float | None, hold=("MAIN",)):
        super().__init__(daemon=True)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.sendall(json.dumps({"cmd": "events", "name": "test-holder", "hold": list(hold)}).encode() + b"\n")
        self.f = self.s.makefile("rb")
        assert json.loads(self.f.readline())["subscribed"]
        self.delay = delay
        self.events: list[dict] = []
        self.acked_at: dict[int, float] = {}
        self.start()

    def run(self):
        try:
            for line in self.f:
                ev = json.loads(line)
                self.events.append(ev)
                if "hold_id" in ev and self.delay is not None:
                    time.sleep(self.delay)
                    self.acked_at[ev["hold_id"]] = time.time()
                    self.s.sendall(json.dumps({"ack": ev["hold_id"]}).encode() + b"\n")
        except (OSError, ValueError):
            pass

    def close(self):
        try:
            self.s.shutdown(socket.SHUT_RDWR)  # close() alone leaves the fd open under makefile()
        except OSError:
            pass
        self.s.close()


def start_held(pair, timeout: float):
    sock = f"{pair.lab.workdir}/vrrpd-r1.sock"
    cfg = vrrpd_config(sock, {"V": instance(200)}, {"MAIN": ["V"]})
    cfg["vrrpd"]["transition_hold_timeout"] = timeout
    return start_vrrpd(pair.r1, {}, config=cfg, wait=True)


def vip_time(pair, deadline: float) -> float:
    return wait_for(lambda: time.time() if f"{VIP}/24" in pair.r1.ipv4_addrs("vrrp7.eth0") else None,
                    timeout=deadline, interval=0.01, what="VIP on r1")


def test_vip_waits_for_the_subscriber_but_adverts_do_not(pair):
    cap = pair.capture()
    r1 = start_held(pair, timeout=5.0)
    holder = Holder(r1.socket, delay=1.0)
    try:
        r1.wait_state("V", "master", timeout=8)
        t_vip = vip_time(pair, 5)
        ev = next(e for e in holder.events if e["new"] == "master")
        assert "hold_id" in ev
        acked = holder.acked_at[ev["hold_id"]]
        assert t_vip >= acked - 0.02, "the VIP appeared before the subscriber acknowledged"
        assert t_vip - ev["time"] >= 0.95
        time.sleep(0.3)
        cap.stop()
        wire = wire_events(cap.path)
        first_advert = next(e for e in wire if e.kind == "advert" and e.src_ip == ADDRS["r1"])
        first_garp = next(e for e in wire if e.kind == "garp")
        assert first_advert.time - ev["time"] < 0.3, "the advert must not wait for the hold"
        assert first_garp.time >= acked - 0.02, "GARP must wait for the hold"
        st = r1.status()["V"]
        assert st["counters"]["hold_timeouts"] == 0 and 0.9 <= st["last_hold"] < 2.0
    finally:
        holder.close()


def test_silent_subscriber_is_bounded_by_the_timeout(pair):
    r1 = start_held(pair, timeout=1.5)
    holder = Holder(r1.socket, delay=None)  # never acks
    try:
        r1.wait_state("V", "master", timeout=8)
        ev_time = next(e for e in holder.events if e["new"] == "master")["time"]
        t_vip = vip_time(pair, 5)
        assert 1.4 <= t_vip - ev_time <= 2.5
        assert r1.counters("V")["hold_timeouts"] == 1
        assert "did not confirm within 1.5s" in r1.proc.read_log()
    finally:
        holder.close()


def test_subscriber_that_disconnects_releases_the_hold(pair):
    r1 = start_held(pair, timeout=10.0)
    holder = Holder(r1.socket, delay=None)
    r1.wait_state("V", "master", timeout=8)
    t0 = time.time()
    holder.close()
    t_vip = vip_time(pair, 5)
    assert t_vip - t0 < 2.0
    assert r1.counters("V")["hold_timeouts"] == 0


def test_subscriber_demotion_lowers_the_advertised_priority_until_withdrawn(pair):
    """The demotion ctsync asks for while not ready (vrrpd.demotion), on vrrpd's side:
    a master advertises the lowered priority at once; a malformed request is refused on
    the stream; {"demote": 0} or the subscriber going away restores the priority."""
    cap = pair.capture()
    r1 = start_held(pair, timeout=5.0)
    holder = Holder(r1.socket, delay=0.0)
    try:
        r1.wait_state("V", "master", timeout=8)
        t_demote = time.time()
        holder.s.sendall(b'{"demote": 50, "reason": "not ready"}\n')
        wait_for(lambda: r1.status()["V"]["effective_priority"] == 150, timeout=3, what="demoted to 150")
        st = r1.status()["V"]
        assert st["priority"] == 200 and st["demotions"] == ["-50 test-holder: not ready"]
        holder.s.sendall(b'{"demote": 300}\n')
        wait_for(lambda: any(e.get("ok") is False for e in holder.events), timeout=3, what="the refusal")
        refusal = next(e for e in holder.events if e.get("ok") is False)
        assert refusal["error"] == "demote: demote must be an integer 0..254, got 300"
        assert r1.status()["V"]["effective_priority"] == 150  # the bad request changed nothing
        holder.s.sendall(b'{"demote": 0}\n')
        wait_for(lambda: r1.status()["V"]["effective_priority"] == 200, timeout=3, what="withdrawn")
        holder.s.sendall(b'{"demote": 30, "reason": "again"}\n')
        wait_for(lambda: r1.status()["V"]["effective_priority"] == 170, timeout=3, what="demoted to 170")
        t_close = time.time()
        holder.close()
        wait_for(lambda: r1.status()["V"]["effective_priority"] == 200, timeout=3, what="released on disconnect")
        assert r1.status()["V"]["demotions"] == []
        assert r1.state("V") == "master"
        time.sleep(0.2)
        cap.stop()
        prios = [(e.time, e.priority) for e in wire_events(cap.path) if e.kind == "advert" and e.src_ip == ADDRS["r1"]]
        # the master tells the others at once: an advert with the new priority within the
        # advert interval's first few tenths, not at the next periodic advert
        first_150 = next(t for t, p in prios if p == 150)
        assert first_150 - t_demote < 0.5
        assert [p for t, p in prios if t > t_close][:1] == [200]
        assert {p for _, p in prios} == {200, 150, 170}
    finally:
        holder.close()
