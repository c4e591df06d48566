"""The one schema for vrrpd's state and counters.

The daemon fills `InstanceStatus` objects; `vrrpctl status` renders them as text or
JSON and `vrrpctl metrics` as Prometheus exposition. Field names are a public
interface (tests, scripts and ctsync read them): add, never rename.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class Counters:
    adverts_rx: int = 0
    adverts_tx: int = 0
    became_master: int = 0
    released_master: int = 0
    prio0_rx: int = 0
    prio0_tx: int = 0
    garp_tx: int = 0
    # Receive checks of RFC 3768 §7.1, in the order they are applied.
    ttl_errors: int = 0
    version_errors: int = 0
    length_errors: int = 0
    checksum_errors: int = 0
    type_errors: int = 0
    vrid_errors: int = 0
    owner_discards: int = 0  # adverts an address owner (priority 255) ignores, as §7.1 says
    auth_type_errors: int = 0
    auth_failures: int = 0
    address_list_errors: int = 0  # counted; dropped only with strict = true
    interval_errors: int = 0
    send_errors: int = 0
    hold_timeouts: int = 0  # master transitions whose subscribers did not confirm in time

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
    counters: Counters = field(default_factory=Counters)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InstanceStatus":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["counters"] = Counters(**{k: v for k, v in data.get("counters", {}).items() if k in COUNTER_NAMES})
        return cls(**values)


def render_text(instances: list[InstanceStatus], verbose: bool = True) -> str:
    """Human view: one block per instance, non-zero error counters highlighted."""
    out: list[str] = []
    for st in instances:
        group = f"  sync group {st.sync_group}" if st.sync_group else ""
        out.append(f"{st.name}: {st.state.upper()}  vrid {st.vrid} on {st.interface}{group}")
        prio = f"{st.priority}" if st.priority == st.effective_priority else f"{st.effective_priority} (configured {st.priority})"
        out.append(f"  priority        {prio}   preempt {'on' if st.preempt else 'off'}")
        for d in st.demotions:
            out.append(f"  demoted         {d}")
        out.append(f"  master          {st.master_ip or '-'}  ({st.master_reason})")
        out.append(f"  timers          advert {st.advert_interval}s  skew {st.skew_time:.3f}s  master-down {st.master_down_interval:.3f}s")
        out.append(f"  vmac            {st.vmac or '- (addresses on the parent)'}")
        out.append(f"  addresses       {', '.join(st.virtual_addresses)}")
        if st.fault_reasons:
            out.append(f"  fault           {'; '.join(st.fault_reasons)}")
        out.append(f"  last event      {st.last_event}")
        c = st.counters
        out.append(
            f"  adverts         rx {c.adverts_rx}  tx {c.adverts_tx}  prio0 rx {c.prio0_rx} tx {c.prio0_tx}  garp tx {c.garp_tx}"
        )
        out.append(f"  transitions     became master {c.became_master}  released {c.released_master}")
        errors = {n: getattr(c, n) for n in COUNTER_NAMES if n.endswith(("errors", "failures", "discards")) and getattr(c, n)}
        if errors or verbose:
            shown = errors if errors else {"none": 0}
            out.append("  dropped         " + "  ".join(f"{k} {v}" for k, v in shown.items()))
        out.append("")
    return "\n".join(out)


def render_metrics(instances: list[InstanceStatus]) -> str:
    """Prometheus text exposition of the same fields."""
    lines = [
        "# HELP vrrp_state 1 for the instance's current state",
        "# TYPE vrrp_state gauge",
    ]
    for st in instances:
        for s in ("initialize", "backup", "master", "fault"):
            lines.append(f'vrrp_state{{instance="{st.name}",vrid="{st.vrid}",state="{s}"}} {int(st.state == s)}')
    lines += ["# TYPE vrrp_effective_priority gauge"]
    for st in instances:
        lines.append(f'vrrp_effective_priority{{instance="{st.name}",vrid="{st.vrid}"}} {st.effective_priority}')
    for name in COUNTER_NAMES:
        lines.append(f"# TYPE vrrp_{name}_total counter")
        for st in instances:
            lines.append(f'vrrp_{name}_total{{instance="{st.name}",vrid="{st.vrid}"}} {getattr(st.counters, name)}')
    return "\n".join(lines) + "\n"
