"""The replicator core in virtual time: two nodes joined by a (possibly lossy) link."""

from __future__ import annotations

import ipaddress
import random
import socket

from ctnetlink.codec import Entry, Tuple, parse_message
from ctnetlink.constants import IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, IPS_SRC_NAT
from ctnetlink.key import entry_key
from ctsync.config import parse
from ctsync.replicator import AgeOut, Commit, DumpKernel, Inject, Remove, Replicator, SendDatagrams

A = ipaddress.ip_address


def cfg(local, peer, **kw):
    t = {"sync_interface": "sync0", "local_address": local, "peer_address": peer, "key": "0123456789abcdef0123"}
    t.update(kw)
    return parse({"ctsync": t}, "r.toml")


def entry(i: int, proto=6, timeout=300) -> Entry:
    o = Tuple(socket.AF_INET, proto, A("192.168.100.10"), A("10.10.0.200"), 10000 + i, 9000)
    r = Tuple(socket.AF_INET, proto, A("10.10.0.200"), A("10.10.0.101"), 9000, 20000 + i)
    return Entry(o, r, IPS_SRC_NAT | IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED, timeout,
                 tcp_state=3 if proto == 6 else None)


class Net:
    """Two replicators; the 'kernel' of each is a dict, dumps come from it."""

    def __init__(self, loss=0.0, seed=1, epochs=(1, 2), **kw):
        self.kw = kw
        self.manual_dumps = False  # True: DumpKernel only begins the push; the test feeds the dump
        self.dumps: list[int] = []  # push ids begun that way
        self.n = {"a": Replicator(cfg("172.16.0.1", "172.16.0.2", **kw), epoch=epochs[0]),
                  "b": Replicator(cfg("172.16.0.2", "172.16.0.1", **kw), epoch=epochs[1])}
        self.kernel = {"a": {}, "b": {}}
        self.injected = {"a": [], "b": []}
        self.removed = {"a": [], "b": []}
        self.aged = {"a": [], "b": []}
        self.commits = {"a": [], "b": []}
        self.now = 0.0
        self.rng = random.Random(seed)
        self.loss = loss
        for r in self.n.values():
            r.start(0.0)

    def event(self, node, kind, e):
        if kind == "destroy":
            self.kernel[node].pop(entry_key(e), None)
        else:
            self.kernel[node][entry_key(e)] = e
        self.n[node].kernel_event(kind, e, 0, self.now)

    def run(self, seconds, step=0.01, drop=None):
        """Advance virtual time; ``drop(sender, datagram)`` true: that datagram is lost."""
        end = self.now + seconds
        while self.now < end:
            for name, r in self.n.items():
                other = self.n["b" if name == "a" else "a"]
                r.handle_timer(self.now)
                for act in r.poll(self.now):
                    if isinstance(act, SendDatagrams):
                        for d in act.datagrams:
                            if self.rng.random() >= self.loss and not (drop and drop(name, d)):
                                other.datagram(d, self.now)
                    elif isinstance(act, DumpKernel) and self.manual_dumps:
                        self.dumps.append(r.begin_table(self.now, act.reason))
                    elif isinstance(act, DumpKernel):
                        r.send_table(list(self.kernel[name].values()), self.now, act.reason)
                    elif isinstance(act, Inject):
                        self.injected[name] += act.messages
                    elif isinstance(act, Remove):
                        self.removed[name] += act.tuples
                    elif isinstance(act, AgeOut):
                        self.aged[name].append(act)
                    elif isinstance(act, Commit):
                        self.commits[name].append(act)
            self.now = round(self.now + step, 6)

    def restart(self, node, epoch) -> Replicator:
        """``node``'s ctsync restarts (its kernel keeps its entries)."""
        local, peer = ("172.16.0.1", "172.16.0.2") if node == "a" else ("172.16.0.2", "172.16.0.1")
        r = self.n[node] = Replicator(cfg(local, peer, **self.kw), epoch=epoch)
        r.start(self.now)
        return r

    def become_master(self, node) -> Commit:
        """The group moves to master on ``node``: the Commit its replicator hands out."""
        self.n[node].become_master(self.now)
        self.run(0.01)
        return self.commits[node][-1]


