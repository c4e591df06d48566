"""ctsync's trio driver: kernel events, the sync link, vrrpd and the control socket feed
the Replicator; its actions go to the kernel (ctnetlink) and the peer (UDP).

The failover hand-shake with vrrpd: ctsync subscribes to vrrpd's events holding the
configured sync group. When the group moves to master, vrrpd sends its advert but waits
with the VIPs; ctsync commits the external cache into the kernel, then acks, and only
then do the VIPs and gratuitous ARPs appear. See docs/ctsync.md.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import asdict

import trio

from vrrpd.io.constants import SO_BINDTODEVICE

from .config import CtsyncConfig
from .ctnetlink.codec import CodecError, Entry, encode_delete, encode_update, parse_message
from .ctnetlink.constants import NFNLGRP_CONNTRACK_DESTROY, NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE
from .ctnetlink.socket import CtSocket, EventKind
from .ctnetlink.sysctl import get_sysctl, set_sysctl
from .cache import entry_key
from .replicator import KIND_DESTROY, KIND_NEW, KIND_UPDATE, DumpKernel, Inject, Remove, Replicator, SendDatagrams

log = logging.getLogger("ctsync")
_KINDS = {EventKind.NEW: KIND_NEW, EventKind.UPDATE: KIND_UPDATE, EventKind.DESTROY: KIND_DESTROY}


class Daemon:
    def __init__(self, cfg: CtsyncConfig):
        self.cfg = cfg
        self.rep = Replicator(cfg, epoch=time.time_ns())
        self.wake = trio.Event()
        self.started_at = time.time()
        self.commits = 0
        self.last_commit: dict | None = None
        self.commit_errors: Counter[str] = Counter()
        self.nat_clashes = 0
        self.nat_verify_failures = 0
        self.last_clashes: list[str] = []
        self.vrrpd_connected = False
        self._commit_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        self.udp: trio.socket.SocketType | None = None
        self.cmd: CtSocket | None = None
        self.events_sock: CtSocket | None = None

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
        self.udp = await self._open_udp()
        from .control import ControlServer

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as n:
                self.nursery = n
                control = ControlServer(self, self.cfg.control_socket)
                await control.start(n)
                now = trio.current_time()
                self.rep.start(now)
                n.start_soon(self._kernel_events)
                n.start_soon(self._udp_receive)
                n.start_soon(self._pump)
                if self.cfg.failover.vrrp_sync_group:
                    n.start_soon(self._follow_vrrpd)
                log.info("ctsync started: mode %s, sync %s -> %s:%d on %s, node %d", self.cfg.mode,
                         self.cfg.local_address, self.cfg.peer_address, self.cfg.port, self.cfg.sync_interface, self.cfg.node_id)
                task_status.started()
                async for signum in signals:
                    log.info("%s: leaving", signal.Signals(signum).name)
                    break
                n.cancel_scope.cancel()
                control.close()
        for s in (self.events_sock, self.cmd):
            s.close()
        self.udp.close()

    async def _open_udp(self) -> trio.socket.SocketType:
        fam = socket.AF_INET if self.cfg.local_address.version == 4 else socket.AF_INET6
        s = trio.socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.cfg.sync_interface.encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        await s.bind((str(self.cfg.local_address), self.cfg.port))
        return s

    def poke(self) -> None:
        self.wake.set()

    # ---- tasks --------------------------------------------------------------------------

    async def _kernel_events(self) -> None:
        async for ev in self.events_sock.events():
            now = trio.current_time()
            if ev.kind == EventKind.OVERRUN:
                log.warning("conntrack event overrun (receive buffer full): events lost; pushing the whole table to the peer")
                # Read the queue empty before the dump: until then the kernel drops
                # events without reporting it again (see CtSocket.read_queued).
                while True:
                    evs, empty = self.events_sock.read_queued()
                    for e in evs:
                        if e.kind != EventKind.OVERRUN:
                            self.rep.kernel_event(_KINDS[e.kind], e.entry, e.portid, trio.current_time())
                    if empty:
                        break
                    await trio.lowlevel.checkpoint()
                self.rep.overrun(trio.current_time())
            else:
                self.rep.kernel_event(_KINDS[ev.kind], ev.entry, ev.portid, now)
            self.poke()

    async def _udp_receive(self) -> None:
        peer = str(self.cfg.peer_address)
        while True:
            data, addr = await self.udp.recvfrom(65535)
            if addr[0] != peer:
                self.rep.channel.stats.malformed += 1  # not from our peer: ignored, counted
                continue
            self.rep.datagram(data, trio.current_time())
            self.poke()

    async def _pump(self) -> None:
        dest = (str(self.cfg.peer_address), self.cfg.port)
        while True:
            deadline = self.rep.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1.0):
                await self.wake.wait()
            self.wake = trio.Event()
            now = trio.current_time()
            self.rep.handle_timer(now)
            for act in self.rep.poll(now):
                if isinstance(act, SendDatagrams):
                    for d in act.datagrams:
                        try:
                            await self.udp.sendto(d, dest)
                        except OSError as e:
                            log.debug("sync send failed: %s", e)
                elif isinstance(act, DumpKernel):
                    self.rep.begin_table(trio.current_time())  # before the events read during the dump
                    entries = await self.cmd.dump()
                    self.rep.send_table(entries, trio.current_time(), act.reason)
                    log.info("sent our table to the peer (%d entries): %s", len(entries), act.reason)
                    self.poke()
                elif isinstance(act, Inject):
                    await self._inject(act.messages)
                elif isinstance(act, Remove):
                    for t, zone in act.tuples:
                        await self.cmd.request(encode_delete(t, self.cmd.next_seq(), zone))

    async def _inject(self, messages: list[bytes]) -> None:
        results = await self.cmd.commit_raw(messages)
        for msg, err in zip(messages, results):
            if err == errno.EEXIST:
                try:
                    _, _, _, _, e = parse_message(msg)
                    err = await self.cmd.request(encode_update(e, self.cmd.next_seq()))
                except CodecError:
                    err = errno.EINVAL
            if err and err != errno.EEXIST:
                self.commit_errors[errno.errorcode.get(err, str(err))] += 1

    # ---- failover -----------------------------------------------------------------------

    async def commit(self, reason: str) -> dict:
        """Become master and write the external cache into the kernel (commit mode)."""
        async with self._commit_lock:
            now = trio.current_time()
            c = self.rep.become_master(now)
            self.poke()
            if c is None:
                self.last_commit = {"reason": reason, "count": 0, "duration": 0.0, "mode": self.cfg.mode, "time": time.time()}
                return self.last_commit
            t0 = time.perf_counter()
            results = await self.cmd.commit_raw(c.messages)
            errs: Counter[str] = Counter()
            clashes = []
            for msg, err in zip(c.messages, results):
                if err == errno.EEXIST:
                    # Either the same flow exists here already (update it) or another local
                    # entry holds the same public address and port (a NAT clash).
                    try:
                        _, _, _, _, e = parse_message(msg)
                        err = await self.cmd.request(encode_update(e, self.cmd.next_seq()))
                    except CodecError:
                        err = errno.EINVAL
                        e = None
                    if err == errno.ENOENT and e is not None:
                        clashes.append(e)
                        continue
                if err:
                    errs[errno.errorcode.get(err, str(err))] += 1
            duration = time.perf_counter() - t0
            self.commits += 1
            self.commit_errors.update(errs)
            if clashes:
                await self._report_clashes(clashes)
            ok = len(c.messages) - sum(errs.values()) - len(clashes)
            self.last_commit = {"reason": reason, "count": len(c.messages), "committed": ok, "duration": duration,
                                "errors": dict(errs), "clashes": len(clashes), "mode": self.cfg.mode, "time": time.time()}
            extra = (f", errors {dict(errs)}" if errs else "") + (f", {len(clashes)} NAT clash(es)" if clashes else "")
            log.info("commit (%s): %d of %d entries in %.3fs%s", reason, ok, len(c.messages), duration, extra)
            self.rep.committed(trio.current_time())
            self.poke()
            return self.last_commit

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
        local = {}
        for e in await self.cmd.dump():
            local[(e.reply.src, e.reply.dst, e.reply.sport, e.reply.dport, e.reply.proto)] = e
        self.nat_clashes += len(clashes)
        self.last_clashes = []
        for e in clashes:
            r = e.reply
            other = local.get((r.src, r.dst, r.sport, r.dport, r.proto))
            line = f"replicated {e.orig} (public {e.nat_src or e.nat_dst}) clashes with local {other.orig if other else 'entry'}"
            self.last_clashes.append(line)
            log.warning("NAT clash: %s", line)
        self.last_clashes = self.last_clashes[-20:]

    def become_backup(self, reason: str) -> None:
        self.rep.become_backup(trio.current_time())
        log.info("backup (%s): not committing; asked the peer for a resync", reason)
        self.poke()

    async def _follow_vrrpd(self) -> None:
        """Subscribe to vrrpd, holding the sync group's moves to master until committed."""
        group = self.cfg.failover.vrrp_sync_group
        path = self.cfg.failover.vrrpd_socket
        while True:
            try:
                sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                await sock.connect(path)
            except OSError:
                self.vrrpd_connected = False
                await trio.sleep(0.5)
                continue
            stream = trio.SocketStream(sock)
            async with stream:
                await stream.send_all(json.dumps({"cmd": "events", "name": "ctsync", "hold": [group]}).encode() + b"\n")
                buf = b""
                self.vrrpd_connected = True
                log.info("following vrrpd sync group %s on %s", group, path)
                try:
                    while True:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        buf += chunk
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            await self._vrrpd_event(json.loads(line), stream, group)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                    pass
            self.vrrpd_connected = False
            log.warning("lost vrrpd's control socket; reconnecting")

    async def _vrrpd_event(self, ev: dict, stream: trio.SocketStream, group: str) -> None:
        if "new" not in ev or group not in (ev.get("group"), ev.get("instance")):
            return
        if ev["new"] == "master":
            if self.rep.role != "master":
                await self.commit(f"vrrpd: {ev['instance']} became master")
                self._spawn_verify()
        elif ev["new"] in ("backup", "fault") and self.rep.role == "master":
            self.become_backup(f"vrrpd: {ev['instance']} {ev['new']}")
        elif ev["new"] == "backup" and not self.rep.in_sync:
            pass
        if "hold_id" in ev:
            await stream.send_all(json.dumps({"ack": ev["hold_id"]}).encode() + b"\n")

    def _spawn_verify(self) -> None:
        async def later():
            await trio.sleep(0.5)  # after the hold is released: never delays the VIPs
            try:
                await self.verify_nat()
            except OSError as e:
                log.warning("NAT verification skipped: %s", e)

        self.nursery.start_soon(later)

    # ---- status -------------------------------------------------------------------------

    def status(self) -> dict:
        now = trio.current_time()
        ch = self.rep.channel
        return {
            "role": self.rep.role,
            "mode": self.cfg.mode,
            "peer_alive": ch.peer_alive(now),
            "peer_role": self.rep.peer_role,
            "peer_ready": self.rep.peer_ready,
            "in_sync": self.rep.in_sync,
            "ready": self.rep.ready,
            "vrrpd_connected": self.vrrpd_connected,
            "failover_group": self.cfg.failover.vrrp_sync_group,
            "internal_entries": len(self.rep.internal),
            "external_entries": len(self.rep.cache),
            "external_bytes_per_entry": round(self.rep.cache.bytes_per_entry(), 1),
            "counters": asdict(self.rep.counters),
            "channel": asdict(ch.stats),
            "unacked": ch.unacked,
            "commits": self.commits,
            "last_commit": self.last_commit,
            "commit_errors": dict(self.commit_errors),
            "nat_clashes": self.nat_clashes,
            "last_clashes": self.last_clashes,
            "nat_verify_failures": self.nat_verify_failures,
            "netlink_overruns": self.events_sock.overruns if self.events_sock else 0,
            "pid": os.getpid(),
            "started_at": self.started_at,
        }
