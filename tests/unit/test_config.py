"""vrrpd.config: TOML to InstanceConfig, and errors that name file, key and problem."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from vrrpd import config as C
from vrrpd.config import ConfigError, InstanceConfig, SyncGroupConfig, TrackInterface
from vrrpd.machine import RouterParams
from vrrpd.packet import AUTH_NONE, AUTH_SIMPLE

REPO = Path(__file__).resolve().parents[2]
I = ipaddress.IPv4Interface
A = ipaddress.IPv4Address

FULL = """
[vrrpd]
control_socket = "/run/test/vrrpd.sock"
transition_hold_timeout = 1.5

[vrrpd.instance.WAN]
interface = "eth0"
vrid = 51
priority = 150
advert_interval = 2
preempt = false
preempt_delay = 30
virtual_addresses = ["203.0.113.1/24", "203.0.113.2/24"]
use_vmac = false
auth = { type = "pass", password = "s3cret" }
track_interfaces = [{ interface = "eth2", weight = -60 }, "eth3"]
strict = true
notify = ["/usr/local/bin/notify", "WAN"]
garp_count = 3
garp_interval = 0.2
garp_repeat_delay = 10

[vrrpd.instance.LAN]
interface = "eth1"
vrid = 52
virtual_addresses = ["192.168.1.1/24"]

[vrrpd.sync_group.MAIN]
instances = ["WAN", "LAN"]
notify = "/usr/local/bin/group-notify"