def cached_keys(r: Replicator) -> set[bytes]:
    return set(r.cache.keys())


def test_events_reach_the_peer_cache_and_failover_commits_them():
    net = Net()
    net.run(0.5)
    for i in range(50):
        net.event("a", "new", entry(i))
    net.event("a", "destroy", entry(7))
    net.run(1.0)
    b = net.n["b"]
    assert cached_keys(b) == {entry_key(entry(i)) for i in range(50) if i != 7}
    assert b.in_sync and net.n["a"].in_sync
    commit = net.become_master("b")
    assert isinstance(commit, Commit) and len(commit.messages) == 49
    # each message is a commit-ready CT_NEW that parses back to the original entry
    e = parse_message(commit.messages[0])[4]
    assert e.src_nat and e.reply.dst == A("10.10.0.101")


def test_own_commits_are_not_sent_back():
    net = Net()
    net.n["b"].own_portids = {4242}
    net.run(0.3)
    net.n["b"].kernel_event("new", entry(1), 4242, net.now)
    net.run(0.5)
    assert len(net.n["a"].cache) == 0
    assert net.n["b"].counters.events_ignored_own == 1


def test_filters():
    net = Net(ignore_addresses=["10.10.0.200/32"], ignore_protocols=["udp"])
    net.run(0.2)
    net.event("a", "new", entry(1))
    net.event("a", "new", entry(2, proto=17))
    net.run(0.5)
    assert len(net.n["b"].cache) == 0
    assert net.n["a"].counters.events_filtered == 2


def test_lossy_link_converges():
    net = Net(loss=0.3, seed=5)
    net.run(0.5)
    for i in range(300):
        net.event("a", "new", entry(i))
    for i in range(0, 300, 3):
        net.event("a", "destroy", entry(i))
    net.run(3.0)
    net.loss = 0.0
    net.run(3.0)
    assert cached_keys(net.n["b"]) == set(net.kernel["a"])


def test_overrun_pushes_the_whole_table_and_drops_stale():
    net = Net()
    net.run(0.5)
    for i in range(20):
        net.event("a", "new", entry(i))
    net.run(0.5)
    # a's kernel loses 10 entries without the events reaching ctsync (an overrun)
    for i in range(10):
        net.kernel["a"].pop(entry_key(entry(i)))
    net.n["a"].overrun(net.now)
    net.run(0.5)
    assert cached_keys(net.n["b"]) == set(net.kernel["a"])
    assert net.n["b"].counters.stale_dropped == 10


def test_inject_mode_writes_as_entries_arrive():
    net = Net(mode="inject")
    net.run(0.3)
    net.event("a", "new", entry(1))
    net.event("a", "destroy", entry(1))
    net.run(0.5)
    assert len(net.injected["b"]) == 1 and len(net.removed["b"]) == 1
    assert net.become_master("b").messages is None  # nothing to commit at failover


def test_entries_expire_without_refresh_but_refresh_keeps_them():
    net = Net()
    net.run(0.3)
    net.event("a", "new", entry(1, proto=17, timeout=20))
    net.run(25.0, step=0.05)  # a periodic refresh (30 s) has not happened yet: expired
    assert len(net.n["b"].cache) == 0
    net.run(10.0, step=0.05)  # the refresh at 30 s brings it back (a still has it)
    assert len(net.n["b"].cache) == 1


def test_backup_not_ready_until_first_resync():
    net = Net()
    assert not net.n["b"].ready(net.now)
    net.run(0.5)
    assert net.n["b"].ready(net.now)


def test_not_ready_follows_the_bulk_resync_of_a_live_peer():
    """What vrrpd's demotion follows (failover.demote_when_not_ready)."""
    net = Net()
    b = net.n["b"]
    assert b.not_ready(0.0)  # just started: the peer may not have been heard yet
    net.run(0.5)
    assert not b.not_ready(net.now)  # the first push arrived: ready
    b.become_backup(net.now)  # e.g. after a failback: asks the peer for its table again
    assert b.not_ready(net.now)
    net.run(0.5)
    assert not b.not_ready(net.now)
    b.become_master(net.now)
    b.in_sync = False  # a master never waits for its peer's table
    assert not b.not_ready(net.now)


