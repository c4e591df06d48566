"""hapair-import keepalived: the language (include, @ conditionals, $VAR), the
mapping to [vrrpd], the report, the CLI, Debian's samples, and fuzzing."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair_import import cli, keepalived, target
from hapair_import.box import InputError
from hapair_import.keepalived_syntax import brace_expand, load, tokenize
from hapair_import.tomlout import render
from vrrpd import config as vrrpd_config

from .import_helpers import (
    KEEPALIVED_SAMPLES,
    SAMPLES,
    check_with_daemons,
    findings_point_into_files,
    parse_with_project,
    round_trip,
    write_key,
)


def conv_of(tmp_path: Path, text: str, name: str = "keepalived.conf", **kw):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    kw.setdefault("config_id", "r1")
    return keepalived.convert(str(p), **kw)


def whys(findings) -> str:
    return "\n".join(f"{f.where()}: {f.what}: {f.why}" for f in findings)


MINIMAL = """\
vrrp_instance V {
    interface eth0
    virtual_router_id 7
    priority 150
    virtual_ipaddress {
        10.0.0.100/24
    }
}
"""


# -- golden conversions ------------------------------------------------------------------

@pytest.mark.parametrize("config_id", ["r1", "r2"])
def test_golden_pair_with_include_conditionals_vars_and_conntrackd(monkeypatch, config_id):
    """One keepalived.conf for both routers (conf.d/ included, @r1/@r2 lines, $PRIO),
    with its conntrackd.conf: the whole output, report included, is as reviewed."""
    monkeypatch.chdir(SAMPLES)
    conv = keepalived.convert("keepalived-pair/keepalived.conf", config_id=config_id,
                              conntrackd="keepalived-pair/conntrackd.conf")
    expected = (SAMPLES / f"keepalived-pair/expected-{config_id}.toml").read_text()
    assert render(conv) == expected
    assert conv.check_problems == []
    findings_point_into_files(conv)


def test_golden_pair_details(monkeypatch):
    """What the golden file says, as facts (so a regenerated golden cannot hide them)."""
    monkeypatch.chdir(SAMPLES)
    conv = keepalived.convert("keepalived-pair/keepalived.conf", config_id="r2",
                              conntrackd="keepalived-pair/conntrackd.conf")
    v = conv.data["vrrpd"]
    assert v["instance"]["WAN"]["priority"] == 100 and v["instance"]["LAN"]["priority"] == 100  # @r2 $PRIO=100
    assert v["instance"]["LAN"]["preempt_delay"] == 30  # @^r1
    assert "preempt_delay" not in v["instance"]["WAN"]
    assert v["instance"]["WAN"]["auth"] == {"type": "pass", "password": "s3cret"}
    assert v["instance"]["WAN"]["use_vmac"] is False and v["instance"]["LAN"]["use_vmac"] is True
    # a member of a sync group: keepalived zeroes its own tracking weight
    assert v["instance"]["WAN"]["track_interfaces"] == ["eth1"]
    # the group's track_script (a pinned ping) is a probe tracked by both members, with the group's weight
    assert v["probe"]["chk_uplink"] == {"interface": "eth0", "gateway": "10.10.0.1", "target": "192.0.2.53",
                                        "interval": 2.0, "timeout": 1.0, "rise": 2, "fall": 3}
    for inst in ("WAN", "LAN"):
        assert v["instance"][inst]["track_probes"] == [{"probe": "chk_uplink", "weight": -150}]
        assert v["instance"][inst]["garp_repeat_delay"] == 2  # global vrrp_garp_master_delay
    assert v["sync_group"]["MAIN-GW"]["instances"] == ["WAN", "LAN"]
    c = conv.data["ctsync"]
    assert c["failover"] == {"vrrp_sync_group": "MAIN-GW"} and c["mode"] == "commit"
    assert c["ignore_addresses"] == ["127.0.0.1", "172.16.0.0/30"]  # the VIP is left out, with a note
    assert "10.10.0.101" in whys(conv.notes)
    dropped = whys(conv.dropped)
    for what in ("virtual_server 10.10.0.101 80", "virtual_routes", "static_routes", "router_id r2", "script_user"):
        assert what in dropped
    assert "30-lvs.conf:1:" in dropped  # found in an included file, with its own name and line
    assert any("head -c 32 /dev/urandom" in a for a in conv.actions)


def test_converted_pair_passes_the_daemons_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(SAMPLES)
    key = write_key(tmp_path / "ctsync.key")
    out = tmp_path / "r1.toml"
    rc = cli.main(["keepalived", "keepalived-pair/keepalived.conf", "--config-id", "r1", "--conntrackd",
                   "keepalived-pair/conntrackd.conf", "--key-file", str(key), "-o", str(out)])
    assert rc == 0
    check_with_daemons(out, ("vrrpd", "ctsync"))


# -- the language ------------------------------------------------------------------------

def test_include_glob_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub" / "more").mkdir(parents=True)
    (tmp_path / "main.conf").write_text("include sub/*.conf\ninclude sub/{x,y}.inc\n")
    (tmp_path / "sub" / "a.conf").write_text("include more/b.conf\n")
    (tmp_path / "sub" / "more" / "b.conf").write_text(MINIMAL)
    (tmp_path / "sub" / "x.inc").write_text(MINIMAL.replace("vrrp_instance V", "vrrp_instance X")
                                            .replace("virtual_router_id 7", "virtual_router_id 8"))
    p = load(str(tmp_path / "main.conf"), "r1")
    assert [s.args[0] for s in p.stmts] == ["V", "X"]
    assert p.stmts[0].file.endswith("sub/more/b.conf") and p.stmts[0].line == 1
    # y.inc does not exist: brace alternatives are globs, so no match is no error
    assert not p.problems


def test_include_problems_are_reported_not_fatal(tmp_path):
    (tmp_path / "main.conf").write_text("include nothing-*.conf\ninclude main.conf\n" + MINIMAL)
    conv = keepalived.convert(str(tmp_path / "main.conf"), config_id="r1")
    d = whys(conv.dropped)
    assert "main.conf:1: include nothing-*.conf: matches no file" in d
    assert "main.conf:2: include main.conf:" in d and "includes itself" in d
    assert "V" in conv.data["vrrpd"]["instance"]


def test_brace_expand():
    assert brace_expand("/a/{b,c/{d,e}}/f") == ["/a/b/f", "/a/c/d/f", "/a/c/e/f"]
    assert brace_expand("x{y}z") == ["x{y}z"]


def test_conditionals_choose_lines_by_config_id(tmp_path):
    text = MINIMAL.replace("    priority 150\n", "@r1 priority 200\n@r2 priority 100\n@^r1 nopreempt\n")
    for cid, prio, preempt in (("r1", 200, True), ("r2", 100, False), ("other", 100, False)):
        conv = conv_of(tmp_path, text, config_id=cid)
        inst = conv.data["vrrpd"]["instance"]["V"]
        assert (inst["priority"], inst["preempt"]) == (prio, preempt), cid
        assert "another config-id" in whys(conv.notes)


def test_default_config_id_is_keepalived_s(tmp_path):
    host = os.uname().nodename.split(".")[0]
    conv = conv_of(tmp_path, MINIMAL.replace("    priority 150\n", f"@{host} priority 222\n"), config_id=None)
    assert conv.data["vrrpd"]["instance"]["V"]["priority"] == 222
    assert f"config-id {host!r}" in render(conv)


def test_parameters_substitution(tmp_path):
    conv = conv_of(tmp_path, """\
        $IF=eth0
        $BASE=10.0.${SUB}
        $SUB=3
        $IF_R1=@r1
        $VIPS= \\
            ${BASE}.1/24 \\
            ${BASE}.2/24
        vrrp_instance V_${SUB} {
            interface $IF
            virtual_router_id 7
            $IF_R1 priority 201
            $UNDEFINED_LEFT_AS_IS
            virtual_ipaddress {
                $VIPS
            }
        }
        """)
    inst = conv.data["vrrpd"]["instance"]["V_3"]
    assert inst["interface"] == "eth0" and inst["priority"] == 201
    assert inst["virtual_addresses"] == ["10.0.3.1/24", "10.0.3.2/24"]
    assert "$UNDEFINED_LEFT_AS_IS" in whys(conv.dropped)  # reported as an unknown keyword


def test_multiline_definitions_take_their_definitions_in_order(tmp_path):
    conv = conv_of(tmp_path, """\
        $INST= \\
        vrrp_instance VI_${NUM} { \\
            interface eth${NUM} \\
            virtual_router_id 1${NUM} \\
            @r1 priority 13${NUM} \\
            virtual_ipaddress { \\
                10.0.${NUM}.254/24 \\
            } \\
        }
        $TWO= \\
        $NUM=0 \\
        $INST \\
        $NUM=1 \\
        $INST
        $TWO
        """)
    inst = conv.data["vrrpd"]["instance"]
    assert inst["VI_0"]["interface"] == "eth0" and inst["VI_0"]["priority"] == 130
    assert inst["VI_1"]["virtual_addresses"] == ["10.0.1.254/24"] and inst["VI_1"]["vrid"] == 11


def test_hash_bang_and_comments(tmp_path):
    conv = conv_of(tmp_path, """\
        vrrp_instance V { # a comment
            interface eth0   ! another
            virtual_router_id 7
            notify_master "/bin/echo a#b${_HASH}c!d"
            virtual_ipaddress {
                10.0.0.1
            }
        }
        """)
    assert "/bin/echo 'a#b#c!d'" in conv.data["vrrpd"]["instance"]["V"]["notify"][2]


def test_self_referencing_parameter_is_an_input_error(tmp_path):
    p = tmp_path / "k.conf"
    p.write_text("$A=x${A}\nvrrp_instance ${A} {\n}\n")
    with pytest.raises(InputError) as e:
        keepalived.convert(str(p), config_id="r1")
    assert e.value.line == 2 and "substitution does not end" in e.value.problem


def test_seq_and_random_are_reported(tmp_path):
    conv = conv_of(tmp_path, "~SEQ(N, 1, 3) $X\n" + MINIMAL.replace("    priority 150\n", "    priority ${_RANDOM 1 9}\n"))
    d = whys(conv.dropped)
    assert "keepalived.conf:1: ~SEQ" in d and "_RANDOM" in d


@pytest.mark.parametrize("text,line,problem", [
    ("vrrp_instance V {\n  interface eth0\n", 1, "never closed"),
    ("}\n", 1, "closes no block"),
    ("vrrp_instance V {\n  notify \"/bin/x\n}\n", 2, "unterminated"),
    ("{\n}\n", 1, "without a keyword"),
])
def test_unparseable_input_names_file_and_line(tmp_path, capsys, text, line, problem):
    p = tmp_path / "bad.conf"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        keepalived.convert(str(p), config_id="r1")
    assert (e.value.line, e.value.file) == (line, str(p)) and problem in e.value.problem
    assert cli.main(["keepalived", str(p), "--config-id", "r1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hapair-import: {p}:{line}: ") and "Traceback" not in err


def test_unreadable_and_binary_input(tmp_path, capsys):
    assert cli.main(["keepalived", str(tmp_path / "missing.conf")]) == 1
    assert "missing.conf: cannot read: No such file or directory" in capsys.readouterr().err
    p = tmp_path / "bin.conf"
    p.write_bytes(b"vrrp_instance V {\n\xff\xfe\n}\n")
    assert cli.main(["keepalived", str(p)]) == 1
    assert f"{p}:2: not UTF-8 text" in capsys.readouterr().err


def test_tokenize_quotes_and_escapes():
    assert tokenize('a "b c"d \'e\' {x}') == [("a", False), ("b cd", True), ("e", True), ("{", False),
                                               ("x", False), ("}", False)]
    assert tokenize(r'"tab\there \x41\101"') == [("tab\there AA", True)]


# -- the mapping -------------------------------------------------------------------------

def test_minimal_instance_and_defaults(tmp_path):
    conv = conv_of(tmp_path, MINIMAL)
    assert conv.data == {"vrrpd": {"instance": {"V": {
        "interface": "eth0", "vrid": 7, "priority": 150, "advert_interval": 1, "preempt": True,
        "virtual_addresses": ["10.0.0.100/24"], "use_vmac": False}}}}
    assert not conv.dropped and not conv.notes and not conv.check_problems


def test_positive_weights_become_an_equivalent_priority(tmp_path):
    conv = conv_of(tmp_path, MINIMAL.replace("    priority 150\n", """\
            priority 100
            track_interface {
                eth1 weight 20
                eth2 weight -30
                eth3
                eth4 weight 5 reverse
            }
        """))
    inst = conv.data["vrrpd"]["instance"]["V"]
    # keepalived: 100 +20 while eth1 is up, -30 while eth2 is down, FAULT while eth3 is down
    assert inst["priority"] == 120
    assert inst["track_interfaces"] == [{"interface": "eth1", "weight": -20}, {"interface": "eth2", "weight": -30},
                                        "eth3"]
    assert "reverse" in whys(conv.dropped)
    # Same effective priority as keepalived in every state of eth1/eth2:
    for up1 in (True, False):
        for up2 in (True, False):
            ka = 100 + (20 if up1 else 0) - (0 if up2 else 30)
            ours = 120 + (0 if up1 else -20) + (0 if up2 else -30)
            assert ka == ours


def test_authentication(tmp_path):
    base = MINIMAL.replace("    priority 150\n", "    authentication {\n        auth_type %s\n        auth_pass %s\n    }\n")
    conv = conv_of(tmp_path, base % ("PASS", "longer-than-8"))
    assert conv.data["vrrpd"]["instance"]["V"]["auth"] == {"type": "pass", "password": "longer-t"}
    assert "first 8 characters" in whys(conv.notes)
    conv = conv_of(tmp_path, base % ("AH", "x"))
    assert "auth" not in conv.data["vrrpd"]["instance"]["V"]
    assert "RFC 3768 removed it" in whys(conv.dropped)


def test_virtual_addresses(tmp_path):
    vips = "\n".join(f"        10.0.1.{i}/24" for i in range(1, 23))
    conv = conv_of(tmp_path, MINIMAL.replace("        10.0.0.100/24", f"""\
        10.0.0.100/24 dev eth1 label eth1:0 scope global
        10.0.0.100
        2001:db8::1/64
        not-an-address
{vips}"""))
    inst = conv.data["vrrpd"]["instance"]["V"]
    assert len(inst["virtual_addresses"]) == target.MAX_VIRTUAL_ADDRESSES
    assert inst["virtual_addresses"][:2] == ["10.0.0.100/24", "10.0.1.1/24"]
    n, d = whys(conv.notes), whys(conv.dropped)
    assert "dev eth1, label eth1:0, scope global ignored" in n and "the same address twice" in n
    assert "an IPv6 address in an IPv4 instance" in d and "not-an-address" in d and "10.0.1.21/24" in d


def test_instance_without_ipv4_vip_is_reported_not_written(tmp_path):
    conv = conv_of(tmp_path, MINIMAL.replace("10.0.0.100/24", "2001:db8::1/64"))
    assert "vrrpd" not in conv.data
    assert "no virtual address vrrpd can hold" in whys(conv.dropped)


def test_vrrp_version_3_is_written(tmp_path):
    conv = conv_of(tmp_path, "global_defs {\n vrrp_version 3\n}\n" + MINIMAL)
    inst = conv.data["vrrpd"]["instance"]["V"]
    assert inst["version"] == 3
    # keepalived accepts packets to its VIPs unless no_accept or strict; vrrpd's v3 default is false
    assert inst["accept_mode"] is True
    assert conv.check_problems == []


def test_vrrpv3_ipv6_instance(tmp_path):
    """keepalived's VRRPv3 / IPv6 settings become vrrpd's: the version (IPv6 alone implies 3),
    centisecond adverts, the link-local VIP first, one family per instance, no authentication,
    Accept_Mode as keepalived's, garp_master_refresh; the file passes vrrpd --check."""
    conv = conv_of(tmp_path, """\
        vrrp_instance LAN6 {
            interface eth1
            virtual_router_id 20
            priority 150
            advert_int 0.054
            authentication {
                auth_type PASS
                auth_pass secret
            }
            garp_master_refresh 60
            virtual_ipaddress {
                2001:db8:100::1/64
                fe80::1/64
                10.0.0.1/24
            }
        }
        vrrp_instance LAN4 {
            interface eth1
            virtual_router_id 21
            version 3
            no_accept
            advert_int 0.05
            virtual_ipaddress {
                10.0.1.1/24
            }
        }
        vrrp_instance NOLL {
            interface eth1
            virtual_router_id 22
            version 3
            virtual_ipaddress {
                2001:db8:200::1/64
            }
        }
        """)
    v6 = conv.data["vrrpd"]["instance"]["LAN6"]
    assert v6["version"] == 3 and v6["advert_interval"] == 0.05
    assert v6["virtual_addresses"] == ["fe80::1/64", "2001:db8:100::1/64"]
    assert "auth" not in v6 and v6["accept_mode"] is True and v6["garp_refresh"] == 60
    v4 = conv.data["vrrpd"]["instance"]["LAN4"]
    assert v4["version"] == 3 and v4["advert_interval"] == 0.05 and "accept_mode" not in v4  # no_accept: the default
    assert "NOLL" not in conv.data["vrrpd"]["instance"]
    n, d = whys(conv.notes), whys(conv.dropped)
    assert "IPv6 addresses: VRRPv3" in n and "the link-local address is written first" in n
    assert "in hundredths: 0.05" in n and "VRRPv3 has no authentication" in n
    assert "10.0.0.1/24: an IPv4 address in an IPv6 instance" in d
    assert "vrrp_instance NOLL: an IPv6 instance needs a link-local virtual address" in d
    assert conv.check_problems == []


