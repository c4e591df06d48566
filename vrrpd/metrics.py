"""vrrpd's Prometheus metrics: collectors over the one status schema (vrrpd/status.py),
for prometheus_client. The same registry answers ``vrrpctl metrics`` (the control
socket) and ``GET /metrics`` (``metrics_listen``), so the two cannot disagree.

Names follow RFC 8347's VRRP statistics (ietf-vrrp YANG: ``master-transitions`` ->
``vrrp_master_transitions_total``, ``advertisement-rcvd``, ``priority-zero-pkts-sent``,
``invalid-type-pkts-rcvd``, ``packet-length-errors``, ``ip-ttl-errors``, ...), RFC 2787's
MIB for the authentication counters VRRPv3 dropped, and the Prometheus conventions
(``_total`` counters, base units, one gauge per state). The virtual router is labelled
``name`` (not ``instance``, which Prometheus sets to the scraped target), ``interface``
and ``vrid``. docs/vrrpd.md lists them; docs/grafana-hapair.json draws them.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from .status import COUNTER_NAMES, InstanceStatus, UplinksStatus

#: Counters (vrrpd.status.Counters) -> metric name without _total, and its help.
COUNTER_METRICS: dict[str, tuple[str, str]] = {
    "adverts_rx": ("vrrp_advertisement_rcvd", "Advertisements received (RFC 8347 advertisement-rcvd)"),
    "adverts_tx": ("vrrp_advertisement_sent", "Advertisements sent (RFC 8347 advertisement-sent)"),
    "became_master": ("vrrp_master_transitions", "Transitions to master (RFC 8347 master-transitions)"),
    "released_master": ("vrrp_master_releases", "Transitions from master to backup or fault"),
    "prio0_rx": ("vrrp_priority_zero_pkts_rcvd", "Advertisements with priority 0 received (RFC 8347)"),
    "prio0_tx": ("vrrp_priority_zero_pkts_sent", "Advertisements with priority 0 sent (RFC 8347)"),
    "garp_tx": ("vrrp_gratuitous_arps_sent", "Gratuitous ARPs sent for the virtual addresses"),
    "ttl_errors": ("vrrp_ip_ttl_errors", "Adverts dropped: IP TTL not 255 (RFC 8347 ip-ttl-errors)"),
    "version_errors": ("vrrp_version_errors", "Adverts dropped: not VRRPv2 (RFC 8347 version-errors)"),
    "length_errors": ("vrrp_packet_length_errors", "Adverts dropped: too short (RFC 8347 packet-length-errors)"),
    "checksum_errors": ("vrrp_checksum_errors", "Adverts dropped: bad checksum (RFC 8347 checksum-errors)"),
    "type_errors": ("vrrp_invalid_type_pkts_rcvd", "Packets dropped: not an advertisement (RFC 8347 invalid-type-pkts-rcvd)"),
    "vrid_errors": ("vrrp_vrid_errors", "Adverts for a VRID not configured on this interface (RFC 8347 vrid-errors)"),
    "owner_discards": ("vrrp_owner_discards", "Adverts an address owner (priority 255) ignores"),
    "auth_type_errors": ("vrrp_auth_type_mismatch", "Adverts dropped: another auth type (RFC 2787 vrrpStatsAuthTypeMismatch)"),
    "auth_failures": ("vrrp_auth_failures", "Adverts dropped: wrong password (RFC 2787 vrrpStatsAuthFailures)"),
    "address_list_errors": ("vrrp_address_list_errors", "Adverts whose address list differs (RFC 8347 address-list-errors)"),
    "interval_errors": ("vrrp_interval_errors", "Adverts with another advert interval (RFC 8347 interval-errors)"),
    "send_errors": ("vrrp_send_errors", "Adverts or ARPs the kernel refused to send"),
    "hold_timeouts": ("vrrp_hold_timeouts", "Moves to master whose holding subscribers (ctsync) did not confirm in time"),
    "own_address_adverts": ("vrrp_own_address_adverts", "Adverts with our own address as source (looped back, or spoofed)"),
    "prio0_ignored": ("vrrp_priority_zero_ignored", "Priority-0 adverts from a router that is not the master we know"),
    "prio0_answers_limited": ("vrrp_priority_zero_answers_limited",
                              "Priority-0 adverts a master did not answer again within one advert interval"),
}
assert set(COUNTER_METRICS) == set(COUNTER_NAMES), "every counter of vrrpd.status.Counters needs its metric"

STATES = ("initialize", "backup", "master", "fault")
_LABELS = ["name", "interface", "vrid"]


def instance_metrics(instances: list[InstanceStatus]) -> Iterable[Metric]:
    def labels(st: InstanceStatus) -> list[str]:
        return [st.name, st.interface, str(st.vrid)]

    state = GaugeMetricFamily("vrrp_state", "1 for the virtual router's current state (initialize, backup, master, fault)",
                              labels=[*_LABELS, "state"])
    prio = GaugeMetricFamily("vrrp_priority", "Configured priority", labels=_LABELS)
    eff = GaugeMetricFamily("vrrp_effective_priority", "Advertised priority, after tracking weights and demotions",
                            labels=_LABELS)
    since = GaugeMetricFamily("vrrp_last_transition_timestamp_seconds", "Wall-clock time of the last transition",
                              labels=_LABELS)
    hold = GaugeMetricFamily("vrrp_last_hold_seconds", "How long the last move to master waited for holding subscribers",
                             labels=_LABELS)
    for st in instances:
        for s in STATES:
            state.add_metric([*labels(st), s], int(st.state == s))
        prio.add_metric(labels(st), st.priority)
        eff.add_metric(labels(st), st.effective_priority)
        if st.since is not None:
            since.add_metric(labels(st), st.since)
        if st.last_hold is not None:
            hold.add_metric(labels(st), st.last_hold)
    yield from (state, prio, eff, since, hold)
    for field, (name, doc) in COUNTER_METRICS.items():
        c = CounterMetricFamily(name, doc, labels=_LABELS)
        for st in instances:
            c.add_metric(labels(st), getattr(st.counters, field))
        yield c


def uplink_metrics(st: UplinksStatus) -> Iterable[Metric]:
    up = GaugeMetricFamily("vrrp_probe_up", "1 while the probe is up", labels=["probe", "interface"])
    for p in st.probes:
        up.add_metric([p.name, p.interface], int(p.state == "up"))
    yield up
    for field, doc in (("results", "Probe results"), ("failures", "Failed probe results"),
                       ("transitions", "Probe up/down transitions")):
        c = CounterMetricFamily(f"vrrp_probe_{field}", doc, labels=["probe"])
        for p in st.probes:
            c.add_metric([p.name], getattr(p, field))
        yield c
    if st.uplinks:
        active = GaugeMetricFamily("vrrp_uplink_active", "1 for the uplink the default route uses", labels=["uplink"])
        healthy = GaugeMetricFamily("vrrp_uplink_healthy", "1 while the uplink's probe is up", labels=["uplink"])
        flushed = CounterMetricFamily("vrrp_uplink_flushed_entries", "Conntrack entries flushed for the dead uplink",
                                      labels=["uplink"])
        for u in st.uplinks:
            active.add_metric([u.name], int(u.active))
            healthy.add_metric([u.name], int(bool(u.healthy)))
            flushed.add_metric([u.name], u.flushed_entries)
        yield from (active, healthy, flushed)
        yield CounterMetricFamily("vrrp_uplink_switches", "Changes of the active uplink", value=st.switches)


class VrrpdCollector:
    """Reads the running daemon's status at each scrape."""

    def __init__(self, instances: Callable[[], list[InstanceStatus]], uplinks: Callable[[], UplinksStatus | None]):
        self.instances = instances
        self.uplinks = uplinks

    def collect(self) -> Iterable[Metric]:
        yield from instance_metrics(self.instances())
        up = self.uplinks()
        if up is not None:
            yield from uplink_metrics(up)


def registry_for(daemon) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(VrrpdCollector(daemon.status, lambda: daemon.uplinkd.status() if daemon.uplinkd is not None else None))
    ProcessCollector(registry=reg)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    return reg


def render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
