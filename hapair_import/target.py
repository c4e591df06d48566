"""What the product accepts, and the check of a converted file against it.

The mappings ask this module, not their own guesses, whether vrrpd takes a VRRP
version or an IPv6 virtual address (it takes both: ``version = 3``, RFC 5798, and
IPv6 strings in ``virtual_addresses``, the first one link-local);
tests/unit/test_import_keepalived.py checks that these constants agree with what
vrrpd.config.parse accepts.

The check runs vrrpd.config.parse and ctsync.config.parse (the code behind
``vrrpd --check`` / ``ctsync --check``) on the converted data; their problems are
listed at the top of the output. The ctsync key file is the one thing the output
cannot provide (conntrackd has no key): the check reads a stand-in secret instead
and the output says, under BEFORE USE, how to create the real file.
"""

from __future__ import annotations

import copy
from typing import Any

from ctsync import config as ctsync_config
from vrrpd import config as vrrpd_config

VRRP_VERSIONS: tuple[int, ...] = (2, 3)
IPV6_VIRTUAL_ADDRESSES = True  # with version 3; one family per instance, an IPv6 one's first VIP link-local
MAX_VIRTUAL_ADDRESSES = 20  # per instance, either family (vrrpd.config.MAX_ADDRESSES)
PRIORITY = (1, 255)
ADVERT_INTERVAL = (1, 255)  # VRRPv2: whole seconds
ADVERT_INTERVAL_V3 = (0.01, 40.95)  # VRRPv3: hundredths of a second (a 12-bit centisecond count)
GARP_REFRESH = (0, 86400)
PREEMPT_DELAY = (0, 3600)
GARP_COUNT = (0, 100)
GARP_INTERVAL = (0, 10)
GARP_REPEAT_DELAY = (0, 3600)
TRACK_WEIGHT = (-254, 254)
PROBE_INTERVAL = (0.05, 3600)
PROBE_RISE_FALL = (1, 100)
DEFAULT_KEY_FILE = "/etc/hapair/ctsync.key"
DEFAULT_CTSYNC_PORT = ctsync_config.DEFAULT_PORT
CTSYNC_PROTOCOLS = dict(ctsync_config.PROTOCOLS)
CTSYNC_TCP_STATES = dict(ctsync_config.TCP_STATES)
IFNAME_MAX = 15
_CONFIG_ERRORS = (vrrpd_config.ConfigError, ctsync_config.ConfigError)


def check(data: dict[str, Any], name: str = "FILE") -> list[str]:
    """What ``vrrpd --check`` and ``ctsync --check`` would say of ``data`` (empty: ok),
    with a stand-in for the ctsync key file."""
    problems: list[str] = []
    if "vrrpd" in data:
        try:
            vrrpd_config.parse(data, name)
        except _CONFIG_ERRORS as e:
            problems += [f"vrrpd: {p}" for p in e.problems]
    if "ctsync" in data:
        d = copy.deepcopy(data)
        t = d["ctsync"]
        if isinstance(t, dict) and "key_file" in t and "key" not in t:
            del t["key_file"]
            t["key"] = "stand-in secret for the check, not written"
        try:
            ctsync_config.parse(d, name)
        except _CONFIG_ERRORS as e:
            problems += [f"ctsync: {p}" for p in e.problems]
    return problems


def settle_addresses(vips: list[tuple[Any, Any]]) -> tuple[int, list, list[tuple[Any, str]], list[tuple[Any, str]], str | None]:
    """One instance's virtual addresses as vrrpd takes them: ``vips`` is ``[(ip_interface,
    tag)]`` in the source's order (the tag says where each came from). Returns the family
    (the first address's, as keepalived and VyOS decide it), the ``(address, tag)`` pairs
    to write, ``(tag, why)`` drops and notes, and why the instance cannot be translated
    (an IPv6 one without a link-local address), or None."""
    family = vips[0][0].version if vips else 4
    keep, drops, notes = [], [], []
    for addr, tag in vips:
        if addr.version != family:
            drops.append((tag, f"an IPv{addr.version} address in an IPv{family} instance (its first address decides): "
                               "a virtual router has one family; make a second instance with the same VRID for it"))
        else:
            keep.append((addr, tag))
    if family == 6 and keep and not keep[0][0].ip.is_link_local:
        ll = next((x for x in keep if x[0].ip.is_link_local), None)
        if ll is None:
            return family, [], drops, notes, (
                "an IPv6 instance needs a link-local virtual address, listed first (RFC 5798 §5.2.9: hosts know "
                "their router by it; vrrpd refuses the instance without): add e.g. fe80::1/64")
        keep.remove(ll)
        keep.insert(0, ll)
        notes.append((ll[1], "the link-local address is written first (RFC 5798 §5.2.9)"))
    for _addr, tag in keep[MAX_VIRTUAL_ADDRESSES:]:
        drops.append((tag, f"more than {MAX_VIRTUAL_ADDRESSES} addresses: vrrpd's limit per instance"))
    return family, keep[:MAX_VIRTUAL_ADDRESSES], drops, notes, None


def advert_interval(v: float, version: int) -> float | int:
    """``v`` seconds as vrrpd's advert_interval of that version: whole seconds 1-255 (v2),
    hundredths 0.01-40.95 (v3). Equal to ``v`` when nothing had to change."""
    if version == 2:
        return min(ADVERT_INTERVAL[1], max(ADVERT_INTERVAL[0], round(v)))
    lo, hi = ADVERT_INTERVAL_V3
    r = min(hi, max(lo, round(v * 100) / 100))
    return int(r) if r == int(r) else r
