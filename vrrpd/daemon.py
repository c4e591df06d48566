"""vrrpd's trio driver: sockets and timers feed the state machines, actions go to the kernel.

One task per virtual router owns its `VirtualRouter` and processes its inbox one event at
a time (adverts, link changes, sync-group commands), so a machine is never entered
concurrently. One receive task per interface parses adverts and dispatches them by VRID.
A refresher task re-reads links and addresses after rtnetlink notifications and turns
them into tracking events. Nothing here decides protocol behaviour: see machine.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass, field

import trio

from . import config as config_mod
from .config import InstanceConfig, VrrpdConfig
from .control import ControlServer, Subscriber
from .demotion import Demotion, Demotions
from .group import GROUP_FAULT_KEY, Force, HoldFault, SyncGroup
from .io import links as nl
from .io.linkmon import watch_links
from .io.vrrp_socket import open_receive_socket, open_send_socket
from .log import RateLimiter
from .machine import (
    AddAddresses,
    Dropped,
    Noticed,
    RemoveAddresses,
    SendAdvert,
    SendGarp,
    State,
    Transition,
    VirtualRouter,
)
from .notify import run_hook
from .packet import Advert, Reason, Rejected, build_frame, build_garp, mac_str, parse_ip_packet, vmac
from .status import InstanceStatus
from .timers import TIMER_EVENT, Timers
from .tracking import Tracker

log = logging.getLogger("vrrpd")


@dataclass
class Instance:
    """The driver of one virtual router: its machine, tracker, inbox and kernel handles."""

    cfg: InstanceConfig
    machine: VirtualRouter
    tracker: Tracker
    group: str | None
    send_in: trio.MemorySendChannel
    recv_in: trio.MemoryReceiveChannel
    parent_index: int | None = None
    addr_index: int | None = None  # where the VIPs go: the macvlan, or the parent
    src_mac: bytes = bytes(6)
    since: float | None = None
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    ident: int = 0
    # Address changes and the state check before a held AddAddresses happen under this
    # lock, so a RemoveAddresses can never be overtaken by a late add.
    addr_lock: trio.Lock = field(default_factory=trio.Lock)
    timer_key: int = field(default_factory=itertools.count().__next__)  # unique, never reused
    last_hold: float | None = None  # seconds the last master transition waited for subscribers

    @property
    def name(self) -> str:
        return self.cfg.name


class Daemon:
    def __init__(self, cfg: VrrpdConfig):
        self.cfg = cfg
        self.nl = nl.NetlinkWorker()
        self.instances: dict[str, Instance] = {}
        self.groups: dict[str, SyncGroup] = {}
        self.rx_tasks: dict[str, trio.CancelScope] = {}  # ifname -> receive task
        self.tx: dict[str, trio.socket.SocketType] = {}
        self.links: dict[str, nl.LinkInfo] = {}
        self.limiter = RateLimiter(10.0)
        self.subscribers: set[Subscriber] = set()
        self.demotions = Demotions()  # asked for by subscribers (ctsync not ready)
        self._hold_ids = 0
        self._refresh = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.timers = Timers()
        self.started_at = time.time()
        self.uplinkd = None  # probes and uplinks (vrrpd/uplinkd.py), if configured

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.timers.run)
                control = ControlServer(self, self.cfg.control_socket)
                await control.start(nursery)
                nursery.start_soon(watch_links, lambda: self._refresh.set())  # late-bound: the event is replaced after each refresh
                await self._refresh_links()
                for icfg in self.cfg.instances.values():
                    await self._add_instance(icfg)
                self._rebuild_groups()
                for inst in self.instances.values():
                    self._spawn(inst)
                nursery.start_soon(self._refresher)
                if self.cfg.probes or self.cfg.uplinks:
                    from .uplinkd import UplinkDriver

                    self.uplinkd = UplinkDriver(self)
                    await self.uplinkd.start(nursery)
                log.info("vrrpd started: %d instance(s), control socket %s", len(self.instances), self.cfg.control_socket)
                task_status.started()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await self.reload()
                        continue
                    log.info("%s: leaving (priority 0 for every master)", signal.Signals(signum).name)
                    break
                await self.shutdown()
                nursery.cancel_scope.cancel()
                control.close()
        self.nl.close()

    async def shutdown(self) -> None:
        """Priority-0 adverts, VIPs and macvlans removed, stop hooks run (bounded)."""
        with trio.CancelScope(shield=True):
            hooks = []
            for inst in list(self.instances.values()):
                hooks += await self._stop_instance(inst)
            with trio.move_on_after(5):
                async with trio.open_nursery() as n:
                    for h in hooks:
                        n.start_soon(h)
            for sock in self.tx.values():
                sock.close()
            if self.uplinkd is not None:
                await self.uplinkd.stop()

    async def reload(self) -> None:
        try:
            new = config_mod.load(self.cfg.path)
        except config_mod.ConfigError as e:
            log.error("SIGHUP: configuration not reloaded:\n%s", "\n".join(e.problems))
            return
        if (new.probes, new.uplinks) != (self.cfg.probes, self.cfg.uplinks):
            log.warning("SIGHUP: probe and uplink changes only take effect on restart")
            new = dataclasses.replace(new, probes=self.cfg.probes, uplinks=self.cfg.uplinks)
        if new.control_socket != self.cfg.control_socket:
            log.warning("SIGHUP: control_socket changes only take effect on restart")
        kept, changed = 0, []
        for name, inst in list(self.instances.items()):
            if new.instances.get(name) == inst.cfg and new.group_of(name) == inst.group:
                kept += 1
                continue
            changed.append(name)
            for h in await self._stop_instance(inst):
                self.nursery.start_soon(h)
            del self.instances[name]
        self.cfg = new
        await self._refresh_links()
        added = []
        for name, icfg in new.instances.items():
            if name not in self.instances:
                added.append(await self._add_instance(icfg))
        self._rebuild_groups()
        for inst in added:
            self._spawn(inst)
        self._update_receivers()
        log.info("SIGHUP: reloaded; %d instance(s) unchanged, restarted or removed: %s", kept, ", ".join(changed) or "none")

    # ---- instances -------------------------------------------------------------------

    async def _add_instance(self, icfg: InstanceConfig) -> Instance:
        send_in, recv_in = trio.open_memory_channel(1024)
        machine = VirtualRouter(icfg.router_params())
        inst = Instance(icfg, machine, Tracker(icfg), self.cfg.group_of(icfg.name), send_in, recv_in)
        if self.uplinkd is not None:
            self.uplinkd.seed(inst.tracker)
        self.instances[icfg.name] = inst
        parent = self.links.get(icfg.interface)
        if parent is None:
            log.error("%s: interface %s not found; instance stays in fault until it appears", icfg.name, icfg.interface)
        else:
            await self._setup_kernel(inst, parent)
        # Initial link state goes in before Startup, so a down link starts in FAULT.
        for ifname in inst.tracker.watched:
            if ifname in self.links:
                inst.tracker.update(ifname, self.links[ifname].up)
        now = trio.current_time()
        machine.set_fault("link", inst.tracker.fault_reason(), now)
        machine.set_effective_priority(self._priority(inst), now)
        return inst

    async def _setup_kernel(self, inst: Instance, parent: nl.LinkInfo) -> None:
        icfg = inst.cfg
        inst.parent_index = parent.index
        if icfg.interface not in self.tx:
            self.tx[icfg.interface] = await open_send_socket(icfg.interface)
        if icfg.use_vmac:
            # The parent must not tie a VIP to its physical MAC: arp_ignore=1 stops it
            # answering ARP for the VIPs (weak host model); arp_announce=2 stops it
            # sending its own ARP requests with a VIP as sender address (which hosts
            # would learn from too).
            nl.write_sysctl(f"net/ipv4/conf/{icfg.interface}/arp_ignore", "1")
            nl.write_sysctl(f"net/ipv4/conf/{icfg.interface}/arp_announce", "2")
            inst.addr_index = await self.nl.call(nl.ensure_macvlan, parent.index, icfg.vmac_ifname, mac_str(vmac(icfg.vrid)))
            inst.src_mac = vmac(icfg.vrid)
            if nl.read_sysctl("net/ipv4/conf/all/rp_filter") == "1":
                log.warning("%s: net.ipv4.conf.all.rp_filter=1 overrides rp_filter=0 on %s; replies to the VIP may be dropped", icfg.name, icfg.vmac_ifname)
        else:
            inst.addr_index = parent.index
            inst.src_mac = parent.mac
        # Addresses left behind by a crash must not linger on a backup.
        await self.nl.call(nl.remove_addresses, inst.addr_index, list(icfg.virtual_addresses))
        vips = {a.ip for a in icfg.virtual_addresses}
        inst.machine.primary_ip = await self.nl.call(nl.primary_ipv4, parent.index, vips)

    def _spawn(self, inst: Instance) -> None:
        self.nursery.start_soon(self._instance_task, inst)
        self._update_receivers()

    async def _stop_instance(self, inst: Instance) -> list:
        inst.cancel.cancel()
        hooks = []
        actions = inst.machine.shutdown(trio.current_time())
        await self._execute(inst, actions, forced=False, hooks=hooks)
        if inst.cfg.use_vmac:
            try:
                await self.nl.call(nl.delete_link, inst.cfg.vmac_ifname)
            except Exception as e:  # noqa: BLE001 - leaving must not fail halfway
                log.warning("%s: could not delete %s: %s", inst.name, inst.cfg.vmac_ifname, e)
        if inst.cfg.notify:
            hooks.append(lambda: run_hook(inst.cfg.notify, inst.name, inst.group, "stop", self._hook_env(inst, "stopped")))
        return hooks

    async def _instance_task(self, inst: Instance) -> None:
        m = inst.machine
        with inst.cancel:
            try:
                await self._execute(inst, m.start(trio.current_time()))
                self._group_fault(inst)
                while True:
                    # One event at a time, timer expiries included (vrrpd/timers.py): handling
                    # an advert (which may await netlink) is never cut short by a deadline.
                    self.timers.arm(inst.timer_key, m.next_deadline(), inst.send_in)
                    event = await inst.recv_in.receive()
                    if event is TIMER_EVENT:
                        await self._execute(inst, m.handle_timer(trio.current_time()))
                    else:
                        await self._handle(inst, event)
            finally:
                self.timers.disarm(inst.timer_key)

    async def _handle(self, inst: Instance, event: tuple) -> None:
        kind = event[0]
        m = inst.machine
        if kind == "advert":
            _, adv, now = event
            await self._execute(inst, m.receive(adv, now))
        elif kind == "group":
            cmd = event[1]
            now = trio.current_time()
            if isinstance(cmd, Force):
                await self._execute(inst, m.force(cmd.state, now, cmd.reason), forced=True)
            elif isinstance(cmd, HoldFault):
                await self._execute(inst, m.set_fault(GROUP_FAULT_KEY, cmd.reason, now), forced=True)
        elif kind == "track":
            now = trio.current_time()
            actions = m.set_primary_ip(event[1], now)
            actions += m.set_fault("link", inst.tracker.fault_reason(), now)
            actions += m.set_effective_priority(self._priority(inst), now)
            await self._execute(inst, actions)
            self._group_fault(inst)
        elif kind == "priority":
            await self._execute(inst, m.set_effective_priority(self._priority(inst), trio.current_time()))

    # ---- priority --------------------------------------------------------------------

    def _priority(self, inst: Instance) -> int:
        """Configured priority, moved by tracked interfaces and subscribers' demotions."""
        return inst.tracker.effective_priority() - self.demotions.weight(inst.name, inst.group)

    def set_demotion(self, key: object, demotion: Demotion | None) -> None:
        """A subscriber asks for (or withdraws) a demotion: every instance it applies to
        re-computes its priority in its own task."""
        old = self.demotions.get(key)
        if not self.demotions.set(key, demotion):
            return
        if demotion is not None:
            log.info("%s asks to lower the priority of %s by %d: %s", demotion.source, ", ".join(sorted(demotion.scope)),
                     demotion.weight, demotion.reason)
        elif old is not None:
            log.info("%s withdrew its demotion of %s", old.source, ", ".join(sorted(old.scope)))
        for inst in self.instances.values():
            self._post(inst, ("priority",))

    # ---- actions ---------------------------------------------------------------------

    async def _execute(self, inst: Instance, actions: list, forced: bool = False, hooks: list | None = None) -> None:
        held: list[trio.Event] = []
        deferred: list = []
        for act in actions:
            if held and isinstance(act, (AddAddresses, SendGarp)):
                deferred.append(act)  # after the subscribers' go (commit before the VIPs move)
            elif isinstance(act, SendAdvert):
                self._send_advert(inst, act.priority)
            elif isinstance(act, AddAddresses):
                await self._addresses(inst, add=True)
            elif isinstance(act, RemoveAddresses):
                await self._addresses(inst, add=False)
            elif isinstance(act, SendGarp):
                if act.count and self.nursery is not None:
                    self.nursery.start_soon(self._garp_burst, inst, act.count)
            elif isinstance(act, Transition):
                held = self._on_transition(inst, act, forced, hooks)
            elif isinstance(act, (Dropped, Noticed)):
                self._log_limited(inst, act.reason.value, act.detail, warn=isinstance(act, Noticed))
        if deferred:
            # The protocol goes on (adverts keep flowing) while the hold runs in its own task.
            self.nursery.start_soon(self._after_hold, inst, held, deferred)

    async def _after_hold(self, inst: Instance, held: list[trio.Event], deferred: list) -> None:
        t0 = trio.current_time()
        timeout = self.cfg.transition_hold_timeout
        with trio.move_on_after(timeout) as scope:
            for ev in held:
                await ev.wait()
        inst.last_hold = trio.current_time() - t0
        if scope.cancelled_caught:
            inst.machine.counters.hold_timeouts += 1
            log.warning("%s: subscribers did not confirm within %.1fs; adding the virtual addresses anyway", inst.name, timeout)
        else:
            log.info("%s: subscribers confirmed after %.3fs; adding the virtual addresses", inst.name, inst.last_hold)
        if inst.machine.state != State.MASTER:
            return  # lost mastership meanwhile: nothing to add
        for act in deferred:
            if isinstance(act, AddAddresses):
                await self._addresses(inst, add=True, only_if_master=True)
            elif isinstance(act, SendGarp) and act.count:
                self.nursery.start_soon(self._garp_burst, inst, act.count)

    def _send_advert(self, inst: Instance, priority: int) -> None:
        sock = self.tx.get(inst.cfg.interface)
        m = inst.machine
        if sock is None or m.primary_ip is None:
            m.counters.send_errors += 1
            return
        p = m.params
        adv = Advert(p.vrid, priority, p.virtual_addresses, p.advert_interval, p.auth_type, p.auth_data)
        inst.ident = (inst.ident + 1) & 0xFFFF
        try:
            _send_nowait(sock, build_frame(adv, m.primary_ip, inst.src_mac, inst.ident))
        except OSError as e:
            m.counters.send_errors += 1
            self._log_limited(inst, "send", f"advert not sent on {inst.cfg.interface}: {e.strerror or e}")

    async def _addresses(self, inst: Instance, add: bool, only_if_master: bool = False) -> None:
        if inst.addr_index is None:
            return
        vips = list(inst.cfg.virtual_addresses)
        async with inst.addr_lock:
            if only_if_master and inst.machine.state != State.MASTER:
                return
            await self._change_addresses(inst, add, vips)

    async def _change_addresses(self, inst: Instance, add: bool, vips: list) -> None:
        try:
            if add:
                # noprefixroute on the macvlan: the VIP subnet keeps routing via the parent.
                await self.nl.call(nl.add_addresses, inst.addr_index, vips, inst.cfg.use_vmac)
                if inst.cfg.use_vmac:
                    await self.nl.call(nl.set_link_state, inst.addr_index, True)
            else:
                if inst.cfg.use_vmac:
                    await self.nl.call(nl.set_link_state, inst.addr_index, False)
                await self.nl.call(nl.remove_addresses, inst.addr_index, vips)
        except Exception as e:  # noqa: BLE001 - the kernel said no; keep running and say so
            log.error("%s: %s virtual addresses failed: %s", inst.name, "adding" if add else "removing", e)

    async def _garp_burst(self, inst: Instance, count: int) -> None:
        sock = self.tx.get(inst.cfg.interface)
        if sock is None:
            return
        frames = [build_garp(a.ip, inst.src_mac) for a in inst.cfg.virtual_addresses]
        for i in range(count):
            if inst.machine.state != State.MASTER:
                return
            for f in frames:
                try:
                    _send_nowait(sock, f)
                    inst.machine.counters.garp_tx += 1
                except OSError as e:
                    inst.machine.counters.send_errors += 1
                    self._log_limited(inst, "garp", f"GARP not sent: {e.strerror or e}")
            if inst.cfg.garp_interval and i + 1 < count:
                await trio.sleep(inst.cfg.garp_interval)

    def _on_transition(self, inst: Instance, t: Transition, forced: bool, hooks: list | None) -> list[trio.Event]:
        """Log and publish a transition; returns what a move to master must wait for."""
        inst.since = time.time()
        log.info(
            "%s: %s -> %s (%s)",
            inst.name, t.old.value, t.new.value, t.reason,
            extra={"fields": {"event": "transition", "instance": inst.name, "old": t.old.value, "new": t.new.value, "reason": t.reason}},
        )
        event = {
            "time": inst.since,
            "instance": inst.name,
            "group": inst.group,
            "interface": inst.cfg.interface,
            "vrid": inst.cfg.vrid,
            "old": t.old.value,
            "new": t.new.value,
            "reason": t.reason,
            "priority": inst.machine.effective_priority,
        }
        held: list[trio.Event] = []
        holders = [s for s in self.subscribers if t.new == State.MASTER and s.holds(inst.name, inst.group)]
        if holders:
            self._hold_ids += 1
            event["hold_id"] = self._hold_ids
        for sub in list(self.subscribers):
            waiter = sub.hold(self._hold_ids) if sub in holders else None
            if sub.offer(event):
                if waiter is not None:
                    held.append(waiter)
            else:
                self.subscribers.discard(sub)  # a stuck reader is dropped, never waited for
                log.warning("event subscriber %s dropped: it fell too far behind", sub.name)
        if inst.cfg.notify and t.new != State.INIT:
            hook = lambda: run_hook(inst.cfg.notify, inst.name, inst.group, t.new.value, self._hook_env(inst, t.reason, t.old.value))
            if hooks is not None:
                hooks.append(hook)
            elif self.nursery is not None:
                self.nursery.start_soon(hook)
        if inst.group and inst.group in self.groups:
            self._group_commands(self.groups[inst.group].on_transition(inst.name, t.old, t.new, forced=forced))
        return held

    def _group_fault(self, inst: Instance) -> None:
        """Tell the sync group whether this member has a fault of its own."""
        if inst.group and inst.group in self.groups:
            own = bool(set(inst.machine.fault_reasons) - {GROUP_FAULT_KEY})
            self._group_commands(self.groups[inst.group].on_fault(inst.name, own))

    def _group_commands(self, commands: list) -> None:
        for member, cmd in commands:
            other = self.instances.get(member)
            if other is not None:
                try:
                    other.send_in.send_nowait(("group", cmd))
                except trio.WouldBlock:
                    log.error("%s: inbox full, sync group command dropped", member)

    def _hook_env(self, inst: Instance, reason: str, old: str = "") -> dict[str, str]:
        return {"VRRP_VRID": str(inst.cfg.vrid), "VRRP_REASON": reason, "VRRP_OLD_STATE": old, "VRRP_INTERFACE": inst.cfg.interface}

    def _log_limited(self, inst: Instance, key: str, detail: str, warn: bool = True) -> None:
        ok, suppressed = self.limiter.allow((inst.name, key), trio.current_time())
        if ok:
            more = f" (+{suppressed} more since last report)" if suppressed else ""
            log.log(logging.WARNING if warn else logging.INFO, "%s: %s: %s%s", inst.name, key, detail, more)

    # ---- receiving -------------------------------------------------------------------

    def _update_receivers(self) -> None:
        wanted = {i.cfg.interface for i in self.instances.values() if i.parent_index is not None}
        for ifname in list(self.rx_tasks):
            if ifname not in wanted:
                self.rx_tasks.pop(ifname).cancel()
        for ifname in wanted - set(self.rx_tasks):
            scope = trio.CancelScope()
            self.rx_tasks[ifname] = scope
            self.nursery.start_soon(self._receive_task, ifname, scope)

    async def _receive_task(self, ifname: str, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                link = self.links.get(ifname)
                if link is None:
                    await trio.sleep(1)
                    continue
                try:
                    sock = open_receive_socket(ifname, link.index)
                except OSError as e:
                    log.error("cannot open VRRP socket on %s: %s; retrying", ifname, e.strerror or e)
                    await trio.sleep(1)
                    continue
                with sock:
                    while True:
                        try:
                            data = await sock.recv(65535)
                        except OSError as e:
                            log.warning("receive error on %s: %s", ifname, e.strerror or e)
                            break
                        self._dispatch(ifname, data, trio.current_time())

    def _dispatch(self, ifname: str, data: bytes, now: float) -> None:
        here = [i for i in self.instances.values() if i.cfg.interface == ifname]
        try:
            result = parse_ip_packet(data)
        except Exception as e:  # noqa: BLE001 - the codec must not raise; if it does, count, never crash
            result = Rejected(Reason.LENGTH, f"unparseable: {e!r}")
        if isinstance(result, Rejected):
            targets = [i for i in here if i.cfg.vrid == result.vrid] or here
            for inst in targets:
                inst.machine.count_rejected(result)
                self._log_limited(inst, result.reason.value, f"dropped advert from {result.src} on {ifname}: {result.detail}")
            return
        inst = next((i for i in here if i.cfg.vrid == result.vrid), None)
        if inst is None:
            for other in here:
                other.machine.counters.vrid_errors += 1
                self._log_limited(other, "vrid_errors", f"advert for VRID {result.vrid} from {result.src} on {ifname}: not configured here")
            return
        try:
            inst.send_in.send_nowait(("advert", result, now))
        except trio.WouldBlock:
            self._log_limited(inst, "inbox", "inbox full, advert dropped")

    # ---- links -----------------------------------------------------------------------

    async def _refresher(self) -> None:
        while True:
            await self._refresh.wait()
            self._refresh = trio.Event()
            await trio.sleep(0.005)  # let a burst of notifications settle
            await self._refresh_links()
            for inst in self.instances.values():
                if inst.parent_index is None and inst.cfg.interface in self.links:
                    await self._setup_kernel(inst, self.links[inst.cfg.interface])
                    self._update_receivers()
                self._update_tracker(inst)
            if self.uplinkd is not None:
                self.uplinkd.links_changed()

    async def _refresh_links(self) -> None:
        try:
            self.links = await self.nl.call(nl.get_links)
        except Exception as e:  # noqa: BLE001
            log.error("reading links failed: %s", e)

    def _update_tracker(self, inst: Instance) -> None:
        for ifname in inst.tracker.watched:
            link = self.links.get(ifname)
            if link is None:
                inst.tracker.links.pop(ifname, None)
            else:
                inst.tracker.update(ifname, link.up)
        if self.nursery is not None:
            # The machine ignores what did not change, so posting every time is safe.
            self.nursery.start_soon(self._post_track, inst)

    async def _post_track(self, inst: Instance) -> None:
        vips = {a.ip for a in inst.cfg.virtual_addresses}
        primary = None
        if inst.parent_index is not None:
            try:
                primary = await self.nl.call(nl.primary_ipv4, inst.parent_index, vips)
            except Exception:  # noqa: BLE001 - interface vanished between two reads
                primary = None
        self._post(inst, ("track", primary))

    def _post(self, inst: Instance, event: tuple) -> None:
        try:
            inst.send_in.send_nowait(event)
        except trio.WouldBlock:
            log.error("%s: inbox full, event dropped", inst.name)

    def _rebuild_groups(self) -> None:
        old = self.groups
        self.groups = {}
        for g in self.cfg.sync_groups.values():
            grp = SyncGroup(g.name, g.instances)
            if g.name in old and old[g.name].members == g.instances:
                grp.faulty = {m for m in old[g.name].faulty if m in self.instances}
            self.groups[g.name] = grp
        for inst in self.instances.values():
            inst.group = self.cfg.group_of(inst.name)

    # ---- status ----------------------------------------------------------------------

    def status(self) -> list[InstanceStatus]:
        out = []
        for inst in self.instances.values():
            m, c = inst.machine, inst.cfg
            out.append(
                InstanceStatus(
                    name=inst.name,
                    interface=c.interface,
                    vrid=c.vrid,
                    state=m.state.value,
                    priority=c.priority,
                    effective_priority=m.effective_priority,
                    master_ip=str(m.master_ip) if m.master_ip else None,
                    advert_interval=c.advert_interval,
                    skew_time=m.skew_time,
                    master_down_interval=m.master_down_interval,
                    vmac=mac_str(vmac(c.vrid)) if c.use_vmac else None,
                    virtual_addresses=[str(a) for a in c.virtual_addresses],
                    last_event=m.last_event,
                    master_reason=m.master_reason,
                    sync_group=inst.group,
                    preempt=c.preempt,
                    primary_ip=str(m.primary_ip) if m.primary_ip else None,
                    fault_reasons=list(m.fault_reasons.values()),
                    since=inst.since,
                    last_hold=inst.last_hold,
                    demotions=self.demotions.reasons(inst.name, inst.group),
                    counters=m.counters,
                )
            )
        return out


def _send_nowait(sock: trio.socket.SocketType, frame: bytes) -> None:
    """AF_PACKET sends of one small frame do not block in practice; if the queue is full,
    the kernel says ENOBUFS/EAGAIN and we count it rather than wait a protocol tick."""
    os.write(sock.fileno(), frame)


async def serve(cfg: VrrpdConfig, task_status=trio.TASK_STATUS_IGNORED) -> None:
    await Daemon(cfg).run(task_status=task_status)