def test_vrrpv2_keeps_whole_seconds_and_ipv4(tmp_path):
    conv = conv_of(tmp_path, MINIMAL.replace("priority 150", "priority 150\n    advert_int 0.3\n    no_accept"))
    inst = conv.data["vrrpd"]["instance"]["V"]
    assert inst["advert_interval"] == 1 and "version" not in inst and "accept_mode" not in inst
    assert "whole seconds (VRRPv2): 1" in whys(conv.notes)
    assert "master accepts packets to its VIPs" in whys(conv.dropped)


def _vrrpd_accepts(**inst) -> bool:
    base = {"interface": "eth0", "vrid": 1, "virtual_addresses": ["10.0.0.1/24"]}
    base.update(inst)
    try:
        vrrpd_config.parse({"vrrpd": {"instance": {"V": base}}})
        return True
    except vrrpd_config.ConfigError:
        return False


def test_target_constants_agree_with_vrrpd():
    """When vrrpd gains VRRPv3 / IPv6 addresses, this fails until target.py says so."""
    assert _vrrpd_accepts(version=3) == (3 in target.VRRP_VERSIONS)
    v6 = ["fe80::1/64", "2001:db8::1/64"]
    assert _vrrpd_accepts(version=3, virtual_addresses=v6) == target.IPV6_VIRTUAL_ADDRESSES
    # what the mappings rely on: IPv6 only with version 3, link-local first, one family
    assert not _vrrpd_accepts(virtual_addresses=v6)
    assert not _vrrpd_accepts(version=3, virtual_addresses=v6[::-1])
    assert not _vrrpd_accepts(version=3, virtual_addresses=v6 + ["10.0.0.1/24"])
    assert _vrrpd_accepts(version=3, advert_interval=0.05) and not _vrrpd_accepts(version=3, advert_interval=41)
    assert _vrrpd_accepts(garp_refresh=target.GARP_REFRESH[1]) and not _vrrpd_accepts(garp_refresh=-1)
    many = [f"10.0.0.{i}/24" for i in range(1, target.MAX_VIRTUAL_ADDRESSES + 2)]
    assert _vrrpd_accepts(virtual_addresses=many[:-1]) and not _vrrpd_accepts(virtual_addresses=many)


