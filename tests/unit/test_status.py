"""vrrpd.status: the status schema, its JSON round trip, text and Prometheus renderings."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vrrpd.machine import RouterParams, VirtualRouter
from vrrpd.status import COUNTER_NAMES, Counters, InstanceStatus, render_text


def sample(**kw) -> InstanceStatus:
    counters = Counters(**{name: i + 1 for i, name in enumerate(COUNTER_NAMES)})
    values = dict(
        name="WAN",
        interface="eth0",
        vrid=51,
        state="master",
        priority=150,
        effective_priority=90,
        master_ip="10.0.0.2",
        advert_interval=1,
        skew_time=0.6484375,
        master_down_interval=3.6484375,
        vmac="00:00:5e:00:01:33",
        virtual_addresses=["203.0.113.1/24", "203.0.113.2/24"],
        last_event="backup -> master: no advert",
        master_reason="no master heard",
        sync_group="MAIN",
        preempt=False,
        primary_ip="10.0.0.2",
        fault_reasons=["a", "b"],
        since=1700000000.5,
        counters=counters,
    )
    values.update(kw)
    return InstanceStatus(**values)


def test_counters_bump():
    c = Counters()
    c.bump("ttl_errors")
    c.bump("adverts_rx", 5)
    assert (c.ttl_errors, c.adverts_rx) == (1, 5)
    with pytest.raises(AttributeError):
        c.bump("no_such_counter")


def test_counter_names_order_and_content():
    assert COUNTER_NAMES[:3] == ("adverts_rx", "adverts_tx", "became_master")
    checks = [n for n in COUNTER_NAMES if n.endswith(("errors", "failures", "discards"))]
    assert checks == [
        "ttl_errors", "version_errors", "length_errors", "checksum_errors", "type_errors", "vrid_errors",
        "owner_discards", "auth_type_errors", "auth_failures", "address_list_errors", "interval_errors",
        "send_errors",
    ]


def test_round_trip_through_json():
    st = sample()
    d = st.to_dict()
    assert d["counters"]["adverts_rx"] == 1
    assert d["counters"][COUNTER_NAMES[-1]] == len(COUNTER_NAMES)
    back = InstanceStatus.from_dict(json.loads(json.dumps(d)))
    assert back == st
    assert isinstance(back.counters, Counters)


def test_from_dict_ignores_unknown_fields_and_counters():
    d = sample().to_dict()
    d["added_in_a_later_version"] = 1
    d["counters"]["future_counter"] = 7
    back = InstanceStatus.from_dict(d)
    assert back == sample()


def test_from_dict_minimal():
    d = sample().to_dict()
    for k in ("sync_group", "preempt", "primary_ip", "fault_reasons", "since", "counters"):
        del d[k]
    back = InstanceStatus.from_dict(d)
    assert back.counters == Counters()
    assert back.preempt is True and back.sync_group is None and back.fault_reasons == []


def test_render_text():
    text = render_text([sample()])
    lines = text.splitlines()
    assert lines[0] == "WAN: MASTER  vrid 51 on eth0  sync group MAIN"
    assert "  priority        90 (configured 150)   preempt off" in lines
    assert "  master          10.0.0.2  (no master heard)" in lines
    assert "  timers          advert 1s  skew 0.648s  master-down 3.648s" in lines
    assert "  vmac            00:00:5e:00:01:33" in lines
    assert "  addresses       203.0.113.1/24, 203.0.113.2/24" in lines
    assert "  fault           a; b" in lines
    assert "  adverts         rx 1  tx 2  prio0 rx 5 tx 6  garp tx 7" in lines
    assert "  transitions     became master 3  released 4" in lines
    dropped = next(line for line in lines if line.startswith("  dropped"))
    c = sample().counters
    for name in COUNTER_NAMES:
        if name.endswith(("errors", "failures", "discards")):
            assert f"{name} {getattr(c, name)}" in dropped


def test_render_text_quiet_instance():
    st = sample(counters=Counters(), fault_reasons=[], vmac=None, effective_priority=150, sync_group=None, master_ip=None)
    lines = render_text([st]).splitlines()
    assert lines[0] == "WAN: MASTER  vrid 51 on eth0"
    assert "  priority        150   preempt off" in lines
    assert "  master          -  (no master heard)" in lines
    assert "  vmac            - (addresses on the parent)" in lines
    assert not any(line.startswith("  fault") for line in lines)
    assert "  dropped         none 0" in lines
    assert not any(line.startswith("  dropped") for line in render_text([st], verbose=False).splitlines())


def test_render_text_demotions():
    st = sample(effective_priority=50, priority=200, demotions=["-150 ctsync: ctsync not ready: no complete table from the peer yet"])
    lines = render_text([st]).splitlines()
    i = lines.index("  priority        50 (configured 200)   preempt off")
    assert lines[i + 1] == "  demoted         -150 ctsync: ctsync not ready: no complete table from the peer yet"
    assert not any(line.startswith("  demoted") for line in render_text([sample()]).splitlines())
    assert InstanceStatus.from_dict(json.loads(json.dumps(st.to_dict()))) == st


def test_render_text_several_instances():
    text = render_text([sample(), sample(name="LAN", vrid=52, state="backup")])
    assert "WAN: MASTER" in text and "LAN: BACKUP  vrid 52" in text


def test_metrics_from_the_status_schema():
    """vrrpd/metrics.py's collector, rendered by prometheus_client and read back with
    its parser: every counter under its RFC 8347-style name, the state as one gauge per
    state, HELP and TYPE for each."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    from vrrpd.metrics import COUNTER_METRICS, VrrpdCollector, render

    st = sample(counters=Counters(adverts_rx=12, checksum_errors=3, owner_discards=1, became_master=2))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(VrrpdCollector(lambda: [st, sample(name="LAN", vrid=52, state="fault", counters=Counters())], lambda: None))
    text = render(reg)
    assert "# HELP vrrp_advertisement_rcvd_total" in text and "# TYPE vrrp_advertisement_rcvd_total counter" in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def value(metric, **labels):
        fam = fams[metric]
        got = [s.value for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(got) == 1, (metric, labels, fam.samples)
        return got[0]

    assert value("vrrp_state", name="WAN", vrid="51", state="master") == 1
    assert value("vrrp_state", name="WAN", state="backup") == 0
    assert value("vrrp_state", name="LAN", vrid="52", state="fault") == 1
    assert value("vrrp_effective_priority", name="WAN") == 90
    assert value("vrrp_advertisement_rcvd", name="WAN") == 12  # the parser's family name drops _total
    assert value("vrrp_checksum_errors", name="WAN") == 3
    assert value("vrrp_owner_discards", name="WAN") == 1
    assert value("vrrp_master_transitions", name="WAN") == 2
    assert value("vrrp_advertisement_rcvd", name="LAN", interface="eth0") == 0
    for field, (metric, _) in COUNTER_METRICS.items():
        assert fams[metric].type == "counter" and len(fams[metric].samples) == 2, metric
    assert set(COUNTER_METRICS) == set(COUNTER_NAMES)


def test_machine_counters_are_the_status_counters():
    vr = VirtualRouter(RouterParams(name="x", vrid=1, priority=100, virtual_addresses=()))
    assert isinstance(vr.counters, Counters)
    assert [f.name for f in dataclasses.fields(vr.counters)] == list(COUNTER_NAMES)


def test_render_text_v3_learned_interval():
    st = sample(version=3, advert_interval=0.05, master_adver_interval=0.5, state="backup")
    lines = render_text([st]).splitlines()
    assert lines[0] == "WAN: BACKUP  vrid 51 on eth0  sync group MAIN  VRRPv3"
    assert "  timers          advert 0.05s (master's 0.5s)  skew 0.648s  master-down 3.648s" in lines
    same = render_text([sample(version=3, advert_interval=0.05, master_adver_interval=0.05)]).splitlines()
    assert "  timers          advert 0.05s  skew 0.648s  master-down 3.648s" in same
    assert InstanceStatus.from_dict(json.loads(json.dumps(st.to_dict()))) == st


def test_vrrpctl_renders_the_json_as_the_daemon_would_its_objects():
    """vrrpctl renders the status JSON it receives without the schema's dataclasses
    (start-up); the text must be the same as from the objects."""
    from vrrpd.status_text import from_json

    sts = [sample(), sample(name="LAN", vrid=52, state="fault", counters=Counters(auth_failures=4), fault_reasons=["x"])]
    wire = json.loads(json.dumps([s.to_dict() for s in sts]))
    assert render_text(from_json(wire)) == render_text(sts)


def test_cli_default_sockets_are_the_shared_ones():
    from ctsync import cli as ccli
    from hacommon import paths
    from vrrpd import cli as vcli

    assert vcli.DEFAULT_CONTROL_SOCKET == paths.VRRPD_CONTROL_SOCKET
    assert ccli.DEFAULT_CONTROL_SOCKET == paths.CTSYNC_CONTROL_SOCKET