[ctsync]
peer = "10.9.9.2"
anything = { goes = true }
"""

MINIMAL_INSTANCE = """
[vrrpd.instance.{name}]
interface = "{iface}"
vrid = {vrid}
virtual_addresses = ["10.0.0.1/24"]
"""


def write(tmp_path: Path, text: str, name: str = "r1.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path: Path, text: str, name: str = "bad.toml") -> list[str]:
    with pytest.raises(ConfigError) as exc:
        C.load(write(tmp_path, text, name))
    assert str(exc.value) == "\n".join(exc.value.problems)
    return exc.value.problems


def one_instance(extra: str = "", name: str = "WAN", iface: str = "eth0", vrid: int = 1) -> str:
    return "[vrrpd]\n" + MINIMAL_INSTANCE.format(name=name, iface=iface, vrid=vrid) + textwrap.dedent(extra)


# ---- valid configurations --------------------------------------------------------------


def test_full_config(tmp_path):
    cfg = C.load(write(tmp_path, FULL))
    assert cfg.path == str(tmp_path / "r1.toml")
    assert cfg.control_socket == "/run/test/vrrpd.sock"
    assert cfg.transition_hold_timeout == 1.5
    assert list(cfg.instances) == ["WAN", "LAN"]
    assert cfg.instances["WAN"] == InstanceConfig(
        name="WAN",
        interface="eth0",
        vrid=51,
        priority=150,
        advert_interval=2,
        preempt=False,
        preempt_delay=30.0,
        virtual_addresses=(I("203.0.113.1/24"), I("203.0.113.2/24")),
        use_vmac=False,
        auth_type=AUTH_SIMPLE,
        auth_password="s3cret",
        track_interfaces=(TrackInterface("eth2", -60), TrackInterface("eth3", 0)),
        strict=True,
        notify=("/usr/local/bin/notify", "WAN"),
        garp_count=3,
        garp_interval=0.2,
        garp_repeat_delay=10.0,
    )
    assert cfg.instances["LAN"] == InstanceConfig(
        name="LAN", interface="eth1", vrid=52, virtual_addresses=(I("192.168.1.1/24"),)
    )
    lan = cfg.instances["LAN"]
    assert (lan.priority, lan.advert_interval, lan.preempt, lan.preempt_delay, lan.use_vmac) == (100, 1, True, 0.0, True)
    assert (lan.auth_type, lan.auth_password, lan.strict, lan.garp_count, lan.garp_repeat_delay) == (AUTH_NONE, "", False, 5, 5.0)
    assert cfg.sync_groups == {"MAIN": SyncGroupConfig("MAIN", ("WAN", "LAN"), ("/usr/local/bin/group-notify",))}
    assert cfg.group_of("WAN") == "MAIN"
    assert cfg.group_of("LAN") == "MAIN"
    assert cfg.group_of("nope") is None


def test_defaults(tmp_path):
    cfg = C.load(write(tmp_path, one_instance()))
    assert cfg.control_socket == C.DEFAULT_CONTROL_SOCKET
    assert cfg.transition_hold_timeout == 2.0
    assert cfg.sync_groups == {}
    assert cfg.group_of("WAN") is None


def test_router_params(tmp_path):
    wan = C.load(write(tmp_path, FULL)).instances["WAN"]
    assert wan.router_params() == RouterParams(
        name="WAN",
        vrid=51,
        priority=150,
        virtual_addresses=(A("203.0.113.1"), A("203.0.113.2")),
        advert_interval=2,
        preempt=False,
        preempt_delay=30.0,
        auth_type=AUTH_SIMPLE,
        auth_data=b"s3cret\0\0",
        strict=True,
        garp_count=3,
        garp_repeat_delay=10.0,
    )
    lan = C.load(write(tmp_path, FULL)).instances["LAN"]
    assert lan.router_params().auth_data == bytes(8)


def test_vmac_ifname():
    inst = InstanceConfig(name="x", interface="eth0", vrid=51)
    assert inst.vmac_ifname == "vrrp51.eth0"
    long = InstanceConfig(name="x", interface="enp0s31f6abcde", vrid=255)
    assert long.vmac_ifname == "vrrp255.enp0s31"
    assert len(long.vmac_ifname) == 15


def test_auth_none_spellings(tmp_path):
    for auth in ('"none"', '{ type = "none" }'):
        cfg = C.load(write(tmp_path, one_instance(f"auth = {auth}\n")))
        assert cfg.instances["WAN"].auth_type == AUTH_NONE


def test_unknown_top_level_table_is_not_an_error(tmp_path):
    cfg = C.load(write(tmp_path, one_instance() + '\n[ctsync]\npeer = "10.0.0.2"\n[whatever.nested]\nx = 1\n'))
    assert list(cfg.instances) == ["WAN"]


def test_same_vrid_on_different_interfaces_is_fine(tmp_path):
    text = one_instance() + MINIMAL_INSTANCE.format(name="LAN", iface="eth1", vrid=1)
    cfg = C.load(write(tmp_path, text))
    assert sorted(cfg.instances) == ["LAN", "WAN"]


@pytest.mark.parametrize("name", ["r1.toml", "r2.toml", "loadshare-r1.toml", "loadshare-r2.toml",
                                  "fast-r1.toml", "fast-r2.toml", "dualwan.toml"])
def test_example_configs(name):
    path = REPO / "configs" / name
    if not path.exists():
        pytest.skip(f"configs/{name} does not exist (yet)")
    cfg = C.load(path)
    assert cfg.instances
    for inst in cfg.instances.values():
        p = inst.router_params()
        assert 1 <= p.vrid <= 255
        assert p.virtual_addresses
    for g in cfg.sync_groups.values():
        assert set(g.instances) <= set(cfg.instances)


@pytest.mark.parametrize("prefix", ["", "loadshare-", "fast-"])
def test_example_configs_agree_with_each_other(prefix):
    r1, r2 = REPO / "configs" / f"{prefix}r1.toml", REPO / "configs" / f"{prefix}r2.toml"
    if not (r1.exists() and r2.exists()):
        pytest.skip("configs/r1.toml and configs/r2.toml do not both exist (yet)")
    c1, c2 = C.load(r1), C.load(r2)
    assert set(c1.instances) == set(c2.instances)
    for name, i1 in c1.instances.items():
        i2 = c2.instances[name]
        # the two routers of a pair must agree on everything the §7.1 checks compare
        assert i1.vrid == i2.vrid
        assert i1.advert_interval == i2.advert_interval
        assert (i1.auth_type, i1.auth_password) == (i2.auth_type, i2.auth_password)
        assert {a.ip for a in i1.virtual_addresses} == {a.ip for a in i2.virtual_addresses}


# ---- errors: one each ------------------------------------------------------------------


def test_bad_vrid(tmp_path):
    assert problems(tmp_path, one_instance(vrid=300)) == [
        "bad.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got 300"
    ]


@pytest.mark.parametrize("value", ["0", "256", '"1"', "true", "1.5"])
def test_bad_vrid_values(tmp_path, value):
    text = one_instance().replace("vrid = 1", f"vrid = {value}")
    [p] = problems(tmp_path, text)
    assert p.startswith("bad.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got ")


def test_missing_interface(tmp_path):
    text = """
    [vrrpd.instance.WAN]
    vrid = 1
    virtual_addresses = ["10.0.0.1/24"]
    """
    assert problems(tmp_path, text) == ["bad.toml: vrrpd.instance.WAN.interface: missing (required)"]


def test_missing_vrid_and_addresses(tmp_path):
    text = """
    [vrrpd.instance.WAN]
    interface = "eth0"
    """
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.vrid: missing (required)",
        'bad.toml: vrrpd.instance.WAN.virtual_addresses: missing (required): a list of IPv4 CIDR strings like "10.0.0.1/24"',
    ]


def test_unknown_key_with_hint(tmp_path):
    assert problems(tmp_path, one_instance("prioirty = 150\n")) == [
        "bad.toml: vrrpd.instance.WAN.prioirty: unknown key (did you mean 'priority'?)"
    ]


def test_unknown_key_without_hint(tmp_path):
    assert problems(tmp_path, one_instance("zzzzzz = 1\n")) == ["bad.toml: vrrpd.instance.WAN.zzzzzz: unknown key"]


def test_unknown_top_key_with_hint(tmp_path):
    text = '[vrrpd]\ncontrol_sock = "/x"\n' + MINIMAL_INSTANCE.format(name="WAN", iface="eth0", vrid=1)
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.control_sock: unknown key (did you mean 'control_socket'?)"
    ]


def test_unknown_key_in_sync_group_and_track(tmp_path):
    text = one_instance('track_interfaces = [{ interface = "eth2", wieght = -10 }]\n') + """
    [vrrpd.sync_group.G]
    instances = ["WAN"]
    notfy = "x"
    """
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.track_interfaces[0].wieght: unknown key (did you mean 'weight'?)",
        "bad.toml: vrrpd.sync_group.G.notfy: unknown key (did you mean 'notify'?)",
    ]


def test_bad_cidr_names_the_index(tmp_path):
    text = one_instance().replace('["10.0.0.1/24"]', '["10.0.0.1/24", "10.0.0.300/24", "10.0.0.3/33", 5]')
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.virtual_addresses[1]: not an IPv4 address or CIDR: '10.0.0.300/24'",
        "bad.toml: vrrpd.instance.WAN.virtual_addresses[2]: not an IPv4 address or CIDR: '10.0.0.3/33'",
        "bad.toml: vrrpd.instance.WAN.virtual_addresses[3]: not an IPv4 address or CIDR: 5",
    ]


def test_ipv6_address_needs_version_3(tmp_path):
    text = one_instance().replace('["10.0.0.1/24"]', '["2001:db8::1/64"]')
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.virtual_addresses[0]: 2001:db8::1/64: VRRPv2 carries IPv4 addresses only; "
        "IPv6 needs version = 3"
    ]


def test_empty_address_list(tmp_path):
    text = one_instance().replace('["10.0.0.1/24"]', "[]")
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.virtual_addresses: must be a non-empty list of IPv4 CIDR strings, got []"
    ]


def test_too_many_addresses(tmp_path):
    many = ", ".join(f'"10.0.0.{i}/24"' for i in range(1, 22))
    text = one_instance().replace('["10.0.0.1/24"]', f"[{many}]")
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.virtual_addresses: at most 20 addresses per instance, got 21"
    ]


def test_password_longer_than_8(tmp_path):
    assert problems(tmp_path, one_instance('auth = { type = "pass", password = "123456789" }\n')) == [
        "bad.toml: vrrpd.instance.WAN.auth.password: at most 8 bytes (RFC 2338 simple password), got 9"
    ]


def test_password_multibyte_counts_bytes(tmp_path):
    [p] = problems(tmp_path, one_instance('auth = { type = "pass", password = "ééééé" }\n'))
    assert p == "bad.toml: vrrpd.instance.WAN.auth.password: at most 8 bytes (RFC 2338 simple password), got 10"


def test_password_missing(tmp_path):
    [p] = problems(tmp_path, one_instance('auth = { type = "pass" }\n'))
    assert p.startswith("bad.toml: vrrpd.instance.WAN.auth.password: missing")


def test_auth_ah_and_garbage(tmp_path):
    [p] = problems(tmp_path, one_instance('auth = { type = "ah" }\n'))
    assert p.startswith("bad.toml: vrrpd.instance.WAN.auth.type: \"ah\" (IP Authentication Header) is not supported")
    [p] = problems(tmp_path, one_instance('auth = "md5"\n'))
    assert p.startswith("bad.toml: vrrpd.instance.WAN.auth: must be \"none\" or")


def test_duplicate_vrid_on_an_interface(tmp_path):
    text = one_instance(vrid=7) + MINIMAL_INSTANCE.format(name="LAN", iface="eth0", vrid=7)
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.LAN.vrid: VRID 7 on eth0 is already used by IPv4 instance WAN"
    ]


def test_sync_group_naming_an_unknown_instance(tmp_path):
    text = one_instance() + """
    [vrrpd.sync_group.G]
    instances = ["WAN", "DMZ"]
    """
    assert problems(tmp_path, text) == ["bad.toml: vrrpd.sync_group.G.instances: no instance named 'DMZ' (defined: WAN)"]


def test_instance_in_two_groups(tmp_path):
    text = one_instance() + MINIMAL_INSTANCE.format(name="LAN", iface="eth1", vrid=2) + """
    [vrrpd.sync_group.G1]
    instances = ["WAN", "LAN"]
    [vrrpd.sync_group.G2]
    instances = ["LAN"]
    """
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.sync_group.G2.instances: instance 'LAN' is already in sync group 'G1'"
    ]


def test_sync_group_bad_instances(tmp_path):
    text = one_instance() + """
    [vrrpd.sync_group.G]
    instances = "WAN"
    """
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.sync_group.G.instances: must be a non-empty list of instance names, got 'WAN'"
    ]


def test_toml_syntax_error(tmp_path):
    [p] = problems(tmp_path, '[vrrpd]\ncontrol_socket = "/x\n')
    assert p.startswith("bad.toml: TOML syntax error: ")
    assert "line 2" in p


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        C.load(tmp_path / "missing.toml")
    [p] = exc.value.problems
    assert "missing.toml: cannot read: " in p


def test_no_vrrpd_table(tmp_path):
    assert problems(tmp_path, '[ctsync]\npeer = "x"\n') == ["bad.toml: vrrpd: missing table [vrrpd]"]


def test_no_instance(tmp_path):
    assert problems(tmp_path, '[vrrpd]\ncontrol_socket = "/x"\n') == [
        "bad.toml: vrrpd.instance: no instance defined: add a [vrrpd.instance.NAME] table"
    ]


def test_interface_name_too_long(tmp_path):
    assert problems(tmp_path, one_instance(iface="a-very-long-ifname")) == [
        "bad.toml: vrrpd.instance.WAN.interface: interface names are at most 15 characters, got 'a-very-long-ifname'"
    ]


@pytest.mark.parametrize(
    "line,expected",
    [
        ("priority = 0", "vrrpd.instance.WAN.priority: must be an integer from 1 to 255, got 0"),
        ("advert_interval = 0", "vrrpd.instance.WAN.advert_interval: must be an integer from 1 to 255, got 0"),
        ('preempt = "yes"', "vrrpd.instance.WAN.preempt: must be true or false, got 'yes'"),
        ("preempt_delay = -1", "vrrpd.instance.WAN.preempt_delay: must be a number of seconds from 0 to 3600, got -1"),
        ("strict = 1", "vrrpd.instance.WAN.strict: must be true or false, got 1"),
        ("use_vmac = 0", "vrrpd.instance.WAN.use_vmac: must be true or false, got 0"),
        ("garp_count = 101", "vrrpd.instance.WAN.garp_count: must be an integer from 0 to 100, got 101"),
        ("garp_interval = 11", "vrrpd.instance.WAN.garp_interval: must be a number of seconds from 0 to 10, got 11"),
        ("garp_repeat_delay = true", "vrrpd.instance.WAN.garp_repeat_delay: must be a number of seconds from 0 to 3600, got True"),
        ("notify = []", "vrrpd.instance.WAN.notify: must be a command: a string or a list of strings, got []"),
        ('track_interfaces = "eth2"', 'vrrpd.instance.WAN.track_interfaces: must be a list of { interface = "eth2", weight = -60 } tables'),
        ("track_interfaces = [{ interface = \"eth2\", weight = -300 }]",
         "vrrpd.instance.WAN.track_interfaces[0].weight: must be an integer from -254 to 254, got -300"),
        ("track_interfaces = [{ weight = -30 }]", "vrrpd.instance.WAN.track_interfaces[0].interface: missing (required)"),
    ],
)
def test_value_errors(tmp_path, line, expected):
    assert problems(tmp_path, one_instance(line + "\n")) == ["bad.toml: " + expected]


def test_top_level_value_errors(tmp_path):
    text = "[vrrpd]\ntransition_hold_timeout = 61\ncontrol_socket = \"\"\n" + MINIMAL_INSTANCE.format(
        name="WAN", iface="eth0", vrid=1
    )
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.control_socket: must be a non-empty string, got ''",
        "bad.toml: vrrpd.transition_hold_timeout: must be a number of seconds from 0 to 60, got 61",
    ]


# ---- errors: all at once ---------------------------------------------------------------


def test_several_problems_are_all_reported(tmp_path):
    text = """
    [vrrpd]
    [vrrpd.instance.WAN]
    interface = "eth0"
    vrid = 300
    virtual_addresses = ["10.0.0.1/24", "nope"]
    auth = { type = "pass", password = "much-too-long" }
    prioirty = 5

    [vrrpd.instance.LAN]
    vrid = 2
    virtual_addresses = ["10.0.1.1/24"]

    [vrrpd.instance.DMZ]
    interface = "eth2"
    vrid = 3
    virtual_addresses = ["10.0.2.1/24"]

    [vrrpd.instance.DMZ2]
    interface = "eth2"
    vrid = 3
    virtual_addresses = ["10.0.3.1/24"]

    [vrrpd.sync_group.G]
    instances = ["WAN", "GHOST"]
    """
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.prioirty: unknown key (did you mean 'priority'?)",
        "bad.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got 300",
        "bad.toml: vrrpd.instance.WAN.virtual_addresses[1]: not an IPv4 address or CIDR: 'nope'",
        "bad.toml: vrrpd.instance.WAN.auth.password: at most 8 bytes (RFC 2338 simple password), got 13",
        "bad.toml: vrrpd.instance.LAN.interface: missing (required)",
        "bad.toml: vrrpd.instance.DMZ2.vrid: VRID 3 on eth2 is already used by IPv4 instance DMZ",
        "bad.toml: vrrpd.sync_group.G.instances: no instance named 'GHOST' (defined: DMZ, DMZ2, LAN, WAN)",
    ]


def test_problems_after_a_required_field_error_are_reported_too(tmp_path):
    """A bad VRID must not hide the other problems of the same instance."""
    text = one_instance('preempt = "yes"\ngarp_interval = 99\n', vrid=0)
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got 0",
        "bad.toml: vrrpd.instance.WAN.preempt: must be true or false, got 'yes'",
        "bad.toml: vrrpd.instance.WAN.garp_interval: must be a number of seconds from 0 to 10, got 99",
    ]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[vrrpd]\ninstance = 5\n", ["bad.toml: vrrpd.instance: no instance defined: add a [vrrpd.instance.NAME] table"]),
        ("[vrrpd]\ninstance = 5\n[vrrpd.sync_group.G]\ninstances = [\"A\"]\n", [
            "bad.toml: vrrpd.instance: no instance defined: add a [vrrpd.instance.NAME] table",
            "bad.toml: vrrpd.sync_group.G.instances: no instance named 'A' (defined: none)",
        ]),
        ("[vrrpd]\nsync_group = [1]\n[vrrpd.instance.WAN]\ninterface = \"eth0\"\nvrid = 1\nvirtual_addresses = [\"10.0.0.1/24\"]\n", [
            "bad.toml: vrrpd.sync_group: must be a table of [vrrpd.sync_group.NAME] tables",
        ]),
        ("[vrrpd]\ninstance.WAN = 5\n", ["bad.toml: vrrpd.instance.WAN: must be a table"]),
    ],
    ids=["instance-not-a-table", "instance-not-a-table-with-group", "sync-group-not-a-table", "instance-entry-not-a-table"],
)
def test_malformed_structure_is_reported_not_raised(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected


def test_parse_without_path():
    with pytest.raises(ConfigError) as exc:
        C.parse({"vrrpd": {"instance": {"X": {"interface": "eth0", "vrid": 0, "virtual_addresses": ["10.0.0.1/8"]}}}})
    assert exc.value.problems == ["<config>: vrrpd.instance.X.vrid: must be an integer from 1 to 255, got 0"]
