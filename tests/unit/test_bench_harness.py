"""The benchmark's pure parts: conntrackd's config, notify script and stats parser,
the aggregation over runs, the Markdown rendering and the results section rewrite.
(The measuring parts run in tests/netns/test_bench_quick.py.)"""

from __future__ import annotations

import re
from types import SimpleNamespace

from bench.__main__ import _write_md, aggregate, failover_interval, summarize
from bench.report import MARK_BEGIN, MARK_END, cell, ratio, render_markdown
from halab.conntrackd import conntrackd_conf, keepalived_hapair_conf, notify_script, parse_stats

STATS = """cache internal:
current active connections:\t        1234
connections created:\t\t        1500\tfailed:\t           2
connections updated:\t\t           0\tfailed:\t           0
connections destroyed:\t\t         266\tfailed:\t           0

cache external:
current active connections:\t       99999
connections created:\t\t      100000\tfailed:\t           0
connections updated:\t\t           0\tfailed:\t           0
connections destroyed:\t\t           1\tfailed:\t           0

traffic processed:
                   0 Bytes                         0 Pckts

UDP traffic (active device=sync0):
                  96 Bytes sent                   96 Bytes recv
                   6 Pckts sent                    6 Pckts recv
                   3 Error send                    0 Error recv

message tracking:
                   0 Malformed msgs                    7 Lost msgs
"""

RUNTIME = """daemon uptime: 0 min

netlink stats:
\tevents received:\t                 512
\tevents filtered:\t                   0
\tnetlink overrun:\t\t           2
\tflush kernel table:\t\t           0
\tresync with kernel table:\t           1
\tcurrent buffer size (in bytes):\t     8388608
"""


def test_parse_stats_reads_both_caches_and_loss_counters():
    s = parse_stats(STATS)
    assert s["internal_entries"] == 1234 and s["external_entries"] == 99999
    assert s["internal_created"] == 1500 and s["internal_create_failed"] == 2
    assert s["external_created"] == 100000
    assert s["lost_msgs"] == 7 and s["malformed_msgs"] == 0 and s["send_errors"] == 3
    r = parse_stats(RUNTIME)
    assert r == {"events_received": 512, "netlink_overruns": 2, "netlink_resyncs": 1,
                 "netlink_buffer_bytes": 8388608}


def _host(name, tmp_path):
    return SimpleNamespace(name=name, lab=SimpleNamespace(workdir=str(tmp_path)))


def test_conntrackd_conf_is_ftfw_over_the_sync_link_with_per_lab_paths(tmp_path):
    conf = conntrackd_conf(_host("r2", tmp_path))
    assert "Mode FTFW" in conf
    assert "IPv4_address 172.16.0.2" in conf and "IPv4_Destination_Address 172.16.0.1" in conf
    assert "Interface sync0" in conf and "Checksum on" in conf
    assert f"LockFile {tmp_path}/conntrackd-r2.lock" in conf
    assert f"Path {tmp_path}/conntrackd-r2.ctl" in conf
    assert "NetlinkEventsReliable On" in conf and "HashLimit 524288" in conf
    # the routers' own addresses, the sync link and the VIPs are not replicated
    for a in ("10.10.0.2", "192.168.100.3", "172.16.0.1", "10.10.0.101", "192.168.100.1"):
        assert f"IPv4_address {a}\n" in conf
    assert conf.count("{") == conf.count("}")


def test_notify_script_runs_the_primary_backup_sequence_in_order():
    sh = notify_script("/usr/sbin/conntrackd", "/x/c.conf", "/x/c.ctl", "/x/c.lock", "/x/n.log")
    def steps(case):
        return re.findall(r"step (-\w)", sh.split(f"{case})")[1].split(";;")[0])
    assert steps("primary") == ["-c", "-f", "-R", "-B"]
    assert steps("backup") == ["-s", "-t", "-n"]
    assert steps("fault") == ["-t"]
    assert "-C /x/c.conf" in sh and "rm -f /x/c.lock" in sh


def test_keepalived_conf_has_the_pairs_instances_and_the_notify_group():
    conf = keepalived_hapair_conf(None, "r1", 200, "/x/n.sh")
    assert 'notify_master "/x/n.sh primary"' in conf and 'notify_backup "/x/n.sh backup"' in conf
    assert "virtual_router_id 1" in conf and "virtual_router_id 2" in conf
    assert "10.10.0.101/24" in conf and "192.168.100.1/24" in conf and "priority 200" in conf
    assert "vrrp_version" not in conf and "advert_int 1\n" in conf


def test_fast_and_ipv6_configs_of_the_reference_stack():
    """Figure 8's keepalived (VRRPv3 at 0.05 s, IPv6 VIPs with fe80::1 first, as vrrpd's) and
    conntrackd in inject mode (DisableExternalCache), ignoring the routers' IPv6 addresses."""
    from types import SimpleNamespace
    from halab.conntrackd import conntrackd_conf
    conf = keepalived_hapair_conf(SimpleNamespace(family=6), "r2", 100, "/x/n.sh", 0.05)
    assert "vrrp_version 3" in conf and conf.count("advert_int 0.05") == 2
    assert conf.index("fe80::1/64") < conf.index("2001:db8:10::101/64") and "fd00:100::1/64" in conf
    assert "vrrp_version 3" in keepalived_hapair_conf(SimpleNamespace(family=4), "r1", 200, "/x/n.sh", 0.05)
    host = SimpleNamespace(name="r1", lab=SimpleNamespace(workdir="/tmp/w"))
    inject, commit = conntrackd_conf(host, mode="inject"), conntrackd_conf(host)
    assert "DisableExternalCache On" in inject and "DisableExternalCache" not in commit
    assert "IPv6_address 2001:db8:10::101" in commit and "IPv6_address fd00:100::2" in commit


