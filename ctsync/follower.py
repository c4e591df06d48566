"""ctsync's side of the hand-shake with vrrpd (hacommon.handshake): follow one sync group.

ctsync subscribes to vrrpd's events holding the configured sync group. When the group
moves to master, vrrpd sends its advert but waits with the VIPs; the follower has the
daemon commit the external cache into the kernel, then acks, and only then do the VIPs
and gratuitous ARPs appear. When the group goes backup or fault, the daemon becomes
backup. Before a preemption of a live lower-priority master (a failback), vrrpd asks us to
prepare: the daemon commits the master's table while still backup, and vrrpd sends the
advert that preempts only after our ack. With ``failover.demote_when_not_ready`` the follower also keeps vrrpd's
demotion of the group in step with the daemon's readiness (a backup without its peer's
whole table asks vrrpd to lower the group's priority, as pfsync demotes CARP).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import TYPE_CHECKING

import trio

from hacommon import handshake as hs
from hacommon.control import LineReader, LineTooLong

from .replicator import Role

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("ctsync")
RECONNECT_DELAY = 0.5
NOT_READY_REASON = "ctsync not ready: no complete table from the peer yet"


class VrrpdFollower:
    def __init__(self, daemon: "Daemon"):
        self.d = daemon
        fo = daemon.cfg.failover
        self.group = fo.vrrp_sync_group
        self.path = fo.vrrpd_socket
        self.demote_weight = fo.demote_when_not_ready
        self.connected = False
        self.demoting = 0  # the weight vrrpd has been asked to apply (0: none)

    async def run(self) -> None:
        """Subscribe to vrrpd, holding the sync group's moves to master until committed;
        reconnect whenever vrrpd goes away."""
        while True:
            try:
                sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                await sock.connect(self.path)
            except OSError:
                self.connected = False
                await trio.sleep(RECONNECT_DELAY)
                continue
            stream = trio.SocketStream(sock)
            send_lock = trio.Lock()  # acks and demotions share the stream
            async with stream, trio.open_nursery() as n:
                try:  # the subscription is the first line, before any ack or demotion
                    await stream.send_all(hs.encode(hs.Subscribe("ctsync", (self.group,), prepare=True)))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await trio.sleep(RECONNECT_DELAY)
                    continue
                # Each task catches its own stream errors: the nursery would wrap them.
                if self.demote_weight:
                    n.start_soon(self._keep_demotion, stream, send_lock)
                await self._read(stream, send_lock)
                n.cancel_scope.cancel()
            self.connected = False
            self.demoting = 0  # vrrpd drops the demotion of a subscriber that went away
            log.warning("lost vrrpd's control socket; reconnecting")

    async def _read(self, stream: trio.SocketStream, send_lock: trio.Lock) -> None:
        reader = LineReader(stream)
        try:
            self.connected = True
            log.info("following vrrpd sync group %s on %s", self.group, self.path)
            while (line := await reader.next_line()) is not None:
                try:
                    msg = hs.parse_from_vrrpd(line)
                except hs.HandshakeError as e:
                    log.warning("vrrpd sent a line we cannot read (%s); ignored", e)
                    continue
                if isinstance(msg, hs.Transition):
                    await self._transition(msg, stream, send_lock)
                elif isinstance(msg, hs.Prepare):
                    await self._prepare(msg, stream, send_lock)
                elif isinstance(msg, hs.PrepareCancelled):
                    if msg.concerns(self.group):
                        self.d.cancel_preparation(msg.reason)
                elif isinstance(msg, hs.Refused):
                    log.warning("vrrpd refused: %s", msg.error)
        except LineTooLong as e:
            log.warning("vrrpd sent %s; reconnecting", e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass

    async def _transition(self, t: hs.Transition, stream: trio.SocketStream, send_lock: trio.Lock) -> None:
        if t.concerns(self.group):
            rep = self.d.rep
            if t.new == "master":
                if rep.role != Role.MASTER:
                    if t.hold_id is not None and self.d.takeover_parks():
                        # Parking holds what arrives before the commit is done: the VIPs
                        # may move now, and packets wait in the queue, not in retransmits.
                        await self._ack(t.hold_id, stream, send_lock)
                        t = dataclasses.replace(t, hold_id=None)
                    # `current`: vrrpd was master before we subscribed (we started late, or
                    # reconnected): become master all the same, with what we hold.
                    how = "is master (when we subscribed)" if t.current else "became master"
                    await self.d.commit(f"vrrpd: {t.instance} {how}")
                    self.d.verify_nat_later()
            elif t.new in ("backup", "fault"):
                if rep.role == Role.MASTER:
                    self.d.become_backup(f"vrrpd: {t.instance} {t.new}")
                elif rep.preparation is not None:
                    self.d.cancel_preparation(f"vrrpd: {t.instance} {t.new}")
        if t.hold_id is not None:
            await self._ack(t.hold_id, stream, send_lock)

    async def _ack(self, hold_id: int, stream: trio.SocketStream, send_lock: trio.Lock) -> None:
        async with send_lock:
            await stream.send_all(hs.encode(hs.Ack(hold_id)))

    async def _prepare(self, p: hs.Prepare, stream: trio.SocketStream, send_lock: trio.Lock) -> None:
        """vrrpd is about to preempt a live master: commit its table while we are still
        backup, then let the preempting advert go (make-before-break failback)."""
        if p.concerns(self.group) and self.d.rep.role != Role.MASTER:
            await self.d.prepare_master(f"vrrpd: {p.instance} about to preempt ({p.reason})")
        async with send_lock:
            await stream.send_all(hs.encode(hs.Ack(p.hold_id)))

    async def _keep_demotion(self, stream: trio.SocketStream, send_lock: trio.Lock) -> None:
        """Keep vrrpd's demotion of the group in step with the daemon's `not_ready`.
        Sent on every (re)connection too."""
        sent = None
        try:
            while True:
                changed = self.d.not_ready_changed()
                want = self.demote_weight if self.d.not_ready else 0
                if want != sent:
                    async with send_lock:
                        await stream.send_all(hs.encode(hs.Demote(want, frozenset({self.group}), NOT_READY_REASON)))
                    sent = self.demoting = want
                    log.info("asked vrrpd to %s", f"lower the priority of {self.group} by {want}" if want
                             else "withdraw its demotion")
                    continue  # not_ready may have changed while we sent
                await changed.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader notices too, and we reconnect
