"""ctsync's core, sans-IO: kernel events -> sync messages; sync messages -> cache or
kernel; failover -> commit. Time is an argument; the driver (daemon.py) does the I/O.

Inputs (read the actions with `poll(now)`):
    kernel_records(records, now, ...)        events of our own kernel, as the batch codec
                                             reads them (ctnetlink.batch.events with
                                             self.filter): (kind, portid, key, compact form)
    overrun(now)                             the event socket lost events (ENOBUFS)
    begin_table(now, reason) -> push id      on DumpKernel, before the dump is read
    table_entries(rid, entries, now) -> bool part of the dump, as read: (key, compact form)
                                             pairs (False: superseded, stop reading)
    table_done(rid, now)                     the dump is complete
    send_table(entries, now, reason)         the three at once (a dump read whole)
    table_failed(rid, now)                   the dump could not be read
    datagram(data, now)                      a datagram from the sync link
    become_master(now, reason) / become_backup(now)   the VRRP sync group moved
    prepare_master(now, reason)              the group is about to preempt a live master:
                                             commit while still backup (make-before-break)
    handle_timer(now)                        at next_deadline()
Actions (all of them through ``poll(now)``):
    SendDatagrams(list[bytes])               to the peer
    DumpKernel(reason)                       begin_table, dump our table into table_entries
    Commit(messages, reason)                 write the external cache into the kernel (commit
                                             mode; in inject mode messages is None: the kernel
                                             has the replica already)
    Inject(messages) / Remove(tuples)        write peer entries into our kernel (inject mode)
    AgeOut(keys, timeout)                    a new backup: shorten our kernel entries that the
                                             new master's table holds (commit mode)

The core sees bytes and keys, never a decoded entry: the master sends each entry's compact
form (ctnetlink.compact) as it came out of the codec, the backup expands it once into the
commit message it keeps (ctnetlink.batch.expand).

Commit and inject mode differ only in what the replica does on arrival and on becoming
master: one strategy object each (CommitMode, InjectMode), chosen once from the config.

Both nodes always send their own kernel's events (so a failback finds the state where
it went); events caused by our own commits carry our netlink portid and are ignored.
Every `refresh_interval` each node pushes its whole table between RESYNC_BEGIN/END
markers: the peer drops what the push did not contain. That converges the replica after
any impairment, and keeps alive entries whose kernel timeout is refreshed by traffic
without an event (a UDP flow after it is assured).

A push streams: its entries go into the channel's send queue a few thousand at a time,
as the send window drains it (poll tops it up), never all at once, so a table of any
size gets through a bounded queue while events keep flowing between its entries.

(Over 600 lines: both sides of a table push, the events and the failover rules read and
write the same replica state, internal keys, the push's touched keys, in_sync; split
apart, that state would have to be handed back and forth.)
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from ctnetlink import batch
from ctnetlink.codec import CodecError, Tuple
from ctnetlink.key import tuple_from_key

from .cache import ExternalCache
from .channel import Channel
from .config import CtsyncConfig, Mode
from .wire import Message, MsgType

_HB = struct.Struct("!BBI")  # role (0 backup, 1 master), ready, external cache size
_RID = struct.Struct("!I")
_END = struct.Struct("!II")
KIND_NEW, KIND_UPDATE, KIND_DESTROY = batch.KIND_NEW, batch.KIND_UPDATE, batch.KIND_DESTROY
#: A gap in the peer's reliable stream open this long makes a backup not ready (NACKs
#: repair an ordinary loss within a few round trips; this is a link that keeps dropping).
STALL_GRACE = 1.0
#: Entries of a table push kept in the send queue at most (topped up as the window drains
#: it): enough to fill the window between two polls, a small share of the queue's limit.
PUSH_QUEUE = 4096
#: A request being answered (the push's BEGIN arrived) is asked again only after this long
#: without anything of the push: its end, a newer push, a gap or the peer's restart all
#: come through the stream anyway; this is a safety net, not the way a push is repaired
#: (repeating the request restarts the push, and a large one would never end).
PUSH_SILENCE = 60.0


@dataclass(frozen=True)
class SendDatagrams:
    datagrams: list[bytes]


@dataclass(frozen=True)
class AgeOut:
    """Our kernel entries with these keys now belong to the master (its table has
    them): give them at most ``timeout`` seconds left, so they do not outlive the
    flows by days (a TCP entry starts with 5 days) or hold a public port that a
    later failback commit needs.  Not deleted: if the master dies soon, traffic
    through us still finds them (and the commit refreshes them anyway)."""
    keys: list[bytes]
    timeout: int


@dataclass(frozen=True)
class DumpKernel:
    reason: str


@dataclass(frozen=True)
class Commit:
    messages: list[bytes] | None  # None: nothing to write (inject mode: the kernel has it all)
    reason: str
    prepare: bool = False  # made while still backup, before a preemption (call prepare_committed)
    prepared: bool = False  # nothing to write: a preparation wrote it all before we became master


@dataclass(frozen=True)
class Inject:
    messages: list[bytes]


@dataclass(frozen=True)
class Remove:
    tuples: list[tuple[Tuple, int]]  # (original tuple, zone)


Action = SendDatagrams | DumpKernel | Commit | Inject | Remove | AgeOut


class Role(StrEnum):
    MASTER = "master"
    BACKUP = "backup"


class Preparation(StrEnum):
    """Make-before-break: a backup about to preempt commits the replica while the master
    still forwards (COMMITTING), then writes what arrives next straight into the kernel
    (INJECTING) until it is master; becoming master then has nothing left to write."""

    COMMITTING = "committing"
    INJECTING = "injecting"


class CommitMode:
    """The replica waits in the external cache; becoming master writes all of it."""

    def on_entry(self, body: bytes) -> list[Action]:
        return []

    def on_removed(self, keys: list[bytes]) -> list[Action]:
        return []

    def on_master(self, cache: ExternalCache, reason: str) -> Commit:
        return Commit(cache.messages(), reason)

    def on_prepare(self, cache: ExternalCache, reason: str) -> Commit:
        return Commit(cache.messages(), reason, prepare=True)

    def age_out_tables(self, cfg: CtsyncConfig) -> int:
        """Complete tables from the new master to shorten our own entries against (conntrackd -t)."""
        return 2 if cfg.backup_purge_timeout > 0 else 0


class InjectMode:
    """Every replicated entry goes into our kernel as it arrives, and leaves it with the
    peer's; becoming master has nothing left to write."""

    def on_entry(self, body: bytes) -> list[Action]:
        return [Inject([body])]

    def on_removed(self, keys: list[bytes]) -> list[Action]:
        return [Remove([tuple_from_key(k) for k in keys])]

    def on_master(self, cache: ExternalCache, reason: str) -> Commit:
        return Commit(None, reason)

    def on_prepare(self, cache: ExternalCache, reason: str) -> Commit:
        return Commit(None, reason, prepare=True)  # the kernel has it all already

    def age_out_tables(self, cfg: CtsyncConfig) -> int:
        return 0  # our kernel holding the peer's entries is the point: leave them


