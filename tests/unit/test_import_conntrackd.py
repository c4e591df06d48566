"""hapair-import: conntrackd.conf -> [ctsync], alone and with its keepalived.conf."""

from __future__ import annotations

import os
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair_import import cli, conntrackd, keepalived, target
from hapair_import.box import InputError

from .import_helpers import (
    CONNTRACKD_CONFS,
    CONNTRACKD_EXAMPLES,
    check_with_daemons,
    findings_point_into_files,
    parse_with_project,
    round_trip,
    write_key,
)

UDP = """\
Sync {
    Mode FTFW {
        PurgeTimeout 15
        DisableExternalCache %s
    }
    UDP {
        IPv4_address 172.16.0.1
        IPv4_Destination_Address 172.16.0.2
        Port 3781
        Interface eth2
    }
}
General {
    Filter From Kernelspace {
        Protocol Ignore {
            UDP
            IPv6-ICMP
            47
        }
        Address Ignore {
            IPv4_address 10.0.0.0/8
            IPv6_address ::1
        }
        State Accept {
            ESTABLISHED CLOSED TIME_WAIT CLOSE_WAIT for TCP
        }
    }
}
"""


def conv_of(tmp_path, text, **kw):
    p = tmp_path / "conntrackd.conf"
    p.write_text(textwrap.dedent(text))
    return conntrackd.convert(str(p), **kw)


def whys(findings) -> str:
    return "\n".join(f"{f.where()}: {f.what}: {f.why}" for f in findings)


def test_golden_udp(tmp_path):
    conv = conv_of(tmp_path, UDP % "Off", key_file="/etc/hapair/k")
    assert conv.data == {"ctsync": {
        "sync_interface": "eth2", "local_address": "172.16.0.1", "peer_address": "172.16.0.2", "port": 3781,
        "key_file": "/etc/hapair/k", "mode": "commit", "backup_purge_timeout": 15,
        "ignore_addresses": ["10.0.0.0/8", "::1"],
        "ignore_protocols": ["udp", "gre", "icmpv6"],
        # State Accept: everything else is ignored
        "ignore_tcp_states": ["syn_sent", "syn_recv", "fin_wait", "last_ack", "syn_sent2"],
    }}
    assert not conv.dropped
    assert any("head -c 32 /dev/urandom > /etc/hapair/k" in a for a in conv.actions)
    assert conv.check_problems == []
    round_trip(conv)


def test_disable_external_cache_is_inject_mode(tmp_path):
    conv = conv_of(tmp_path, UDP % "On")
    assert conv.data["ctsync"]["mode"] == "inject"


def test_protocol_accept_ignores_every_other_protocol(tmp_path):
    conv = conv_of(tmp_path, (UDP % "Off").replace("Protocol Ignore", "Protocol Accept"))
    ignored = conv.data["ctsync"]["ignore_protocols"]
    names = {n: v for n, v in target.CTSYNC_PROTOCOLS.items()}
    nums = {names[x] if isinstance(x, str) else x for x in ignored}
    assert nums == set(range(256)) - {17, 58, 47}
    assert "tcp" in ignored and "udp" not in ignored


def test_multicast_names_no_peer(tmp_path, capsys):
    text = """\
        Sync {
            Mode NOTRACK { }
            Multicast {
                IPv4_address 225.0.0.50
                Group 3780
                IPv4_interface 192.168.100.100
                Interface eth2
            }
            Multicast Default {
                IPv4_address 225.0.0.51
                Group 3781
                IPv4_interface 192.168.101.100
                Interface eth3
            }
            TCP {
                IPv4_address 1.2.3.4
            }
        }
        """
    conv = conv_of(tmp_path, text)
    t = conv.data["ctsync"]
    # the Default link is the one conntrackd starts with
    assert (t["sync_interface"], t["multicast_group"], t["port"]) == ("eth3", "225.0.0.51", 3781)
    assert "peer_address" not in t
    assert any("ctsync.peer_address: missing" in p for p in conv.check_problems)
    assert any("--peer-address" in a for a in conv.actions)
    d = whys(conv.dropped)
    assert "a second dedicated link" in d and "no TCP transport" in d
    conv = conv_of(tmp_path, text, peer_address="192.168.101.101")
    assert conv.data["ctsync"]["peer_address"] == "192.168.101.101" and conv.check_problems == []


def test_netlink_buffer(tmp_path):
    conv = conv_of(tmp_path, "General {\n NetlinkBufferSize 2097152\n NetlinkBufferSizeMaxGrowth 134217728\n}\n")
    assert conv.data["ctsync"]["netlink_rcvbuf"] == 134217728
    conv = conv_of(tmp_path, "General {\n NetlinkBufferSize 2097152\n}\n")
    assert "netlink_rcvbuf" not in conv.data["ctsync"] and "at least as large" in whys(conv.notes)


def test_unknown_and_unsupported_are_listed(tmp_path):
    conv = conv_of(tmp_path, """\
        Sync {
            Mode FTFW {
                ResendQueueSize 1000
                Fancy 3
            }
            Options {
                ExpectationSync On
            }
        }
        General {
            Filter From Userspace {
                Address Accept {
                    IPv4_address 10.0.0.1
                }
                Protocol Ignore {
                    FOO
                }
            }
            Mystery yes
        }
        Helper {
        }
        Bogus 1
        """)
    d = whys(conv.dropped)
    for line, what in ((3, "ResendQueueSize"), (4, "Fancy 3"), (7, "ExpectationSync"), (12, "Address Accept"),
                       (16, "Protocol Ignore FOO"), (19, "Mystery"), (21, "Helper"), (23, "Bogus")):
        assert f"conntrackd.conf:{line}: {what}" in d, (line, what, d)


