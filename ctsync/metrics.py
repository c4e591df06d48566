"""ctsync's Prometheus metrics: a collector over the daemon's status (the dict
``ctsyncctl status --json`` prints), served at ``metrics_listen``.

Names: ``ctsync_`` then what is counted, ``_total`` for counters, base units
(``_seconds``), one gauge per role; directions and kinds are labels (``direction="tx"``),
as conntrack and node exporters do. docs/ctsync.md lists them; docs/grafana-hapair.json
draws them.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

#: Channel counters (ChannelStats) that are not split by direction: field -> (name, help).
CHANNEL_COUNTERS = {
    "retransmits": ("ctsync_retransmits", "Sync datagrams sent again (NACKed or timed out)"),
    "auth_failures": ("ctsync_auth_failures", "Sync datagrams whose HMAC did not verify"),
    "replayed": ("ctsync_replayed", "Sync datagrams refused by the replay window"),
    "malformed": ("ctsync_malformed", "Sync datagrams not ours or malformed (or from another source than the peer)"),
    "unconfirmed": ("ctsync_unconfirmed", "Authentic sync datagrams not echoing our current epoch"),
    "duplicates": ("ctsync_duplicates", "Reliable sync datagrams received twice"),
    "lost": ("ctsync_lost", "Reliable datagrams the peer could no longer resend (a resync repairs them)"),
    "resend_overflows": ("ctsync_resend_overflows", "Unacknowledged datagrams dropped from a full resend queue"),
    "window_full": ("ctsync_send_window_full", "Times sending waited for acks with messages queued"),
    "queue_overflows": ("ctsync_send_queue_overflows", "Send queue dropped (peer not taking anything): table pushed instead"),
    "old_key_rx": ("ctsync_old_key_datagrams", "Datagrams accepted with the previous key during a key rotation"),
    "epoch_renewals": ("ctsync_epoch_renewals", "New epochs taken because another incarnation of the peer echoed ours (it restarted)"),
    "reorder_refused": ("ctsync_reorder_refused", "Early datagrams not buffered (reorder buffer full): asked for again"),
}
#: Replicator counters: field -> (name, help).
REPLICATOR_COUNTERS = {
    "events_rx": ("ctsync_kernel_events", "Conntrack events read from the kernel"),
    "events_ignored_own": ("ctsync_kernel_events_own", "Conntrack events of our own commits and injections (not replicated)"),
    "events_filtered": ("ctsync_kernel_events_filtered", "Conntrack events left out by ignore_* filters"),
    "overruns": ("ctsync_event_overruns", "Conntrack event socket overruns (events lost; table pushed instead)"),
    "entries_rx": ("ctsync_entries_received", "Entries received from the peer"),
    "destroys_rx": ("ctsync_destroys_received", "Entry removals received from the peer"),
    "bad_entries": ("ctsync_bad_entries", "Entries that could not be encoded or decoded"),
    "entries_refused": ("ctsync_entries_refused", "Entries from the peer that were not exactly one commit-form CT_NEW "
                        "(dropped: they would have reached the kernel as they were)"),
    "stale_dropped": ("ctsync_stale_dropped", "Replica entries dropped by the end of a table push that lacked them"),
    "pushes_superseded": ("ctsync_pushes_superseded", "Table pushes abandoned for a newer one before their end"),
}
ROLES = ("master", "backup")


def ctsync_metrics(s: dict) -> Iterable[Metric]:
    role = GaugeMetricFamily("ctsync_role", "1 for ctsync's current role", labels=["role"])
    for r in ROLES:
        role.add_metric([r], int(s["role"] == r))
    yield role
    for name, doc, v in (
        ("ctsync_peer_alive", "1 while authenticated datagrams arrive from the peer", s["peer_alive"]),
        ("ctsync_in_sync", "1 once the peer's whole table has arrived (a bulk resync completed)", s["in_sync"]),
        ("ctsync_ready", "1 when a move to master would commit a complete replica", s["ready"]),
        ("ctsync_vrrpd_connected", "1 while following vrrpd's sync group on its control socket", s["vrrpd_connected"]),
        ("ctsync_demoting_vrrpd", "Priority weight vrrpd has been asked to subtract (not ready)", s["demoting_vrrpd"]),
        ("ctsync_unacked_datagrams", "Reliable datagrams sent and not yet acknowledged", s["unacked"]),
        ("ctsync_send_queue_messages", "Reliable messages waiting for the send window", s.get("send_queue", 0)),
        ("ctsync_key_rotation", "1 while the previous key is still accepted after a reload", s.get("key_rotation", False)),
    ):
        yield GaugeMetricFamily(name, doc, value=int(v))
    cache = GaugeMetricFamily("ctsync_cache_entries", "Entries in each cache: internal (our kernel's, replicated to the "
                              "peer) and external (the peer's, committed on becoming master)", labels=["cache"])
    cache.add_metric(["internal"], s["internal_entries"])
    cache.add_metric(["external"], s["external_entries"])
    yield cache
    c, ch = s["counters"], s["channel"]
    for field, (name, doc) in REPLICATOR_COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=c[field])
    resyncs = CounterMetricFamily("ctsync_resyncs", "Whole-table pushes: asked for, sent, received", labels=["kind"])
    for k in ("requested", "sent", "received"):
        resyncs.add_metric([k], c[f"resyncs_{k}"])
    yield resyncs
    for what, doc in (("datagrams", "Sync datagrams"), ("messages", "Sync messages"), ("nacks", "NACKs (repair requests)")):
        m = CounterMetricFamily(f"ctsync_{what}", f"{doc} sent and received", labels=["direction"])
        for d in ("tx", "rx"):
            m.add_metric([d], ch[f"{what}_{d}"])
        yield m
    for field, (name, doc) in CHANNEL_COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=ch.get(field, 0))
    yield CounterMetricFamily("ctsync_commits", "Commits of the external cache into the kernel", value=s["commits"])
    yield CounterMetricFamily("ctsync_commit_timeouts", "Commits not done within commit_timeout (their callers stopped "
                              "waiting)", value=s.get("commit_timeouts", 0))
    errs = CounterMetricFamily("ctsync_commit_errors", "Entries the kernel refused in commits and injections, by error",
                               labels=["error"])
    for k, v in sorted(s["commit_errors"].items()):
        errs.add_metric([k], v)
    yield errs
    yield CounterMetricFamily("ctsync_nat_clashes", "Replicated entries whose public address and port a local entry "
                              "already held", value=s["nat_clashes"])
    yield CounterMetricFamily("ctsync_nat_verify_failures", "Committed entries found without their NAT bits",
                              value=s["nat_verify_failures"])
    yield CounterMetricFamily("ctsync_aged_out", "Our kernel entries shortened on becoming backup", value=s["aged_out"])
    lc = s.get("last_commit") or {}
    yield GaugeMetricFamily("ctsync_last_commit_duration_seconds", "Duration of the last commit",
                            value=lc.get("duration", 0.0))
    yield GaugeMetricFamily("ctsync_last_commit_entries", "Entries written by the last commit",
                            value=lc.get("committed", lc.get("count", 0)))
    yield GaugeMetricFamily("ctsync_last_commit_timestamp_seconds", "Wall-clock time of the last commit (0: none yet)",
                            value=lc.get("time", 0.0))
    uf = s.get("uplink_flush") or {}
    yield CounterMetricFamily("ctsync_uplink_flushed_entries", "Conntrack entries deleted by flush-uplink",
                              value=uf.get("deleted", 0))
    yield CounterMetricFamily("ctsync_preparations", "Commits while backup before a preemption (make-before-break)",
                              value=c.get("preparations", 0))
    yield from _parking_metrics(s.get("parking") or {})


def _parking_metrics(p: dict) -> Iterable[Metric]:
    """Parking (docs/ctsync.md, "Parking"): packets that waited for a takeover's commit."""
    if not p.get("enabled"):
        return
    yield GaugeMetricFamily("ctsync_parking_armed", "1 while parking's rules are armed (backup, or a takeover running)",
                            value=int(bool(p.get("armed"))))
    yield GaugeMetricFamily("ctsync_parked_packets_now", "Packets waiting for a commit now", value=p.get("parked_now", 0))
    outcomes = CounterMetricFamily("ctsync_parked_packets", "Packets that waited for a takeover's commit, by how they "
                                   "left: released after the commit, released on timeout (max_hold)",
                                   labels=["outcome"])
    outcomes.add_metric(["released_after_commit"], p.get("released_after_commit", 0))
    outcomes.add_metric(["released_on_timeout"], p.get("released_on_timeout", 0))
    yield outcomes
    yield CounterMetricFamily("ctsync_parking_dropped_over_bound", "Packets dropped because max_packets or max_bytes "
                              "were waiting already", value=p.get("dropped_over_bound", 0))
    yield GaugeMetricFamily("ctsync_parking_longest_wait_seconds", "Longest a packet has waited for a commit",
                            value=p.get("longest_wait", 0.0))


class CtsyncCollector:
    def __init__(self, status: Callable[[], dict]):
        self.status = status

    def collect(self) -> Iterable[Metric]:
        yield from ctsync_metrics(self.status())


def registry_for(status: Callable[[], dict]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CtsyncCollector(status))
    ProcessCollector(registry=reg)
    return reg


def render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