def test_not_ready_ends_when_the_peer_is_silent():
    """A backup alone (peer dead or never there) has nothing to wait for: it is not
    demoted after peer_timeout, or it could never take over."""
    r = Replicator(cfg("172.16.0.2", "172.16.0.1", peer_timeout=3.0), epoch=2)
    r.start(100.0)
    assert r.not_ready(100.0) and r.not_ready(102.9)
    assert not r.not_ready(103.0)
    # the peer shows up (its datagrams make it alive) but its table is not complete yet
    net = Net(peer_timeout=3.0)
    b = net.n["b"]
    for i in range(5):
        net.event("a", "new", entry(i))
    def a_table_lost(sender, d):
        return sender == "a" and len(d) > 200  # a's table never gets through; its heartbeats do

    net.run(5.0, drop=a_table_lost)
    assert b.channel.peer_alive(net.now) and not b.in_sync
    assert b.not_ready(net.now)  # past peer_timeout, but the peer is there: still demoted
    net.run(3.0)  # resends get through
    assert b.in_sync and not b.not_ready(net.now)


def _failback(net: Net) -> None:
    """a replicates 10 flows to b; b takes over (commits them); a comes back and
    preempts: b goes backup while its kernel still holds the flows."""
    net.run(0.3)
    for i in range(10):
        net.event("a", "new", entry(i))
    net.run(0.5)
    b = net.n["b"]
    b.become_master(net.now)
    for i in range(10):
        net.kernel["b"][entry_key(entry(i))] = entry(i)  # the commit
    net.n["a"].become_backup(net.now)
    net.run(0.5)
    net.n["a"].become_master(net.now)
    b.become_backup(net.now)


def test_new_backup_ages_out_what_the_master_now_holds():
    """conntrackd -t: once the new master's table has arrived (not before: it
    may still be committing), our entries it holds are shortened; against the
    next table too (the first may have been dumped before the master's commit),
    and then no more."""
    net = Net(backup_purge_timeout=45)
    _failback(net)
    assert net.aged["b"] == []  # the master's table has not arrived yet
    net.run(1.0)
    assert len(net.aged["b"]) == 1
    act = net.aged["b"][0]
    assert act.timeout == 45 and set(act.keys) == {entry_key(entry(i)) for i in range(10)}
    net.run(65.0, step=0.05)  # periodic table pushes: one more age-out, then none
    assert len(net.aged["b"]) == 2
    # a aged out its own copies too while b was master; none since it is master again
    assert 1 <= len(net.aged["a"]) <= 2 and net.n["a"].counters.aged_out_requests == len(net.aged["a"])


def test_no_age_out_in_inject_mode_or_when_disabled():
    for kw in ({"mode": "inject"}, {"backup_purge_timeout": 0}):
        net = Net(**kw)
        _failback(net)
        net.run(1.5)
        assert net.aged["b"] == [], kw


def test_after_a_commit_the_table_goes_to_the_peer():
    """Committed entries carry our portid (their events are ignored): the peer gets them
    through a table push, or it would miss every flow it handed over (lab: the demo's
    uplink-down step, tests/netns/test_demo.py)."""
    r = Replicator(cfg("172.16.0.1", "172.16.0.2"), epoch=1)
    r.start(0.0)
    r.poll(0.0)
    r.become_master(1.0)
    assert not any(isinstance(a, DumpKernel) for a in r.poll(1.0))
    r.committed(1.1)
    assert [a.reason for a in r.poll(1.1) if isinstance(a, DumpKernel)] == ["after our commit"]