@pytest.mark.parametrize("keep", [False, True])
def test_sync_group_members_track_with_weight_zero(tmp_path, keep):
    """keepalived zeroes the tracking weights of sync group members (the script's own
    weight too), unless the group has sync_group_tracking_weight."""
    conv = conv_of(tmp_path, """\
        static_routes {
            default via 10.0.0.254 dev eth0
        }
        vrrp_script p {
            script "ping -c1 -I eth0 192.0.2.1"
            weight -10
        }
        vrrp_sync_group G {
            group {
                V
            }
        %s}
        """ % ("    sync_group_tracking_weight\n" if keep else "") + MINIMAL.replace("    priority 150\n", """\
            track_script {
                p
            }
            track_interface {
                eth1 weight -20
            }
        """))
    inst = conv.data["vrrpd"]["instance"]["V"]
    if keep:
        assert inst["track_probes"] == [{"probe": "p", "weight": -10}]
        assert inst["track_interfaces"] == [{"interface": "eth1", "weight": -20}]
    else:
        assert inst["track_probes"] == ["p"] and inst["track_interfaces"] == ["eth1"]
        n = whys(conv.notes)
        assert "weight -10 is 0 here" in n and "weight -20 is 0 here" in n


def test_notify_wrapper_runs_the_scripts_of_each_state(tmp_path):
    log = tmp_path / "log"
    conv = conv_of(tmp_path, MINIMAL.replace("    priority 150\n", f"""\
            notify_master "/bin/sh -c 'echo up $0 >> {log}' m1"
            notify_backup /bin/true
            notify "/bin/sh -c 'echo generic $1 $2 $3 $4 >> {log}' x"
            notify_stop "/bin/sh -c 'echo stopped >> {log}'"
        """))
    cmd = conv.data["vrrpd"]["instance"]["V"]["notify"]
    for state in ("master", "backup", "fault", "stop"):
        # vrrpd runs COMMAND... INSTANCE GROUP STATE
        subprocess.run([*cmd, "V", "", state], check=True, timeout=10)
    assert log.read_text().splitlines() == [
        "up m1", "generic INSTANCE V MASTER 100", "generic INSTANCE V BACKUP 100",
        "generic INSTANCE V FAULT 100", "stopped", "generic INSTANCE V STOP 100"]