STRATEGIES = {Mode.COMMIT: CommitMode(), Mode.INJECT: InjectMode()}
expand = batch.expand


#: ``(key, timeout, commit message)`` of an ENTRY body from the peer, or CodecError: the
#: compact form expanded once into the commit message that is kept (the commit then sends it
#: as it is), refused unless it is exactly one commit-form CT_NEW under the key it came with
#: (ctnetlink.batch_python.accept says why each rule; the C codec does it in one call)
accept_entry = batch.accept


def _filter_of(cfg: CtsyncConfig):
    """The codec's filter of the ignore_* settings (built once per configuration)."""
    return batch.Filter(cfg.ignore_protocols, cfg.ignore_tcp_states, cfg.ignore_addresses)
_INJECT = STRATEGIES[Mode.INJECT]


@dataclass
class _Push:
    """A table push under way: RESYNC_BEGIN is in the stream; the dump's entries wait in
    ``pending`` as they are read, are fed to the channel from there, and RESYNC_END
    follows the last one once the dump is complete."""
    rid: int
    epoch: int  # our channel's epoch when BEGIN was queued (its stream)
    floor: int  # ... and its next rseq then: BEGIN's rseq is at least this
    reason: str = ""
    touched: set[bytes] = field(default_factory=set)  # keys with events since BEGIN: newer than the dump
    pending: deque[tuple[bytes, bytes]] = field(default_factory=deque)  # (key, compact form) read, not sent yet
    dumped: int = 0  # entries read so far
    complete: bool = False  # the dump is read to its end
    keys: set[bytes] = field(default_factory=set)  # keys of the entries sent