def test_fast_failover_table():
    from bench.report import fast_table
    run = {"failover": {"takeover_s": {"median": 0.182, "min": 0.181, "max": 0.183, "n": 2},
                        "takeover_excess_ms": {"median": 1.5, "min": 1, "max": 2, "n": 2},
                        "udp_gap_s": {"median": 0.2, "min": 0.2, "max": 0.2, "n": 2},
                        "kept_percent": {"median": 100, "min": 100, "max": 100, "n": 2}}}
    md = fast_table({"ours": {"ipv6-inject": run}, "theirs": {"ipv6-inject": run}})
    assert "| IPv6, inject | vrrpd + ctsync | 0.1820 (0.1810-0.1830) | +1.5 (+1.0-+2.0) |" in md
    assert "| | ours/theirs | 1.00 |" in md


def test_summaries_over_runs():
    assert summarize([3, 1, None, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3, "samples": [3, 1, 2]}
    assert summarize([True, False, True]) == {"true": 2, "n": 3}
    assert summarize([None]) is None
    agg = aggregate([{"a": 1.0, "f": {"kept": 10, "ok": True}}, {"a": 3.0, "f": {"kept": 8, "ok": False}}])
    assert agg["runs"] == 2 and agg["a"]["median"] == 2.0
    assert agg["f"]["kept"]["min"] == 8 and agg["f"]["ok"] == {"true": 1, "n": 2}
    assert cell(agg["a"], ".1f") == "2.0 (1.0-3.0)" and cell(None) == "n/a"
    assert ratio({"median": 1.0}, {"median": 4.0}) == "0.25"
    assert ratio({"median": 0}, {"median": 0}) == "=" and ratio(None, {"median": 1}) == "n/a"
    assert failover_interval(1) == 0.05 and failover_interval(1000) == 0.2


def test_results_section_is_replaced_between_the_markers(tmp_path):
    p = tmp_path / "b.md"
    p.write_text(f"# Title\nprose\n{MARK_BEGIN}\nold\n{MARK_END}\nmore prose\n")
    _write_md(str(p), "new table\n")
    assert p.read_text() == f"# Title\nprose\n{MARK_BEGIN}\nnew table\n{MARK_END}\nmore prose\n"


def test_render_markdown_of_a_partial_result():
    rep = {"n": {"median": 1000, "min": 1000, "max": 1000, "n": 1},
           "replicated": {"median": 1000, "min": 1000, "max": 1000, "n": 1},
           "rate": {"median": 5000.0, "min": 5000.0, "max": 5000.0, "n": 1},
           "commit_wall_s": {"median": 0.01, "min": 0.01, "max": 0.01, "n": 1},
           "commit_committed": {"median": 1000, "min": 1000, "max": 1000, "n": 1}}
    res = {"meta": {"quick": True, "machine": "shared"}, "replication": {"ours": {"1000": rep}, "theirs": {"1000": rep}},
           "errors": ["fig 2 ours: LabError: x"]}
    md = render_markdown(res)
    assert "### 4. Replication" in md and "| 1,000 | vrrpd + ctsync | n/a | 1,000 |" in md
    assert "| | ours/theirs | | | | n/a | 1.00 |" in md
    assert "### 5. Commit" in md and "100,000" in md  # entries/s of the commit
    assert "- fig 2 ours: LabError: x" in md


def test_a_rerun_replaces_its_figures_and_says_so():
    from bench.merge import merge

    base = {"meta": {"date": "d0", "machine": "shared"}, "figures": [1, 4, 5, 6, 7],
            "replication": {"ours": "old"}, "ha_idle": {"ours": "old"}, "idle": ["kept"], "errors": []}
    rerun = {"meta": {"date": "d1", "commit": "abc", "duration_s": 10, "machine": "idle"}, "figures": [4, 5, 6],
             "replication": {"ours": "new"}, "ha_idle": {"ours": "new"}, "errors": ["x"]}
    m = merge(base, rerun)
    assert m["replication"] == {"ours": "new"} and m["ha_idle"] == {"ours": "new"} and m["idle"] == ["kept"]
    assert m["meta"]["reruns"] == [{"figures": [4, 5, 6], "date": "d1", "commit": "abc", "duration_s": 10,
                                    "machine": "idle", "loadavg_start": None, "loadavg_end": None}]
    assert m["errors"] == ["rerun of figure(s) [4, 5, 6]: x"]
    m = merge(m, {"meta": {"date": "d2"}, "figures": [5]})  # the first rerun keeps 4 and 6
    assert [(r["date"], r["figures"]) for r in m["meta"]["reruns"]] == [("d1", [4, 6]), ("d2", [5])]
    m = merge(m, {"meta": {"date": "d3"}, "figures": [4, 5, 6, 7]})  # supersedes both
    assert [r["date"] for r in m["meta"]["reruns"]] == ["d3"]
    m = merge(base, rerun)
    md = render_markdown({"meta": m["meta"]})
    assert "Figure(s) 4, 5, 6 come from a separate run (d1, commit abc, 10 s, machine idle" in md
