"""The one schema for vrrpd's state and counters.

The daemon fills `InstanceStatus` objects; `vrrpctl status` renders them as text or
JSON, and vrrpd/metrics.py's collectors as Prometheus metrics (`vrrpctl metrics`,
`metrics_listen`). Field names are a public
interface (tests, scripts and ctsync read them): add, never rename.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .status_text import render_text, render_uplinks_text  # noqa: F401 - the text views, kept lean for vrrpctl


@dataclass
class Counters:
    adverts_rx: int = 0
    adverts_tx: int = 0
    became_master: int = 0
    released_master: int = 0
    prio0_rx: int = 0
    prio0_tx: int = 0
    garp_tx: int = 0  # neighbour announcements: gratuitous ARPs, or unsolicited NAs for IPv6
    # Receive checks of RFC 3768 §7.1 / RFC 5798 §7.1, in the order they are applied.
    ttl_errors: int = 0  # IPv4 TTL or IPv6 hop limit not 255
    version_errors: int = 0
    length_errors: int = 0
    checksum_errors: int = 0
    type_errors: int = 0
    vrid_errors: int = 0
    owner_discards: int = 0  # adverts an address owner (priority 255) ignores, as §7.1 says
    auth_type_errors: int = 0
    auth_failures: int = 0
    address_list_errors: int = 0  # counted; dropped only with strict = true
    interval_errors: int = 0  # v2: dropped; v3: counted and accepted (the backups learn it), 0 dropped
    send_errors: int = 0
    hold_timeouts: int = 0  # master transitions whose subscribers did not confirm in time
    own_address_adverts: int = 0  # adverts with our own address as source (looped back, or spoofed): ignored
    prio0_ignored: int = 0  # priority 0 from a router that is not the master we know: ignored
    prio0_answers_limited: int = 0  # priority-0 adverts a master did not answer again within one interval

    def bump(self, name: str, by: int = 1) -> None:
        setattr(self, name, getattr(self, name) + by)


COUNTER_NAMES = tuple(f.name for f in fields(Counters))


@dataclass
class InstanceStatus:
    name: str
    interface: str
    vrid: int
    state: str
    priority: int
    effective_priority: int
    master_ip: str | None
    advert_interval: int
    skew_time: float
    master_down_interval: float
    vmac: str | None
    virtual_addresses: list[str]
    last_event: str
    master_reason: str
    sync_group: str | None = None
    preempt: bool = True
    primary_ip: str | None = None
    fault_reasons: list[str] = field(default_factory=list)
    since: float | None = None  # wall-clock time of the last transition
    last_hold: float | None = None  # seconds the last move to master waited for subscribers
    demotions: list[str] = field(default_factory=list)  # "-50 ctsync: not ready (...)", asked by subscribers
    version: int = 2  # VRRP version: 2 (RFC 3768) or 3 (RFC 5798)
    master_adver_interval: float | None = None  # v3: the interval learned from the master, seconds
    counters: Counters = field(default_factory=Counters)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InstanceStatus":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["counters"] = Counters(**{k: v for k, v in data.get("counters", {}).items() if k in COUNTER_NAMES})
        return cls(**values)


# ---- probes and uplinks (docs/uplinks.md) ------------------------------------------


@dataclass
class ProbeStatus:
    name: str
    kind: str
    interface: str
    gateway: str
    target: str
    table: int
    state: str  # "up", "down" or "unknown" (not enough results yet)
    results: int = 0
    failures: int = 0
    transitions: int = 0
    last_error: str = ""
    last_result: str | None = None  # "ok", "fail" or None
    rise: int = 3
    fall: int = 3
    interval: float = 1.0


@dataclass
class UplinkStatus:
    name: str
    interface: str
    gateway: str
    probe: str
    preference: int
    table: int
    mark: int
    healthy: bool | None
    active: bool
    flushes: int = 0
    flushed_entries: int = 0


@dataclass
class UplinksStatus:
    probes: list[ProbeStatus] = field(default_factory=list)
    uplinks: list[UplinkStatus] = field(default_factory=list)
    active: str | None = None
    switches: int = 0
    all_down: bool = False
    return_routing: bool = False
    route_errors: int = 0
    last_switch: dict | None = None
    last_flush: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UplinksStatus":
        def pick(klass, d):
            known = {f.name for f in fields(klass)}
            return klass(**{k: v for k, v in d.items() if k in known})

        out = pick(cls, {k: v for k, v in data.items() if k not in ("probes", "uplinks")})
        out.probes = [pick(ProbeStatus, p) for p in data.get("probes", [])]
        out.uplinks = [pick(UplinkStatus, u) for u in data.get("uplinks", [])]
        return out
