"""On a real router, as systemd would run the daemons (lab namespaces only):

1. vrrpd and ctsync speak systemd's notify protocol to a real AF_UNIX datagram socket
   given as $NOTIFY_SOCKET: READY=1 once their sockets answer, STATUS= that follows a
   transition, WATCHDOG=1 at half of $WATCHDOG_USEC, STOPPING=1 on SIGTERM. They run
   with the capability bounding set of the units (setpriv: CAP_NET_ADMIN and CAP_NET_RAW
   only, no new privileges) and the failover still works.
2. Prometheus metrics at metrics_listen, scraped over HTTP and parsed with
   prometheus_client.parser, agree with the daemons' status and with `vrrpctl metrics`.
3. ctsync reloads on SIGHUP under churn: a new key on both routers, one after the other,
   loses nothing (the backup's replica equals the master's table, no resync needed);
   a key that cannot change at run time is refused by name and the daemon runs on.
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ctnetlink.netns import run_in_netns
from hacommon.client import request
from halab import wait_for
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair
from halab.traffic import collect, short_udp_flows

from .test_ctsync_robustness import set_long_timeouts, wait_converged

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

#: The units' CapabilityBoundingSet and NoNewPrivileges, for a process started by hand.
UNIT_CAPS = ["setpriv", "--bounding-set", "-all,+net_admin,+net_raw", "--inh-caps", "-all", "--no-new-privs"]


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; every message kept with its
    arrival time."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def first(self, key: str, timeout: float = 15.0) -> tuple[float, dict]:
        return wait_for(lambda: next(((t, m) for t, m in self.messages if key in m), None), timeout=timeout,
                        what=f"{key} on NOTIFY_SOCKET")

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in self.messages if "STATUS" in m]

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in self.messages if m.get("WATCHDOG") == "1" and t >= since]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def scrape(host, port: int) -> str:
    def get():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        return body.decode()
    return run_in_netns(host.netns, get)


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, metric: str, **labels) -> float:
    got = [s.value for s in fams[metric].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, (metric, labels, fams[metric].samples)
    return got[0]


@pytest.fixture
def caps_prefix():
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    return UNIT_CAPS


def test_vrrpd_notify_metrics_and_unit_capabilities(lab, caps_prefix):
    p = build_hapair(lab, ruleset="strict")
    notify = NotifySocket(f"{lab.workdir}/notify-vrrpd")
    try:
        env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}  # WatchdogSec=1: a ping every 0.5 s
        t0 = time.monotonic()
        d = p.start_vrrpd("r1", 200, wait=False, env=env, prefix=caps_prefix, top={"metrics_listen": "127.0.0.1:9650"})
        t_ready, ready = notify.first("READY")
        # READY came once the sockets were up: both answer right away
        assert request(d.socket, "status", timeout=2)["ok"]
        assert "vrrp_state" in scrape(p.r1, 9650)
        assert ready["STATUS"] in ("WAN backup, LAN backup", "WAN master, LAN master"), ready
        p.wait_master("r1")
        assert p.holds_vips("r1")  # macvlan, addresses: CAP_NET_ADMIN was enough
        wait_for(lambda: "WAN master, LAN master" in notify.statuses(), timeout=5, what="STATUS after the transition")
        assert notify.statuses()[0] == ready["STATUS"] and len(set(notify.statuses())) == len(notify.statuses())
        time.sleep(3)
        pings = notify.pings(since=t_ready)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        print(f"READY {t_ready - t0:.2f}s after start; statuses {notify.statuses()}; {len(pings)} pings, "
              f"gaps {min(gaps):.2f}..{max(gaps):.2f}s")
        assert len(pings) >= 5 and max(gaps) < 0.9 and min(gaps) > 0.3, gaps

        # metrics over HTTP agree with the status and with `vrrpctl metrics`
        fams = families(scrape(p.r1, 9650))
        st = d.status()
        for name in ("WAN", "LAN"):
            assert value(fams, "vrrp_state", name=name, state="master") == 1
            assert value(fams, "vrrp_advertisement_sent", name=name) >= 1
            assert value(fams, "vrrp_master_transitions", name=name) == st[name]["counters"]["became_master"] == 1
            assert value(fams, "vrrp_effective_priority", name=name) == st[name]["effective_priority"]
        assert fams["vrrp_advertisement_rcvd"].type == "counter" and fams["vrrp_advertisement_rcvd"].documentation
        via_socket = families(request(d.socket, "metrics")["text"])
        assert set(via_socket) == set(fams)
        assert value(via_socket, "vrrp_state", name="WAN", state="master") == 1

        d.proc.signal(signal.SIGTERM)
        notify.first("STOPPING", timeout=10)
        wait_for(lambda: not d.proc.alive(), timeout=15, what="vrrpd to leave")
        assert d.proc.returncode == 0, d.proc.read_log()[-2000:]
    finally:
        notify.close()


def test_ctsync_notify_metrics_and_unit_capabilities(lab, caps_prefix):
    p = build_hapair(lab, ruleset="strict")
    d = {"r1": p.start_vrrpd("r1", 200, prefix=caps_prefix), "r2": p.start_vrrpd("r2", 100, prefix=caps_prefix)}
    notify = NotifySocket(f"{lab.workdir}/notify-ctsync")
    try:
        start_ctsync(p.r1, "commit", d["r1"].socket, prefix=caps_prefix, metrics_listen="127.0.0.1:9651")
        c2 = start_ctsync(p.r2, "commit", d["r2"].socket, prefix=caps_prefix, metrics_listen="127.0.0.1:9651",
                          wait=False, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"})
        _, ready = notify.first("READY")
        p.wait_master("r1")
        p.wait_backup("r2")
        assert request(c2.socket, "status", timeout=2)["ok"]
        assert ready["STATUS"].startswith("backup, "), ready
        c2.wait(lambda s: s["in_sync"], 10, "in sync with r1")
        wait_for(lambda: any(s.startswith("backup, in sync, ") for s in notify.statuses()), timeout=5,
                 what="STATUS in sync")
        flows = short_udp_flows(p, rate=200, count=400, duration=5, hold=0.2)
        collect(flows, grace=10)
        st = c2.wait(lambda s: s if s["external_entries"] >= 300 else None, 10, "the flows replicated")
        fams = families(scrape(p.r2, 9651))
        assert value(fams, "ctsync_role", role="backup") == 1 and value(fams, "ctsync_in_sync") == 1
        assert value(fams, "ctsync_peer_alive") == 1
        assert value(fams, "ctsync_cache_entries", cache="external") >= 300
        assert value(fams, "ctsync_datagrams", direction="rx") >= st["channel"]["datagrams_rx"]
        assert value(fams, "ctsync_auth_failures") == 0 and fams["ctsync_retransmits"].type == "counter"
        m1 = families(scrape(p.r1, 9651))
        assert value(m1, "ctsync_kernel_events") >= 300 and value(m1, "ctsync_role", role="master") == 1
        # a failover under the units' capabilities: r2 commits, its metrics say so
        p.hard_fail("r1")
        p.wait_master("r2", timeout=10)
        c2.wait(lambda s: s["role"] == "master" and s["last_commit"], 10, "the failover commit")
        fams = families(scrape(p.r2, 9651))
        assert value(fams, "ctsync_role", role="master") == 1 and value(fams, "ctsync_commits") == 1
        assert value(fams, "ctsync_last_commit_entries") >= 300 and value(fams, "ctsync_last_commit_duration_seconds") > 0
        wait_for(lambda: any(s.startswith("master, ") for s in notify.statuses()), timeout=5, what="STATUS master")
        assert len(notify.pings()) >= 3
        c2.proc.signal(signal.SIGTERM)
        notify.first("STOPPING", timeout=10)
    finally:
        notify.close()


def test_ctsync_sighup_under_churn_rotates_the_key_and_loses_nothing(lab):
    p = build_hapair(lab, ruleset="strict")
    for r in (p.r1, p.r2):
        set_long_timeouts(r)
    d = {"r1": p.start_vrrpd("r1", 200), "r2": p.start_vrrpd("r2", 100)}
    c = {r: start_ctsync(getattr(p, r), "commit", d[r].socket, key_rotation_grace=6) for r in ("r1", "r2")}
    p.wait_master("r1")
    c["r2"].wait(lambda s: s["in_sync"], 10, "in sync with r1")
    before = c["r2"].status()
    flows = short_udp_flows(p, rate=300, count=3600, duration=12, hold=0.2)
    time.sleep(3)
    new_key = "a-rotated-secret-for-the-lab-0001"
    for r, delay in (("r1", 2.0), ("r2", 0.0)):
        text = c[r].config_path.read_text()
        old_key = next(line for line in text.splitlines() if line.startswith("key = "))
        text = text.replace(old_key, f'key = "{new_key}"').replace("[ctsync]", "[ctsync]\nport = 3781\nheartbeat_interval = 0.5", 1)
        c[r].config_path.write_text(text)
        c[r].proc.signal(signal.SIGHUP)
        time.sleep(delay)  # r2 is reloaded 2 s after r1, within half the grace
    for r in c:
        wait_for(lambda r=r: "SIGHUP: reloaded" in c[r].proc.read_log(), timeout=5, what=f"{r} reloaded")
        log = c[r].proc.read_log()
        assert "ctsync.port: cannot change while ctsync runs (running 3780, the file now says 3781)" in log
        assert "ctsync.key (or key_file)" in log and "ctsync.heartbeat_interval" in log and new_key not in log
        assert c[r].proc.alive() and c[r].status()["key_rotation"]
    fr = collect(flows, grace=10)["client"]["summary"]
    assert fr["flows"] >= 3000, fr
    table, conv_s = wait_converged(p.r1, c["r2"], 20, "replica after the reloads")
    s1, s2 = c["r1"].status(), c["r2"].status()
    print(f"{fr['flows']} flows; converged {conv_s:.1f}s after the churn: {len(table)} entries; "
          f"old-key datagrams accepted r1 {s1['channel']['old_key_rx']} r2 {s2['channel']['old_key_rx']}")
    assert len(table) >= 3000
    for s in (s1, s2):
        assert s["channel"]["auth_failures"] == 0 and s["channel"]["lost"] == 0, s["channel"]
    # r2 never had to ask for the table again (a gap, a peer it lost): the stream alone
    # carried everything (r1's periodic refresh pushes may come and go meanwhile)
    assert s2["counters"]["resyncs_requested"] == before["counters"]["resyncs_requested"], s2["counters"]
    assert s1["channel"]["old_key_rx"] + s2["channel"]["old_key_rx"] > 0  # the rotation overlapped live traffic
    wait_for(lambda: not c["r2"].status()["key_rotation"], timeout=10, what="the grace to end")
    # after the grace, both speak the new key alone, and replication goes on
    n = c["r2"].status()["counters"]["entries_rx"]
    collect(short_udp_flows(p, rate=100, count=100, duration=2, hold=0.2, sport_lo=61000, sport_hi=61999,
                            tag="after", port=9998), grace=10)
    c["r2"].wait(lambda s: s["counters"]["entries_rx"] >= n + 100, 10, "replication after the grace")
    assert c["r2"].status()["channel"]["auth_failures"] == 0