def test_sync_group_notify_runs_from_its_first_member(tmp_path):
    log = tmp_path / "log"
    second = MINIMAL.replace("vrrp_instance V", "vrrp_instance W").replace("virtual_router_id 7", "virtual_router_id 8")
    conv = conv_of(tmp_path, f"""\
        vrrp_sync_group G {{
            group {{
                V
                W
                NOPE
            }}
            notify_master "/bin/sh -c 'echo group-master >> {log}'"
            notify "/bin/sh -c 'echo $1 $2 $3 >> {log}' x"
        }}
        """ + MINIMAL + second)
    inst = conv.data["vrrpd"]["instance"]
    assert "notify" not in inst["W"]
    subprocess.run([*inst["V"]["notify"], "V", "G", "master"], check=True, timeout=10)
    assert log.read_text().split("\n")[:2] == ["group-master", "GROUP G MASTER"]
    assert conv.data["vrrpd"]["sync_group"]["G"]["instances"] == ["V", "W"]
    assert "no vrrp_instance NOPE" in whys(conv.dropped)


def test_notify_that_drives_conntrackd(tmp_path):
    script = tmp_path / "my-sync.sh"
    script.write_text("#!/bin/sh\ncase $1 in primary) /usr/sbin/conntrackd -C /etc/c.conf -c ;; esac\n")
    text = MINIMAL.replace("    priority 150\n", f'    notify_master "{script} primary"\n    notify_backup "/x/y backup"\n')
    conv = conv_of(tmp_path, text)  # no conntrackd.conf: the script is kept, with a note
    cmd = conv.data["vrrpd"]["instance"]["V"]["notify"][2]
    assert str(script) in cmd and "/x/y" in cmd
    assert "give --conntrackd" in whys(conv.notes)
    ct = tmp_path / "conntrackd.conf"
    ct.write_text("Sync {\n Mode FTFW {\n }\n UDP {\n IPv4_address 172.16.0.1\n IPv4_Destination_Address "
                  "172.16.0.2\n Interface eth2\n }\n}\n")
    conv = conv_of(tmp_path, text, conntrackd=str(ct))  # with it: ctsync follows the instance
    assert "my-sync" not in conv.data["vrrpd"]["instance"]["V"]["notify"][2]
    assert conv.data["ctsync"]["failover"] == {"vrrp_sync_group": "V"}


