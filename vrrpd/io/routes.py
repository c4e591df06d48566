"""Per-uplink routing tables, policy rules and the main default route (pyroute2, slow path).

Runs in the daemon's NetlinkWorker thread like io/links.py. Everything is idempotent
(`replace` for routes, look before adding a rule), so a restart converges; `remove_rules`
deletes only the rules vrrpd installs (matched by priority and table), on exit.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

MAIN_TABLE = 254


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def set_default(ipr: IPRoute, gateway: ipaddress.IPv4Address, ifname: str, table: int = MAIN_TABLE) -> bool:
    """`default via GATEWAY dev IFNAME` in `table` (replacing any other default there).
    False if the device is missing or the kernel refuses (link down: no route possible)."""
    idx = _index(ipr, ifname)
    if idx is None:
        return False
    try:
        ipr.route("replace", dst="0.0.0.0/0", gateway=str(gateway), oif=idx, table=table)
        return True
    except NetlinkError as e:
        if e.code in (errno.ENETUNREACH, errno.ENODEV, errno.EINVAL):
            return False
        raise


def _rules(ipr: IPRoute) -> list:
    return list(ipr.get_rules(family=socket.AF_INET))


def _has_rule(ipr: IPRoute, priority: int, table: int, **match) -> bool:
    for r in _rules(ipr):
        if r.get_attr("FRA_PRIORITY") != priority or r.get_attr("FRA_TABLE", r["table"]) != table:
            continue
        if all(r.get_attr(k) == v for k, v in match.items()):
            return True
    return False


def ensure_oif_rule(ipr: IPRoute, ifname: str, table: int, priority: int) -> None:
    """Traffic bound to IFNAME (the probes) looks up `table` first."""
    if not _has_rule(ipr, priority, table, FRA_OIFNAME=ifname):
        ipr.rule("add", family=socket.AF_INET, oifname=ifname, table=table, priority=priority)


def ensure_fwmark_rule(ipr: IPRoute, mark: int, mask: int, table: int, priority: int) -> None:
    if not _has_rule(ipr, priority, table, FRA_FWMARK=mark):
        ipr.rule("add", family=socket.AF_INET, fwmark=mark, fwmask=mask, table=table, priority=priority)


def ensure_suppress_default_rule(ipr: IPRoute, priority: int) -> None:
    """`lookup main suppress_prefixlength 0`: marked packets use the main table for every
    route but the default one, so a per-uplink table only needs its default route."""
    for r in _rules(ipr):
        if r.get_attr("FRA_PRIORITY") == priority and r.get_attr("FRA_SUPPRESS_PREFIXLEN") == 0:
            return
    ipr.rule("add", family=socket.AF_INET, table=MAIN_TABLE, priority=priority, suppress_prefixlen=0)


def remove_rules(ipr: IPRoute, priorities: set[int], tables: set[int]) -> int:
    """Delete the rules at `priorities` that point to one of `tables`; returns how many."""
    n = 0
    for r in _rules(ipr):
        prio = r.get_attr("FRA_PRIORITY")
        table = r.get_attr("FRA_TABLE", r["table"])
        if prio in priorities and table in tables:
            try:
                ipr.rule("del", family=socket.AF_INET, priority=prio, table=table,
                         **{k: v for k, v in (("oifname", r.get_attr("FRA_OIFNAME")),
                                              ("fwmark", r.get_attr("FRA_FWMARK")),
                                              ("fwmask", r.get_attr("FRA_FWMASK")),
                                              ("suppress_prefixlen", r.get_attr("FRA_SUPPRESS_PREFIXLEN")))
                            if v is not None and not (k == "suppress_prefixlen" and v == 0xFFFFFFFF)})
                n += 1
            except NetlinkError as e:
                if e.code != errno.ENOENT:
                    raise
    return n


def flush_table(ipr: IPRoute, table: int) -> None:
    for r in ipr.get_routes(family=socket.AF_INET, table=table):
        if r.get_attr("RTA_TABLE", r["table"]) != table:
            continue
        try:
            ipr.route("del", table=table, dst=f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}")
        except NetlinkError:
            pass


def primary_ipv4(ipr: IPRoute, ifname: str) -> ipaddress.IPv4Address | None:
    idx = _index(ipr, ifname)
    if idx is None:
        return None
    for msg in ipr.get_addr(family=socket.AF_INET, index=idx):
        return ipaddress.IPv4Address(msg.get_attr("IFA_ADDRESS"))
    return None
