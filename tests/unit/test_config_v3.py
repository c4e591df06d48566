"""vrrpd.config for VRRPv3 instances: version, centisecond intervals, IPv6 virtual
addresses, Accept_Mode, the IPv4 checksum convention, garp_refresh; and every wrong
combination refused with file, key and problem."""

from __future__ import annotations

import ipaddress

import pytest

from vrrpd import config as C
from vrrpd.codec import V3Codec

from .test_config import problems, write

V6 = """
[vrrpd]
[vrrpd.instance.LAN6]
interface = "eth1"
vrid = 2
version = 3
advert_interval = 0.05
virtual_addresses = ["fe80::1/64", "2001:db8:100::1/64"]
accept_mode = true
garp_refresh = 60

[vrrpd.instance.LAN]
interface = "eth1"
vrid = 2
version = 3
advert_interval = 0.05
virtual_addresses = ["192.168.100.1/24"]
checksum_pseudo_header = false

[vrrpd.sync_group.G]
instances = ["LAN", "LAN6"]
"""


def inst(extra: str, vips: str = '["10.0.0.1/24"]', version: str = "version = 3\n") -> str:
    return f"[vrrpd]\n[vrrpd.instance.V]\ninterface = \"eth0\"\nvrid = 7\nvirtual_addresses = {vips}\n{version}{extra}"


def test_v3_ipv4_and_ipv6_instances_share_a_vrid(tmp_path):
    cfg = C.load(write(tmp_path, V6))
    six, four = cfg.instances["LAN6"], cfg.instances["LAN"]
    assert (six.version, six.family, six.advert_interval, six.accept_mode, six.garp_refresh) == (3, 6, 0.05, True, 60.0)
    assert six.virtual_addresses == (ipaddress.IPv6Interface("fe80::1/64"), ipaddress.IPv6Interface("2001:db8:100::1/64"))
    assert (four.family, four.accept_mode, four.checksum_pseudo_header) == (4, None, False)
    assert six.vmac_ifname == "vrrp6.2.eth1" and four.vmac_ifname == "vrrp2.eth1"
    p = six.router_params()
    assert (p.version, p.family, p.advert_interval_cs, p.accept, p.garp_refresh) == (3, 6, 5, True, 60.0)
    assert four.router_params().accept is False  # RFC 5798 §6.1 default for v3
    assert cfg.group_of("LAN6") == "G"


def test_v2_stays_the_default(tmp_path):
    cfg = C.load(write(tmp_path, inst("", version="")))
    v = cfg.instances["V"]
    assert (v.version, v.advert_interval, v.accept_mode, v.garp_refresh) == (2, 1, None, 0.0)
    assert v.router_params().accept is True  # what vrrpd always did for v2
    # A whole number written as a float is still whole seconds.
    assert C.load(write(tmp_path, inst("advert_interval = 2.0\n", version=""))).instances["V"].advert_interval == 2


def test_codec_per_instance_follows_the_config(tmp_path):
    from vrrpd.codec import codec_for
    cfg = C.load(write(tmp_path, V6))
    for name, family, pseudo in (("LAN6", 6, True), ("LAN", 4, False)):
        i = cfg.instances[name]
        c = codec_for(i.version, i.family, i.checksum_pseudo_header)
        assert c == V3Codec(family, pseudo)


