"""Metrics over HTTP (hacommon.metrics_http) from a trio loop, scraped and parsed with
prometheus_client.parser; ctsync's collector over its status dict."""

from __future__ import annotations

import socket
from dataclasses import asdict

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ctsync.channel import ChannelStats
from ctsync.metrics import CHANNEL_COUNTERS, REPLICATOR_COUNTERS, ctsync_metrics, registry_for
from ctsync.replicator import Counters
from hacommon.metrics_http import MetricsServer


def ctsync_status(**kw) -> dict:
    s = {"role": "backup", "peer_alive": True, "in_sync": True, "ready": True, "vrrpd_connected": True,
         "demoting_vrrpd": 0, "unacked": 3, "internal_entries": 10, "external_entries": 12034,
         "counters": asdict(Counters(events_rx=50, overruns=1, resyncs_sent=2)),
         "channel": asdict(ChannelStats(datagrams_tx=7, datagrams_rx=9, retransmits=4, nacks_rx=2, auth_failures=5)),
         "commits": 1, "commit_errors": {"EEXIST": 2}, "nat_clashes": 0, "nat_verify_failures": 0, "aged_out": 0,
         "last_commit": {"count": 500, "committed": 499, "duration": 0.25, "time": 1700000000.0},
         "uplink_flush": {"deleted": 6}}
    s.update(kw)
    return s


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def one(fams, name, **labels):
    got = [s.value for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) == 1, (name, labels)
    return got[0]


def test_ctsync_collector_names_every_counter():
    from ctsync.metrics import render

    text = render(registry_for(ctsync_status))
    fams = families(text)
    assert one(fams, "ctsync_role", role="backup") == 1 and one(fams, "ctsync_role", role="master") == 0
    assert one(fams, "ctsync_cache_entries", cache="external") == 12034
    assert one(fams, "ctsync_datagrams", direction="rx") == 9
    assert one(fams, "ctsync_nacks", direction="rx") == 2
    assert one(fams, "ctsync_retransmits") == 4 and one(fams, "ctsync_auth_failures") == 5
    assert one(fams, "ctsync_event_overruns") == 1 and one(fams, "ctsync_kernel_events") == 50
    assert one(fams, "ctsync_resyncs", kind="sent") == 2
    assert one(fams, "ctsync_last_commit_duration_seconds") == 0.25 and one(fams, "ctsync_last_commit_entries") == 499
    assert one(fams, "ctsync_commit_errors", error="EEXIST") == 2
    assert one(fams, "ctsync_uplink_flushed_entries") == 6
    for _, (name, _) in {**CHANNEL_COUNTERS, **REPLICATOR_COUNTERS}.items():
        assert fams[name].type == "counter" and fams[name].documentation
    assert "process_resident_memory_bytes" in fams  # the daemon's own CPU and memory


def test_no_commit_yet_is_zero_not_missing():
    fams = families(_render(ctsync_status(last_commit=None)))
    assert one(fams, "ctsync_last_commit_timestamp_seconds") == 0


def _render(status: dict) -> str:
    reg = CollectorRegistry(auto_describe=False)

    class C:
        def collect(self):
            return ctsync_metrics(status)

    reg.register(C())
    from prometheus_client import generate_latest

    return generate_latest(reg).decode()


def http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:  # the server closed with our request unread (the oversized one)
            pass
    return out


def test_served_from_trio_and_scraped():
    results = {}

    async def main():
        reg = registry_for(ctsync_status)
        srv = MetricsServer(reg, ("127.0.0.1", 0), "ctsync")
        async with trio.open_nursery() as n:
            assert await srv.start(n)
            port = srv.address[1]
            for name, req in (("get", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                              ("om", b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"),
                              ("post", b"POST /metrics HTTP/1.1\r\n\r\n"),
                              ("404", b"GET /nope HTTP/1.1\r\n\r\n"),
                              ("junk", b"\x00\x01garbage\r\n\r\n"),
                              ("huge", b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 3000)):
                results[name] = await trio.to_thread.run_sync(http, port, req)
            srv.close()
            n.cancel_scope.cancel()

    trio.run(main)
    head, _, body = results["get"].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/plain; version=0.0.4" in head
    fams = families(body.decode())
    assert one(fams, "ctsync_cache_entries", cache="external") == 12034
    assert b"application/openmetrics-text" in results["om"].split(b"\r\n\r\n")[0] and results["om"].endswith(b"# EOF\n")
    assert results["post"].startswith(b"HTTP/1.1 405")
    assert results["404"].startswith(b"HTTP/1.1 404")
    assert results["junk"].startswith(b"HTTP/1.1 400")
    assert results["huge"] == b"" or results["huge"].startswith(b"HTTP/1.1 431")  # refused, never served


def test_port_in_use_is_logged_not_raised(caplog):
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            srv = MetricsServer(registry_for(ctsync_status), ("127.0.0.1", s.getsockname()[1]), "ctsync")
            async with trio.open_nursery() as n:
                assert await srv.start(n) is False

    trio.run(main)
    assert any("cannot listen" in r.message for r in caplog.records)


def test_grafana_dashboard_uses_only_metrics_that_exist():
    import json
    import re
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from vrrpd.metrics import VrrpdCollector
    from vrrpd.metrics import render as vrender
    from vrrpd.status import Counters, InstanceStatus, ProbeStatus, UplinksStatus, UplinkStatus

    inst = InstanceStatus("WAN", "eth0", 1, "master", 200, 200, "10.0.0.2", 1, 0.2, 3.2, None, [], "", "", since=1.0,
                          last_hold=0.1, counters=Counters())
    up = UplinksStatus(probes=[ProbeStatus("P", "icmp", "wan1", "gw", "t", 100, "up")],
                       uplinks=[UplinkStatus("ISP1", "wan1", "gw", "P", 100, 100, 1, True, True)])
    reg = CollectorRegistry(auto_describe=False)
    reg.register(VrrpdCollector(lambda: [inst], lambda: up))
    text = vrender(reg) + _render(ctsync_status()) + "process_resident_memory_bytes 1\nprocess_cpu_seconds_total 1\n"
    exposed = set(re.findall(r"^([a-z_]+)", text, re.M))
    dash = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-hapair.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = set()
    for e in exprs:
        used |= {m for m in re.findall(r"\b((?:vrrp|ctsync|process)_[a-z_]+)", e) if "__name__" not in e}
    assert used and used <= exposed, used - exposed
    for e in exprs:  # every alternative of a name regex matches a metric (10 receive-check counters)
        for alt in re.findall(r'__name__=~"([^"]+)"', e):
            assert sum(1 for n in exposed if re.fullmatch(alt, n)) == 10, alt