def test_a_complete_table_followed_by_a_stuck_gap_is_not_ready():
    """The peer's (empty) table arrived, then its entries keep being dropped (a link that
    loses large datagrams): in_sync stays true, but the replica is behind, so the backup
    is not ready (and would be demoted) until NACKs get them through."""
    net = Net()
    a, b = net.n["a"], net.n["b"]
    net.run(0.5)
    assert b.in_sync and b.ready(net.now)
    for i in range(5):
        net.event("a", "new", entry(i))
    net.run(3.0, drop=lambda sender, d: sender == "a" and len(d) > 200)
    assert b.in_sync and len(b.cache) == 0
    assert not b.ready(net.now) and b.not_ready(net.now) and a.ready(net.now)
    net.run(3.0)
    assert len(b.cache) == 5 and b.ready(net.now) and not b.not_ready(net.now)


def test_a_peer_restarting_with_a_smaller_epoch_resyncs_and_its_old_datagrams_stay_dead():
    """The clock-behind case: b's ctsync restarts with an epoch smaller than its previous
    one (it used to be the start time, and a clock can go back: no RTC before NTP, a VM
    snapshot). a refused the new incarnation as a replay, forever. Now a takes it within
    a round trip or two and both sides resync; datagrams of b's previous incarnation,
    replayed during the restart and after, change nothing."""
    net = Net(epochs=(7_000_000, 9_000_000))
    a = net.n["a"]
    net.run(0.5)
    for i in range(20):
        net.event("a", "new", entry(i))
    old_b: list[bytes] = []

    def record(sender, d):
        if sender == "b":
            old_b.append(d)
        return False  # nothing dropped

    net.event("b", "new", entry(100))
    net.event("b", "new", entry(101))
    net.run(0.5, drop=record)
    net.event("b", "destroy", entry(101))
    net.run(0.5, drop=record)
    assert cached_keys(a) == {entry_key(entry(100))} and a.in_sync
    assert any(len(d) > 200 for d in old_b)  # entries among them

    b = net.restart("b", epoch=5)  # smaller than 9_000_000
    for d in old_b:  # replayed while b's new incarnation introduces itself
        a.datagram(d, net.now)
    net.run(3.0)
    assert b.in_sync and cached_keys(b) == set(net.kernel["a"])
    assert a.in_sync and cached_keys(a) == set(net.kernel["b"]) == {entry_key(entry(100))}
    assert a.channel.peer_epoch == b.channel.epoch
    rx = a.channel.stats.messages_rx
    for d in old_b:  # and replayed once more, now that all is settled
        a.datagram(d, net.now)
    net.run(1.0)
    assert cached_keys(a) == {entry_key(entry(100))}  # no ENTRY 101 came back
    assert a.channel.stats.messages_rx - rx <= 2  # b's heartbeats of that second, nothing replayed
    assert a.channel.stats.replayed + a.channel.stats.unconfirmed >= len(old_b)


def small_queues(net: Net, queue_limit: int = 500) -> None:
    """A send queue much smaller than the tables pushed (2^18 messages in production)."""
    for r in net.n.values():
        r.channel.queue_limit = queue_limit


def test_a_table_larger_than_the_send_queue_is_pushed_whole_and_drops_stale():
    """A push used to go into the send queue at once: past its limit the queue was
    dropped with RESYNC_BEGIN in it and another push asked for at once, forever; the
    backup never became in sync nor dropped its stale entries. The push now streams
    into the queue as the send window lets it."""
    net = Net(resend_queue=16)
    small_queues(net)
    a, b = net.n["a"], net.n["b"]
    net.run(0.3)
    for i in range(100):
        net.event("a", "new", entry(i))
    net.run(0.5)
    assert len(b.cache) == 100
    # a's kernel changes without events reaching the peer: 50 gone, 5000 more
    for i in range(50):
        net.kernel["a"].pop(entry_key(entry(i)))
    for i in range(1000, 6000):
        net.kernel["a"][entry_key(entry(i))] = entry(i)
    b.become_backup(net.now)  # asks for the whole table; not in sync until it is in
    net.run(10.0)
    assert b.in_sync and cached_keys(b) == set(net.kernel["a"])
    assert b.counters.stale_dropped == 50
    assert a.channel.stats.queue_overflows == 0


def _pushing(net: Net, node: str) -> bool:
    return net.n[node].table_push() is not None


