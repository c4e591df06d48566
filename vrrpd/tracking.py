"""Interface tracking, sans-IO: link states in, effective priority and fault out.

The instance's own interface going down is a FAULT (it cannot advertise nor hold its
addresses). A tracked interface with a weight changes the advertised priority while it
is down (Redback/Juniper style: `weight = -60` lets the peer preempt); a tracked
interface without a weight (or weight 0) is a FAULT, as keepalived's track_interface.

Tracked probes (`track_probes`, see docs/uplinks.md) work the same way: a probe that is
not up (down, or no debounced result yet) subtracts its weight, or with weight 0 is a
FAULT. Their health comes debounced from probes.ProbeHealth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import InstanceConfig


@dataclass
class Tracker:
    instance: InstanceConfig
    links: dict[str, bool] = field(default_factory=dict)  # ifname -> up (unknown: absent)
    probes: dict[str, bool] = field(default_factory=dict)  # probe name -> up (unknown: absent)

    @property
    def watched(self) -> set[str]:
        return {self.instance.interface} | {t.interface for t in self.instance.track_interfaces}

    def update(self, ifname: str, up: bool) -> bool:
        """Record a link state; True if it matters to this instance and changed."""
        if ifname not in self.watched or self.links.get(ifname) == up:
            return False
        self.links[ifname] = up
        return True

    def update_probe(self, name: str, up: bool) -> bool:
        """Record a probe's debounced health; True if this instance tracks it and it changed."""
        if name not in {t.probe for t in self.instance.track_probes} or self.probes.get(name) == up:
            return False
        self.probes[name] = up
        return True

    def _probe_down(self, name: str) -> bool:
        return not self.probes.get(name, False)

    def _down(self, ifname: str) -> bool:
        return self.links.get(ifname) is False or ifname not in self.links

    def effective_priority(self) -> int:
        prio = self.instance.priority
        for t in self.instance.track_interfaces:
            if t.weight and self._down(t.interface):
                prio += t.weight
        for p in self.instance.track_probes:
            if p.weight and self._probe_down(p.probe):
                prio += p.weight
        return prio

    def fault_reason(self) -> str | None:
        if self._down(self.instance.interface):
            missing = self.instance.interface not in self.links
            return f"interface {self.instance.interface} {'not found' if missing else 'is down'}"
        for t in self.instance.track_interfaces:
            if not t.weight and self._down(t.interface):
                return f"tracked interface {t.interface} is down"
        for p in self.instance.track_probes:
            if not p.weight and self._probe_down(p.probe):
                state = "has no result yet" if p.probe not in self.probes else "is down"
                return f"tracked probe {p.probe} {state}"
        return None
