"""vrrpd's trio driver: the daemon's life cycle around the instance drivers.

It starts one driver per virtual router (vrrpd/instance.py), one receive task per
interface that parses adverts and posts them to the instance with their VRID, a refresher
that re-reads links and addresses after rtnetlink notifications and posts the changes to
the instances' trackers, the control socket, the timer task, and probes and uplinks if
configured; it reloads on SIGHUP and leaves on SIGTERM (priority 0, VIPs removed, stop
hooks). What a transition tells the world is vrrpd/publisher.py. Nothing here decides
protocol behaviour: see machine.py.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import time

import trio

from hacommon import sdnotify
from hacommon.log import RateLimiter, first_error

from . import config as config_mod
from .config import InstanceConfig, VrrpdConfig
from .control import ControlServer
from .demotion import Demotion, Demotions
from .instance import (
    AdvertIn,
    GroupCommand,
    InstanceDriver,
    LinksChanged,
    PriorityChanged,
)
from .codec import codec_for, peek_vrid
from .io import accept as accept_filter
from .io import links as nl
from .io.linkmon import watch_links
from .io.vrrp_socket import Datagram, open_receive_socket, receive
from .machine import State
from .packet import Reason, Rejected, split_ipv4
from .prepared_move import PreparedMove
from .publisher import Publisher
from .status import InstanceStatus
from .timers import Timers

log = logging.getLogger("vrrpd")
#: How late an instance may be in handling its deadline before the watchdog calls it stuck:
#: far beyond any scheduling delay, well within any sensible WatchdogSec.
WATCHDOG_LATE = 10.0


class Daemon:
    def __init__(self, cfg: VrrpdConfig):
        self.cfg = cfg
        self.nl = nl.NetlinkWorker()
        self.instances: dict[str, InstanceDriver] = {}
        self.rx_tasks: dict[tuple[str, int], trio.CancelScope] = {}  # (ifname, family) -> receive task
        self.rx_socks: dict[tuple[str, int], socket.socket] = {}  # its socket, while open
        self.tx: dict[str, trio.socket.SocketType] = {}
        self.links: dict[str, nl.LinkInfo] = {}
        self.limiter = RateLimiter(10.0)
        self.publisher = Publisher(self._deliver_group_command, self._spawn_hook, self.instances.get,
                                   lambda: list(self.instances.values()))
        self.demotions = Demotions()  # asked for by subscribers (ctsync not ready)
        self._refresh = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.timers = Timers()
        self.prepared_moves: dict[str, PreparedMove] = {}  # group (or instance) -> its prepared move to master
        self.started_at = time.time()
        self.uplinkd = None  # probes and uplinks (vrrpd/uplinkd.py), if configured
        self.notifier = sdnotify.Notifier(None)  # systemd's, read from the environment in run()
        self.metrics = None  # the HTTP metrics endpoint (metrics_listen), if configured
        self._registry = None  # prometheus_client's, built on first use (vrrpd/metrics.py)

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run until SIGTERM/SIGINT, then leave (shutdown). If anything ends the daemon
        otherwise (a bug: an exception out of one of its tasks), it leaves the same way
        before the exception goes on: priority 0, VIPs and macvlans removed, stop hooks,
        so the peer takes over at once and nothing of ours stays on the links."""
        self.notifier = sdnotify.Notifier.from_env()
        control: ControlServer | None = None
        left = False
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    nursery.start_soon(self.timers.run)
                    control = ControlServer(self, self.cfg.control_socket, self.cfg.control_group, self.cfg.control_gid)
                    await control.start(nursery)
                    # late-bound: the event is replaced after each refresh
                    nursery.start_soon(watch_links, lambda: self._refresh.set())
                    await self._refresh_links()
                    for icfg in self.cfg.instances.values():
                        await self._add_instance(icfg)
                    await self._install_accept_filter()
                    self._rebuild_groups()
                    for inst in self.instances.values():
                        self._spawn(inst)
                    nursery.start_soon(self._refresher)
                    if self.cfg.probes or self.cfg.uplinks:
                        from .uplinkd import UplinkDriver

                        self.uplinkd = UplinkDriver(self)
                        await self.uplinkd.start(nursery)
                    if self.cfg.metrics_listen is not None:
                        from hacommon.metrics_http import MetricsServer

                        self.metrics = MetricsServer(self.metrics_registry(), self.cfg.metrics_listen, "vrrpd")
                        await self.metrics.start(nursery)
                    log.info("vrrpd started: %d instance(s), control socket %s", len(self.instances), self.cfg.control_socket)
                    await self._initial_states_known()
                    self.notifier.ready(self.status_line())
                    nursery.start_soon(sdnotify.run, self.notifier, self.status_line, self.unhealthy)
                    task_status.started()
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            self.notifier.reloading()
                            await self.reload()
                            self.notifier.ready(self.status_line())
                            continue
                        log.info("%s: leaving (priority 0 for every master)", signal.Signals(signum).name)
                        break
                    self.notifier.stopping("leaving: priority 0 for every master")
                    left = True
                    await self.shutdown()
                    nursery.cancel_scope.cancel()
        except BaseException as e:
            if not left:
                if not isinstance(e, (SystemExit, KeyboardInterrupt, trio.Cancelled)):
                    log.critical("vrrpd is ending on an unexpected error (%s); leaving as on SIGTERM first",
                                 first_error(e), exc_info=e)
                    self.notifier.stopping("crashed: leaving as on SIGTERM")
                await self.shutdown()
            raise
        finally:
            if control is not None:
                control.close()
            if self.metrics is not None:
                self.metrics.close()
            self.nl.close()

    async def shutdown(self) -> None:
        """Priority-0 adverts, VIPs and macvlans removed, stop hooks run (bounded). Each
        step fails alone (logged): leaving must get as far as it can."""
        with trio.CancelScope(shield=True):
            hooks = []
            for inst in list(self.instances.values()):
                try:
                    hooks += await inst.stop()
                except Exception:
                    log.exception("%s: leaving failed", inst.name)
            with trio.move_on_after(5):
                async with trio.open_nursery() as n:
                    for h in hooks:
                        n.start_soon(h)
            for sock in self.tx.values():
                sock.close()
            if self.uplinkd is not None:
                try:
                    await self.uplinkd.stop()
                except Exception:
                    log.exception("uplinks: leaving failed")
            if any(not i.machine.params.accept for i in self.instances.values()):
                try:
                    await self._nft(accept_filter.remove)
                except Exception:
                    log.exception("Accept_Mode filter: leaving failed")

    async def reload(self) -> None:
        try:
            new = config_mod.load_checked(self.cfg.path)
        except config_mod.ConfigError as e:
            log.error("SIGHUP: configuration not reloaded:\n%s", "\n".join(e.problems))
            return
        except Exception:  # a loader bug must not end the daemon: keep the running configuration
            log.exception("SIGHUP: configuration not reloaded: unexpected error reading %s", self.cfg.path)
            return
        if (new.probes, new.uplinks) != (self.cfg.probes, self.cfg.uplinks):
            log.warning("SIGHUP: probe and uplink changes only take effect on restart")
            new = dataclasses.replace(new, probes=self.cfg.probes, uplinks=self.cfg.uplinks)
        if (new.control_socket, new.control_group) != (self.cfg.control_socket, self.cfg.control_group):
            log.warning("SIGHUP: control_socket and control_group changes only take effect on restart")
        if new.metrics_listen != self.cfg.metrics_listen:
            log.warning("SIGHUP: metrics_listen changes only take effect on restart")
            new = dataclasses.replace(new, metrics_listen=self.cfg.metrics_listen)
        kept, changed = 0, []
        for name, inst in list(self.instances.items()):
            if new.instances.get(name) == inst.cfg and new.group_of(name) == inst.group:
                kept += 1
                continue
            changed.append(name)
            for h in await inst.stop():
                self.nursery.start_soon(h)
            del self.instances[name]
        self.cfg = new
        await self._refresh_links()
        added = []
        for name, icfg in new.instances.items():
            if name not in self.instances:
                added.append(await self._add_instance(icfg))
        await self._install_accept_filter()
        self._rebuild_groups()
        for inst in added:
            self._spawn(inst)
        self._update_receivers()
        log.info("SIGHUP: reloaded; %d instance(s) unchanged, restarted or removed: %s", kept, ", ".join(changed) or "none")

    # ---- instances -------------------------------------------------------------------

    async def _add_instance(self, icfg: InstanceConfig) -> InstanceDriver:
        inst = InstanceDriver(icfg, self, self.cfg.group_of(icfg.name))
        if self.uplinkd is not None:
            self.uplinkd.seed(inst.tracker)
        self.instances[icfg.name] = inst
        parent = self.links.get(icfg.interface)
        if parent is None:
            log.error("%s: interface %s not found; instance stays in fault until it appears", icfg.name, icfg.interface)
        else:
            await inst.setup_kernel(parent)
        # Initial link state goes in before Startup, so a down link starts in FAULT.
        for ifname in inst.tracker.watched:
            if ifname in self.links:
                inst.tracker.update(ifname, self.links[ifname].up)
        now = trio.current_time()
        inst.machine.set_fault("link", inst.tracker.fault_reason(), now)
        inst.machine.set_effective_priority(self.priority_of(inst), now)
        return inst

    def _spawn(self, inst: InstanceDriver) -> None:
        self.nursery.start_soon(inst.run)
        self._update_receivers()

    def _rebuild_groups(self) -> None:
        self.publisher.notify_timeout = self.cfg.notify_timeout
        self.publisher.rebuild_groups(self.cfg.sync_groups.values(), set(self.instances))
        for inst in self.instances.values():
            inst.group = self.cfg.group_of(inst.name)

    def _deliver_group_command(self, member: str, command) -> None:
        other = self.instances.get(member)
        if other is not None:
            other.post(GroupCommand(command))

    def prepared_move(self, inst: InstanceDriver, prepared: bool) -> PreparedMove | None:
        """The prepared move to master ``inst`` takes part in (vrrpd/prepared_move.py): a new
        one when its own move was prepared, its group's open one when it follows the group
        into it, else None (the ordinary order: advert at once, VIPs after the hold)."""
        key = inst.group or inst.name
        move = self.prepared_moves.get(key)
        if move is not None and not move.released.is_set():
            return move
        if not prepared:
            return None
        members = self.cfg.sync_groups[inst.group].instances if inst.group in self.cfg.sync_groups else ()
        followers = {m for m in members if m in self.instances and self.instances[m].machine.state == State.BACKUP}
        now = trio.current_time()
        # By one advert interval the adverts must go out whoever is ready: the machine's own
        # next advert is due then anyway.
        bound = min(self.cfg.transition_hold_timeout, inst.machine.params.advert_interval)
        move = self.prepared_moves[key] = PreparedMove(key, frozenset({inst.name} | followers), now + bound, now)
        self.nursery.start_soon(move.release_at_deadline)
        return move

    def _spawn_hook(self, hook) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(hook)

    async def _install_accept_filter(self) -> None:
        """The local-delivery drop for the VIPs of instances with Accept_Mode off
        (vrrpd/io/accept.py), rebuilt from the instances that run now."""
        vips = [a.ip for i in self.instances.values() if not i.machine.params.accept for a in i.cfg.virtual_addresses]
        await self._nft(accept_filter.install, vips)

    async def _nft(self, fn, *args) -> None:
        problem = await trio.to_thread.run_sync(fn, *args)
        if problem:
            log.error("Accept_Mode: the nftables table %s could not be changed: %s; the virtual addresses of "
                      "instances with accept_mode = false accept packets", accept_filter.TABLE, problem)

    # ---- priority --------------------------------------------------------------------

    def priority_of(self, inst: InstanceDriver) -> int:
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
            inst.post(PriorityChanged())

    # ---- receiving -------------------------------------------------------------------

    def _update_receivers(self) -> None:
        """One receive task per (interface, address family) that has instances."""
        wanted = {(i.cfg.interface, i.family) for i in self.instances.values() if i.parent_index is not None}
        for key in list(self.rx_tasks):
            if key not in wanted:
                self.rx_tasks.pop(key).cancel()
        for key in wanted - set(self.rx_tasks):
            scope = trio.CancelScope()
            self.rx_tasks[key] = scope
            self.nursery.start_soon(self._receive_task, key, scope)

    async def _receive_task(self, key: tuple[str, int], scope: trio.CancelScope) -> None:
        ifname, family = key
        with scope:
            while True:
                link = self.links.get(ifname)
                if link is None:
                    await trio.sleep(1)
                    continue
                try:
                    sock = open_receive_socket(ifname, link.index, family)
                except OSError as e:
                    log.error("cannot open IPv%d VRRP socket on %s: %s; retrying", family, ifname, e.strerror or e)
                    await trio.sleep(1)
                    continue
                self.rx_socks[key] = sock
                try:
                    while True:
                        await trio.lowlevel.wait_readable(sock)
                        if not self._read_queued(key, sock, limit=256):
                            break
                        # A long queue is read 256 at a time, so other tasks run meanwhile.
                        await trio.lowlevel.checkpoint()
                finally:
                    if self.rx_socks.get(key) is sock:
                        del self.rx_socks[key]
                    sock.close()

    def drain(self, ifname: str, family: int) -> None:
        """Read and dispatch every datagram already queued on a receive socket, now."""
        sock = self.rx_socks.get((ifname, family))
        if sock is not None:
            self._read_queued((ifname, family), sock, limit=4096)

    def _read_queued(self, key: tuple[str, int], sock: socket.socket, limit: int) -> bool:
        """Dispatch up to `limit` queued datagrams; False if the socket failed (reopen)."""
        ifname, family = key
        for _ in range(limit):
            try:
                dgram = receive(sock)
            except BlockingIOError:
                return True
            except OSError as e:
                log.warning("receive error on %s (IPv%d): %s", ifname, family, e.strerror or e)
                return False
            now = trio.current_time()
            arrived = now
            if dgram.stamp is not None:
                # The kernel's receive time, moved to trio's clock; never in the future,
                # never more than a second back (a clock step must not fake a stale advert).
                arrived = max(now - 1.0, min(now, dgram.stamp - time.time() + now))
            self._dispatch(ifname, family, dgram, arrived)
        return True

    def _dispatch(self, ifname: str, family: int, dgram: Datagram | bytes, now: float) -> None:
        """One received datagram to its instance: found by interface, family and VRID,
        parsed by that instance's codec (RFC 3768 / RFC 5798 §7.1 checks, each counted)."""
        if isinstance(dgram, bytes):
            dgram = Datagram(dgram)
        here = [i for i in self.instances.values() if i.cfg.interface == ifname and i.family == family]
        try:
            if family == 4:
                ip = split_ipv4(dgram.data)
                if isinstance(ip, Rejected):
                    self._count_rejected(ifname, here, ip)
                    return
                payload, src, dst, ttl = ip.payload, ip.src, ip.dst, ip.ttl
            else:
                payload, src, dst, ttl = dgram.data, dgram.src, dgram.dst, dgram.hop_limit
            vrid = peek_vrid(payload)
            inst = next((i for i in here if i.cfg.vrid == vrid), None)
            if inst is not None:
                result = inst.codec.parse(payload, src, dst, ttl)
            else:
                result = self._parse_unclaimed(here, family, payload, src, dst, ttl)
        except Exception as e:  # noqa: BLE001 - the codec must not raise; if it does, count, never crash
            result = Rejected(Reason.LENGTH, f"unparseable: {e!r}")
            inst = None
        if isinstance(result, Rejected):
            self._count_rejected(ifname, [inst] if inst is not None else here, result)
            return
        if inst is None:
            for other in here:
                other.machine.counters.vrid_errors += 1
                other.log_limited("vrid_errors", f"advert for VRID {result.vrid} from {result.src} on {ifname}: not configured here")
            return
        inst.post(AdvertIn(result, now))

    @staticmethod
    def _parse_unclaimed(here: list[InstanceDriver], family: int, payload: bytes, src, dst, ttl):
        """An advert for a VRID nobody here has: parsed by a codec of its own version (an
        instance's of that version if there is one: its checksum convention), to tell a
        broken packet (its own error) from a good one for another VRID (vrid_errors)."""
        version = payload[0] >> 4 if payload else 0
        same = next((i.codec for i in here if i.codec.version == version), None)
        if same is not None:
            return same.parse(payload, src, dst, ttl)
        if version == 3 or (version == 2 and family == 4):
            return codec_for(version, family).parse(payload, src, dst, ttl)
        codec = here[0].codec if here else codec_for(2 if family == 4 else 3, family)
        return codec.parse(payload, src, dst, ttl)  # says what is wrong with the version

    def _count_rejected(self, ifname: str, here: list[InstanceDriver], rej: Rejected) -> None:
        targets = [i for i in here if i.cfg.vrid == rej.vrid] or here
        for inst in targets:
            inst.machine.count_rejected(rej)
            inst.log_limited(rej.reason.value, f"dropped advert from {rej.src} on {ifname}: {rej.detail}")

    # ---- links -----------------------------------------------------------------------

    async def _refresher(self) -> None:
        while True:
            await self._refresh.wait()
            self._refresh = trio.Event()
            await trio.sleep(0.005)  # let a burst of notifications settle
            await self._refresh_links()
            for inst in self.instances.values():
                if inst.parent_index is None and inst.cfg.interface in self.links:
                    await inst.setup_kernel(self.links[inst.cfg.interface])
                    self._update_receivers()
            addrs = await self._read_addresses()
            for inst in self.instances.values():
                self._update_tracker(inst, addrs)
            if self.uplinkd is not None:
                self.uplinkd.links_changed()

    async def _refresh_links(self) -> None:
        try:
            self.links = await self.nl.call(nl.get_links)
        except Exception as e:  # noqa: BLE001
            log.error("reading links failed: %s", e)

    async def _read_addresses(self) -> dict | None:
        try:
            return await self.nl.call(nl.get_addresses)
        except Exception as e:  # noqa: BLE001
            log.error("reading addresses failed: %s", e)
            return None

    def _update_tracker(self, inst: InstanceDriver, addrs: dict | None) -> None:
        """Links and the advert source, re-read, to the instance (`addrs`: every
        interface's addresses; None if they could not be read: the source stays)."""
        for ifname in inst.tracker.watched:
            link = self.links.get(ifname)
            if link is None:
                inst.tracker.links.pop(ifname, None)
            else:
                inst.tracker.update(ifname, link.up)
        if addrs is None:
            primary = inst.machine.primary_ip
        elif inst.parent_index is None:
            primary = None
        else:
            vips = {a.ip for a in inst.cfg.virtual_addresses}
            primary = nl.pick_primary(addrs.get(inst.parent_index, []), inst.family, vips)
        # The machine ignores what did not change, so posting every time is safe.
        inst.post(LinksChanged(primary))

    # ---- systemd ---------------------------------------------------------------------

    async def _initial_states_known(self, timeout: float = 5.0) -> None:
        """READY=1 waits until every instance has left INITIALIZE (its Startup event ran:
        backup, master for an owner, or fault), so that units ordered after vrrpd start
        with its state decided."""
        with trio.move_on_after(timeout):
            while any(i.machine.state == State.INIT for i in self.instances.values()):
                await trio.sleep(0.01)

    def status_line(self) -> str:
        """systemd's STATUS=: "WAN master, LAN master"; with many instances, counts."""
        insts = list(self.instances.values())
        if not insts:
            line = "no VRRP instance"
        elif len(insts) <= 6:
            line = ", ".join(f"{i.name} {i.machine.state.value}" for i in insts)
        else:
            by_state: dict[str, int] = {}
            for i in insts:
                by_state[i.machine.state.value] = by_state.get(i.machine.state.value, 0) + 1
            line = f"{len(insts)} instances: " + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        sel = self.uplinkd.selector if self.uplinkd is not None else None
        if sel is not None:
            line += "; uplinks ALL DOWN" if sel.all_down else f"; uplink {sel.active or 'undecided'}"
        return line

    def unhealthy(self) -> str | None:
        """The watchdog's question: does every instance task keep up with its timers? An
        instance whose deadline passed long ago and was not handled is stuck (a kernel
        call that never returns, say): stop pinging so that systemd restarts vrrpd."""
        now = trio.current_time()
        for inst in self.instances.values():
            due = inst.machine.next_deadline()
            if due is not None and now - due > WATCHDOG_LATE:
                return f"instance {inst.name}: its timer is {now - due:.1f}s overdue (its task is stuck)"
        return None

    # ---- status ----------------------------------------------------------------------

    def metrics_registry(self):
        """prometheus_client's registry over this daemon's status (vrrpd/metrics.py):
        what `vrrpctl metrics` and metrics_listen both serve."""
        if self._registry is None:
            from .metrics import registry_for

            self._registry = registry_for(self)
        return self._registry

    def status(self) -> list[InstanceStatus]:
        return [inst.status(self.demotions.reasons(inst.name, inst.group)) for inst in self.instances.values()]


async def serve(cfg: VrrpdConfig, task_status=trio.TASK_STATUS_IGNORED) -> None:
    await Daemon(cfg).run(task_status=task_status)
