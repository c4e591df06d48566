"""Text views of vrrpd's status for `vrrpctl status`: one block per instance, the
uplinks and probes. They read attributes of vrrpd.status's objects or of their JSON as
`vrrpctl` receives it (:func:`from_json`), so that the command-line tool needs neither
the dataclasses of the schema nor anything else the daemon imports (start-up: see
docs/benchmarks.md, "Start-up of the command-line tools").
"""

from __future__ import annotations

from types import SimpleNamespace


class _View(SimpleNamespace):
    """A JSON object read by attribute; ``get`` too, for the fields the schema keeps as
    dicts (last_switch, last_flush)."""

    def get(self, key: str, default=None):
        return getattr(self, key, default)


def from_json(obj):
    """The JSON of a status (dicts, lists) as attribute objects, for the renderers."""
    if isinstance(obj, dict):
        return _View(**{k: from_json(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj


def render_text(instances: list, verbose: bool = True) -> str:
    """Human view: one block per instance, non-zero error counters highlighted."""
    out: list[str] = []
    for st in instances:
        group = f"  sync group {st.sync_group}" if st.sync_group else ""
        v3 = "  VRRPv3" if getattr(st, "version", 2) == 3 else ""
        out.append(f"{st.name}: {st.state.upper()}  vrid {st.vrid} on {st.interface}{group}{v3}")
        prio = f"{st.priority}" if st.priority == st.effective_priority else f"{st.effective_priority} (configured {st.priority})"
        out.append(f"  priority        {prio}   preempt {'on' if st.preempt else 'off'}")
        for d in st.demotions:
            out.append(f"  demoted         {d}")
        out.append(f"  master          {st.master_ip or '-'}  ({st.master_reason})")
        learned = ""
        mai = getattr(st, "master_adver_interval", None)
        if mai is not None and mai != st.advert_interval:
            learned = f" (master's {mai:g}s)"
        out.append(f"  timers          advert {st.advert_interval:g}s{learned}  skew {st.skew_time:.3f}s  "
                   f"master-down {st.master_down_interval:.3f}s")
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
        errors = {n: v for n, v in vars(c).items() if n.endswith(("errors", "failures", "discards")) and v}
        if errors or verbose:
            shown = errors if errors else {"none": 0}
            out.append("  dropped         " + "  ".join(f"{k} {v}" for k, v in shown.items()))
        out.append("")
    return "\n".join(out)


def render_uplinks_text(st) -> str:
    out: list[str] = []
    if st.uplinks:
        state = "ALL DOWN (keeping the last choice)" if st.all_down else (st.active or "undecided (waiting for every probe)")
        out.append(f"uplinks: active {state}  switches {st.switches}  return routing {'on' if st.return_routing else 'off'}")
        for u in st.uplinks:
            health = {True: "healthy", False: "DOWN", None: "unknown"}[u.healthy]
            mark = "*" if u.active else " "
            out.append(f" {mark} {u.name:<10} {health:<8} {u.interface} via {u.gateway}  pref {u.preference}  table {u.table}  "
                       f"probe {u.probe}  flushed {u.flushed_entries} in {u.flushes} flush(es)")
        if st.last_switch:
            ls = st.last_switch
            out.append(f"  last switch     {ls.get('old') or '-'} -> {ls.get('new')} ({ls.get('reason')})")
        if st.last_flush:
            lf = st.last_flush
            out.append(f"  last flush      {lf.get('deleted')} entries NATed to {lf.get('address')} ({lf.get('uplink')}, {lf.get('filter')})")
        if st.route_errors:
            out.append(f"  route errors    {st.route_errors}")
    if st.probes:
        out.append("probes:")
        for p in st.probes:
            err = f"  last error: {p.last_error}" if p.last_error else ""
            out.append(f"  {p.name:<10} {p.state.upper():<8} {p.kind} {p.target} via {p.interface} {p.gateway} (table {p.table})  "
                       f"results {p.results} failed {p.failures} transitions {p.transitions}{err}")
    return "\n".join(out) + ("\n" if out else "")
