"""ctsync's trio driver: kernel events, the sync link, vrrpd and the control socket feed
the Replicator; its actions go to the kernel (ctnetlink) and the peer (UDP).

The failover hand-shake with vrrpd: ctsync subscribes to vrrpd's events holding the
configured sync group. When the group moves to master, vrrpd sends its advert but waits
with the VIPs; ctsync commits the external cache into the kernel, then acks, and only
then do the VIPs and gratuitous ARPs appear. See docs/ctsync.md.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import struct
import time
from collections import Counter
from dataclasses import asdict

import trio

from ctnetlink import batch
from ctnetlink.codec import (
    CodecError,
    Entry,
    encode_delete,
    encode_timeout,
    encode_update,
    parse_message,
)
from ctnetlink.constants import (
    NFNLGRP_CONNTRACK_DESTROY,
    NFNLGRP_CONNTRACK_NEW,
    NFNLGRP_CONNTRACK_UPDATE,
)
from ctnetlink.key import entry_key
from ctnetlink.socket import CtSocket
from ctnetlink.sysctl import get_sysctl, set_sysctl
from hacommon import sdnotify
from hacommon.config import ConfigError
from hacommon.log import first_error
from hacommon.sockopts import SO_BINDTODEVICE, SO_RCVBUFFORCE

from .config import CtsyncConfig, load_checked, reload_plan
from .follower import VrrpdFollower
from .nfqueue import Parking
from .replicator import (
    AgeOut,
    Commit,
    DumpKernel,
    Inject,
    Remove,
    Replicator,
    SendDatagrams,
)

#: The longest a preparation waits for the master's whole table (see prepare_master).
PREPARE_SYNC_WAIT = 5.0

log = logging.getLogger("ctsync")
#: The pump wakes at least every heartbeat_interval; this long without a turn (a kernel
#: call that never returns, say) and the watchdog stops pinging systemd. Generous: a
#: table dump of a million entries takes seconds, not this.
WATCHDOG_STALL = 30.0
#: Kernel events handled per wake-up at most (netlink datagrams read without waiting).
EVENT_BATCH = 1024
#: Sync datagrams handled per wake-up at most (read without waiting).
UDP_BATCH = 256
#: A table dump is given up when the kernel sends nothing for this long.
DUMP_IDLE_TIMEOUT = 30.0


class Daemon:
    def __init__(self, cfg: CtsyncConfig):
        self.cfg = cfg
        # A random incarnation, not the clock: a clock behind its previous run (no RTC
        # before NTP, a VM snapshot) made the peer take us for a replay (docs/ctsync.md).
        self.rep = Replicator(cfg, epoch=secrets.randbits(64) or 1)
        self.wake = trio.Event()
        self.started_at = time.time()
        self.commits = 0
        self.last_commit: dict | None = None
        self.commit_errors: Counter[str] = Counter()
        self.nat_clashes = 0
        self.aged_out = 0  # our kernel entries shortened on becoming backup (conntrackd -t)
        self.age_out_errors: Counter[str] = Counter()
        self.nat_verify_failures = 0
        self.last_clashes: list[str] = []
        self.follower = VrrpdFollower(self) if cfg.failover.vrrp_sync_group else None
        self.parking = Parking(cfg.parking) if cfg.parking.enabled else None
        self.not_ready = False  # what the demotion of the vrrpd group follows
        self._not_ready_changed = trio.Event()
        self.own_datagrams = 0  # multicast copies of our own datagrams (ignored)
        self._commit_lock = trio.Lock()
        self._commit_done: trio.Event | None = None  # set when the pending Commit action has run
        self.nursery: trio.Nursery | None = None
        self.udp: trio.socket.SocketType | None = None
        self.mcast_rx: trio.socket.SocketType | None = None  # bound to multicast_group
        self.cmd: CtSocket | None = None
        self.events_sock: CtSocket | None = None
        self.control = None  # ControlServer, once started
        self.notifier = sdnotify.Notifier(None)  # systemd's, read from the environment in run()
        self.metrics = None  # the HTTP metrics endpoint (metrics_listen), if configured
        self._registry = None
        self.pump_at: float | None = None  # the pump's last turn (the watchdog's question)
        self.commit_timeouts = 0

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if get_sysctl("net.netfilter.nf_conntrack_events") != "1":
            # 2 means "only while someone listens": entries created before we subscribed
            # would never report their DESTROY. 1 makes every entry report.
            set_sysctl("net.netfilter.nf_conntrack_events", 1)
        groups = (NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY)
        self.events_sock = CtSocket.open(groups, rcvbuf=self.cfg.netlink_rcvbuf)
        self.cmd = CtSocket.open(rcvbuf=max(4 << 20, self.cfg.netlink_rcvbuf // 4))
        self.rep.own_portids = {self.cmd.portid, self.events_sock.portid}
        self.events_sock.skip_portids = self.rep.own_portids
        self.udp = await self._open_udp()
        if self.cfg.multicast_group is not None:
            self.mcast_rx = await self._open_multicast_receiver()
        try:
            await self._serve(task_status)
        finally:
            if self.parking is not None:
                self.parking.close()  # no rule of ours outlives us, whatever ended the run
            for sock in (self.events_sock, self.cmd):
                sock.close()
            self.udp.close()
            if self.mcast_rx is not None:
                self.mcast_rx.close()

    async def _serve(self, task_status) -> None:
        from .control import ControlServer

        self.notifier = sdnotify.Notifier.from_env()
        control = None
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as n:
                    self.nursery = n
                    self.control = control = ControlServer(self, self.cfg.control_socket, self.cfg.control_group,
                                                           self.cfg.control_gid)
                    await control.start(n)
                    if self.cfg.metrics_listen is not None:
                        from hacommon.metrics_http import MetricsServer

                        self.metrics = MetricsServer(self.metrics_registry(), self.cfg.metrics_listen, "ctsync")
                        await self.metrics.start(n)
                    now = trio.current_time()
                    self.rep.start(now)
                    if self.parking is not None:
                        await self.parking.start(n)
                    n.start_soon(self._kernel_events)
                    n.start_soon(self._udp_receive, self._udp_raw)
                    if self.mcast_rx is not None:
                        n.start_soon(self._udp_receive, self._mcast_raw)
                    n.start_soon(self._pump)
                    if self.follower is not None:
                        n.start_soon(self.follower.run)
                    via = f" via multicast {self.cfg.multicast_group}" if self.cfg.multicast_group else ""
                    log.info("ctsync started: mode %s, sync %s -> %s:%d%s on %s, node %d, codec %s", self.cfg.mode,
                             self.cfg.local_address, self.cfg.peer_address, self.cfg.port, via, self.cfg.sync_interface,
                             self.cfg.node_id, batch.IMPLEMENTATION)
                    if batch.C_UNAVAILABLE:
                        log.warning("the compiled codec is not used (%s): running the pure-Python one, "
                                    "much slower per replicated entry", batch.C_UNAVAILABLE)
                    self.notifier.ready(self.status_line())
                    n.start_soon(sdnotify.run, self.notifier, self.status_line, self.unhealthy)
                    task_status.started()
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            self.notifier.reloading()
                            self.reload()
                            self.notifier.ready(self.status_line())
                            continue
                        log.info("%s: leaving", signal.Signals(signum).name)
                        self.notifier.stopping()
                        break
                    n.cancel_scope.cancel()
        except BaseException as e:
            if not isinstance(e, (SystemExit, KeyboardInterrupt, trio.Cancelled)):
                log.critical("ctsync is ending on an unexpected error (%s); closing its sockets", first_error(e), exc_info=e)
            raise
        finally:
            # On every path: the control socket unlinked (no stale file for the next
            # start to take over); run() closes the netlink and UDP sockets.
            if control is not None:
                control.close()
            if self.metrics is not None:
                self.metrics.close()

    async def _open_udp(self) -> trio.socket.SocketType:
        fam = socket.AF_INET if self.cfg.local_address.version == 4 else socket.AF_INET6
        raw = socket.socket(fam, socket.SOCK_DGRAM)
        raw.setblocking(False)
        # Kept for sending without a trio checkpoint per datagram (see _send_datagrams), and
        # for reading every queued datagram per wake-up (_udp_receive).
        self._udp_raw = raw
        s = trio.socket.from_stdlib_socket(raw)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.cfg.sync_interface.encode())
        self._set_rcvbuf(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        await s.bind((str(self.cfg.local_address), self.cfg.port))
        group = self.cfg.multicast_group
        if group is not None:
            # Sends to the group leave by the sync interface only, from local_address
            # (the socket is bound to it: the peer identifies us by it), one hop, and
            # are not looped back to us.
            ifindex = socket.if_nametoindex(self.cfg.sync_interface)
            if fam == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                             struct.pack("4s4si", bytes(4), self.cfg.local_address.packed, ifindex))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        return s

    async def _open_multicast_receiver(self) -> trio.socket.SocketType:
        """A socket bound to the group on the sync interface, the group joined there only
        (the socket bound to local_address does not see datagrams sent to the group)."""
        group = self.cfg.multicast_group
        ifindex = socket.if_nametoindex(self.cfg.sync_interface)
        fam = socket.AF_INET if group.version == 4 else socket.AF_INET6
        raw = socket.socket(fam, socket.SOCK_DGRAM)
        raw.setblocking(False)
        self._mcast_raw = raw  # read directly, every queued datagram per wake-up (_udp_receive)
        s = trio.socket.from_stdlib_socket(raw)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.cfg.sync_interface.encode())
        self._set_rcvbuf(s)
        if fam == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         struct.pack("4s4si", group.packed, self.cfg.local_address.packed, ifindex))
            await s.bind((str(group), self.cfg.port))
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, struct.pack("16si", group.packed, ifindex))
            await s.bind((str(group), self.cfg.port, 0, ifindex))
        return s

    def _set_rcvbuf(self, s) -> None:
        # Room for a whole send window of the peer's (resend_queue datagrams, ~4 KiB of
        # kernel memory each): a backup busy with a burst must not drop what the window
        # lets the peer have in flight, or it NACKs and the peer resends half the burst.
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, max(8 << 20, self.cfg.resend_queue * 4096))
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)

    def poke(self) -> None:
        self.wake.set()

    def not_ready_changed(self) -> trio.Event:
        """An event that is set at the next change of `not_ready`."""
        if self._not_ready_changed.is_set():
            self._not_ready_changed = trio.Event()
        return self._not_ready_changed

    # ---- tasks --------------------------------------------------------------------------

    async def _kernel_events(self) -> None:
        sock, rep = self.events_sock, self.rep
        while True:
            # Wait for the kernel, then take what is queued without waiting: one trio
            # wake-up per batch, not per event (each event is its own netlink datagram),
            # each datagram through the batch codec (ctnetlink.batch) in one call.
            await sock.wait_readable()
            r = sock.read_records(rep.filter, rep.own_portids, EVENT_BATCH)
            rep.kernel_records(r.records, trio.current_time(), r.skipped, r.filtered, len(r.errors))
            if r.overrun:
                log.warning("conntrack event overrun (receive buffer full): events lost; pushing the whole table to the peer")
                # Read the queue empty before the dump: until then the kernel drops
                # events without reporting it again (see CtSocket.read_queued).
                while not r.empty:
                    await trio.lowlevel.checkpoint()
                    r = sock.read_records(rep.filter, rep.own_portids, EVENT_BATCH)
                    rep.kernel_records(r.records, trio.current_time(), r.skipped, r.filtered, len(r.errors))
                rep.overrun(trio.current_time())
            self.poke()
            await trio.lowlevel.checkpoint()  # let the pump send what this batch queued

    async def _udp_receive(self, raw: socket.socket) -> None:
        """Datagrams of the sync link (``raw``: the non-blocking socket under trio's):
        every one queued is read at each wake-up (a burst brings thousands), then the
        pump runs once for all of them (acks, replies)."""
        peer, local = self.cfg.peer_address, self.cfg.local_address
        peer_str = str(peer)  # the usual source, compared as the string recvfrom gives
        recvfrom, rep, channel = raw.recvfrom, self.rep, self.rep.channel
        while True:
            await trio.lowlevel.wait_readable(raw)
            now = trio.current_time()
            for _ in range(UDP_BATCH):
                try:
                    data, addr = recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError as e:
                    log.debug("sync receive failed: %s", e)
                    break
                if addr[0] != peer_str:
                    try:
                        src = ipaddress.ip_address(addr[0].split("%", 1)[0])
                    except ValueError:
                        src = None
                    if src != peer:
                        if src == local:
                            self.own_datagrams += 1  # our own, sent to the group: not looped back normally
                        else:
                            channel.stats.malformed += 1  # not from our peer: ignored, counted
                        continue
                rep.datagram(data, now)
            self.poke()
            await trio.lowlevel.checkpoint()

    async def _pump(self) -> None:
        dest = self._destination()
        while True:
            deadline = self.rep.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1.0):
                await self.wake.wait()
            self.wake = trio.Event()
            now = self.pump_at = trio.current_time()
            if deadline is not None and deadline <= now:
                await trio.lowlevel.checkpoint()  # due at once (a push feeding): let the others run
            self.rep.handle_timer(now)
            not_ready = self.rep.not_ready(now)
            if not_ready != self.not_ready:
                self.not_ready = not_ready
                log.info("%s", "not ready: no complete table from the peer yet" if not_ready else "ready")
                self._not_ready_changed.set()
            for act in self.rep.poll(now):
                if isinstance(act, SendDatagrams):
                    await self._send_datagrams(act.datagrams, dest)
                elif isinstance(act, DumpKernel):
                    # BEGIN before the events read during the dump; the dump in its own
                    # task, so that acks, heartbeats and commits go on meanwhile.
                    rid = self.rep.begin_table(trio.current_time(), act.reason)
                    self.nursery.start_soon(self._read_table, rid, act.reason)
                elif isinstance(act, Inject):
                    await self._inject(act.messages)
                elif isinstance(act, AgeOut):
                    await self._age_out(act)
                elif isinstance(act, Commit):
                    # Its own task: the pump keeps acking and sending while the kernel works.
                    self.nursery.start_soon(self._run_commit, act)
                elif isinstance(act, Remove):
                    for t, zone in act.tuples:
                        await self.cmd.request(encode_delete(t, self.cmd.next_seq(), zone))

    async def _read_table(self, rid: int, reason: str) -> None:
        """Dump our kernel for push ``rid`` into the replicator as it is read (it streams
        the entries to the peer meanwhile). On a netlink socket of its own: a commit is
        not held up by the dump of a large table, and closing it ends a dump that a newer
        push superseded."""
        n = 0
        try:
            with CtSocket.open(rcvbuf=4 << 20) as sock:
                dump = sock.dump_records(self.rep.filter, idle_timeout=DUMP_IDLE_TIMEOUT)
                async with contextlib.aclosing(dump) as batches:
                    async for batch in batches:
                        n += len(batch)
                        if not self.rep.table_entries(rid, batch, trio.current_time()):
                            log.info("table push %d (%s) superseded after %d entries read", rid, reason, n)
                            return
                        self.poke()
        except OSError as e:
            log.warning("table push %d (%s): the dump failed after %d entries (%s); trying again later", rid, reason, n, e)
            self.rep.table_failed(rid, trio.current_time())
        else:
            log.info("pushing our table to the peer (%d entries): %s", n, reason)
            self.rep.table_done(rid, trio.current_time())
        self.poke()

    async def _send_datagrams(self, datagrams: list[bytes], dest: tuple) -> None:
        # A burst is thousands of datagrams: write them straight to the non-blocking
        # socket and only wait (trio) when its buffer is full.
        raw = self._udp_raw
        for d in datagrams:
            try:
                try:
                    raw.sendto(d, dest)
                except BlockingIOError:
                    await self.udp.sendto(d, dest)
            except OSError as e:
                log.debug("sync send failed: %s", e)

    def _destination(self) -> tuple:
        group = self.cfg.multicast_group
        if group is None:
            return (str(self.cfg.peer_address), self.cfg.port)
        if group.version == 6:
            return (str(group), self.cfg.port, 0, socket.if_nametoindex(self.cfg.sync_interface))
        return (str(group), self.cfg.port)

    async def _inject(self, messages: list[bytes]) -> None:
        results = await self.cmd.commit_raw(messages)
        errs, clashes = await self._settle(messages, results)
        self.commit_errors.update(errs)
        if clashes:
            await self._report_clashes(clashes)

    async def _settle(self, messages: list[bytes], results: list[int]) -> tuple[Counter[str], list[Entry]]:
        """Sort out the creates the kernel refused. EEXIST means either the same flow
        exists here already (then it is updated) or another local entry holds the
        public address and port the replicated one needs (a NAT clash: the update finds
        no entry with our original tuple). Returns the other errors by errno name, and
        the clashing replicated entries."""
        errs: Counter[str] = Counter()
        clashes: list[Entry] = []
        for msg, err in zip(messages, results):
            if err == errno.EEXIST:
                try:
                    _, _, _, _, e = parse_message(msg)
                    err = await self.cmd.request(encode_update(e, self.cmd.next_seq()))
                except CodecError:
                    err, e = errno.EINVAL, None
                if err == errno.ENOENT and isinstance(e, Entry):
                    clashes.append(e)
                    continue
            if err:
                errs[errno.errorcode.get(err, str(err))] += 1
        return errs, clashes

    async def _age_out(self, act: AgeOut) -> None:
        """conntrackd -t: our entries that the new master now holds get at most
        ``act.timeout`` seconds left (only those with more; ENOENT: gone meanwhile)."""
        keys = set(act.keys)
        msgs = [encode_timeout(e.orig, act.timeout, 0, e.zone) for e in await self.cmd.dump()
                if e.timeout > act.timeout and entry_key(e) in keys]
        results = await self.cmd.commit_raw(msgs) if msgs else []
        errs = Counter(errno.errorcode.get(r, str(r)) for r in results if r and r != errno.ENOENT)
        done = sum(1 for r in results if not r)
        self.aged_out += done
        self.age_out_errors.update(errs)
        log.info("backup: the master holds %d of our entries; %d got at most %ds left%s", len(keys), done,
                 act.timeout, f" (errors {dict(errs)})" if errs else "")

    # ---- failover -----------------------------------------------------------------------

    async def commit(self, reason: str) -> dict:
        """Become master and write the external cache into the kernel (commit mode);
        returns when it is done (the replicator's Commit action has run), or after
        commit_timeout with ``{"timed_out": True, ...}``: the caller (vrrpd's hold,
        ``ctsyncctl commit``) stops waiting, the commit itself goes on to its end (a
        netlink batch cut short would leave the kernel's answers unread)."""
        done = trio.Event()
        result: dict = {}

        async def run() -> None:
            result.update(await self._commit(reason))
            done.set()

        self.nursery.start_soon(run)
        with trio.move_on_after(self.cfg.commit_timeout):
            await done.wait()
        if done.is_set():
            return result
        self.commit_timeouts += 1
        log.error("commit (%s) not done after commit_timeout (%.1fs): not waiting for it any longer; it goes on",
                  reason, self.cfg.commit_timeout)
        return {"reason": reason, "timed_out": True, "count": len(self.rep.cache), "committed": 0,
                "duration": self.cfg.commit_timeout, "time": time.time()}

    async def _commit(self, reason: str) -> dict:
        async with self._commit_lock:
            self._commit_done = done = trio.Event()
            if self.parking is not None:
                self.parking.takeover()  # packets for the VIPs wait for this commit
            self.rep.become_master(trio.current_time(), reason)
            self.poke()
            await done.wait()
            return self.last_commit

    async def prepare_master(self, reason: str) -> dict:
        """Make-before-break: vrrpd is about to preempt a live master; write the replica
        into the kernel while still backup (the master keeps forwarding meanwhile), and
        return when done. Becoming master then has nothing left to write.

        A backup that is not ready (its request for the master's whole table is still
        unanswered: it has just started, or come back from a fault) first waits until it
        is, at most PREPARE_SYNC_WAIT: writing a partial or stale table would break the
        very flows the preparation is for. With fast adverts (0.05 s: the preemption
        comes 0.18 s after the box returns) this is most of the preparation; vrrpd's
        preempt_prepare_timeout bounds it all."""
        t0 = trio.current_time()
        with trio.move_on_after(PREPARE_SYNC_WAIT):
            while self.not_ready:
                await self.not_ready_changed().wait()
        waited = trio.current_time() - t0
        if waited >= 0.001:
            log.info("preparation: waited %.3fs for the master's whole table%s", waited,
                     " (not complete: preparing with what there is)" if self.not_ready else "")
        async with self._commit_lock:
            self._commit_done = done = trio.Event()
            self.rep.prepare_master(trio.current_time(), reason)
            self.poke()
            await done.wait()
            return self.last_commit

    def takeover_parks(self) -> bool:
        """A takeover starts and parking is armed to hold the packets that arrive before its
        commit is done: vrrpd may add the VIPs at once (parking.vips_before_commit)."""
        return bool(self.parking is not None and self.cfg.parking.vips_before_commit and self.parking.takeover())

    def cancel_preparation(self, reason: str) -> None:
        if self.rep.preparation is not None:
            log.info("preemption cancelled (%s): back to backup", reason)
            self.rep.cancel_preparation(trio.current_time())
            self.poke()

    async def _run_commit(self, c: Commit) -> None:
        try:
            if c.messages is None:  # inject mode, or prepared: the kernel has the replica already
                if c.prepare:
                    self.rep.prepare_committed(trio.current_time())
                    self.poke()
                if c.prepared:  # a preparation wrote it all already: its record stands
                    if not c.prepare:
                        if self.last_commit and self.last_commit.get("prepared"):
                            self.last_commit["master_after"] = round(time.time() - self.last_commit["time"], 3)
                            log.info("master (%s): the preparation wrote the replica %.3fs ago; nothing left to commit",
                                     c.reason, self.last_commit["master_after"])
                        # As after any commit: the peer gets our table, flows we wrote included.
                        self.rep.committed(trio.current_time())
                        self.poke()
                    return
                self.last_commit = {"reason": c.reason, "count": 0, "duration": 0.0, "mode": self.cfg.mode,
                                    "prepared": c.prepare, "time": time.time()}
                return
            t0 = time.perf_counter()
            results = await self.cmd.commit_raw(c.messages)
            errs, clashes = await self._settle(c.messages, results)
            duration = time.perf_counter() - t0
            self.commits += 1
            self.commit_errors.update(errs)
            if clashes:
                await self._report_clashes(clashes)
            ok = len(c.messages) - sum(errs.values()) - len(clashes)
            self.last_commit = {"reason": c.reason, "count": len(c.messages), "committed": ok, "duration": duration,
                                "errors": dict(errs), "clashes": len(clashes), "mode": self.cfg.mode, "prepared": c.prepare,
                                "time": time.time()}
            extra = (f", errors {dict(errs)}" if errs else "") + (f", {len(clashes)} NAT clash(es)" if clashes else "")
            what = "commit while backup, before preempting" if c.prepare else "commit"
            log.info("%s (%s): %d of %d entries in %.3fs%s", what, c.reason, ok, len(c.messages), duration, extra)
            if c.prepare:
                self.rep.prepare_committed(trio.current_time())  # still backup: no table push
            else:
                self.rep.committed(trio.current_time())
            self.poke()
        finally:
            if self.parking is not None and not c.prepare:
                self.parking.commit_done()  # what waited for this commit goes on now
            if self._commit_done is not None:
                self._commit_done.set()
                self._commit_done = None

    async def verify_nat(self) -> int:
        """After a commit: every cached entry with NAT must have its NAT bits in the kernel."""
        want = {}
        for msg in self.rep.cache.messages():
            try:
                _, _, _, _, e = parse_message(msg)
            except CodecError:
                continue
            if isinstance(e, Entry) and (e.src_nat or e.dst_nat):
                want[entry_key(e)] = (e.src_nat, e.dst_nat)
        bad = 0
        for e in await self.cmd.dump():
            w = want.pop(entry_key(e), None)
            if w is not None and (e.src_nat, e.dst_nat) != w:
                bad += 1
        self.nat_verify_failures += bad
        if bad:
            log.error("NAT verification: %d committed entries lack their NAT bits", bad)
        return bad

    async def _report_clashes(self, clashes: list[Entry]) -> None:
        """Name the local entry behind each clash (the one holding the translated reply
        tuple the replicated entry needs): counted, logged, kept for the status."""
        local: dict[tuple, Entry] = {}
        for e in await self.cmd.dump():
            local[(e.zone, e.reply)] = e
            local.setdefault((e.zone, e.orig.inverse()), e)
        self.nat_clashes += len(clashes)
        self.commit_errors["nat_clash"] += len(clashes)
        for e in clashes:
            other = local.get((e.zone, e.reply))
            theirs = f"local {other.orig} (public {_public(other)})" if other else "a local entry (gone by now)"
            line = f"replicated {e.orig} (public {_public(e)}) clashes with {theirs}"
            self.last_clashes.append(line)
            log.warning("NAT clash: %s", line)
        del self.last_clashes[:-20]

    def become_backup(self, reason: str) -> None:
        self.rep.become_backup(trio.current_time())
        if self.parking is not None:
            self.nursery.start_soon(self.parking.arm)  # ready for the next takeover
        log.info("backup (%s): not committing; asked the peer for a resync", reason)
        self.poke()

    def verify_nat_later(self) -> None:
        """Check the NAT bits of a commit once the hold is released (never delays the VIPs)."""
        async def later():
            await trio.sleep(0.5)
            try:
                await self.verify_nat()
            except OSError as e:
                log.warning("NAT verification skipped: %s", e)

        self.nursery.start_soon(later)

    # ---- reload, systemd, metrics ------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the file (the whole file is checked, as at start). Filters,
        timers and the key change now (a key rotation: ctsync/channel.py); a key that
        cannot change at run time keeps its running value, each named in the log. A file
        with problems changes nothing."""
        try:
            new = load_checked(self.cfg.path)
        except ConfigError as e:
            log.error("SIGHUP: configuration not reloaded:\n%s", "\n".join(e.problems))
            return
        except Exception:  # a loader bug must not end the daemon: keep the running configuration
            log.exception("SIGHUP: configuration not reloaded: unexpected error reading %s", self.cfg.path)
            return
        running, applied, refused = reload_plan(self.cfg, new)
        for line in refused:
            log.warning("SIGHUP: %s", line)
        self.cfg = running
        self.rep.reconfigure(running, trio.current_time())
        self.poke()
        log.info("SIGHUP: reloaded; changed: %s%s", ", ".join(applied) or "nothing",
                 f"; key rotation: the previous key is accepted for {running.key_rotation_grace:g}s"
                 if "ctsync.key (or key_file)" in applied else "")

    def status_line(self) -> str:
        """systemd's STATUS=: "backup, in sync, 12034 entries"."""
        now = trio.current_time()
        rep = self.rep
        if rep.role == "master":
            line = f"master, {len(rep.internal)} entries"
        else:
            line = f"backup, {'in sync' if rep.in_sync else 'not in sync'}, {len(rep.cache)} entries"
        if not rep.channel.peer_alive(now):
            line += ", peer not heard"
        if self.follower is not None and not self.follower.connected:
            line += ", vrrpd not reachable"
        return line

    def unhealthy(self) -> str | None:
        """The watchdog's question: is the pump still turning?"""
        if self.pump_at is not None and trio.current_time() - self.pump_at > WATCHDOG_STALL:
            return f"the pump has not turned for {trio.current_time() - self.pump_at:.0f}s"
        return None

    def metrics_registry(self):
        """prometheus_client's registry over status() (ctsync/metrics.py), for
        metrics_listen and `ctsyncctl metrics`."""
        if self._registry is None:
            from .metrics import registry_for

            self._registry = registry_for(self.status)
        return self._registry

    # ---- status -------------------------------------------------------------------------

    def status(self) -> dict:
        now = trio.current_time()
        ch = self.rep.channel
        return {
            "role": self.rep.role,
            "preparation": self.rep.preparation,
            "mode": self.cfg.mode,
            "codec": batch.IMPLEMENTATION,  # "c" (ctnetlink/_batch.c) or "python" (the reference)
            "codec_c_unavailable": batch.C_UNAVAILABLE,  # why not "c", or None
            "peer_alive": ch.peer_alive(now),
            "peer_role": self.rep.peer_role,
            "peer_ready": self.rep.peer_ready,
            "in_sync": self.rep.in_sync,
            "ready": self.rep.ready(now),
            "vrrpd_connected": self.follower.connected if self.follower else False,
            "not_ready": self.not_ready,
            "demoting_vrrpd": self.follower.demoting if self.follower else 0,
            "transport": f"multicast {self.cfg.multicast_group}" if self.cfg.multicast_group else "unicast",
            "own_datagrams": self.own_datagrams,
            "failover_group": self.cfg.failover.vrrp_sync_group,
            "internal_entries": len(self.rep.internal),
            "external_entries": len(self.rep.cache),
            "external_bytes_per_entry": round(self.rep.cache.bytes_per_entry(), 1),
            "counters": asdict(self.rep.counters),
            "channel": asdict(ch.stats),
            "unacked": ch.unacked,
            "send_queue": ch.pending,
            "table_push": self.rep.table_push(),
            "commits": self.commits,
            "last_commit": self.last_commit,
            "commit_errors": dict(self.commit_errors),
            "nat_clashes": self.nat_clashes,
            "last_clashes": self.last_clashes,
            "nat_verify_failures": self.nat_verify_failures,
            "aged_out": self.aged_out,
            "age_out_errors": dict(self.age_out_errors),
            "netlink_overruns": self.events_sock.overruns if self.events_sock else 0,
            "parking": self.parking.status() if self.parking is not None else {"enabled": False},
            "commit_timeouts": self.commit_timeouts,
            "key_rotation": ch.rotating(now),
            "uplink_flush": self.control.uplink_flush if self.control is not None else {},
            "pid": os.getpid(),
            "started_at": self.started_at,
        }


def _public(e: Entry) -> str:
    """The translated address and port of an entry (its NAT), as addr:port."""
    nat = e.nat_src or e.nat_dst
    if nat is None:
        return f"{e.reply.dst}:{e.reply.icmp_id if e.reply.is_icmp else e.reply.dport}"
    addr, port = nat
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
