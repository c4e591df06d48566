"""Figure 10's pure parts (bench/churn_results.py): which flow an entry is, creation and arrival
times, the replication lag with flows that had not arrived, age buckets, the target and
the table.  (The measuring part runs in tests/netns/test_bench_quick.py.)"""

from __future__ import annotations

import ipaddress

import pytest

from bench.churn_results import (BUCKETS, age_buckets, arrival_times, bucket_of, churn_tables, creation_times,
                         flow_index, lag_stats, percentile, target_check)
from bench.replication import lan_udp_flows
from bench.report import render_markdown
from ctnetlink.constants import AF_INET
from ctnetlink.key import key_of
from ctnetlink.model import Tuple
from halab.hapair import SERVER_IP


def test_flow_index_inverts_lan_udp_flows_across_source_and_server_port_changes():
    for first in (0, 49_998, 149_999, 239_990):
        for k, e in enumerate(lan_udp_flows(4, first=first)):
            assert flow_index(key_of(e.orig)) == first + k
    # the list and its extension are the same flows
    assert lan_udp_flows(3, first=50_000) == lan_udp_flows(50_003)[50_000:]


@pytest.mark.parametrize("t", [
    Tuple(AF_INET, 6, ipaddress.ip_address("192.168.100.20"), ipaddress.ip_address(SERVER_IP), 10000, 5300),  # TCP
    Tuple(AF_INET, 17, ipaddress.ip_address("192.168.100.20"), ipaddress.ip_address("10.10.0.9"), 10000, 5300),
    Tuple(AF_INET, 17, ipaddress.ip_address("192.168.100.20"), ipaddress.ip_address(SERVER_IP), 10000, 5301),
    Tuple(AF_INET, 17, ipaddress.ip_address("192.168.100.10"), ipaddress.ip_address(SERVER_IP), 10000, 5300),
    Tuple(AF_INET, 17, ipaddress.ip_address("192.168.100.20"), ipaddress.ip_address(SERVER_IP), 9999, 5300),
    Tuple(10, 17, ipaddress.ip_address("fd00:100::10"), ipaddress.ip_address("2001:db8:10::200"), 10000, 5300),
])
def test_flow_index_is_none_for_any_other_entry(t):
    assert flow_index(key_of(t)) is None


def test_creation_times_per_flow_from_batches_without_refused_ones():
    assert creation_times([(0, 2, 1.0), (2, 3, 1.5)], failed=[3]) == [1.0, 1.0, 1.5, None, 1.5]
    assert creation_times([]) == []


def test_arrival_is_the_first_sample_whose_count_exceeds_the_index():
    samples = [(0.00, 0), (0.02, 2), (0.04, 2), (0.06, 1), (0.08, 5), (0.10, 9)]
    # a count that goes down (it cannot, but) does not move arrivals back; counts beyond n are clipped
    assert arrival_times(samples, 6) == [0.02, 0.02, 0.08, 0.08, 0.08, 0.10]
    assert arrival_times([(0.02, 1)], 3) == [0.02, None, None]


def test_percentile_nearest_rank_and_censored_values_on_top():
    vals = [float(i) for i in range(1, 101)]
    assert percentile(vals, 0, 0.5) == 50.0 and percentile(vals, 0, 0.99) == 99.0
    assert percentile(vals, 0, 1.0) == 100.0
    # 2 of 102 censored: p99 (rank 101) falls on one of them
    assert percentile(vals, 2, 0.99) is None and percentile(vals, 2, 0.5) == 51.0
    assert percentile([], 0, 0.5) is None and percentile([], 3, 0.5) is None


def test_lag_stats_only_judges_flows_old_enough_and_counts_the_missing():
    created = [0.0, 0.1, 0.2, None, 0.9]
    arrivals = [0.05, 0.3, None, None, None]
    s = lag_stats(created, arrivals, until=0.5, last_sample=1.0)
    # flow 4 is younger than the horizon, flow 3 was never created
    assert s["flows"] == 3 and s["censored"] == 1
    assert s["p50_s"] == pytest.approx(0.2) and s["p99_s"] is None and s["max_s"] is None
    assert s["censored_over_s"] == pytest.approx(0.8)
    # a lower bound before the creation is a lag of 0
    assert lag_stats([0.5], [0.4], until=1.0)["p50_s"] == 0.0
    full = lag_stats([0.0, 0.1], [0.01, 0.13], until=1.0)
    assert full["p99_s"] == pytest.approx(0.03) and full["max_s"] == pytest.approx(0.03) and full["censored"] == 0


def test_bucket_boundaries():
    assert [bucket_of(a) for a in (5.0, 1.0, 0.999, 0.1, 0.0999, 0.01, 0.0099, 0.0)] == [
        "gt_1s", "gt_1s", "100ms_1s", "100ms_1s", "10_100ms", "10_100ms", "lt_10ms", "lt_10ms"]


