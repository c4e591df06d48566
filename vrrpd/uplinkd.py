"""The trio driver of probes and uplinks (the decisions are in probes.py and uplinks.py).

* One task per probe sends one probe per interval through its pinned path
  (io/probe.py) and feeds `ProbeHealth`. A debounced change goes to the instances that
  track the probe (their effective priority or FAULT), to the uplink selector, to the
  probe's notify hook and to event subscribers that asked for uplink events.
* One task executes the selector's actions in order: move the main table's default
  route, then flush the conntrack entries NATed to the uplink left behind (ctnetlink,
  shared with ctsync: ctnetlink/flush.py), then run the uplinks' notify hook and
  publish the event. One switch per real change is the selector's guarantee; this task
  only never reorders them.
* Routing state (per-uplink tables, `oif` rules for the probes, and with
  `return_routing` the fwmark rules and the nftables table) is installed at start,
  re-installed after link changes (the kernel drops a table's routes when their device
  goes down) and removed on exit. The main default route is left where it is on exit.
"""

from __future__ import annotations

import logging
import os
import time

import trio

from . import uplinks as sel
from .instance import LinksChanged
from .io import routes
from .io.probe import IcmpProber, TcpProber
from .notify import run_hook
from .probes import ProbeHealth
from .return_routing import nft_ruleset, nft_table_name
from .status import ProbeStatus, UplinksStatus, UplinkStatus
from .uplink_config import DEFAULT_RULE_PRIORITY

log = logging.getLogger("vrrpd")


