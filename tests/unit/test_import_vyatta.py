"""hapair-import vyatta: `set` commands and config.boot, VyOS high-availability vrrp
and service conntrack-sync (the sample is written from VyOS's documentation), and
Vyatta's older interfaces ... vrrp vrrp-group."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair_import import cli, vyatta
from hapair_import.box import InputError
from hapair_import.tomlout import render

from .import_helpers import SAMPLES, check_with_daemons, findings_point_into_files, parse_with_project, round_trip, write_key


def conv_of(tmp_path, text, **kw):
    p = tmp_path / "config"
    p.write_text(textwrap.dedent(text))
    return vyatta.convert(str(p), **kw)


def whys(findings) -> str:
    return "\n".join(f"{f.where()}: {f.what}: {f.why}" for f in findings)


def test_golden_vyos_commands(monkeypatch):
    monkeypatch.chdir(SAMPLES)
    conv = vyatta.convert("vyos-r1.commands")
    assert render(conv) == (SAMPLES / "vyos-r1.expected.toml").read_text()
    assert conv.check_problems == []
    findings_point_into_files(conv)


def test_golden_facts(monkeypatch):
    monkeypatch.chdir(SAMPLES)
    conv = vyatta.convert("vyos-r1.commands")
    v, c = conv.data["vrrpd"], conv.data["ctsync"]
    wan, lan = v["instance"]["WAN"], v["instance"]["LAN"]
    assert (wan["interface"], wan["vrid"], wan["priority"], wan["virtual_addresses"]) == ("eth0", 1, 200, ["10.10.0.101/24"])
    assert wan["use_vmac"] is True and wan["auth"] == {"type": "pass", "password": "s3cret"}
    assert wan["track_interfaces"] == ["eth1"] and wan["garp_count"] == 3
    assert lan["preempt_delay"] == 180
    assert v["sync_group"]["MAIN"]["instances"] == ["WAN", "LAN"]
    assert (c["sync_interface"], c["local_address"], c["peer_address"]) == ("eth2", "172.16.0.1", "172.16.0.2")
    assert c["failover"] == {"vrrp_sync_group": "MAIN"} and c["mode"] == "commit"
    assert c["ignore_addresses"] == ["172.16.0.0/30"]  # the VIP is left out (noted)
    assert "tcp" not in c["ignore_protocols"] and "udp" not in c["ignore_protocols"] and "gre" in c["ignore_protocols"]
    d = whys(conv.dropped)
    assert "excluded-address" in d and "health-check" in d and "sync-queue-size" in d


def test_notify_wrapper_runs_the_transition_scripts(monkeypatch, tmp_path):
    monkeypatch.chdir(SAMPLES)
    cmd = vyatta.convert("vyos-r1.commands").data["vrrpd"]["instance"]["WAN"]["notify"]
    assert cmd[:2] == ["/bin/sh", "-c"]
    script = cmd[2].replace("/config/scripts/vrrp-master.sh", "echo master-script").replace(
        "/config/scripts/vrrp-fail.sh", "echo fail-script")
    out = subprocess.run([*cmd[:2], script, cmd[3], "WAN", "MAIN", "backup"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    assert out == "fail-script WAN\n"


def test_config_boot_is_the_same_configuration(monkeypatch):
    monkeypatch.chdir(SAMPLES)
    assert vyatta.convert("vyos-r1.config.boot").data == vyatta.convert("vyos-r1.commands").data


def test_converted_file_passes_the_daemons_checks(monkeypatch, tmp_path):
    monkeypatch.chdir(SAMPLES)
    key = write_key(tmp_path / "k")
    out = tmp_path / "box.toml"
    assert cli.main(["vyatta", "vyos-r1.config.boot", "--key-file", str(key), "-o", str(out)]) == 0
    check_with_daemons(out, ("vrrpd", "ctsync"))


def test_edit_mode_and_multicast_sync(tmp_path):
    conv = conv_of(tmp_path, """\
        configure
        set interfaces ethernet eth3 vif 20 address 10.20.20.2/24
        set interfaces ethernet eth4 address 192.168.50.1/24
        edit high-availability vrrp
        set group VLAN20 interface eth3.20
        set group VLAN20 vrid 20
        set group VLAN20 address 10.20.20.1/24
        set group VLAN20 no-preempt
        set group VLAN20 preempt-delay 10
        set sync-group MAIN member VLAN20
        set sync-group MAIN transition-script master '/config/scripts/group-master.sh'
        top
        set service conntrack-sync interface eth4
        set service conntrack-sync failover-mechanism vrrp sync-group MAIN
        set service conntrack-sync disable-external-cache
        commit
        save
        """)
    inst = conv.data["vrrpd"]["instance"]["VLAN20"]
    assert inst["preempt"] is False and "preempt_delay" not in inst
    assert "/config/scripts/group-master.sh" in inst["notify"][2]
    c = conv.data["ctsync"]
    assert (c["sync_interface"], c["local_address"], c["multicast_group"]) == ("eth4", "192.168.50.1", "225.0.0.50")
    assert c["mode"] == "inject" and c["failover"] == {"vrrp_sync_group": "MAIN"}
    assert any("peer_address: missing" in p for p in conv.check_problems)
    assert not conv.dropped


def test_old_vyatta_interface_groups(tmp_path):
    conv = conv_of(tmp_path, """\
        set interfaces ethernet eth0 address 10.0.0.2/24
        set interfaces ethernet eth0 vrrp vrrp-group 10 virtual-address 10.0.0.1
        set interfaces ethernet eth0 vrrp vrrp-group 10 priority 150
        set interfaces ethernet eth0 vrrp vrrp-group 10 preempt false
        set interfaces ethernet eth0 vrrp vrrp-group 10 sync-group SG
        set interfaces ethernet eth0 vrrp vrrp-group 10 run-transition-scripts master /config/m.sh
        set interfaces ethernet eth1 vif 5 vrrp vrrp-group 11 virtual-address 10.5.0.1/24
        set interfaces ethernet eth1 vif 5 vrrp vrrp-group 11 sync-group SG
        set interfaces ethernet eth1 vif 5 vrrp vrrp-group 11 advertise-interval 3
        """)
    v = conv.data["vrrpd"]
    a, b = v["instance"]["eth0-vrrp10"], v["instance"]["eth1.5-vrrp11"]
    assert (a["interface"], a["vrid"], a["priority"], a["preempt"]) == ("eth0", 10, 150, False)
    assert a["virtual_addresses"] == ["10.0.0.1/32"] and "/config/m.sh" in a["notify"][2]
    assert (b["interface"], b["vrid"], b["advert_interval"]) == ("eth1.5", 11, 3)
    assert v["sync_group"]["SG"]["instances"] == ["eth0-vrrp10", "eth1.5-vrrp11"]
    parse_with_project(round_trip(conv))


def test_unknown_settings_are_listed(tmp_path):
    conv = conv_of(tmp_path, """\
        set high-availability vrrp group G interface eth0
        set high-availability vrrp group G vrid 5
        set high-availability vrrp group G address 10.0.0.1/24 interface eth9
        set high-availability vrrp group G peer-address 10.0.0.3
        set high-availability vrrp group G frobnicate
        set high-availability vrrp group G priority 999
        set high-availability vrrp group H interface eth0
        set high-availability vrrp sync-group S member NOPE
        set high-availability virtual-server 10.0.0.1 port 80
        set service conntrack-sync expect-sync all
        delete high-availability vrrp group G
        """)
    d, n = whys(conv.dropped), whys(conv.notes)
    for line, why in ((4, "unicast VRRP"), (5, "unknown VRRP group setting"), (6, "from 1 to 255"),
                      (7, "group H has no valid vrid"), (8, "no VRRP group NOPE"), (9, "LVS"), (10, "expectations"),
                      (11, "not a set command")):
        assert any(f":{line}: " in ln and why in ln for ln in d.splitlines()), (line, why, d)
    assert "interface eth9 ignored" in n
    assert conv.data["vrrpd"]["instance"]["G"]["priority"] == 100


@pytest.mark.parametrize("text,line", [("set high-availability vrrp group G vrid '5\n", 1),
                                       ("high-availability {\n vrrp {\n", 2),
                                       ("a {\n}\n}\n", 3)])
def test_unparseable(tmp_path, capsys, text, line):
    p = tmp_path / "config"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        vyatta.convert(str(p))
    assert e.value.line == line
    assert cli.main(["vyatta", str(p)]) == 1
    assert f"{p}:{line}:" in capsys.readouterr().err


WORDS = ["set", "set", "set", "high-availability", "vrrp", "group", "sync-group", "member", "G", "H", "interface",
         "eth0", "vrid", "1", "300", "address", "10.0.0.1/24", "::1", "priority", "no-preempt", "preempt-delay",
         "authentication", "password", "type", "plaintext-password", "ah", "track", "transition-script", "master",
         "'/x y'", "service", "conntrack-sync", "peer", "172.16.0.2", "mcast-group", "accept-protocol", "tcp,udp",
         "failover-mechanism", "interfaces", "ethernet", "vif", "vrrp-group", "virtual-address", "{", "}", "edit",
         "top", '"', "x"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=8), max_size=30))
def test_fuzz_never_a_traceback(tmp_path, lines):
    p = tmp_path / "config"
    p.write_text("\n".join(" ".join(w) for w in lines))
    try:
        conv = vyatta.convert(str(p))
    except InputError as e:
        assert e.problem
        return
    round_trip(conv)
    findings_point_into_files(conv)


BOOT_LINE = st.one_of(st.just(["}"]), st.lists(st.sampled_from(WORDS[1:]), max_size=3).map(lambda w: [*w, "{"]),
                      st.lists(st.sampled_from(WORDS[1:]), max_size=4))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(BOOT_LINE, max_size=30))
def test_fuzz_config_boot_never_a_traceback(tmp_path, lines):
    p = tmp_path / "config.boot"
    p.write_text("\n".join(" ".join(w) for w in lines))
    try:
        conv = vyatta.convert(str(p))
    except InputError as e:
        assert e.problem
        return
    round_trip(conv)
    findings_point_into_files(conv)


def test_vrrpv3_ipv6_groups(tmp_path):
    """VyOS IPv6 groups become VRRPv3 instances with the link-local address first; an IPv4
    address in an IPv6 group, and an IPv6 group without a link-local address, are reported;
    the file passes the checks."""
    conv = conv_of(tmp_path, """\
        set high-availability vrrp group L6 interface eth1
        set high-availability vrrp group L6 vrid 20
        set high-availability vrrp group L6 address 2001:db8::1/64
        set high-availability vrrp group L6 address fe80::1/64
        set high-availability vrrp group L6 address 10.0.0.1/24
        set high-availability vrrp group L6 advertise-interval 60
        set high-availability vrrp group L6 garp master-refresh 30
        set high-availability vrrp group X6 interface eth1
        set high-availability vrrp group X6 vrid 21
        set high-availability vrrp group X6 address 2001:db8::2/64
        """)
    inst = conv.data["vrrpd"]["instance"]
    assert "X6" not in inst
    l6 = inst["L6"]
    assert l6["version"] == 3 and l6["virtual_addresses"] == ["fe80::1/64", "2001:db8::1/64"]
    assert l6["advert_interval"] == 40.95 and l6["accept_mode"] is True and l6["garp_refresh"] == 30
    n, d = whys(conv.notes), whys(conv.dropped)
    assert "VRRPv3 (version = 3)" in n and "link-local address is written first" in n and "at most 40.95 s" in n
    assert "an IPv4 address in an IPv6 instance" in d and "group X6: an IPv6 instance needs a link-local" in d
    assert conv.check_problems == []