def test_script_checks(tmp_path):
    conv = conv_of(tmp_path, """\
        static_routes {
            default via 198.51.100.1 dev wan1
        }
        vrrp_script ping_isp {
            script "ping -c1 -W 0.5 -I wan1 192.0.2.1"
            interval 1
            weight -40
        }
        vrrp_script tcp_isp {
            script "bash -c '</dev/tcp/192.0.2.2/443'"
            weight 10
        }
        vrrp_script local {
            script "</dev/tcp/127.0.0.1/80"
        }
        vrrp_script proc {
            script "killall -0 haproxy"
        }
        vrrp_script unused {
            script "/bin/true"
        }
        """ + MINIMAL.replace("    priority 150\n", """\
            priority 100
            track_script {
                ping_isp
                tcp_isp
                local
                proc weight -5
                missing
            }
        """))
    v = conv.data["vrrpd"]
    assert v["probe"]["ping_isp"] == {"interface": "wan1", "gateway": "198.51.100.1", "target": "192.0.2.1",
                                      "interval": 1.0, "timeout": 0.5, "rise": 1, "fall": 1}
    assert v["probe"]["tcp_isp"]["kind"] == "tcp" and v["probe"]["tcp_isp"]["port"] == 443
    # +10 while tcp_isp succeeds == priority 110 and -10 while it does not
    assert v["instance"]["V"]["priority"] == 110
    assert v["instance"]["V"]["track_probes"] == [{"probe": "ping_isp", "weight": -40},
                                                  {"probe": "tcp_isp", "weight": -10}]
    d = whys(conv.dropped)
    assert "track_script local: " in d and "local service" in d
    assert "track_script proc: " in d and "lowers the priority by 5 while it fails" in d
    assert "no vrrp_script of that name" in d and "vrrp_script unused: tracked by no instance" in d