@pytest.mark.parametrize("text,line", [("Sync {\n", 1), ("}\n", 1), ('General {\n LogFile "x\n}\n', 2)])
def test_unparseable(tmp_path, capsys, text, line):
    p = tmp_path / "c.conf"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        conntrackd.convert(str(p))
    assert e.value.line == line
    assert cli.main(["conntrackd", str(p)]) == 1
    assert f"{p}:{line}:" in capsys.readouterr().err


# -- Debian's examples -------------------------------------------------------------------

needs_examples = pytest.mark.skipif(not CONNTRACKD_CONFS, reason="conntrackd's examples are not installed "
                                    f"({CONNTRACKD_EXAMPLES})")


@needs_examples
@pytest.mark.parametrize("path", CONNTRACKD_CONFS, ids=lambda p: p.split("/")[-2])
def test_debian_example_converts(path, tmp_path):
    conv = conntrackd.convert(path)
    round_trip(conv)
    findings_point_into_files(conv)
    # Multicast: the peer is the one thing missing, and the output says so.
    assert [p for p in conv.check_problems if "peer_address" not in p] == []
    key = write_key(tmp_path / "k")
    conv = conntrackd.convert(path, peer_address="192.168.100.101", key_file=str(key))
    assert conv.check_problems == []
    parse_with_project(round_trip(conv))


@needs_examples
@pytest.mark.parametrize("mode", ["ftfw", "notrack", "alarm"])
def test_debian_keepalived_and_conntrackd_pair(mode, tmp_path):
    """conntrack-tools' doc/sync/keepalived.conf with each conntrackd.conf: the sync
    group's primary-backup.sh notify becomes ctsync's failover on G1."""
    key = write_key(tmp_path / "k")
    out = tmp_path / "box.toml"
    rc = cli.main(["keepalived", f"{CONNTRACKD_EXAMPLES}/keepalived.conf", "--config-id", "x",
                   "--conntrackd", f"{CONNTRACKD_EXAMPLES}/{mode}/conntrackd.conf",
                   "--peer-address", "192.168.100.101", "--key-file", str(key), "-o", str(out)])
    assert rc == 0
    conv = keepalived.convert(f"{CONNTRACKD_EXAMPLES}/keepalived.conf", config_id="x",
                              conntrackd=f"{CONNTRACKD_EXAMPLES}/{mode}/conntrackd.conf",
                              peer_address="192.168.100.101", key_file=str(key))
    data = round_trip(conv)
    assert data["ctsync"]["failover"] == {"vrrp_sync_group": "G1"}
    assert data["vrrpd"]["sync_group"]["G1"]["instances"] == ["VI_1", "VI_2"]
    assert all("notify" not in i for i in data["vrrpd"]["instance"].values())  # conntrackd's script is gone
    assert "192.168.0.100" not in data["ctsync"]["ignore_addresses"]  # a VIP
    check_with_daemons(out, ("vrrpd", "ctsync"))


# -- fuzzing -----------------------------------------------------------------------------

WORDS = ["Sync", "General", "Mode", "FTFW", "NOTRACK", "ALARM", "UDP", "Multicast", "Default", "TCP", "IPv4_address",
         "IPv6_address", "IPv4_Destination_Address", "IPv4_interface", "Port", "Group", "Interface", "eth2",
         "172.16.0.1", "172.16.0.2", "225.0.0.50", "ff02::1", "3780", "0", "99999", "Filter", "From", "Userspace",
         "Protocol", "Address", "State", "Accept", "Ignore", "TCP", "UDP", "ICMP", "for", "ESTABLISHED", "LISTEN",
         "PurgeTimeout", "DisableExternalCache", "On", "Off", "NetlinkBufferSize", "1", "{", "}", "{", "}", "#",
         '"', "x"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=5), max_size=25), st.booleans())
def test_fuzz_never_a_traceback(tmp_path, lines, peer):
    p = tmp_path / "c.conf"
    p.write_text("\n".join(" ".join(w) for w in lines))
    try:
        conv = conntrackd.convert(str(p), peer_address="172.16.0.9" if peer else None)
    except InputError as e:
        assert e.problem
        return
    round_trip(conv)
    findings_point_into_files(conv)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_fuzz_bytes(tmp_path, raw):
    p = tmp_path / "c.conf"
    p.write_bytes(raw)
    try:
        round_trip(conntrackd.convert(str(p)))
    except InputError:
        pass


def test_the_check_uses_a_stand_in_key_only(tmp_path):
    """The output's own check does not read key_file (it does not exist yet), but
    ctsync --check on the file does, and says so until the user creates it."""
    conv = conv_of(tmp_path, UDP % "Off", key_file=str(tmp_path / "nokey"))
    assert conv.check_problems == []
    out = tmp_path / "box.toml"
    from hapair_import.tomlout import render
    out.write_text(render(conv))
    with pytest.raises(AssertionError, match="cannot read"):
        check_with_daemons(out, ("ctsync",))
    write_key(tmp_path / "nokey")
    check_with_daemons(out, ("ctsync",))
    assert os.path.exists(tmp_path / "nokey")