def test_events_during_a_streamed_push_win_over_the_dumps_older_view():
    """begin_table/send_table's promise, kept while the push streams: an entry an event
    destroys or changes after the dump was read is sent as the event says, not as the
    dump saw it, and one the event creates is not dropped as stale."""
    net = Net(resend_queue=16, mtu=576)
    small_queues(net, 1000)  # the push keeps 250 entries queued at most
    a, b = net.n["a"], net.n["b"]
    net.run(0.3)
    for i in range(3000):
        net.kernel["a"][entry_key(entry(i))] = entry(i)
    b.become_backup(net.now)
    net.run(0.05)
    assert _pushing(net, "a"), "the push should still be streaming"
    net.event("a", "destroy", entry(2990))
    changed = entry(2991, timeout=77)
    net.event("a", "update", changed)
    net.event("a", "new", entry(5000))
    assert _pushing(net, "a")
    net.run(5.0)
    assert b.in_sync and cached_keys(b) == set(net.kernel["a"])
    assert entry_key(entry(2990)) not in b.cache and entry_key(entry(5000)) in b.cache
    assert parse_message(b.cache.message(entry_key(changed)))[4].timeout == 77
    assert a.internal == set(net.kernel["a"])


def test_a_long_push_is_neither_restarted_by_retries_nor_by_the_refresh_and_a_newer_one_supersedes_it():
    """A push lasting longer than the peer's retry and our refresh interval: the peer
    does not ask again while the push makes progress, the periodic refresh waits for it
    to end, so it completes; an overrun meanwhile starts a newer push that supersedes it."""
    net = Net(resend_queue=16, mtu=576)
    small_queues(net, 1000)  # the push keeps 250 entries queued at most
    a, b = net.n["a"], net.n["b"]
    b.resync_retry, a.refresh_interval = 0.3, 0.4
    net.run(0.3)
    for i in range(3000):
        net.kernel["a"][entry_key(entry(i))] = entry(i)
    sent, asked = a.counters.resyncs_sent, b.counters.resyncs_requested
    b.become_backup(net.now)
    t0 = net.now
    while not b.in_sync and net.now < t0 + 10:
        net.run(0.05)
    assert b.in_sync and cached_keys(b) == set(net.kernel["a"])
    assert net.now - t0 > 0.6, "the push was too short to show anything"
    assert b.counters.resyncs_requested == asked + 1 and a.counters.resyncs_sent == sent + 1
    # now a newer push supersedes one under way: b is in sync at the end of the newer one
    a.refresh_interval = 1000.0
    for i in range(50):
        net.kernel["a"].pop(entry_key(entry(i)))
    a.overrun(net.now)
    net.run(0.1)
    assert _pushing(net, "a")
    received = b.counters.resyncs_received
    for i in range(50, 100):
        net.kernel["a"].pop(entry_key(entry(i)))
    a.overrun(net.now)
    net.run(5.0)
    assert cached_keys(b) == set(net.kernel["a"]) and b.in_sync
    assert b.counters.resyncs_received == received + 1  # the first push never ended


def _datagrams(actions) -> list[bytes]:
    return [d for act in actions if isinstance(act, SendDatagrams) for d in act.datagrams]