def test_unpinnable_ping_is_reported_with_what_to_add(tmp_path):
    conv = conv_of(tmp_path, 'vrrp_script p {\n script "ping -c1 8.8.8.8"\n}\n' + MINIMAL.replace(
        "    priority 150\n", "    track_script {\n        p\n    }\n"))
    assert "track_probes" not in conv.data["vrrpd"]["instance"]["V"]
    assert "add [vrrpd.probe.p] and track_probes" in whys(conv.dropped)


def test_everything_unknown_is_listed(tmp_path):
    conv = conv_of(tmp_path, """\
        frobnicate 1
        strange_block {
            x
        }
        global_defs {
            notification_email {
                a@b
            }
            lvs_flush
            some_future_setting 3
        }
        """ + MINIMAL.replace("    priority 150\n", "    unicast_peer {\n        10.0.0.3\n    }\n"
                              "    smtp_alert\n    what_is_this yes\n    priority many\n"))
    d = whys(conv.dropped)
    for line, what in ((1, "frobnicate 1"), (2, "strange_block"), (6, "notification_email"), (9, "lvs_flush"),
                       (10, "some_future_setting 3"), (15, "unicast_peer"), (18, "smtp_alert"),
                       (19, "what_is_this yes"), (20, "priority many")):
        assert f"keepalived.conf:{line}: {what}" in d, (line, what, d)
    assert conv.data["vrrpd"]["instance"]["V"]["priority"] == 100  # keepalived's default, as keepalived does


