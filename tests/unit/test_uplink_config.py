"""Configuration of probes, track_probes and uplinks: parsed values, and errors that name
file, key and problem."""

from __future__ import annotations

import json

import ipaddress
import textwrap

import pytest

from vrrpd import config as C
from vrrpd.config import ConfigError
from vrrpd.return_routing import nft_ruleset
from vrrpd.uplink_config import FlushFilter, TrackProbe

A = ipaddress.IPv4Address

GOOD = """
[vrrpd]
control_socket = "/run/test/vrrpd.sock"

[vrrpd.instance.LAN]
interface = "eth1"
vrid = 2
virtual_addresses = ["192.168.1.1/24"]
track_probes = [{ probe = "ISP1", weight = -60 }, "DNS"]

[vrrpd.probe.ISP1]
interface = "wan1"
gateway = "198.51.100.1"
target = "192.0.2.53"
interval = 0.5
timeout = 0.4
rise = 2
fall = 4

[vrrpd.probe.ISP2]
interface = "wan2"
gateway = "198.51.101.1"
target = "192.0.2.53"

[vrrpd.probe.DNS]
interface = "wan3"
gateway = "10.9.9.1"
target = "192.0.2.54"
kind = "tcp"
port = 53

[vrrpd.uplinks]
flush = { proto = "udp", dport = 5060 }
return_routing = true
notify = "/usr/local/bin/uplink-changed"

[vrrpd.uplinks.link.ISP1]
interface = "wan1"
gateway = "198.51.100.1"
probe = "ISP1"
preference = 200
snat_address = "198.51.100.2"

[vrrpd.uplinks.link.ISP2]
interface = "wan2"
gateway = "198.51.101.1"
probe = "ISP2"
"""


