"""Configuration of probes (`[vrrpd.probe.NAME]`), probe tracking of an instance
(`track_probes`) and uplinks (`[vrrpd.uplinks]`, `[vrrpd.uplinks.link.NAME]`).

Kept apart from config.py (which calls in here) because it is a feature of its own;
the same `Checker` collects the problems, so every error names file, key and problem.
See docs/uplinks.md for the meaning of each key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

PROBE_KINDS = ("icmp", "tcp")
DEFAULT_RULE_PRIORITY = 1000
DEFAULT_MARK_MASK = 0xFF


@dataclass(frozen=True)
class ProbeConfig:
    name: str
    interface: str
    gateway: ipaddress.IPv4Address
    target: ipaddress.IPv4Address
    kind: str = "icmp"
    port: int = 0  # tcp only
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 3
    fall: int = 3
    table: int = 0  # routing table of the pinned route; 0 until parse() assigns one
    notify: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrackProbe:
    probe: str
    weight: int = 0  # 0: FAULT while the probe is not up


@dataclass(frozen=True)
class UplinkConfig:
    name: str
    interface: str
    gateway: ipaddress.IPv4Address
    probe: str
    preference: int = 100
    snat_address: ipaddress.IPv4Address | None = None  # None: the interface's primary address
    table: int = 0
    mark: int = 0


@dataclass(frozen=True)
class FlushFilter:
    proto: str | None = None  # "tcp", "udp", "icmp" or None for all
    dport: int | None = None

    def describe(self) -> str:
        parts = [self.proto or "any protocol"]
        if self.dport is not None:
            parts.append(f"dport {self.dport}")
        return " ".join(parts)


@dataclass(frozen=True)
class UplinksConfig:
    links: dict[str, UplinkConfig]
    flush: FlushFilter | None = FlushFilter()  # None: never flush
    flush_on_return: bool = False
    return_routing: bool = False
    lan_interfaces: tuple[str, ...] = ()  # return_routing: where replies come from (empty: any non-uplink)
    rule_priority: int = DEFAULT_RULE_PRIORITY
    mark_mask: int = DEFAULT_MARK_MASK
    notify: tuple[str, ...] = ()
    manage_default_route: bool = True


_PROBE_KEYS = {"interface", "gateway", "target", "kind", "port", "interval", "timeout", "rise", "fall", "table", "notify"}
_UPLINKS_KEYS = {"link", "flush", "flush_on_return", "return_routing", "lan_interfaces", "rule_priority", "notify",
                 "manage_default_route"}
_LINK_KEYS = {"interface", "gateway", "probe", "preference", "snat_address", "table", "mark"}


def _ipv4(c, table: dict, key: str, prefix: str, required: bool = True) -> ipaddress.IPv4Address | None:
    if key not in table:
        if required:
            c.fail(f"{prefix}.{key}", "missing (required): an IPv4 address")
        return None
    v = table[key]
    try:
        if not isinstance(v, str):
            raise ValueError
        return ipaddress.IPv4Address(v)
    except ValueError:
        c.fail(f"{prefix}.{key}", f"must be an IPv4 address, got {v!r}")
        return None


def _ifname(c, table: dict, prefix: str) -> str | None:
    iface = c.string(table, "interface", prefix)
    if iface is not None and len(iface) > 15:
        c.fail(f"{prefix}.interface", f"interface names are at most 15 characters, got {iface!r}")
        return None
    return iface


def parse_probes(c, raw: Any) -> dict[str, ProbeConfig]:
    probes: dict[str, ProbeConfig] = {}
    if raw is None:
        return probes
    if not isinstance(raw, dict):
        c.fail("vrrpd.probe", "must be a table of [vrrpd.probe.NAME] tables")
        return probes
    for name, t in raw.items():
        prefix = f"vrrpd.probe.{name}"
        if not isinstance(t, dict):
            c.fail(prefix, "must be a table")
            continue
        c.unknown(t, _PROBE_KEYS, prefix)
        iface = _ifname(c, t, prefix)
        gw = _ipv4(c, t, "gateway", prefix)
        target = _ipv4(c, t, "target", prefix)
        kind = t.get("kind", "icmp")
        if kind not in PROBE_KINDS:
            c.fail(f"{prefix}.kind", f"must be one of {', '.join(PROBE_KINDS)}, got {kind!r}")
            kind = None
        port = 0
        if kind == "tcp":
            port = c.integer(t, "port", prefix, 1, 65535)
        elif "port" in t:
            c.fail(f"{prefix}.port", "only a tcp probe has a port")
        interval = c.number(t, "interval", prefix, 0.05, 3600, 1.0)
        timeout = c.number(t, "timeout", prefix, 0.01, 60, min(1.0, interval))
        if timeout > interval:
            c.fail(f"{prefix}.timeout", f"must not be longer than interval ({interval}s), got {timeout}")
        rise = c.integer(t, "rise", prefix, 1, 100, 3)
        fall = c.integer(t, "fall", prefix, 1, 100, 3)
        table = c.integer(t, "table", prefix, 1, 0xFFFFFFF0, 0) if "table" in t else 0
        if table in (253, 254, 255):
            c.fail(f"{prefix}.table", f"{table} is a kernel table (default/main/local): pick another")
        notify = c.command(t, "notify", prefix)
        if None in (iface, gw, target, kind, port, rise, fall, table):
            continue
        probes[name] = ProbeConfig(name, iface, gw, target, kind, port or 0, interval, timeout, rise, fall, table or 0, notify)
    return probes


def parse_track_probes(c, table: dict, prefix: str) -> tuple[TrackProbe, ...]:
    return tuple(TrackProbe(n, w) for n, w in c.weighted_names(table, "track_probes", prefix, "probe", "ISP1"))


def _flush_filter(c, raw: Any, prefix: str) -> FlushFilter | None:
    if raw is None or raw is True:
        return FlushFilter()
    if raw is False:
        return None
    if not isinstance(raw, dict):
        c.fail(f"{prefix}.flush", f"must be true, false or a filter like {{ proto = \"udp\", dport = 5060 }}, got {raw!r}")
        return FlushFilter()
    c.unknown(raw, {"proto", "dport"}, f"{prefix}.flush")
    proto = raw.get("proto")
    if proto is not None and proto not in ("tcp", "udp", "icmp"):
        c.fail(f"{prefix}.flush.proto", f"must be tcp, udp or icmp, got {proto!r}")
        proto = None
    dport = c.integer(raw, "dport", f"{prefix}.flush", 1, 65535, 0) if "dport" in raw else None
    if dport is not None and proto not in ("tcp", "udp"):
        c.fail(f"{prefix}.flush.dport", "a destination port needs proto = \"tcp\" or \"udp\"")
    return FlushFilter(proto, dport or None)


def parse_uplinks(c, raw: Any, probes: dict[str, ProbeConfig], all_probe_names: set[str]) -> UplinksConfig | None:
    if raw is None:
        return None
    prefix = "vrrpd.uplinks"
    if not isinstance(raw, dict):
        c.fail(prefix, "must be a table with [vrrpd.uplinks.link.NAME] tables")
        return None
    c.unknown(raw, _UPLINKS_KEYS, prefix)
    raw_links = raw.get("link")
    if not isinstance(raw_links, dict) or len(raw_links) < 2:
        c.fail(f"{prefix}.link", "needs at least two [vrrpd.uplinks.link.NAME] tables (one uplink has nothing to fail over to)")
        raw_links = raw_links if isinstance(raw_links, dict) else {}
    links: dict[str, UplinkConfig] = {}
    for i, (name, t) in enumerate(raw_links.items()):
        lp = f"{prefix}.link.{name}"
        if not isinstance(t, dict):
            c.fail(lp, "must be a table")
            continue
        c.unknown(t, _LINK_KEYS, lp)
        iface = _ifname(c, t, lp)
        gw = _ipv4(c, t, "gateway", lp)
        probe = c.string(t, "probe", lp)
        if probe is not None and probe not in all_probe_names:
            c.fail(f"{lp}.probe", f"no probe named {probe!r} (defined: {', '.join(sorted(all_probe_names)) or 'none'})")
        elif probe in probes and iface is not None:
            p = probes[probe]
            if p.interface != iface or (gw is not None and p.gateway != gw):
                c.fail(f"{lp}.probe", f"probe {probe!r} leaves by {p.interface} via {p.gateway}, this uplink is {iface} via {gw}: "
                       "a probe must be pinned to the uplink it checks")
        pref = c.integer(t, "preference", lp, 0, 65535, 100)
        snat = _ipv4(c, t, "snat_address", lp, required=False)
        table = c.integer(t, "table", lp, 1, 0xFFFFFFF0, 100 + i)
        if table in (253, 254, 255):
            c.fail(f"{lp}.table", f"{table} is a kernel table (default/main/local): pick another")
        mark = c.integer(t, "mark", lp, 1, 0xFF, i + 1)
        if None in (iface, gw, probe, pref, table, mark):
            continue
        links[name] = UplinkConfig(name, iface, gw, probe, pref, snat, table, mark)
    for attr, what in (("interface", "interface"), ("table", "table"), ("mark", "mark")):
        seen: dict = {}
        for u in links.values():
            v = getattr(u, attr)
            if v in seen:
                c.fail(f"{prefix}.link.{u.name}.{attr}", f"{what} {v} is already used by uplink {seen[v]}")
            seen[v] = u.name
    lan = raw.get("lan_interfaces", [])
    if not isinstance(lan, list) or not all(isinstance(x, str) and 0 < len(x) <= 15 for x in lan):
        c.fail(f"{prefix}.lan_interfaces", f"must be a list of interface names, got {lan!r}")
        lan = []
    return UplinksConfig(
        links=links,
        flush=_flush_filter(c, raw.get("flush"), prefix),
        flush_on_return=c.boolean(raw, "flush_on_return", prefix, False),
        return_routing=c.boolean(raw, "return_routing", prefix, False),
        lan_interfaces=tuple(lan),
        rule_priority=c.integer(raw, "rule_priority", prefix, 1, 32765, DEFAULT_RULE_PRIORITY),
        notify=c.command(raw, "notify", prefix),
        manage_default_route=c.boolean(raw, "manage_default_route", prefix, True),
    )


def assign_probe_tables(c, probes: dict[str, ProbeConfig], uplinks: UplinksConfig | None) -> dict[str, ProbeConfig]:
    """Each interface a probe leaves by gets one routing table (a policy rule `oif IFACE`
    selects it), holding the default route via the probe's gateway. A probe on an uplink's
    interface uses that uplink's table; others get 200, 201, ... unless set."""
    by_iface: dict[str, tuple[ipaddress.IPv4Address, int, str]] = {}
    if uplinks:
        for u in uplinks.links.values():
            by_iface[u.interface] = (u.gateway, u.table, f"uplink {u.name}")
    out: dict[str, ProbeConfig] = {}
    used = {t for _, t, _ in by_iface.values()}
    next_free = 200
    for name, p in probes.items():
        prefix = f"vrrpd.probe.{name}"
        if p.interface in by_iface:
            gw, table, owner = by_iface[p.interface]
            if gw != p.gateway:
                c.fail(f"{prefix}.gateway", f"{p.interface} already leads to {gw} ({owner}): probes on one interface share one gateway")
                continue
            if p.table and p.table != table:
                c.fail(f"{prefix}.table", f"{p.interface} already uses table {table} ({owner})")
                continue
            out[name] = replace(p, table=table)
            continue
        table = p.table
        if not table:
            while next_free in used:
                next_free += 1
            table = next_free
        elif table in used:
            c.fail(f"{prefix}.table", f"table {table} is already used by another interface")
            continue
        used.add(table)
        by_iface[p.interface] = (p.gateway, table, f"probe {name}")
        out[name] = replace(p, table=table)
    return out


