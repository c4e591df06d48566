"""Configuration files that once crashed a daemon instead of being refused (issue #6):
bytes that are not UTF-8, nesting too deep for the TOML parser, NUL characters in
names and commands, ctsync's ignore_* lists given a scalar. Each is a ConfigError that
names file, key and problem, at start-up (`--check` and a real start print it, no
traceback) and on SIGHUP (vrrpd keeps its configuration)."""

from __future__ import annotations

import textwrap

import pytest

from ctsync import config as ctsync_config
from ctsync.cli import ctsync_main
from hacommon.config import ConfigError, read_toml
from vrrpd import config as vrrpd_config
from vrrpd.cli import vrrpd_main

GOOD = textwrap.dedent("""
    [vrrpd]
    [vrrpd.instance.WAN]
    interface = "eth0"
    vrid = 1
    virtual_addresses = ["10.0.0.1/24"]

    [ctsync]
    sync_interface = "sync0"
    local_address = "172.16.0.1"
    peer_address = "172.16.0.2"
    key = "0123456789abcdef0123"
""")


def write(tmp_path, data: bytes | str, name: str = "bad.toml"):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def problems(load, path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(path)
    return exc.value.problems


LOADERS = [vrrpd_config.load, ctsync_config.load]


@pytest.mark.parametrize("load", LOADERS, ids=["vrrpd", "ctsync"])
def test_a_byte_that_is_not_utf8(tmp_path, load):
    p = write(tmp_path, GOOD.encode().replace(b'"eth0"', b'"eth\xff0"'))
    assert problems(load, p) == ["bad.toml: not UTF-8 text: byte 0xff at line 4"]


@pytest.mark.parametrize("load", LOADERS, ids=["vrrpd", "ctsync"])
@pytest.mark.parametrize("nest", ["[" * 1000 + "]" * 1000, "{a=" * 1000 + "1" + "}" * 1000])
def test_nesting_too_deep_for_the_parser(tmp_path, load, nest):
    p = write(tmp_path, GOOD + f"deep = {nest}\n")
    assert problems(load, p) == ["bad.toml: TOML nested too deeply (arrays or inline tables)"]


def test_read_toml_names_only_the_file(tmp_path):
    p = write(tmp_path, b"a = \"\xc3\x28\"\n", "x.toml")
    assert problems(read_toml, p) == ["x.toml: not UTF-8 text: byte 0xc3 at line 1"]


@pytest.mark.parametrize("where,expected", [
    ('[vrrpd.instance."W\\u0000N"]\ninterface = "eth0"\nvrid = 2\nvirtual_addresses = ["10.0.1.1/24"]\n',
     'bad.toml: vrrpd.instance.W\\x00N: names must not contain control characters'),
    ('[vrrpd.instance.LAN]\ninterface = "eth1"\nvrid = 2\nvirtual_addresses = ["10.0.1.1/24"]\n'
     'notify = ["/bin/echo", "a\\u0000b"]\n',
     "bad.toml: vrrpd.instance.LAN.notify[1]: must not contain a NUL character"),
    ('[vrrpd.instance.LAN]\ninterface = "eth1"\nvrid = 2\nvirtual_addresses = ["10.0.1.1/24"]\n'
     'notify = "/bin/true\\u0000"\n',
     "bad.toml: vrrpd.instance.LAN.notify: must not contain a NUL character"),
    ('[vrrpd.sync_group."G\\u0000"]\ninstances = ["WAN"]\n',
     'bad.toml: vrrpd.sync_group.G\\x00: names must not contain control characters'),
])
def test_nul_in_names_and_commands(tmp_path, where, expected):
    text = GOOD.replace("[ctsync]", where + "\n[ctsync]")
    assert expected in problems(vrrpd_config.load, write(tmp_path, text))


def test_nul_in_a_ctsync_string(tmp_path):
    text = GOOD.replace('sync_interface = "sync0"', 'sync_interface = "sy\\u0000nc0"')
    assert problems(ctsync_config.load, write(tmp_path, text)) == [
        "bad.toml: ctsync.sync_interface: must not contain a NUL character"]


@pytest.mark.parametrize("key,value,expected", [
    ("ignore_addresses", "5", "must be a list of addresses or CIDRs, e.g. [\"10.0.0.0/8\"], got 5"),
    ("ignore_addresses", '"10.0.0.0/8"', "must be a list of addresses or CIDRs, e.g. [\"10.0.0.0/8\"], got '10.0.0.0/8'"),
    ("ignore_protocols", "6", "must be a list of protocol names or numbers, e.g. [\"icmp\", 132], got 6"),
    ("ignore_tcp_states", "true", "must be a list of TCP state names, e.g. [\"syn_sent\", \"time_wait\"], got True"),
    ("ignore_tcp_states", '{ a = 1 }', "must be a list of TCP state names, e.g. [\"syn_sent\", \"time_wait\"], got {'a': 1}"),
])
def test_ctsync_ignore_lists_given_a_scalar(tmp_path, key, value, expected):
    p = write(tmp_path, GOOD + f"{key} = {value}\n")
    assert problems(ctsync_config.load, p) == [f"bad.toml: ctsync.{key}: {expected}"]


@pytest.mark.parametrize("main", [vrrpd_main, ctsync_main], ids=["vrrpd", "ctsync"])
@pytest.mark.parametrize("data,expected", [
    (GOOD.encode().replace(b"eth0", b"eth\xfe"), "bad.toml: not UTF-8 text: byte 0xfe at line 4"),
    ((GOOD + "deep = " + "[" * 1000 + "]" * 1000 + "\n").encode(), "bad.toml: TOML nested too deeply (arrays or inline tables)"),
])
def test_start_up_prints_file_and_problem_not_a_traceback(tmp_path, capsys, main, data, expected):
    p = write(tmp_path, data)
    for argv in (["-c", str(p), "--check"], ["-c", str(p)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


def test_ctsync_start_up_names_a_scalar_ignore_list(tmp_path, capsys):
    p = write(tmp_path, GOOD + "ignore_protocols = 6\n")
    assert ctsync_main(["-c", str(p), "--check"]) == 1
    assert capsys.readouterr().err == (
        "ctsync: bad.toml: ctsync.ignore_protocols: must be a list of protocol names or numbers, e.g. [\"icmp\", 132], got 6\n")


@pytest.mark.parametrize("table,load", [("[vrrpd]", vrrpd_config.load), ("[ctsync]", ctsync_config.load)],
                         ids=["vrrpd", "ctsync"])
def test_control_group(tmp_path, table, load):
    import grp

    root = grp.getgrgid(0).gr_name
    cfg = load(write(tmp_path, GOOD.replace(table, f'{table}\ncontrol_group = "{root}"'), "ok.toml"))
    assert (cfg.control_group, cfg.control_gid) == (root, 0)
    cfg = load(write(tmp_path, GOOD.replace(table, f"{table}\ncontrol_group = 0"), "ok.toml"))
    assert (cfg.control_group, cfg.control_gid) == (root, 0)
    assert load(write(tmp_path, GOOD)).control_gid is None
    name = table.strip("[]")
    for bad, shown in (('"no-such-group-here"', "'no-such-group-here'"), ('""', "''"), ("-1", "-1"), ("true", "True")):
        assert problems(load, write(tmp_path, GOOD.replace(table, f"{table}\ncontrol_group = {bad}"))) == [
            f"bad.toml: {name}.control_group: must be the name of a group of this system (see /etc/group), got {shown}"]


@pytest.mark.parametrize("value", ["true", "167772160", "1.5"])
def test_ctsync_ignore_addresses_are_strings(tmp_path, value):
    """Found by the fuzz tests: ip_network(True) is 0.0.0.1/32, ip_network(167772160) 10.0.0.0/32."""
    p = write(tmp_path, GOOD + f"ignore_addresses = [{value}]\n")
    assert problems(ctsync_config.load, p) == [f"bad.toml: ctsync.ignore_addresses[0]: not an address or CIDR: "
                                               f"{ {'true': True, '167772160': 167772160, '1.5': 1.5}[value]!r}"]