# -- Debian's samples --------------------------------------------------------------------

@pytest.mark.skipif(not KEEPALIVED_SAMPLES, reason="keepalived's samples are not installed "
                    "(/usr/share/doc/keepalived/samples/)")
@pytest.mark.parametrize("path", KEEPALIVED_SAMPLES, ids=os.path.basename)
def test_debian_sample_converts(path, tmp_path):
    conv = keepalived.convert(path, config_id="high")
    data = round_trip(conv)
    findings_point_into_files(conv)
    assert conv.check_problems == []
    if "vrrpd" in data:  # the VRRP samples give a file the project accepts
        parse_with_project(data, path)
        out = tmp_path / "box.toml"
        out.write_text(render(conv))
        check_with_daemons(out, ("vrrpd",))
    else:
        assert conv.dropped  # nothing translated: everything is listed


# -- fuzzing -----------------------------------------------------------------------------

WORDS = ["vrrp_instance", "vrrp_sync_group", "vrrp_script", "global_defs", "group", "interface", "eth0",
         "virtual_router_id", "priority", "advert_int", "virtual_ipaddress", "track_interface", "track_script",
         "weight", "-20", "30", "1", "255", "256", "0.5", "10.0.0.1/24", "2001:db8::1", "notify_master", "notify",
         "authentication", "auth_type", "PASS", "AH", "auth_pass", "nopreempt", "preempt_delay", "use_vmac",
         "script", '"ping -c1 -I eth0 192.0.2.1"', "static_routes", "default", "via", "10.0.0.254", "dev",
         "include", "*.conf", "@r1", "@^r1", "$X=", "$X", "${X}", "${_HASH}", "\\", "#", "!", "{", "}", "{", "}",
         '"', "'", "V", "G", "version", "3", "state", "MASTER", "garp_master_delay", "\x00", "é", "\t"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=6), max_size=25))