class UplinkDriver:
    def __init__(self, daemon):
        self.d = daemon
        self.cfg = daemon.cfg
        self.probes = self.cfg.probes
        self.up_cfg = self.cfg.uplinks
        self.health = {n: ProbeHealth(p.rise, p.fall) for n, p in self.probes.items()}
        self.last_probe: dict[str, float] = {}
        self.selector = None
        if self.up_cfg is not None:
            self.selector = sel.UplinkSelector(
                {n: u.preference for n, u in self.up_cfg.links.items()},
                flush_on_return=self.up_cfg.flush_on_return,
                flush=self.up_cfg.flush is not None,
            )
        self.flushes: dict[str, int] = {n: 0 for n in (self.up_cfg.links if self.up_cfg else {})}
        self.flushed_entries: dict[str, int] = dict(self.flushes)
        self.last_switch: dict | None = None
        self.last_flush: dict | None = None
        self.route_errors = 0
        self._actions_send, self._actions_recv = trio.open_memory_channel(256)
        self._relink = trio.Event()
        self._ct = None
        self._nft_installed = False

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        await self._install_routing()
        if self.up_cfg is not None and self.up_cfg.return_routing:
            await self._install_nft()
        for i, name in enumerate(self.probes):
            nursery.start_soon(self._probe_task, name, i)
        nursery.start_soon(self._action_task)
        nursery.start_soon(self._relink_task)
        log.info("uplinks: %d probe(s)%s", len(self.probes),
                 f", uplinks {', '.join(self.up_cfg.links)}" if self.up_cfg else "")

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):
            prios, tables = self._rule_keys()
            try:
                n = await self.d.nl.call(routes.remove_rules, prios, tables)
                for t in tables:
                    await self.d.nl.call(routes.flush_table, t)
                log.info("uplinks: removed %d policy rule(s) and tables %s", n, sorted(tables))
            except Exception as e:  # noqa: BLE001 - leaving must not fail halfway
                log.warning("uplinks: cleaning up rules failed: %s", e)
            if self._nft_installed:
                await self._nft(f"delete table inet {nft_table_name()}\n")
            if self._ct is not None:
                self._ct.close()

    def links_changed(self) -> None:
        self._relink.set()

    def seed(self, tracker) -> None:
        """A (re)started instance learns the probes' current health."""
        for name, h in self.health.items():
            if h.up is not None:
                tracker.update_probe(name, h.up)

    # ---- routing state -----------------------------------------------------------------

    def _rule_keys(self) -> tuple[set[int], set[int]]:
        prio = self.up_cfg.rule_priority if self.up_cfg else DEFAULT_RULE_PRIORITY
        tables = {p.table for p in self.probes.values()}
        if self.up_cfg:
            tables |= {u.table for u in self.up_cfg.links.values()}
        return {prio, prio + 1, prio + 2}, tables | {routes.MAIN_TABLE}

    async def _install_routing(self) -> None:
        prio = self.up_cfg.rule_priority if self.up_cfg else DEFAULT_RULE_PRIORITY
        pinned: dict[str, tuple] = {}
        for p in self.probes.values():
            pinned[p.interface] = (p.gateway, p.table)
        if self.up_cfg:
            for u in self.up_cfg.links.values():
                pinned.setdefault(u.interface, (u.gateway, u.table))
        for ifname, (gw, table) in pinned.items():
            try:
                if not await self.d.nl.call(routes.set_default, gw, ifname, table):
                    log.warning("uplinks: no route via %s on %s in table %d yet (link down or missing)", gw, ifname, table)
                await self.d.nl.call(routes.ensure_oif_rule, ifname, table, prio)
            except Exception as e:  # noqa: BLE001 - the kernel said no: say so, keep probing (it fails closed)
                self.route_errors += 1
                log.error("uplinks: pinning %s to table %d failed: %s", ifname, table, e)
        if self.up_cfg and self.up_cfg.return_routing:
            try:
                await self.d.nl.call(routes.ensure_suppress_default_rule, prio + 1)
                for u in self.up_cfg.links.values():
                    await self.d.nl.call(routes.ensure_fwmark_rule, u.mark, self.up_cfg.mark_mask, u.table, prio + 2)
            except Exception as e:  # noqa: BLE001
                self.route_errors += 1
                log.error("uplinks: return-routing rules failed: %s", e)
        if self.selector is not None and self.selector.active is not None and self.up_cfg.manage_default_route:
            await self._set_main_default(self.selector.active)

    async def _relink_task(self) -> None:
        while True:
            await self._relink.wait()
            self._relink = trio.Event()
            await trio.sleep(0.05)
            await self._install_routing()

    async def _install_nft(self) -> None:
        ok = await self._nft(nft_ruleset(self.up_cfg))
        self._nft_installed = ok
        if ok:
            log.info("uplinks: return routing on (nftables table inet %s)", nft_table_name())

    async def _nft(self, script: str) -> bool:
        try:
            r = await trio.run_process(["nft", "-f", "-"], stdin=script.encode(), capture_stdout=True, capture_stderr=True, check=False)
        except OSError as e:
            log.error("uplinks: cannot run nft: %s", e)
            return False
        if r.returncode != 0:
            log.error("uplinks: nft failed: %s", r.stderr.decode(errors="replace").strip())
            return False
        return True

    async def _set_main_default(self, name: str) -> bool:
        u = self.up_cfg.links[name]
        try:
            ok = await self.d.nl.call(routes.set_default, u.gateway, u.interface, routes.MAIN_TABLE)
        except Exception as e:  # noqa: BLE001
            ok = False
            log.error("uplinks: default route via %s failed: %s", name, e)
        if not ok:
            self.route_errors += 1
        return ok

    # ---- probes ----------------------------------------------------------------------

    async def _probe_task(self, name: str, index: int) -> None:
        p = self.probes[name]
        ident = (os.getpid() * 64 + index) & 0xFFFF  # tells our echo replies from other pingers'
        prober = IcmpProber(p.interface, str(p.target), ident) if p.kind == "icmp" else TcpProber(p.interface, str(p.target), p.port)
        try:
            next_at = trio.current_time()
            while True:
                ok, err = await prober.probe(p.timeout)
                self.last_probe[name] = time.time()
                change = self.health[name].record(ok, err)
                if change is not None:
                    self._probe_changed(name, change)
                next_at += p.interval
                now = trio.current_time()
                if next_at < now:
                    next_at = now  # a slow probe must not cause a burst
                await trio.sleep_until(next_at)
        finally:
            prober.close()

    def _probe_changed(self, name: str, up: bool) -> None:
        p, h = self.probes[name], self.health[name]
        why = "" if up else f" ({h.last_error})"
        log.info("probe %s: %s via %s %s -> %s%s", name, p.target, p.interface, p.gateway, "up" if up else "down", why,
                 extra={"fields": {"event": "probe", "probe": name, "state": "up" if up else "down"}})
        self._publish({"time": time.time(), "kind": "probe", "probe": name, "state": "up" if up else "down",
                       "interface": p.interface, "target": str(p.target), "error": "" if up else h.last_error})
        if p.notify:
            env = {"PROBE_NAME": name, "PROBE_STATE": "up" if up else "down", "PROBE_INTERFACE": p.interface,
                   "PROBE_TARGET": str(p.target), "PROBE_ERROR": "" if up else h.last_error}
            self.d.publisher.hooks.submit(f"probe {name}", lambda: run_hook(p.notify, name, None, "up" if up else "down", env,
                                                                              self.d.cfg.notify_timeout))
        for inst in self.d.instances.values():
            if inst.tracker.update_probe(name, up):
                # The same path as a link change: the machine recomputes fault and priority.
                inst.post(LinksChanged(inst.machine.primary_ip))
        if self.selector is not None:
            for uname, u in self.up_cfg.links.items():
                if u.probe == name:
                    for act in self.selector.update(uname, up):
                        self._actions_send.send_nowait(act)

    # ---- uplink actions --------------------------------------------------------------

    async def _action_task(self) -> None:
        async for act in self._actions_recv:
            if isinstance(act, sel.Switch):
                await self._switch(act)
            elif isinstance(act, sel.Flush):
                await self._flush(act)

    async def _switch(self, act: sel.Switch) -> None:
        routed = await self._set_main_default(act.new) if self.up_cfg.manage_default_route else True
        log.warning("uplinks: switch %s -> %s (%s)%s", act.old or "-", act.new, act.reason, "" if routed else "; default route NOT set",
                    extra={"fields": {"event": "uplink_switch", "old": act.old, "new": act.new, "reason": act.reason}})
        self.last_switch = {"time": time.time(), "old": act.old, "new": act.new, "reason": act.reason, "routed": routed}
        self._publish({"kind": "uplink", **self.last_switch})
        if self.up_cfg.notify:
            new, old = self.up_cfg.links[act.new], self.up_cfg.links.get(act.old) if act.old else None
            env = {"UPLINK_NEW": act.new, "UPLINK_OLD": act.old or "", "UPLINK_REASON": act.reason,
                   "UPLINK_NEW_INTERFACE": new.interface, "UPLINK_NEW_GATEWAY": str(new.gateway),
                   "UPLINK_OLD_ADDRESS": str(await self._nat_address(old)) if old else ""}
            self.d.publisher.hooks.submit("uplinks", lambda: run_hook(self.up_cfg.notify, act.new, act.old, "switch", env,
                                                                        self.d.cfg.notify_timeout))

    async def _nat_address(self, u):
        if u.snat_address is not None:
            return u.snat_address
        try:
            return await self.d.nl.call(routes.primary_ipv4, u.interface)
        except Exception:  # noqa: BLE001
            return None

    async def _flush(self, act: sel.Flush) -> None:
        from ctnetlink.flush import flush_nat_address
        from ctnetlink.socket import CtSocket

        u = self.up_cfg.links[act.uplink]
        flt = self.up_cfg.flush
        addr = await self._nat_address(u)
        if addr is None:
            log.error("uplinks: cannot flush %s: no address on %s and no snat_address set", act.uplink, u.interface)
            return
        try:
            if self._ct is None:
                self._ct = CtSocket.open()
            res = await flush_nat_address(self._ct, addr, flt.proto, flt.dport)
        except Exception as e:  # noqa: BLE001 - a failed flush is logged, the switch stands
            log.error("uplinks: flushing conntrack entries of %s (%s) failed: %s", act.uplink, addr, e)
            if self._ct is not None:
                self._ct.close()
                self._ct = None
            return
        self.flushes[act.uplink] += 1
        self.flushed_entries[act.uplink] += res.deleted
        self.last_flush = {"time": time.time(), "uplink": act.uplink, "filter": flt.describe(), **res.to_dict()}
        log.warning("uplinks: flushed %d conntrack entr%s NATed to %s (%s, %s)%s%s", res.deleted, "y" if res.deleted == 1 else "ies",
                    addr, act.uplink, flt.describe(), f": {'; '.join(res.flows)}" if res.flows else "",
                    f"; errors: {'; '.join(res.errors[:3])}" if res.errors else "",
                    extra={"fields": {"event": "uplink_flush", "uplink": act.uplink, "address": str(addr), "deleted": res.deleted}})
        self._publish({"kind": "uplink_flush", **self.last_flush})

    def _publish(self, event: dict) -> None:
        self.d.publisher.notice(event)

    # ---- status ----------------------------------------------------------------------

    def status(self) -> UplinksStatus:
        probes = []
        for n, p in self.probes.items():
            h = self.health[n]
            probes.append(ProbeStatus(
                name=n, kind=p.kind, interface=p.interface, gateway=str(p.gateway), target=str(p.target),
                table=p.table, state=h.state, results=h.results, failures=h.failures, transitions=h.transitions,
                last_error=h.last_error, last_result="ok" if h.last else ("fail" if h.last is False else None),
                rise=p.rise, fall=p.fall, interval=p.interval,
            ))
        uplinks = []
        if self.up_cfg:
            for n, u in self.up_cfg.links.items():
                uplinks.append(UplinkStatus(
                    name=n, interface=u.interface, gateway=str(u.gateway), probe=u.probe, preference=u.preference,
                    table=u.table, mark=u.mark, healthy=self.selector.healthy.get(n), active=self.selector.active == n,
                    flushes=self.flushes[n], flushed_entries=self.flushed_entries[n],
                ))
        return UplinksStatus(
            probes=probes, uplinks=uplinks,
            active=self.selector.active if self.selector else None,
            switches=self.selector.switches if self.selector else 0,
            all_down=self.selector.all_down if self.selector else False,
            return_routing=bool(self.up_cfg and self.up_cfg.return_routing and self._nft_installed),
            route_errors=self.route_errors, last_switch=self.last_switch, last_flush=self.last_flush,
        )
