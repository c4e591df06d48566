"""What the product accepts, and the check of a converted file against it.

The mappings ask this module, not their own guesses, whether vrrpd takes a VRRP
version or an IPv6 virtual address. When vrrpd gains VRRPv3 / IPv6 (keys
``version = 3`` and IPv6 strings in ``virtual_addresses``), the change here is one
line each; tests/unit/test_import_keepalived.py checks that these constants agree
with what vrrpd.config.parse accepts, so the day it does, that test says so.

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

VRRP_VERSIONS: tuple[int, ...] = (2,)  # add 3 when vrrpd accepts `version = 3`
IPV6_VIRTUAL_ADDRESSES = False  # True when vrrpd accepts IPv6 addresses in virtual_addresses
MAX_VIRTUAL_ADDRESSES = 20  # one VRRPv2 advert on a 1500-byte link
PRIORITY = (1, 255)
ADVERT_INTERVAL = (1, 255)
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