def test_fuzz_never_a_traceback(tmp_path, lines):
    p = tmp_path / "fuzz.conf"
    p.write_text("\n".join(" ".join(w) for w in lines))
    try:
        conv = keepalived.convert(str(p), config_id="r1")
    except InputError as e:
        assert e.file and e.problem
        return
    data = round_trip(conv)
    if "vrrpd" in data and not conv.check_problems:
        parse_with_project(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_fuzz_any_text(tmp_path, text):
    p = tmp_path / "fuzz.conf"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates make invalid UTF-8: an InputError
    try:
        round_trip(keepalived.convert(str(p), config_id="r1"))
    except InputError:
        pass



INSTANCE_LINES = ["priority 1", "priority 255", "priority 0", "priority 300", "advert_int 0.3", "advert_int 2.5",
                  "advert_int 256", "nopreempt", "preempt", "preempt_delay 5", "preempt_delay -1", "use_vmac",
                  "use_vmac vrrp.x", "garp_master_delay 0", "garp_master_repeat 200", "garp_interval 0.01",
                  "garp_interval 50", "strict_mode", "version 3", "state MASTER", "authentication {\nauth_type PASS\nauth_pass 123456789\n}", "authentication {\nauth_type AH\n}", "authentication {\n}",
                  "track_interface {\neth1 weight 253\neth2 weight -253\neth3\n}", "track_interface {\neth9 weight x\n}",
                  "track_script {\nchk weight 100\n}", "notify_master /bin/true", 'notify "/bin/echo $x"',
                  "virtual_ipaddress {\n10.9.9.9/8 dev x\n::1\n}", "interface averyveryverylongname0",
                  "unicast_peer {\n1.2.3.4\n}", "dont_track_primary", "nonsense here"]


@st.composite
def keepalived_files(draw):
    n = draw(st.integers(1, 4))
    parts = ['vrrp_script chk {\n script "ping -c1 -I eth0 192.0.2.1"\n weight -10\n}\n',
             'static_routes {\n 0.0.0.0/0 via 10.0.0.254 dev eth0\n}\n']
    if draw(st.booleans()):
        version = draw(st.sampled_from(["2", "3", "x"]))
        parts.append(f"global_defs {{\n vrrp_garp_master_delay 1\n vrrp_version {version}\n vrrp_strict\n}}\n")
    for i in range(n):
        lines = draw(st.lists(st.sampled_from(INSTANCE_LINES), max_size=8))
        parts.append(f"vrrp_instance I{i} {{\n interface eth{i % 2}\n virtual_router_id {i + 1}\n"
                     f" virtual_ipaddress {{\n 10.0.{i}.1/24\n }}\n" + "\n".join(lines) + "\n}\n")
    members = draw(st.lists(st.sampled_from([f"I{i}" for i in range(n)] + ["NOPE"]), max_size=4))
    if members:
        parts.append("vrrp_sync_group G {\n group {\n" + "\n".join(members) + "\n }\n"
                     ' notify_backup "/bin/logger b"\n notify "/bin/logger g"\n'
                     + draw(st.sampled_from(["", " sync_group_tracking_weight\n",
                                             " track_interface {\n eth5 weight -7\n }\n"])) + "}\n")
    return "".join(draw(st.permutations(parts)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keepalived_files())
def test_fuzz_well_formed_files_give_valid_box_files(tmp_path, text):
    """Instances with distinct VRIDs and an IPv4 VIP, anything else inside: the output
    always passes the project's own checks."""
    p = tmp_path / "k.conf"
    p.write_text(text)
    conv = keepalived.convert(str(p), config_id="r1")
    data = round_trip(conv)
    assert conv.check_problems == [], (conv.check_problems, text)
    parse_with_project(data)
    findings_point_into_files(conv)