@pytest.mark.parametrize("text, problem", [
    (inst("advert_interval = 0.5\n", version=""),
     "vrrpd.instance.V.advert_interval: VRRPv2 carries whole seconds (1 to 255), got 0.5; fractions of a second need version = 3"),
    (inst("advert_interval = 0.005\n"),
     "vrrpd.instance.V.advert_interval: VRRPv3 carries 0.01 to 40.95 s in steps of 0.01 s (RFC 5798 §5.2.7), got 0.005"),
    (inst("advert_interval = 41\n"),
     "vrrpd.instance.V.advert_interval: VRRPv3 carries 0.01 to 40.95 s in steps of 0.01 s (RFC 5798 §5.2.7), got 41"),
    (inst("advert_interval = 0.125\n"),
     "vrrpd.instance.V.advert_interval: VRRPv3 carries 0.01 to 40.95 s in steps of 0.01 s (RFC 5798 §5.2.7), got 0.125"),
    (inst('advert_interval = "fast"\n'),
     "vrrpd.instance.V.advert_interval: must be a number of seconds from 0.01 to 40.95, got 'fast'"),
    (inst("version = 4\n", version=""), "vrrpd.instance.V.version: must be an integer from 2 to 3, got 4"),
    (inst('auth = { type = "pass", password = "x" }\n'),
     "vrrpd.instance.V.auth: VRRPv3 has no authentication (RFC 5798 §9); remove auth or use version = 2"),
    (inst("", vips='["10.0.0.1/24", "fe80::1/64"]'),
     "vrrpd.instance.V.virtual_addresses: IPv4 and IPv6 addresses mixed: a virtual router has one family "
     "(RFC 5798 §5.2.9); make two instances, one per family (they may share the VRID)"),
    (inst("", vips='["2001:db8::1/64", "fe80::1/64"]'),
     "vrrpd.instance.V.virtual_addresses[0]: 2001:db8::1/64: the first IPv6 virtual address must be the virtual "
     "router's link-local address, e.g. \"fe80::1/64\" (RFC 5798 §5.2.9: hosts know their router by it)"),
    (inst("", vips='["fe80::1%eth0/64"]'),
     "vrrpd.instance.V.virtual_addresses[0]: no scope id ('fe80::1%eth0/64'): the instance's interface is the "
     "scope of a link-local address"),
    (inst("", vips='["ff02::1/64"]'),
     "vrrpd.instance.V.virtual_addresses[0]: ff02::1/64 cannot be a virtual address (multicast, unspecified or loopback)"),
    (inst("", vips='["fe80::1/64", "fe80::1/64"]'), "vrrpd.instance.V.virtual_addresses: an address is listed twice"),
    (inst("", vips='["fe80::1/64", "nope"]'),
     "vrrpd.instance.V.virtual_addresses[1]: not an IPv4 or IPv6 address or CIDR: 'nope'"),
    (inst("", vips='["fe80::1/64"]', version=""),
     "vrrpd.instance.V.virtual_addresses[0]: fe80::1/64: VRRPv2 carries IPv4 addresses only; IPv6 needs version = 3"),
    (inst("checksum_pseudo_header = false\n", version=""),
     "vrrpd.instance.V.checksum_pseudo_header: only VRRPv3 over IPv4 has a choice of checksum (RFC 5798 §5.2.8); "
     "remove it (this instance is VRRPv2)"),
    (inst("checksum_pseudo_header = false\n", vips='["fe80::1/64"]'),
     "vrrpd.instance.V.checksum_pseudo_header: only VRRPv3 over IPv4 has a choice of checksum (RFC 5798 §5.2.8); "
     "remove it (this instance is IPv6: always with the pseudo-header)"),
    (inst('accept_mode = "yes"\n'), "vrrpd.instance.V.accept_mode: must be true or false, got 'yes'"),
    (inst("garp_refresh = -1\n"), "vrrpd.instance.V.garp_refresh: must be a number of seconds from 0 to 86400, got -1"),
])
def test_v3_problems_name_file_key_and_problem(tmp_path, text, problem):
    assert problems(tmp_path, text) == [f"bad.toml: {problem}"]


def test_same_family_same_vrid_refused_other_family_allowed(tmp_path):
    text = V6 + '\n[vrrpd.instance.LAN6B]\ninterface = "eth1"\nvrid = 2\nversion = 3\nvirtual_addresses = ["fe80::2/64"]\n'
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.LAN6B.vrid: VRID 2 on eth1 is already used by IPv6 instance LAN6"]


def test_macvlan_names_cut_to_15_characters_must_differ(tmp_path):
    text = ("[vrrpd]\n" + "".join(
        f'[vrrpd.instance.{n}]\ninterface = "{i}"\nvrid = 1\nvirtual_addresses = ["10.0.{k}.1/24"]\n'
        for k, (n, i) in enumerate((("A", "enp3s0f0np0x1"), ("B", "enp3s0f0np0x2"))))
    )
    assert problems(tmp_path, text) == [
        "bad.toml: vrrpd.instance.B.interface: its macvlan name vrrp1.enp3s0f0n (cut to 15 characters) is also "
        "instance A's; use a shorter interface name"]