def test_age_buckets_count_created_and_survived_by_age_at_the_failure():
    t_fail = 10.0
    created = [8.0, 8.5, 9.5, 9.95, 9.995, None, 9.999]
    b = age_buckets(created, survivors={0, 2, 4, 5}, t_fail=t_fail)
    assert b == {"gt_1s": {"created": 2, "survived": 1}, "100ms_1s": {"created": 1, "survived": 1},
                 "10_100ms": {"created": 1, "survived": 0}, "lt_10ms": {"created": 2, "survived": 1}}
    assert set(b) == {k for k, _l, _a in BUCKETS}


def _run(old=(10, 10), young=(5, 5), rate=1000):
    (os_, oc), (ys, yc) = old, young
    return {"rate": rate, "buckets": {"gt_1s": {"created": oc, "survived": os_}, "100ms_1s": {"created": 0, "survived": 0},
                                      "10_100ms": {"created": yc, "survived": ys}, "lt_10ms": {"created": 0, "survived": 0}},
            "generator_rate": 1000.0, "churn_s": 2.5, "fail_reason": "random", "created": oc + yc,
            "replicated_at_failure": oc + yc, "lag": {"p50_s": 0.004, "p99_s": None, "censored": 3, "censored_over_s": 0.47},
            "lag_lower": {"p50_s": 0.001, "p99_s": None, "censored": 3, "censored_over_s": 0.45},
            "takeover_s": 3.4, "commit": {"reported_s": 0.01},
            "cpu_percent": {"sync_master": 10.0, "sync_backup": 4.0, "vrrp_master": 0.0, "vrrp_backup": 0.0},
            "sched_cpu_percent": {"sync_master": 12.0, "sync_backup": 4.0, "vrrp_master": 0.1, "vrrp_backup": 0.2},
            "poll_cost": {"quiet_percent": 0.1, "polled_percent": 2.6, "polls": 50, "per_poll_ms": 0.5},
            "poll_interval_s": 0.02, "poll_rtt_s": {"median": 0.001, "max": 0.004}, "batch_s_max": 0.002}


def test_target_met_fails_on_old_losses_and_compares_young_shares_at_the_highest_rate():
    both = {"ours": {"1000": [_run()], "max": [_run(young=(80, 100))]},
            "theirs": {"1000": [_run()], "max": [_run(young=(40, 50))]}}
    t = target_check(both)
    assert t["top_rate"] == "max" and t["part1"] and t["part2"] and t["reached"]
    assert t["young"]["ours"] == {"survived": 80, "created": 100, "share": 0.8}
    # ctsync loses an old flow where conntrackd kept them all
    lost = {"ours": {**both["ours"], "1000": [_run(), _run(old=(9, 10))]}, "theirs": both["theirs"]}
    assert not target_check(lost)["part1"] and not target_check(lost)["reached"]
    # where conntrackd lost old flows itself, that rate asks nothing of ctsync
    excused = {"ours": {"1000": [_run(old=(9, 10))]}, "theirs": {"1000": [_run(old=(8, 10))]}}
    assert target_check(excused)["part1"]
    # a smaller share of the young ones at the highest rate
    fewer = {"ours": {"max": [_run(young=(70, 100))]}, "theirs": {"max": [_run(young=(40, 50))]}}
    assert target_check(fewer)["part2"] is False and not target_check(fewer)["reached"]
    # numeric rates order as numbers; no young flows: part 2 undecided
    none = {"ours": {"30000": [_run(young=(0, 0))], "10000": [_run()]},
            "theirs": {"30000": [_run(young=(0, 0))], "10000": [_run()]}}
    t = target_check(none)
    assert t["top_rate"] == "30000" and t["part2"] is None and not t["reached"]
    assert target_check({"ours": {"1000": [_run()]}, "theirs": {}}) is None


def test_churn_tables_and_the_report_section():
    churn = {"ours": {"1000": [_run()], "max": []}, "theirs": {"1000": [_run(young=(4, 5))]}}
    text = churn_tables(churn)
    assert "**vrrpd + ctsync**" in text and "**keepalived + conntrackd**" in text
    assert ("| 1000 | 1 | 1,000 | 2.50 | 15 | 10/10 | 0/0 | 5/5 | 0/0 | 15 | 1-4 / > 470 | 3.40 | 0.010 "
            "| 12 / 4 | 0.1 / 0.2 |") in text
    assert "| max | run failed |" in text
    assert "The polls cost the backup's ctsync about 2.5 % of a core (0.50 ms a poll" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len({ln.count("|") for ln in rows}) == 1, "every row has the header's columns"
    assert "Target:" in text and "**met**" in text
    md = render_markdown({"meta": {"churn_window_s": [2.0, 4.0]}, "churn": churn})
    assert "### 10. Failover under sustained churn" in md and "2-4 s after the start" in md