def test_a_request_that_crossed_our_begin_is_answered_by_the_push_under_way_a_later_one_restarts_it():
    """The peer's request and our BEGIN cross on the wire: the push under way answers it
    (the peer gets BEGIN after asking), no second push of a large table. A request made
    after the peer had our BEGIN (it lost track: a gap, a move to backup) gets a new one."""
    net = Net(resend_queue=16, mtu=576)
    small_queues(net, 1000)
    a, b = net.n["a"], net.n["b"]
    net.run(0.3)
    for i in range(2000):
        net.kernel["a"][entry_key(entry(i))] = entry(i)
    b.become_backup(net.now)
    request = _datagrams(b.poll(net.now))  # b's request, on its way
    a.overrun(net.now)
    [dump] = [act for act in a.poll(net.now) if isinstance(act, DumpKernel)]
    rid = a.begin_table(net.now, dump.reason)
    assert a.table_entries(rid, list(net.kernel["a"].values()), net.now)
    a.table_done(rid, net.now)
    begin = _datagrams(a.poll(net.now))  # a's BEGIN and first entries, on their way
    for d in request:
        a.datagram(d, net.now)
    assert not any(isinstance(act, DumpKernel) for act in a.poll(net.now))  # merged
    for d in begin:
        b.datagram(d, net.now)
    net.run(0.1)
    assert _pushing(net, "a")
    sent = a.counters.resyncs_sent
    b.become_backup(net.now)  # b has had BEGIN: this request needs a push of its own
    net.run(5.0)
    assert a.counters.pushes_superseded == 1 and a.counters.resyncs_sent == sent + 1
    assert b.in_sync and cached_keys(b) == set(net.kernel["a"])


def test_a_dump_read_slowly_in_parts_is_streamed_and_not_restarted_by_the_peer():
    """The kernel's dump of a large table takes a while (1M entries: 20-30 s to decode)
    and may stall on a busy box. The peer has our BEGIN and waits: it does not ask again
    after its 5 s retry (which would restart the push, and a large one would never end),
    and the entries stream as the dump is read."""
    net = Net()
    a, b = net.n["a"], net.n["b"]
    net.run(0.5)
    entries = [entry(i) for i in range(3000)]
    for e in entries:
        net.kernel["a"][entry_key(e)] = e
    net.manual_dumps = True
    b.become_backup(net.now)
    net.run(0.1)
    [rid] = net.dumps
    net.run(12.0, step=0.05)  # the dump stalls: nothing but BEGIN for 12 s
    for k in range(0, 3000, 300):
        assert a.table_entries(rid, entries[k:k + 300], net.now)
        net.run(1.0, step=0.05)
        assert len(b.cache) == k + 300  # streamed as read
    a.table_done(rid, net.now)
    net.run(1.0)
    assert b.in_sync and cached_keys(b) == set(net.kernel["a"])
    assert a.counters.pushes_superseded == 0 and b.counters.resyncs_requested == 2  # start, backup
    assert net.dumps == [rid]


def test_make_before_break_commits_while_backup_then_writes_what_follows():
    """A backup about to preempt a live master commits the replica first; entries that
    arrive while that commit runs are written after it, later ones at once; becoming
    master then has nothing left to write."""
    net = Net()
    net.run(0.3)
    for i in range(5):
        net.event("a", "new", entry(i))
    net.run(0.5)
    b = net.n["b"]
    b.prepare_master(net.now, "about to preempt")
    net.run(0.01)
    prep = net.commits["b"][-1]
    assert prep.prepare and len(prep.messages) == 5 and b.role == "backup"
    net.event("a", "new", entry(10))  # arrives while the commit runs: noted, not written yet
    net.event("a", "destroy", entry(0))
    net.run(0.2)
    assert net.injected["b"] == [] and net.removed["b"] == []
    b.prepare_committed(net.now)
    net.run(0.01)
    assert len(net.injected["b"]) == 1 and parse_message(net.injected["b"][0])[4].orig.sport == 10010
    assert [t.sport for t, _ in net.removed["b"]] == [10000]
    net.event("a", "new", entry(11))  # after the commit: written at once
    net.run(0.2)
    assert len(net.injected["b"]) == 2
    assert net.become_master("b").messages is None  # nothing left to write
    assert b.preparation is None and b.counters.preparations == 1


def test_a_cancelled_preparation_ages_out_like_a_new_backup():
    net = Net()
    net.run(0.3)
    for i in range(3):
        net.event("a", "new", entry(i))
    net.run(0.5)
    b = net.n["b"]
    b.prepare_master(net.now, "about to preempt")
    net.run(0.01)
    b.prepare_committed(net.now)
    b.cancel_preparation(net.now)
    assert b.preparation is None and b.role == "backup"
    net.run(2.0)
    assert net.aged["b"] and set(net.aged["b"][-1].keys) == {entry_key(entry(i)) for i in range(3)}