@dataclass
class Counters:
    events_rx: int = 0
    events_ignored_own: int = 0
    events_filtered: int = 0
    events_bad: int = 0  # events the codec could not read (counted, not replicated)
    overruns: int = 0
    resyncs_requested: int = 0
    resyncs_sent: int = 0
    resyncs_received: int = 0
    entries_rx: int = 0
    destroys_rx: int = 0
    bad_entries: int = 0
    # ENTRY bodies that are not exactly one commit-form CT_NEW (ctnetlink.check): they
    # would reach the kernel verbatim at failover (a second request, another attribute)
    entries_refused: int = 0
    stale_dropped: int = 0
    aged_out_requests: int = 0
    pushes_superseded: int = 0  # table pushes abandoned for a newer one before their end
    preparations: int = 0  # make-before-break commits while backup, before a preemption


@dataclass
class Replicator:
    cfg: CtsyncConfig
    epoch: int
    role: Role = Role.BACKUP
    refresh_interval: float = 30.0
    resync_retry: float = 5.0
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.channel = Channel(self.cfg.node_id, self.epoch, self.cfg.key, mtu=self.cfg.mtu,
                               resend_limit=self.cfg.resend_queue, queue_limit=self.cfg.send_queue,
                               peer_timeout=self.cfg.peer_timeout)
        self.cache = ExternalCache()
        self.strategy = STRATEGIES[Mode(self.cfg.mode)]
        self.filter = _filter_of(self.cfg)  # what the codec leaves out of our events and dumps
        self.preparation: Preparation | None = None
        self._arrived_while_preparing: set[bytes] = set()
        self.internal: set[bytes] = set()  # keys of our own kernel's replicated entries
        self.own_portids: set[int] = set()
        self.peer_role: Role | None = None
        self.peer_ready = False
        self.in_sync = False
        self._actions: list[Action] = []
        self._resync_id = 0
        self._resync_asked_at: float | None = None
        self._incoming: dict[int, set[bytes]] = {}  # resync id -> keys seen in the push
        self._push: _Push | None = None  # our table push under way
        self._dump_pending = False  # a DumpKernel is out and its begin_table not called yet
        self._feed_at: float | None = None  # the push can feed more at once (poll again)
        self._hb_at: float | None = None
        self._expire_at: float | None = None
        self._refresh_at: float | None = None
        self._started_at: float | None = None
        # Complete tables from the master still to age out against after becoming backup:
        # the answer to our request and the push after its commit, in either order (the
        # answer may have been dumped before the commit, without the flows we handed over).
        self._age_out_tables = 0

    # ---- derived ------------------------------------------------------------------------

    def ready(self, now: float) -> bool:
        """A backup is ready once a bulk resync from the peer is complete (in_sync) and
        nothing the peer sent since is stuck behind an unrepaired gap: a complete table
        followed by entries that never arrive is not a complete replica."""
        return self.in_sync and not self.channel.stalled(now, STALL_GRACE)

    def not_ready(self, now: float) -> bool:
        """What vrrpd's demotion follows: a backup that lacks the whole table of a live
        peer would commit a partial state if it became master now. A master never waits
        for its peer (its state is its own kernel's); neither does a backup whose peer
        is silent (after `peer_timeout` from the start, so that a peer that has not
        answered yet counts as there): nothing will complete its table, and it may be
        the only box left to take over."""
        if self.role == Role.MASTER or self.ready(now):
            return False
        if self.channel.peer_alive(now):
            return True
        return self._started_at is not None and now < self._started_at + self.cfg.peer_timeout

    def next_deadline(self) -> float | None:
        ds = [t for t in (self._hb_at, self._expire_at, self._refresh_at, self._feed_at, self.channel.next_deadline())
              if t is not None]
        if self._resync_asked_at is not None:
            ds.append(self._resync_asked_at + self._retry_after())
        return min(ds) if ds else None

    # ---- inputs -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._started_at = now
        self._hb_at = now
        self._expire_at = now + 5.0
        self._refresh_at = now + self.refresh_interval
        self.request_resync(now, "start")

    def kernel_records(self, records: list, now: float, skipped: int = 0, filtered: int = 0, bad: int = 0) -> None:
        """Events of our kernel as the batch codec gives them, ``(kind, portid, key,
        compact form)`` (ctnetlink.batch.events, with :attr:`filter` and our own portids
        as the ones to skip), and the codec's counts: events of our own commits
        (``skipped``), left out by the filter, unreadable (``bad``)."""
        c = self.counters
        c.events_rx += len(records) + skipped + filtered + bad
        c.events_ignored_own += skipped
        c.events_filtered += filtered
        c.events_bad += bad
        own, internal, push, send = self.own_portids, self.internal, self._push, self.channel.send
        touched = push.touched if push is not None else None
        for kind, portid, key, body in records:
            if portid and portid in own:
                c.events_ignored_own += 1  # caused by our own commit or injection
                continue
            if touched is not None:
                touched.add(key)  # newer than (or as new as) what the dump may hold
            if kind == KIND_DESTROY:
                internal.discard(key)
                send(Message(MsgType.DESTROY, key), now)
            else:
                internal.add(key)
                send(Message(MsgType.ENTRY, body), now)

    def overrun(self, now: float) -> None:
        """Events were lost: our peer's copy may miss some; push the whole table."""
        self.counters.overruns += 1
        self._dump("event overrun")

    def begin_table(self, now: float, reason: str = "") -> int:
        """Our kernel dump starts (call it before dumping); returns the push id to give
        `table_entries`. RESYNC_BEGIN goes into the stream now, so that the events read
        while the dump runs, and while the push streams, follow it. The peer then counts
        the entries they announce as part of the push (an entry created meanwhile and
        missing from the dump is not dropped as stale), and the push leaves out the
        dump's view of every entry they touched (an entry destroyed meanwhile does not
        come back from it, an update is not overwritten by an older state). A push under
        way is superseded: the peer drops it at this BEGIN, and it never ends."""
        self._dump_pending = False
        if self._push is not None:
            self.counters.pushes_superseded += 1
        self._resync_id = (self._resync_id + 1) & 0xFFFFFFFF
        self._push = _Push(self._resync_id, self.channel.epoch, self.channel.next_rseq, reason)
        self.channel.send(Message(MsgType.RESYNC_BEGIN, _RID.pack(self._resync_id)), now)
        return self._resync_id

    def table_entries(self, rid: int, entries: list[tuple[bytes, bytes]], now: float) -> bool:
        """Entries of push ``rid``'s dump, as they are read, ``(key, compact form)``
        (ctnetlink.CtSocket.dump_records with :attr:`filter`); they stream from the next
        poll on. False if a newer push began meanwhile: stop reading that dump."""
        p = self._push
        if p is None or p.rid != rid or p.complete:
            return False
        p.pending.extend(entries)
        p.dumped += len(entries)
        return True

    def table_done(self, rid: int, now: float) -> None:
        """The dump of push ``rid`` is complete: RESYNC_END follows its last entry."""
        p = self._push
        if p is not None and p.rid == rid:
            p.complete = True
            self._feed(now)

    def send_table(self, entries: list[tuple[bytes, bytes]], now: float, reason: str) -> None:
        """A push of a dump read whole, begun now (no events in between: it is exact)."""
        rid = self.begin_table(now, reason)
        self.table_entries(rid, entries, now)
        self.table_done(rid, now)

    def table_failed(self, rid: int, now: float) -> None:
        """The dump of push ``rid`` could not be read: drop the push (its BEGIN stays
        without an end, which the peer ignores) and try again after ``resync_retry``."""
        if self._push is not None and self._push.rid == rid:
            self._push = None
            self._refresh_at = now + self.resync_retry

    def table_push(self) -> dict | None:
        """The push under way, for the status: id, reason, entries sent so far, read
        from the kernel so far, and whether the dump is complete."""
        p = self._push
        if p is None:
            return None
        return {"id": p.rid, "reason": p.reason, "sent": len(p.keys), "dumped": p.dumped, "dump_complete": p.complete}

    def request_resync(self, now: float, why: str) -> None:
        self.counters.resyncs_requested += 1
        self._resync_asked_at = now
        self.channel.send(Message(MsgType.RESYNC_REQUEST, why.encode()[:64]), now)

    def datagram(self, data: bytes, now: float) -> None:
        d = self.channel.receive_datagram(data, now)
        if d.peer_restarted:
            self.in_sync = False
            self._incoming.clear()
            self.request_resync(now, "peer restarted")
        for m in d.messages:
            self._message(m, now)
        if d.lost:
            self.in_sync = False
            self._incoming.clear()  # a push under way has a hole now: its end must not count
            self.request_resync(now, "gap in the sync stream")

    def become_master(self, now: float, reason: str = "became master") -> None:
        """The group goes master: the Commit to run before the VIPs move comes out of
        poll() next."""
        self.role = Role.MASTER
        self._hb_at = now  # tell the peer at once
        self._age_out_tables = 0
        if self.preparation is Preparation.INJECTING:
            self._actions.append(Commit(None, reason, prepared=True))  # the kernel has it all already
        else:
            self._actions.append(self.strategy.on_master(self.cache, reason))
        self.preparation = None
        self._arrived_while_preparing.clear()

    def prepare_master(self, now: float, reason: str) -> None:
        """The group is about to preempt a live lower-priority master: write the replica
        into our kernel now, while still backup (the Commit, with prepare set, comes out of
        poll()); entries arriving meanwhile are noted and written once it is done
        (prepare_committed), then every new one at once, until we are master."""
        if self.role == Role.MASTER or self.preparation is not None:
            self._actions.append(Commit(None, reason, prepare=True, prepared=True))  # done already
            return
        self.counters.preparations += 1
        self.preparation = Preparation.COMMITTING
        self._arrived_while_preparing.clear()
        self._actions.append(self.strategy.on_prepare(self.cache, reason))

    def prepare_committed(self, now: float) -> None:
        """The preparation's commit is done: write what arrived or left meanwhile."""
        if self.preparation is not Preparation.COMMITTING:
            return
        self.preparation = Preparation.INJECTING
        keys, self._arrived_while_preparing = self._arrived_while_preparing, set()
        present = [k for k in keys if k in self.cache]
        if present:
            self._actions.append(Inject([self.cache.message(k) for k in present]))
        gone = [k for k in keys if k not in self.cache]
        if gone:
            self._actions += _INJECT.on_removed(gone)

    def cancel_preparation(self, now: float) -> None:
        """The preemption will not happen: back to a plain backup, which ages out what the
        master holds (our kernel now has its entries too) and asks for its table."""
        if self.preparation is not None and self.role == Role.BACKUP:
            self.preparation = None
            self._arrived_while_preparing.clear()
            self.become_backup(now)

    def committed(self, now: float) -> None:
        """Our commit is done: push our table to the peer. The entries it wrote carry our
        own portid, so their events are not replicated; a peer that asked for our table
        before the commit (it went backup as we went master) would otherwise lack every
        flow it handed over, and keep only its own stale kernel entries for them: after
        a failback their TCP windows are behind and the strict ruleset drops them."""
        self._dump("after our commit")

    def become_backup(self, now: float) -> None:
        self.role = Role.BACKUP
        self._hb_at = now
        self.in_sync = False
        self.preparation = None
        self._arrived_while_preparing.clear()
        self._age_out_tables = self.strategy.age_out_tables(self.cfg)
        self.request_resync(now, "became backup")

    def reconfigure(self, cfg: CtsyncConfig, now: float) -> None:
        """SIGHUP: the settings that may change at run time (ctsync.config.reload_plan
        keeps the others). New filters take effect for the next event, and our whole
        table is pushed so the peer's replica follows them at once (its end marker drops
        what is now filtered); a new key starts a rotation (Channel.rotate_key)."""
        old, self.cfg = self.cfg, cfg
        self.filter = _filter_of(cfg)
        self.channel.peer_timeout = cfg.peer_timeout
        if cfg.key != old.key:
            self.channel.rotate_key(cfg.key, now, cfg.key_rotation_grace)
        if self._hb_at is not None and cfg.heartbeat_interval < old.heartbeat_interval:
            self._hb_at = min(self._hb_at, now + cfg.heartbeat_interval)
        if (cfg.ignore_addresses, cfg.ignore_protocols, cfg.ignore_tcp_states) != (
                old.ignore_addresses, old.ignore_protocols, old.ignore_tcp_states):
            self._dump("filters changed")

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        if self._hb_at is not None and now >= self._hb_at:
            body = _HB.pack(1 if self.role == Role.MASTER else 0, int(self.ready(now)), len(self.cache))
            self.channel.send_unreliable(Message(MsgType.HEARTBEAT, body), now)
            self._hb_at = now + self.cfg.heartbeat_interval
        if self._expire_at is not None and now >= self._expire_at:
            self.cache.expire(now)
            self._expire_at = now + 5.0
        if self._refresh_at is not None and now >= self._refresh_at:
            self._dump("periodic refresh", periodic=True)
            self._refresh_at = now + self.refresh_interval
        if self._resync_asked_at is not None and now >= self._resync_asked_at + self._retry_after():
            if self.channel.peer_alive(now):
                self.request_resync(now, "no answer to the last request")
            else:
                self._resync_asked_at = now  # ask again when the peer is back

    def poll(self, now: float) -> list[Action]:
        if self.channel.queue_overflowed:
            # The peer took nothing for so long that our send queue was dropped: what it
            # held is made up for by the whole table (its end marker drops the stale).
            self.channel.queue_overflowed = False
            self._dump("send queue overflow")
        actions, self._actions = self._actions, []
        self._feed(now)
        if self.channel.has_output(now):
            out = self.channel.datagrams_to_send(now)
            if out:
                actions.append(SendDatagrams(out))
        # The window took what the push had queued and has room for more: come back at
        # once (a poll feeds PUSH_QUEUE entries at most, so the driver's loop stays lively).
        self._feed_at = now if self._can_feed() else None
        return actions

    # ---- internals ----------------------------------------------------------------------

    def _dump(self, reason: str, *, asked: bool = False, periodic: bool = False) -> None:
        """Ask for a table push, unless one is already asked for and not begun: a burst
        of overruns (or requests) then costs one push, not one each. A push under way is
        superseded by a new one (its dump may predate what made us push again), except
        for the periodic refresh (it waits for the next interval) and for a request the
        peer made before it had our BEGIN (it gets BEGIN after asking: the push under
        way answers it). That is the case while the peer's acks, in the same stream,
        are below the rseq at which BEGIN was queued."""
        if self._dump_pending:
            return
        p = self._push
        if p is not None:
            if periodic:
                return
            if asked and p.epoch == self.channel.epoch and self.channel.acked < p.floor:
                return
        self._dump_pending = True
        self._actions.append(DumpKernel(reason))

    def _retry_after(self) -> float:
        return max(self.resync_retry, PUSH_SILENCE) if self._incoming else self.resync_retry

    def _push_queue(self) -> int:
        return max(1, min(PUSH_QUEUE, self.channel.queue_limit // 4))

    def _can_feed(self) -> bool:
        p = self._push
        return (p is not None and bool(p.pending) and self.channel.window_open
                and self.channel.pending < self._push_queue())

    def _feed(self, now: float) -> None:
        """Top the send queue up with the push's next entries (PUSH_QUEUE messages in it
        at most, and a quarter of its limit), and end the push after the last one."""
        p = self._push
        if p is None:
            return
        room = self._push_queue() - self.channel.pending
        pending, touched, keys, send = p.pending, p.touched, p.keys, self.channel.send
        while room > 0 and pending:
            k, body = pending.popleft()
            if k in touched:
                continue  # its event, already in the stream after BEGIN, is newer
            keys.add(k)
            send(Message(MsgType.ENTRY, body), now)
            room -= 1
        if p.complete and not pending:
            self.channel.send(Message(MsgType.RESYNC_END, _END.pack(p.rid, len(p.keys))), now)
            self.internal = p.keys | (self.internal & p.touched)
            self.counters.resyncs_sent += 1
            self._push = None
            self._refresh_at = now + self.refresh_interval  # the next periodic push counts from here

    def _on_entry(self, key: bytes, body: bytes) -> list[Action]:
        """What a replicated entry does on arrival: the mode's rule, unless a preemption
        is being prepared (noted while its commit runs, written at once after it)."""
        if self.preparation is Preparation.COMMITTING:
            self._arrived_while_preparing.add(key)
            return []
        if self.preparation is Preparation.INJECTING:
            return _INJECT.on_entry(body)
        return self.strategy.on_entry(body)

    def _on_removed(self, keys: list[bytes]) -> list[Action]:
        if self.preparation is Preparation.COMMITTING:
            self._arrived_while_preparing.update(keys)
            return []
        if self.preparation is Preparation.INJECTING:
            return _INJECT.on_removed(keys)
        return self.strategy.on_removed(keys)

    def _message(self, m: Message, now: float) -> None:
        t = m.type
        if t == MsgType.ENTRY:
            try:
                key, timeout, message = accept_entry(m.body)  # expanded and checked
            except CodecError:
                self.counters.entries_refused += 1
                return
            self.counters.entries_rx += 1
            self.cache.put(key, message, now + max(timeout, 1))
            if self._incoming:
                for seen in self._incoming.values():
                    seen.add(key)
                if self._resync_asked_at is not None:
                    self._resync_asked_at = now  # the push we asked for is coming
            self._actions += self._on_entry(key, message)
        elif t == MsgType.DESTROY:
            self.counters.destroys_rx += 1
            if self.cache.delete(m.body):
                try:
                    self._actions += self._on_removed([m.body])
                except CodecError:
                    self.counters.bad_entries += 1
        elif t == MsgType.HEARTBEAT and len(m.body) == _HB.size:
            role, ready, _ = _HB.unpack(m.body)
            self.peer_role = Role.MASTER if role else Role.BACKUP
            self.peer_ready = bool(ready)
        elif t == MsgType.RESYNC_REQUEST:
            self._dump(f"peer asked: {m.body.decode(errors='replace')}", asked=True)
        elif t == MsgType.RESYNC_BEGIN and len(m.body) == _RID.size:
            rid = _RID.unpack(m.body)[0]
            self._incoming = {rid: set()}  # a newer push supersedes an unfinished one
            if self._resync_asked_at is not None:
                self._resync_asked_at = now  # answered: ask again only if it stops coming
        elif t == MsgType.RESYNC_END and len(m.body) == _END.size:
            rid, _n = _END.unpack(m.body)
            seen = self._incoming.pop(rid, None)
            if seen is None:
                return
            stale = [k for k in self.cache.keys() if k not in seen]
            for k in stale:
                self.cache.delete(k)
            if stale:
                self._actions += self._on_removed(stale)
            self.counters.stale_dropped += len(stale)
            self.counters.resyncs_received += 1
            self.in_sync = True
            self._resync_asked_at = None
            if self._age_out_tables and self.role == Role.BACKUP:
                self._age_out_tables -= 1
                self.counters.aged_out_requests += 1
                self._actions.append(AgeOut(list(self.cache.keys()), self.cfg.backup_purge_timeout))
