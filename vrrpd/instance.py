"""The driver of one virtual router: its state machine, tracker, inbox and kernel handles.

One task per instance takes the events of its inbox one at a time (adverts, timer
expiries, sync-group commands, link changes, priority changes), so a machine is never
entered concurrently, and carries out the actions the machine returns: adverts as frames
on the AF_PACKET socket, addresses through netlink, gratuitous ARP bursts, and
transitions through the daemon's publisher (vrrpd/publisher.py), which may hold the VIPs
until subscribers (ctsync) have committed. Nothing here decides protocol behaviour: see
machine.py.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .announce import ArpAnnouncer, NdAnnouncer, announcer_for
from .codec import V2Codec, V3Codec, codec_for
from .config import InstanceConfig
from .group import GROUP_FAULT_KEY, Force, HoldFault
from .io import links as nl
from .machine import (
    AddAddresses,
    Dropped,
    Noticed,
    PreemptCancelled,
    PreparePreempt,
    RemoveAddresses,
    SendAdvert,
    SendGarp,
    State,
    Transition,
    VirtualRouter,
)
from .packet import Advert, mac_str, with_ipv4_ident
from .packet_v3 import AdvertV3
from .prepared_move import PreparedMove
from .status import InstanceStatus
from .timers import TimerDue
from .tracking import Tracker

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("vrrpd")

#: Adverts an instance's inbox holds before further ones are dropped (logged). The inbox
#: keeps room beyond that for everything else (sync-group commands, link and priority
#: changes, timer expiries), so an advert flood can never crowd out a sync group's command.
ADVERT_ROOM = 1024
CONTROL_ROOM = 256
INBOX_SIZE = ADVERT_ROOM + CONTROL_ROOM
#: how long after its VIPs a released macvlan's link stays up (see _schedule_link_down)
VMAC_DOWN_DELAY = 0.5


# ---- what an instance's inbox carries --------------------------------------------------

@dataclass(frozen=True, slots=True)
class AdvertIn:
    """A parsed advert for this instance, with its arrival time (the kernel's receive
    time on trio's clock: an advert that waited in a queue counts from its arrival)."""
    advert: Advert | AdvertV3
    now: float


@dataclass(frozen=True, slots=True)
class GroupCommand:
    """A command of the instance's sync group (Force or HoldFault)."""
    command: Force | HoldFault


@dataclass(frozen=True, slots=True)
class LinksChanged:
    """Links, addresses or probe results changed: re-read fault and priority."""
    primary_ip: object


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """A demotion was asked for or withdrawn."""


@dataclass(frozen=True, slots=True)
class PreemptReady:
    """The subscribers have prepared the preemption the machine asked for."""


InboxEvent = AdvertIn | TimerDue | GroupCommand | LinksChanged | PriorityChanged | PreemptReady


@dataclass(eq=False)
class InstanceDriver:
    cfg: InstanceConfig
    daemon: "Daemon"  # for its netlink worker, send sockets, timers, publisher and priority rule
    group: str | None = None
    machine: VirtualRouter = field(init=False)
    tracker: Tracker = field(init=False)
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
    late_down: trio.CancelScope | None = None  # the macvlan's link-down after a release, pending
    move: PreparedMove | None = None  # the prepared move to master it last took part in
    # Strategies chosen once from the configuration: the advert codec (VRRPv2, or v3 over
    # IPv4 or IPv6) and the announcer (gratuitous ARP, or unsolicited NA for IPv6).
    codec: V2Codec | V3Codec = field(init=False)
    announcer: ArpAnnouncer | NdAnnouncer = field(init=False)

    def __post_init__(self) -> None:
        prepare_timeout = self.daemon.cfg.preempt_prepare_timeout
        params = dataclasses.replace(self.cfg.router_params(), preempt_prepare_timeout=prepare_timeout)
        self.machine = VirtualRouter(params)
        self.machine.preempt_gate = prepare_timeout > 0  # make-before-break preemption
        self.codec = codec_for(params.version, params.family, self.cfg.checksum_pseudo_header)
        self.announcer = announcer_for(params.family)
        self.tracker = Tracker(self.cfg)
        self._send_in, self._recv_in = trio.open_memory_channel(INBOX_SIZE)
        self._ahead: collections.deque = collections.deque()  # taken from the inbox early, handled first
        self._frame: tuple = (None, b"")  # (what it says, the advert frame): built once per change

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def family(self) -> int:
        return self.codec.family

    # ---- inbox ---------------------------------------------------------------------------

    def post(self, event: InboxEvent) -> bool:
        """Put an event in the inbox without waiting; False (logged) if it is full. Adverts
        only get ADVERT_ROOM of it: the rest stays free for commands."""
        try:
            if isinstance(event, AdvertIn) and self._send_in.statistics().current_buffer_used >= ADVERT_ROOM:
                raise trio.WouldBlock
            self._send_in.send_nowait(event)
            return True
        except trio.WouldBlock:
            if isinstance(event, AdvertIn):
                self.log_limited("inbox", "inbox full, advert dropped")
            else:
                log.error("%s: inbox full, %s dropped", self.name, type(event).__name__)
            return False

    async def run(self) -> None:
        d, m = self.daemon, self.machine
        with self.cancel:
            try:
                await self.execute(m.start(trio.current_time()))
                d.publisher.member_fault(self)
                while True:
                    # One event at a time, timer expiries included (vrrpd/timers.py): handling
                    # an advert (which may await netlink) is never cut short by a deadline.
                    d.timers.arm(self.timer_key, m.next_deadline(), self._send_in)
                    event = self._ahead.popleft() if self._ahead else await self._recv_in.receive()
                    await self.handle(event)
            finally:
                d.timers.disarm(self.timer_key)

    async def handle(self, event: InboxEvent) -> None:
        m = self.machine
        if isinstance(event, TimerDue):
            now = trio.current_time()
            if m.state == State.BACKUP and m.master_down_at is not None and now >= m.master_down_at:
                await self._hear_queued_adverts(now)
            await self.execute(m.handle_timer(now))
        elif isinstance(event, AdvertIn):
            await self.execute(m.receive(event.advert, event.now))
        elif isinstance(event, GroupCommand):
            now, cmd = trio.current_time(), event.command
            if isinstance(cmd, Force):
                await self.execute(m.force(cmd.state, now, cmd.reason), forced=True)
            elif isinstance(cmd, HoldFault):
                await self.execute(m.set_fault(GROUP_FAULT_KEY, cmd.reason, now), forced=True)
        elif isinstance(event, LinksChanged):
            now = trio.current_time()
            actions = m.set_primary_ip(event.primary_ip, now)
            actions += m.set_fault("link", self.tracker.fault_reason(), now)
            actions += m.set_effective_priority(self.daemon.priority_of(self), now)
            await self.execute(actions)
            self.daemon.publisher.member_fault(self)
        elif isinstance(event, PriorityChanged):
            await self.execute(m.set_effective_priority(self.daemon.priority_of(self), trio.current_time()))
        elif isinstance(event, PreemptReady):
            await self.execute(m.preempt_ready(trio.current_time()))

    async def _hear_queued_adverts(self, now: float) -> None:
        """Before declaring the master dead, take in the adverts that have already
        arrived: those still in the socket (a busy process may not have read them yet)
        and those in our inbox behind this timer event. Each counts from its arrival,
        so a master that is alive keeps us backup however late we run; one that really
        stopped sending is still taken over at Master_Down_Interval after its last one."""
        self.daemon.drain(self.cfg.interface, self.family)
        while True:
            try:
                self._ahead.append(self._recv_in.receive_nowait())
            except trio.WouldBlock:
                break
        adverts = [e for e in self._ahead if isinstance(e, AdvertIn)]
        if not adverts:
            return
        rest = [e for e in self._ahead if not isinstance(e, AdvertIn)]
        self._ahead.clear()
        self._ahead.extend(rest)
        for e in adverts:
            await self.execute(self.machine.receive(e.advert, min(e.now, now)))

    # ---- kernel ----------------------------------------------------------------------------

    async def setup_kernel(self, parent: nl.LinkInfo) -> None:
        d, icfg = self.daemon, self.cfg
        self.parent_index = parent.index
        if icfg.interface not in d.tx:
            from .io.vrrp_socket import open_send_socket

            d.tx[icfg.interface] = await open_send_socket(icfg.interface)
        if self.family == 6 and nl.read_sysctl(f"net/ipv6/conf/{icfg.interface}/disable_ipv6") == "1":
            log.error("%s: IPv6 is disabled on %s (net.ipv6.conf.%s.disable_ipv6=1): no link-local address "
                      "to send adverts from", icfg.name, icfg.interface, icfg.interface)
        if icfg.use_vmac:
            vmac = self.codec.vmac(icfg.vrid)
            if self.family == 4:
                # The parent must not tie a VIP to its physical MAC: arp_ignore=1 stops it
                # answering ARP for the VIPs (weak host model); arp_announce=2 stops it
                # sending its own ARP requests with a VIP as sender address (which hosts
                # would learn from too). IPv6 needs neither: Linux answers a Neighbour
                # Solicitation only on the interface that holds the address.
                nl.write_sysctl(f"net/ipv4/conf/{icfg.interface}/arp_ignore", "1")
                nl.write_sysctl(f"net/ipv4/conf/{icfg.interface}/arp_announce", "2")
            self.addr_index = await d.nl.call(nl.ensure_macvlan, parent.index, icfg.vmac_ifname, mac_str(vmac), self.family)
            self.src_mac = vmac
            if self.family == 4 and nl.read_sysctl("net/ipv4/conf/all/rp_filter") == "1":
                log.warning("%s: net.ipv4.conf.all.rp_filter=1 overrides rp_filter=0 on %s; replies to the VIP may be dropped", icfg.name, icfg.vmac_ifname)
        else:
            self.addr_index = parent.index
            self.src_mac = parent.mac
        # Addresses left behind by a crash must not linger on a backup.
        await d.nl.call(nl.remove_addresses, self.addr_index, list(icfg.virtual_addresses))
        vips = {a.ip for a in icfg.virtual_addresses}
        self.machine.primary_ip = await d.nl.call(nl.primary_address, parent.index, self.family, vips)

    async def stop(self) -> list:
        """Leave: priority 0 if master, VIPs and macvlan removed. Returns the hooks to run."""
        self.cancel.cancel()
        if self.late_down is not None:
            self.late_down.cancel()  # the link goes with the macvlan below
            self.late_down = None
        hooks: list = []
        await self.execute(self.machine.shutdown(trio.current_time()), forced=False, hooks=hooks)
        if self.cfg.use_vmac:
            try:
                await self.daemon.nl.call(nl.delete_link, self.cfg.vmac_ifname)
            except Exception as e:  # noqa: BLE001 - leaving must not fail halfway
                log.warning("%s: could not delete %s: %s", self.name, self.cfg.vmac_ifname, e)
        if self.cfg.notify:
            from .notify import run_hook

            timeout = self.daemon.cfg.notify_timeout
            hooks.append(lambda: run_hook(self.cfg.notify, self.name, self.group, "stop", self.hook_env("stopped"), timeout))
        return hooks

    # ---- actions ---------------------------------------------------------------------------

    async def execute(self, actions: list, forced: bool = False, hooks: list | None = None) -> None:
        held: list[trio.Event] = []
        deferred: list = []
        move: PreparedMove | None = None
        # A prepared move of ours still waiting for its burst: an advert the machine asks
        # for meanwhile (it answers a lower-priority master's advert at once) goes out in
        # the burst, not alone ahead of the other members; GARPs follow the burst anyway.
        pending = self.move if self.move is not None and not self.move.released.is_set() else None
        nursery = self.daemon.nursery
        for act in actions:
            if (pending is not None and move is None and self.machine.state == State.MASTER
                    and (isinstance(act, SendGarp) or (isinstance(act, SendAdvert) and act.priority > 0))):
                if isinstance(act, SendAdvert):
                    pending.join(self, act.priority)
            elif move is not None and isinstance(act, (SendAdvert, AddAddresses, SendGarp)):
                if isinstance(act, SendAdvert):
                    move.join(self, act.priority)  # sent in the move's burst
                else:
                    deferred.append(act)  # after the burst
            elif held and isinstance(act, (AddAddresses, SendGarp)):
                deferred.append(act)  # after the subscribers' go (commit before the VIPs move)
            elif isinstance(act, SendAdvert):
                self.send_advert(act.priority)
            elif isinstance(act, AddAddresses):
                await self.addresses(add=True)
            elif isinstance(act, RemoveAddresses):
                await self.addresses(add=False)
            elif isinstance(act, SendGarp):
                if act.count and nursery is not None:
                    nursery.start_soon(self.garp_burst, act.count)
            elif isinstance(act, Transition):
                if act.new == State.MASTER and self.late_down is not None:
                    await self._link_down_now()  # master again before it went down: down until the VIPs
                held = self.daemon.publisher.transition(self, act, forced, hooks)
                if act.new == State.MASTER and nursery is not None:
                    move = self.move = self.daemon.prepared_move(self, act.prepared)
            elif isinstance(act, PreparePreempt):
                waiters = self.daemon.publisher.prepare(self, act.reason)
                if waiters:
                    nursery.start_soon(self._after_prepare, waiters)
                else:
                    self.post(PreemptReady())
            elif isinstance(act, PreemptCancelled):
                self.daemon.publisher.prepare_cancelled(self, act.reason)
            elif isinstance(act, (Dropped, Noticed)):
                self.log_limited(act.reason.value, act.detail, warn=isinstance(act, Noticed))
        if move is not None:
            nursery.start_soon(self._prepared_to_master, move, held, deferred)
        elif deferred:
            # The protocol goes on (adverts keep flowing) while the hold runs in its own task.
            nursery.start_soon(self._after_hold, held, deferred)

    async def _wait_hold(self, held: list[trio.Event], then: str) -> None:
        """Wait for the holding subscribers' go (the commit), at most transition_hold_timeout."""
        t0 = trio.current_time()
        timeout = self.daemon.cfg.transition_hold_timeout
        with trio.move_on_after(timeout) as scope:
            for ev in held:
                await ev.wait()
        self.last_hold = trio.current_time() - t0
        if scope.cancelled_caught:
            self.machine.counters.hold_timeouts += 1
            log.warning("%s: subscribers did not confirm within %.1fs; %s anyway", self.name, timeout, then)
        else:
            log.info("%s: subscribers confirmed after %.3fs; %s", self.name, self.last_hold, then)

    async def _after_hold(self, held: list[trio.Event], deferred: list) -> None:
        await self._wait_hold(held, "adding the virtual addresses")
        await self._add_and_announce(deferred)

    async def _add_and_announce(self, deferred: list) -> None:
        if self.machine.state != State.MASTER:
            return  # lost mastership meanwhile: nothing to add
        for act in deferred:
            if isinstance(act, AddAddresses):
                await self.addresses(add=True, only_if_master=True)
            elif isinstance(act, SendGarp) and act.count:
                self.daemon.nursery.start_soon(self.garp_burst, act.count)

    async def _prepared_to_master(self, move: PreparedMove, held: list[trio.Event], deferred: list) -> None:
        """A prepared move to master (vrrpd/prepared_move.py): hold, link up, the group's
        burst of adverts, then the VIPs and GARPs."""
        await self._wait_hold(held, "ready for the preempting advert")
        # An IPv6 macvlan sends an MLD report from the virtual MAC as it comes up (it joins
        # the all-routers group), which would move its side's switch entry ahead of the
        # burst: it comes up right after the burst instead. An IPv4 one has IPv6 off and
        # sends nothing (vrrpd/io/links.py).
        early = self.cfg.use_vmac and self.family == 4
        if not move.released.is_set():
            if early:
                await self._link_up_if_master()  # claims the frames our advert sends our way
            move.arrive(self)
            await move.released.wait()
            if self.cfg.use_vmac and not early:
                await self._link_up_if_master()
        # else: the burst went without us (our hold was late): the link comes with the VIPs
        await self._add_and_announce(deferred)

    async def _link_up_if_master(self) -> None:
        async with self.addr_lock:
            if self.machine.state == State.MASTER:
                await self._set_link(True)

    async def _after_prepare(self, waiters: list[trio.Event]) -> None:
        """Tell the machine once every preparing subscriber has acked (the machine's own
        preempt_prepare_timeout bounds the wait; a late ready is ignored)."""
        t0 = trio.current_time()
        with trio.move_on_after(self.daemon.cfg.preempt_prepare_timeout):
            for ev in waiters:
                await ev.wait()
        log.info("%s: preemption prepared after %.3fs", self.name, trio.current_time() - t0)
        self.post(PreemptReady())

    def send_advert(self, priority: int) -> None:
        sock = self.daemon.tx.get(self.cfg.interface)
        m = self.machine
        if sock is None or m.primary_ip is None:
            m.counters.send_errors += 1
            return
        key = (priority, m.primary_ip, self.src_mac)
        if self._frame[0] != key:
            self._frame = (key, self.codec.build_frame(m.advert(priority), m.primary_ip, self.src_mac, 0))
        frame = self._frame[1]
        if self.family == 4:  # each IPv4 advert its own IP identification
            self.ident = (self.ident + 1) & 0xFFFF
            frame = with_ipv4_ident(frame, self.ident)
        try:
            _send_nowait(sock, frame)
        except OSError as e:
            m.counters.send_errors += 1
            self.log_limited("send", f"advert not sent on {self.cfg.interface}: {e.strerror or e}")

    async def addresses(self, add: bool, only_if_master: bool = False) -> None:
        if self.addr_index is None:
            return
        vips = list(self.cfg.virtual_addresses)
        async with self.addr_lock:
            if only_if_master and self.machine.state != State.MASTER:
                return
            await self._change_addresses(add, vips)

    async def _change_addresses(self, add: bool, vips: list) -> None:
        call, use_vmac = self.daemon.nl.call, self.cfg.use_vmac
        try:
            if add:
                if self.late_down is not None:  # up again before it went down: it stays up
                    self.late_down.cancel()
                    self.late_down = None
                # noprefixroute on the macvlan: the VIP subnet keeps routing via the parent.
                await call(nl.add_addresses, self.addr_index, vips, use_vmac)
                if use_vmac:
                    await call(nl.set_link_state, self.addr_index, True)
            elif use_vmac and self.family == 6:
                # IPv6: removing an address leaves its solicited-node group, and the MLD
                # report of that goes out from the virtual MAC, which moves the switch's
                # entry back to us, away from the new master (the lab's IPv6 failback lost
                # 0.2 s of traffic to it). Down first, the link sends nothing.
                if self.late_down is not None:
                    self.late_down.cancel()
                    self.late_down = None
                await self._set_link(False)
                await call(nl.remove_addresses, self.addr_index, vips)
            else:
                # The VIPs go at once (no ARP answer, no local delivery from now on); the
                # macvlan's link-down follows VMAC_DOWN_DELAY later (see _late_link_down).
                await call(nl.remove_addresses, self.addr_index, vips)
                if use_vmac:
                    self._schedule_link_down()
        except Exception as e:  # noqa: BLE001 - the kernel said no; keep running and say so
            log.error("%s: %s virtual addresses failed: %s", self.name, "adding" if add else "removing", e)

    # A macvlan's link-down waits for an RCU grace period with the kernel's global RTNL
    # lock held: 6-40 ms on the lab's 2-core VM. Released at once, it would hold up every
    # other address or link change of the box, and in the lab, where both routers share
    # one kernel, the new master's own VIPs: the failback timeline showed them 40-50 ms
    # after the preempting advert instead of 5-10. The link only has to be down before this
    # instance is master again (until its VIPs are added: a frame claimed before the commit
    # would make a conntrack entry that clashes with the committed one), so it goes down a
    # little later, or at once if mastership comes back first. Meanwhile, as a backup
    # without VIPs, the macvlan could only forward a stray frame with the old master's own
    # conntrack entries, which is what it did a moment before.

    def _schedule_link_down(self) -> None:
        if self.late_down is not None:
            self.late_down.cancel()
        scope = self.late_down = trio.CancelScope()
        if self.daemon.nursery is not None:
            self.daemon.nursery.start_soon(self._late_link_down, scope)

    async def _late_link_down(self, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(VMAC_DOWN_DELAY)
            async with self.addr_lock:
                if self.late_down is scope and self.machine.state != State.MASTER:
                    await self._set_link(False)
        if self.late_down is scope:
            self.late_down = None

    async def _link_down_now(self) -> None:
        if self.late_down is not None:
            self.late_down.cancel()
            self.late_down = None
        async with self.addr_lock:
            await self._set_link(False)

    async def _set_link(self, up: bool) -> None:
        try:
            await self.daemon.nl.call(nl.set_link_state, self.addr_index, up)
        except Exception as e:  # noqa: BLE001 - the kernel said no; keep running and say so
            log.error("%s: bringing %s %s failed: %s", self.name, self.cfg.vmac_ifname, "up" if up else "down", e)

    async def garp_burst(self, count: int) -> None:
        sock = self.daemon.tx.get(self.cfg.interface)
        if sock is None:
            return
        frames = self.announcer.frames([a.ip for a in self.cfg.virtual_addresses], self.src_mac)
        for i in range(count):
            if self.machine.state != State.MASTER:
                return
            for f in frames:
                try:
                    _send_nowait(sock, f)
                    self.machine.counters.garp_tx += 1
                except OSError as e:
                    self.machine.counters.send_errors += 1
                    what = "GARP" if self.family == 4 else "neighbour advertisement"
                    self.log_limited("garp", f"{what} not sent: {e.strerror or e}")
            if self.cfg.garp_interval and i + 1 < count:
                await trio.sleep(self.cfg.garp_interval)

    # ---- helpers ---------------------------------------------------------------------------

    def hook_env(self, reason: str, old: str = "") -> dict[str, str]:
        return {"VRRP_VRID": str(self.cfg.vrid), "VRRP_REASON": reason, "VRRP_OLD_STATE": old,
                "VRRP_INTERFACE": self.cfg.interface}

    def log_limited(self, key: str, detail: str, warn: bool = True) -> None:
        ok, suppressed = self.daemon.limiter.allow((self.name, key), trio.current_time())
        if ok:
            more = f" (+{suppressed} more since last report)" if suppressed else ""
            log.log(logging.WARNING if warn else logging.INFO, "%s: %s: %s%s", self.name, key, detail, more)

    def status(self, demotions: list[str]) -> InstanceStatus:
        m, c = self.machine, self.cfg
        return InstanceStatus(
            name=self.name, interface=c.interface, vrid=c.vrid, state=m.state.value, priority=c.priority,
            effective_priority=m.effective_priority, master_ip=str(m.master_ip) if m.master_ip else None,
            advert_interval=c.advert_interval, skew_time=m.skew_time, master_down_interval=m.master_down_interval,
            vmac=mac_str(self.codec.vmac(c.vrid)) if c.use_vmac else None, virtual_addresses=[str(a) for a in c.virtual_addresses],
            last_event=m.last_event, master_reason=m.master_reason, sync_group=self.group, preempt=c.preempt,
            primary_ip=str(m.primary_ip) if m.primary_ip else None, fault_reasons=list(m.fault_reasons.values()),
            since=self.since, last_hold=self.last_hold, demotions=demotions, counters=m.counters,
            version=c.version, master_adver_interval=m.master_adver_interval if c.version == 3 else None,
        )


def _send_nowait(sock: trio.socket.SocketType, frame: bytes) -> None:
    """AF_PACKET sends of one small frame do not block in practice; if the queue is full,
    the kernel says ENOBUFS/EAGAIN and we count it rather than wait a protocol tick."""
    os.write(sock.fileno(), frame)