def parse(text: str):
    return C.parse(__import__("tomllib").loads(textwrap.dedent(text)), "/etc/hapair/r1.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse(text)
    return ei.value.problems


def test_full_example():
    cfg = parse(GOOD)
    assert cfg.instances["LAN"].track_probes == (TrackProbe("ISP1", -60), TrackProbe("DNS", 0))
    p = cfg.probes["ISP1"]
    assert (p.interface, p.gateway, p.target, p.interval, p.timeout, p.rise, p.fall) == (
        "wan1", A("198.51.100.1"), A("192.0.2.53"), 0.5, 0.4, 2, 4)
    # Probes on an uplink's interface share its table; others get 200, 201, ...
    assert cfg.probes["ISP1"].table == 100 and cfg.probes["ISP2"].table == 101 and cfg.probes["DNS"].table == 200
    assert cfg.probes["DNS"].kind == "tcp" and cfg.probes["DNS"].port == 53
    u = cfg.uplinks
    assert list(u.links) == ["ISP1", "ISP2"]
    assert u.links["ISP1"].preference == 200 and u.links["ISP2"].preference == 100
    assert u.links["ISP1"].snat_address == A("198.51.100.2") and u.links["ISP2"].snat_address is None
    assert (u.links["ISP1"].mark, u.links["ISP2"].mark) == (1, 2)
    assert u.flush == FlushFilter("udp", 5060) and u.return_routing and not u.flush_on_return
    assert u.notify == ("/usr/local/bin/uplink-changed",)


def test_uplinks_without_vrrp_instances():
    text = GOOD.split("[vrrpd.instance.LAN]")[0] + "[vrrpd.probe" + GOOD.split("[vrrpd.probe", 1)[1]
    cfg = parse(text)
    assert cfg.instances == {} and len(cfg.uplinks.links) == 2


def test_errors_name_file_key_and_problem():
    bad = GOOD.replace('target = "192.0.2.53"\ninterval', 'target = "example.com"\ninterval') \
              .replace('"DNS"]', '"NOPE"]') \
              .replace('dport = 5060', 'dport = 70000') \
              .replace("rise = 2", "rise = 0")
    got = problems(bad)
    assert "r1.toml: vrrpd.probe.ISP1.target: must be an IPv4 address, got 'example.com'" in got
    assert "r1.toml: vrrpd.probe.ISP1.rise: must be an integer from 1 to 100, got 0" in got
    assert any(p.startswith("r1.toml: vrrpd.instance.LAN.track_probes[1].probe: no probe named 'NOPE'") for p in got)
    assert "r1.toml: vrrpd.uplinks.flush.dport: must be an integer from 1 to 65535, got 70000" in got


def test_a_probe_must_be_pinned_to_its_uplink():
    got = problems(GOOD.replace('probe = "ISP2"\n', 'probe = "ISP1"\n'))
    assert any(p.startswith("r1.toml: vrrpd.uplinks.link.ISP2.probe: probe 'ISP1' leaves by wan1") and "pinned" in p for p in got)


def test_one_uplink_is_refused_and_typos_suggested():
    text = GOOD.split("[vrrpd.uplinks.link.ISP2]")[0].replace("return_routing", "retrun_routing")
    got = problems(text)
    assert any("vrrpd.uplinks.link: needs at least two" in p for p in got)
    assert "r1.toml: vrrpd.uplinks.retrun_routing: unknown key (did you mean 'return_routing'?)" in got


def test_probe_checks():
    got = problems(GOOD.replace('kind = "tcp"\nport = 53', 'kind = "http"')
                       .replace("timeout = 0.4", "timeout = 0.9")
                       .replace('[vrrpd.probe.ISP2]\n', '[vrrpd.probe.ISP2]\ntable = 254\n'))
    assert "r1.toml: vrrpd.probe.DNS.kind: must be one of icmp, tcp, got 'http'" in got
    assert "r1.toml: vrrpd.probe.ISP1.timeout: must not be longer than interval (0.5s), got 0.9" in got
    assert any(p.startswith("r1.toml: vrrpd.probe.ISP2.table: 254 is a kernel table") for p in got)


def test_duplicate_interface_and_gateway_conflicts():
    got = problems(GOOD.replace('interface = "wan2"\ngateway = "198.51.101.1"\nprobe', 'interface = "wan1"\ngateway = "198.51.101.1"\nprobe'))
    assert "r1.toml: vrrpd.uplinks.link.ISP2.interface: interface wan1 is already used by uplink ISP1" in got


def test_flush_forms():
    assert parse(GOOD.replace('flush = { proto = "udp", dport = 5060 }', "flush = false")).uplinks.flush is None
    assert parse(GOOD.replace('flush = { proto = "udp", dport = 5060 }', "flush = true")).uplinks.flush == FlushFilter()
    got = problems(GOOD.replace('flush = { proto = "udp", dport = 5060 }', 'flush = { dport = 5060 }'))
    assert 'r1.toml: vrrpd.uplinks.flush.dport: a destination port needs proto = "tcp" or "udp"' in got


def test_return_routing_ruleset_marks_restores_and_cleans_up():
    rs = nft_ruleset(parse(GOOD).uplinks)
    assert rs.startswith("table inet hapair_uplinks\ndelete table inet hapair_uplinks\n")  # replaces a leftover
    assert 'ct state new iifname "wan1" ct mark set ct mark and 0xffffff00 or 0x1' in rs
    assert 'ct state new iifname "wan2" ct mark set ct mark and 0xffffff00 or 0x2' in rs
    assert 'iifname != { "wan1", "wan2" } ct mark and 0xff != 0 meta mark set ct mark and 0xff' in rs
    assert "type route hook output" in rs
    assert 'ct state new oifname "wan2" ct mark and 0xff == 0 ct mark set ct mark and 0xffffff00 or 0x2' in rs


def test_vrrpd_check_covers_probes_and_uplinks(tmp_path, capsys):
    from vrrpd.cli import vrrpd_main

    good = tmp_path / "r1.toml"
    good.write_text(GOOD)
    assert vrrpd_main(["-c", str(good), "--check"]) == 0
    assert "1 instance(s), 0 sync group(s), 3 probe(s), 2 uplink(s)" in capsys.readouterr().out
    bad = tmp_path / "r2.toml"
    bad.write_text(GOOD.replace('gateway = "198.51.101.1"\nprobe', 'gateway = "nope"\nprobe'))
    assert vrrpd_main(["-c", str(bad), "--check"]) == 1
    assert "vrrpd: r2.toml: vrrpd.uplinks.link.ISP2.gateway: must be an IPv4 address, got 'nope'" in capsys.readouterr().err


def test_status_text_json_round_trip_and_metrics():
    from prometheus_client import CollectorRegistry

    from vrrpd.metrics import VrrpdCollector, render
    from vrrpd.status import ProbeStatus, UplinksStatus, UplinkStatus, render_uplinks_text

    st = UplinksStatus(
        probes=[ProbeStatus("ISP1", "icmp", "wan1", "198.51.100.1", "192.0.2.53", 100, "down", 10, 4, 2, "no echo reply within 0.2s", "fail")],
        uplinks=[UplinkStatus("ISP1", "wan1", "198.51.100.1", "ISP1", 200, 100, 1, False, False, 1, 3),
                 UplinkStatus("ISP2", "wan2", "198.51.101.1", "ISP2", 100, 101, 2, True, True)],
        active="ISP2", switches=2,
        last_flush={"uplink": "ISP1", "address": "198.51.100.2", "deleted": 3, "filter": "udp dport 5060"},
    )
    assert UplinksStatus.from_dict(st.to_dict()) == st
    text = render_uplinks_text(st)
    from vrrpd.status_text import from_json

    assert render_uplinks_text(from_json(json.loads(json.dumps(st.to_dict())))) == text  # what vrrpctl renders
    assert "uplinks: active ISP2  switches 2" in text
    assert " * ISP2       healthy" in text and "   ISP1       DOWN" in text
    assert "last flush      3 entries NATed to 198.51.100.2 (ISP1, udp dport 5060)" in text
    assert "ISP1       DOWN     icmp 192.0.2.53 via wan1" in text and "last error: no echo reply" in text
    reg = CollectorRegistry(auto_describe=False)
    reg.register(VrrpdCollector(lambda: [], lambda: st))
    m = render(reg)
    assert 'vrrp_uplink_active{uplink="ISP2"} 1.0' in m and 'vrrp_probe_up{interface="wan1",probe="ISP1"} 0.0' in m
    assert "vrrp_uplink_switches_total 2.0" in m


def test_the_example_file_is_valid():
    from pathlib import Path

    cfg = C.load(Path(__file__).resolve().parents[2] / "configs" / "dualwan.toml")
    assert list(cfg.uplinks.links) == ["ISP1", "ISP2"] and cfg.uplinks.return_routing
    assert cfg.instances["LAN"].track_probes == (TrackProbe("ISP1", -30), TrackProbe("ISP2", -30))


def test_icmp_echo_codec():
    import socket
    import struct

    from vrrpd.io.probe import build_echo, icmp_checksum, parse_echo_reply

    echo = build_echo(0x1234, 7)
    assert echo[0] == 8 and icmp_checksum(echo) == 0  # a valid checksum sums to zero
    reply = bytes([0]) + echo[1:2] + b"\0\0" + echo[4:]
    reply = reply[:2] + struct.pack("!H", icmp_checksum(reply)) + reply[4:]
    ip = bytes([0x45, 0, 0, 20 + len(reply), 0, 0, 0, 0, 64, 1, 0, 0]) + socket.inet_aton("192.0.2.53") + socket.inet_aton("10.0.0.1")
    assert parse_echo_reply(ip + reply) == ("192.0.2.53", 0x1234, 7)
    assert parse_echo_reply(ip + echo) is None  # a request (ours, looped) is not an answer
    assert parse_echo_reply(ip[:10]) is None and parse_echo_reply(b"\x60" + ip[1:] + reply) is None
