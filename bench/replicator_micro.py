"""Kernel-free microbenchmark of ctsync's replication path: CPU per entry, step by step.

    .venv/bin/python -m bench.replicator_micro                  # N = 50000, 3 runs, Markdown
    .venv/bin/python -m bench.replicator_micro -n 100000 --json out.json
    .venv/bin/python -m bench.replicator_micro --cprofile out.pstats   # + top functions

No kernel, no sockets, no trio, no root: N kernel-shaped ctnetlink NEW events
(the kernel's own layout, 184 bytes each: see ``kernel_events``) go into a master :class:`~ctsync.replicator.Replicator` the way
``ctsync.daemon`` feeds it -- each event through ``CtSocket._queue_datagram`` (the
netlink header check, ``iter_messages``/``parse_message``, an ``Event``), batches of
``daemon.EVENT_BATCH``, one pump (``handle_timer``, ``not_ready``, ``poll``) per batch --
and every datagram it sends goes into a backup Replicator the way ``_udp_receive`` does
(source address check, ``datagram``, one pump per datagram), whose acks go back to the
master.  What remains is the Python cost of ctsync itself; the system calls (one
``recv`` per kernel event, one ``sendto``/``recvfrom`` per sync datagram) and trio's
scheduling are not in it: bench/profile_replication.py measures those in the lab.

Two tables, in microseconds per replicated entry:

* **pipeline** -- the steps as the daemons run them, timed around each call;
* **isolated** -- each function alone over N prepared inputs (finer: filter, key,
  encode, HMAC, ... separately).  Their sum is close to the pipeline's; the gap is
  call overhead and cache effects.

The flows are those of figure 4 (bench/replication.py: SNATed UDP flows of the LAN), the
configuration that of the lab's ctsync (halab.ctsync.ctsync_table: the same
``ignore_addresses``, key, mtu and resend queue).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import hmac
import ipaddress
import json
import pstats
import socket
import statistics
import struct
import sys
import time
from collections import deque

from ctnetlink import constants as C
from ctnetlink.codec import encode_new, key_and_timeout, parse_message
from ctnetlink.encode import COMMIT_STATUS_STRIP
from ctnetlink.key import entry_key
from ctnetlink.layout import HDR_NFGEN
from ctnetlink.socket import ALL_GROUPS, CtSocket
from ctsync.config import parse as parse_config
from ctsync.daemon import _KINDS, EVENT_BATCH
from ctsync.replicator import DumpKernel, Replicator, SendDatagrams
from ctsync.wire import Datagram, Message, MsgType, ReplayWindow, decode, encode
from halab.ctsync import ctsync_table

from .replication import lan_udp_flows

KERNEL_NEW_FLAGS = C.NLM_F_CREATE | C.NLM_F_EXCL  # what the kernel sets on an IPCT_NEW event


#: What follows the two tuples in a NEW event of this kernel (6.18) for figure 4's flows,
#: as captured in the lab (bench/profile_replication.py --capture-events): CTA_ID,
#: CTA_STATUS (CONFIRMED|SRC_NAT|SEEN_REPLY|SRC_NAT_DONE|DST_NAT_DONE), CTA_TIMEOUT 600,
#: an empty CTA_SYNPROXY nest, CTA_MARK 0 -- 184 bytes a message in all.
_KERNEL_TAIL = bytes.fromhex("0800 0c00 89c13d56 0800 0300 0000019a 0800 0700 00000258"
                             "1c00 1880 0800 0100 00000000 0800 0200 00000000 0800 0300 00000000"
                             "0800 0800 00000000".replace(" ", ""))
_ID = struct.Struct(">I")


def kernel_events(entries) -> list[bytes]:
    """Each entry as this kernel announces it: one CT_NEW message (one netlink datagram)
    with the kernel's attributes in the kernel's order (the tuples from encode_new's
    verbatim form, the rest as captured, each with its own CTA_ID), the NEW event
    flags, the creating socket's portid (not ours)."""
    out = []
    for i, e in enumerate(entries):
        tuples = encode_new(e, 0, KERNEL_NEW_FLAGS, for_commit=False)[20:124]
        tail = _KERNEL_TAIL[:4] + _ID.pack(i + 1) + _KERNEL_TAIL[8:]
        body = tuples + tail
        hdr = HDR_NFGEN.pack(20 + len(body), C.CT_NEW, KERNEL_NEW_FLAGS, 0, 0x4D3C2B1A, C.AF_INET, 0, 0)
        out.append(hdr + body)
    return out


# ---------------------------------------------------------------------------------------
# What-if: the master's per-event work without objects.  A prototype for this measurement
# only (not product code): the kernel's IPv4 port-tuple layout, SNAT, no DNAT, mark, zone,
# TCP state or helper -- anything else returns None (the real code path would take it).

_NLA = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
_A_BE32 = struct.Struct("=HHI")
_KEY_HEAD = struct.Struct("!BBH")
_CT_ORIG_HDR = _NLA.pack(52, C.NLA_F_NESTED | C.CTA_TUPLE_ORIG)
_CT_REPLY_HDR = _NLA.pack(52, C.NLA_F_NESTED | C.CTA_TUPLE_REPLY)
_NAT_SRC_HDR = _NLA.pack(40, C.NLA_F_NESTED | C.CTA_NAT_SRC)


def whatif_splice(buf, ignore: list[tuple[int, int]]):
    """Kernel NEW event bytes -> (key, commit-form CT_NEW message) or None; the filter on
    the original addresses is done on integers.  Same bytes as encode_new's commit form
    (checked by the caller)."""
    nlen = len(buf)
    if buf[20:24] != _CT_ORIG_HDR or buf[72:76] != bytes(_NLA.pack(52, C.NLA_F_NESTED | C.CTA_TUPLE_REPLY)):
        return None
    o = bytes(buf[24:72])
    r = bytes(buf[76:124])
    status = timeout = None
    off = 124
    while off + 4 <= nlen:
        alen, atype = _NLA.unpack_from(buf, off)
        atype &= 0x3FFF
        if atype == C.CTA_STATUS:
            status = _BE32.unpack_from(buf, off + 4)[0]
        elif atype == C.CTA_TIMEOUT:
            timeout = _BE32.unpack_from(buf, off + 4)[0]
        elif atype == C.CTA_MARK:
            if _BE32.unpack_from(buf, off + 4)[0]:
                return None
        elif atype in (C.CTA_ZONE, C.CTA_PROTOINFO, C.CTA_HELP, C.CTA_NAT_DST):
            return None
        off += (alen + 3) & ~3
    if status is None or status & C.IPS_DST_NAT or not status & C.IPS_SRC_NAT:
        return None
    src, dst = int.from_bytes(o[8:12], "big"), int.from_bytes(o[16:20], "big")
    for net, mask in ignore:
        if src & mask == net or dst & mask == net:
            return None  # filtered
    proto = o[28]
    key = _KEY_HEAD.pack(C.AF_INET, proto, 0) + o[8:12] + o[16:20] + o[36:38] + o[44:46]
    inv = (o[:8] + o[16:20] + o[12:16] + o[8:12] + o[20:36] + o[44:46] + o[38:44] + o[36:38] + o[46:48])
    vip, port = r[16:20], r[44:46]
    nat = (_NAT_SRC_HDR + _NLA.pack(8, C.CTA_NAT_V4_MINIP) + vip + _NLA.pack(8, C.CTA_NAT_V4_MAXIP) + vip
           + _NLA.pack(20, C.NLA_F_NESTED | C.CTA_NAT_PROTO) + _NLA.pack(6, C.CTA_PROTONAT_PORT_MIN) + port + b"\0\0"
           + _NLA.pack(6, C.CTA_PROTONAT_PORT_MAX) + port + b"\0\0")
    body = (_CT_ORIG_HDR + o + _CT_REPLY_HDR + inv + nat
            + _A_BE32.pack(8, C.CTA_STATUS, socket.htonl((status & ~COMMIT_STATUS_STRIP) | C.IPS_CONFIRMED))
            + _A_BE32.pack(8, C.CTA_TIMEOUT, socket.htonl(timeout or 1)))
    hdr = HDR_NFGEN.pack(20 + len(body), C.CT_NEW, C.NLM_F_CREATE | C.NLM_F_EXCL | C.NLM_F_REQUEST, 0, 0, C.AF_INET, 0, 0)
    return key, hdr + body


def _ignore_ints(cfg) -> list[tuple[int, int]]:
    return [(int(n.network_address), int(n.netmask)) for n in cfg.ignore_addresses if n.version == 4]


def configs():
    m = ctsync_table("r1", "/nonexistent/m.sock", None, group=None)
    b = ctsync_table("r2", "/nonexistent/b.sock", None, group=None)
    return parse_config(m, "r1.toml"), parse_config(b, "r2.toml")


def event_reader() -> CtSocket:
    """A CtSocket without a socket: only its datagram -> Event path is used."""
    s = CtSocket.__new__(CtSocket)
    s._pending = deque()
    s._backlog = deque()
    s.skip_portids = set()
    s.groups = ALL_GROUPS
    s.codec_errors = 0
    s.stray = 0
    return s


class Pair:
    """A master and a backup Replicator joined by a perfect, instant link, in sync."""

    def __init__(self):
        cm, cb = configs()
        self.master = Replicator(cm, epoch=1_000_001)
        self.backup = Replicator(cb, epoch=2_000_002)
        self.peer_of_backup = ipaddress.ip_address(str(cb.peer_address))
        self.t = {}
        now = time.monotonic()
        self.master.role = "master"
        self.master.start(now)
        self.backup.start(now)
        # hand-shake: epochs echoed, both peers' (empty) tables pushed
        for _ in range(50):
            now = time.monotonic()
            moved = False
            for a, b in ((self.master, self.backup), (self.backup, self.master)):
                a.handle_timer(now)
                for act in a.poll(now):
                    if isinstance(act, SendDatagrams):
                        for d in act.datagrams:
                            b.datagram(d, now)
                            moved = True
                    elif isinstance(act, DumpKernel):
                        a.begin_table(now)
                        a.send_table([], now, act.reason)
                        moved = True
            if self.backup.in_sync and self.master.in_sync and not moved:
                break
            time.sleep(0.011)  # ack_delay
        if not self.backup.in_sync:
            raise RuntimeError("micro: the two replicators did not get in sync")


def pipeline(events: list[bytes], batch: int = EVENT_BATCH) -> dict:
    """Run the events through a master and a backup as the daemons do; seconds per step."""
    p = Pair()
    m, b = p.master, p.backup
    reader = event_reader()
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    peer_addr = ("172.16.0.1", 3780)  # what recvfrom returns on the backup
    peer = p.peer_of_backup
    pc = time.perf_counter
    t = dict.fromkeys(("recv_copy", "decode", "kernel_event", "master_pump", "master_acks",
                       "backup_src_check", "backup_datagram", "backup_pump"), 0.0)
    n_dgrams = n_acks = 0
    to_backup: list[bytes] = []
    n = len(events)
    gc.collect()
    gc.freeze()  # the prepared events are not the daemon's garbage
    t_all = pc()
    for i in range(0, n, batch):
        evs = []
        for d in events[i:i + batch]:
            t0 = pc()
            k = len(d)
            buf[:k] = d  # stands in for recv_into's copy
            mv = view[:k]
            t1 = pc()
            reader._queue_datagram(mv)
            evs.extend(reader._pending)
            reader._pending.clear()
            t2 = pc()
            t["recv_copy"] += t1 - t0
            t["decode"] += t2 - t1
        now = time.monotonic()
        t0 = pc()
        for ev in evs:
            m.kernel_event(_KINDS[ev.kind], ev.entry, ev.portid, now)
        t1 = pc()
        m.handle_timer(now)
        m.not_ready(now)
        for act in m.poll(now):
            if isinstance(act, SendDatagrams):
                to_backup += act.datagrams
        t2 = pc()
        t["kernel_event"] += t1 - t0
        t["master_pump"] += t2 - t1
        # the backup takes what the master sent, one datagram at a time
        acks: list[bytes] = []
        for d in to_backup:
            now = time.monotonic()
            t0 = pc()
            src = ipaddress.ip_address(peer_addr[0].split("%", 1)[0])
            ok = src == peer
            t1 = pc()
            if ok:
                b.datagram(d, now)
            t2 = pc()
            b.handle_timer(now)
            b.not_ready(now)
            for act in b.poll(now):
                if isinstance(act, SendDatagrams):
                    acks += act.datagrams
            t3 = pc()
            t["backup_src_check"] += t1 - t0
            t["backup_datagram"] += t2 - t1
            t["backup_pump"] += t3 - t2
        n_dgrams += len(to_backup)
        to_backup = []
        now = time.monotonic()
        t0 = pc()
        for a in acks:
            m.datagram(a, now)
        t["master_acks"] += pc() - t0
        n_acks += len(acks)
    # the tail: wait out the ack delay once so the master sees everything acknowledged
    time.sleep(0.012)
    now = time.monotonic()
    for act in b.poll(now):
        if isinstance(act, SendDatagrams):
            for a in act.datagrams:
                m.datagram(a, now)
                n_acks += 1
    total = pc() - t_all
    gc.unfreeze()
    if len(b.cache) != n:
        raise RuntimeError(f"micro: the backup holds {len(b.cache)} of {n} entries")
    return {"n": n, "seconds": t, "total_s": total, "datagrams": n_dgrams, "acks": n_acks,
            "unacked_at_end": m.channel.unacked, "entries_per_datagram": n / max(n_dgrams, 1)}


def _time(fn, inputs) -> float:
    # The prepared inputs (tens of thousands of objects) would make every garbage
    # collection scan them, which the daemon's transient objects do not: freeze them.
    gc.collect()
    gc.freeze()
    pc = time.perf_counter
    t0 = pc()
    for x in inputs:
        fn(x)
    return pc() - t0


def isolated(events: list[bytes]) -> dict:
    """Each step alone over every input; seconds for all N (per datagram steps: for all
    the datagrams N entries make)."""
    n = len(events)
    cm, cb = configs()
    key = cm.key
    out: dict[str, float] = {}
    parsed = [parse_message(e) for e in events]
    entries = [p[4] for p in parsed]
    out["parse_message (event -> Entry)"] = _time(parse_message, events)
    reader = event_reader()

    def q(d):
        reader._queue_datagram(d)
        reader._pending.clear()
    out["_queue_datagram (header check + iter_messages + parse + Event)"] = _time(q, events)
    rep = Replicator(cm, epoch=1)
    out["filter (Replicator._filtered, 5 ignore networks)"] = _time(rep._filtered, entries)
    out["key (entry_key)"] = _time(entry_key, entries)
    keys = [entry_key(e) for e in entries]
    s: set[bytes] = set()
    out["internal set add"] = _time(s.add, keys)
    flags = C.NLM_F_CREATE | C.NLM_F_EXCL
    out["encode_new (commit form)"] = _time(lambda e: encode_new(e, 0, flags, True), entries)
    bodies = [encode_new(e, 0, flags, True) for e in entries]
    ign = _ignore_ints(cm)
    spliced = [whatif_splice(ev, ign) for ev in events]
    if [x[1] if x else None for x in spliced] != bodies or [x[0] if x else None for x in spliced] != keys:
        raise RuntimeError("micro: whatif_splice does not give encode_new's bytes and entry_key's keys")
    out["what-if: event bytes -> filter, key, commit message by splicing (no objects; prototype)"] = _time(
        lambda ev: whatif_splice(ev, ign), events)
    out["Message(ENTRY, body)"] = _time(lambda bd: Message(MsgType.ENTRY, bd), bodies)
    msgs = [Message(MsgType.ENTRY, bd) for bd in bodies]
    rep2 = Replicator(cm, epoch=1)
    ch = rep2.channel
    ch.resend_limit = 1 << 30  # the whole burst in one go, no window
    now = time.monotonic()
    out["Channel.send (queue a message)"] = _time(lambda mm: ch.send(mm, now), msgs)
    # packing + wire.encode + HMAC of every datagram, as datagrams_to_send does
    t0 = time.perf_counter()
    dgrams = ch.datagrams_to_send(now)
    out["Channel.datagrams_to_send (pack + wire.encode + HMAC)"] = time.perf_counter() - t0
    # the same split: wire.encode alone, HMAC alone
    budget = cm.mtu - 84
    groups, cur, size = [], [], 0
    for mm in msgs:
        if size + mm.size > budget:
            groups.append(tuple(cur))
            cur, size = [], 0
        cur.append(mm)
        size += mm.size
    if cur:
        groups.append(tuple(cur))
    dg_objs = [Datagram(1, 1, i + 1, i + 1, 0, (), g, echo=2) for i, g in enumerate(groups)]
    out["  of which wire.encode (framing + HMAC)"] = _time(lambda d: encode(d, key), dg_objs)
    raws = [d[:-32] for d in dgrams]
    out["  of which HMAC-SHA256 (hmac.new().digest())"] = _time(
        lambda r: hmac.new(key, r, hashlib.sha256).digest(), raws)
    # backup side
    out["backup: source check (ipaddress.ip_address per datagram)"] = _time(
        lambda _: ipaddress.ip_address("172.16.0.1") == cb.peer_address, dgrams)
    out["backup: wire.decode (HMAC verify + parse)"] = _time(lambda d: decode(d, key), dgrams)
    out["  of which HMAC verify (hmac.new + compare_digest)"] = _time(
        lambda d: hmac.compare_digest(d[-32:], hmac.new(key, d[:-32], hashlib.sha256).digest()), dgrams)
    decoded = [decode(d, key) for d in dgrams]
    w = ReplayWindow()
    out["backup: replay window check"] = _time(lambda d: w.check(d.epoch, d.seq), decoded)
    out["backup: key_and_timeout"] = _time(key_and_timeout, bodies)
    from ctsync.cache import ExternalCache
    cache = ExternalCache()
    kt = [key_and_timeout(bd) for bd in bodies]
    out["backup: cache.put"] = _time(lambda x: cache.put(x[0], x[2], x[1]), [(k, tt + now, bd) for (k, tt), bd in zip(kt, bodies)])
    # the backup's Channel + Replicator on the whole datagrams (decode, window, delivery, _message)
    p = Pair()
    ms = p.master
    ms.channel.resend_limit = 1 << 30
    now = time.monotonic()
    for e in entries:
        ms.kernel_event("new", e, 0, now)
    fresh = [d for a in ms.poll(now) if isinstance(a, SendDatagrams) for d in a.datagrams]
    bk = p.backup
    t0 = time.perf_counter()
    deliveries = [bk.channel.receive_datagram(d, now) for d in fresh]
    out["backup: Channel.receive_datagram (decode + window + in-order delivery)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for dl in deliveries:
        for mm in dl.messages:
            bk._message(mm, now)
    out["backup: Replicator._message (key_and_timeout + cache.put + bookkeeping)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bk.handle_timer(now)
    bk.not_ready(now)
    bk.poll(now + 1)
    out["backup: one pump (handle_timer + not_ready + poll) x1"] = time.perf_counter() - t0
    gc.unfreeze()
    return {"n": n, "datagrams": len(dgrams), "seconds": out}


def _us(sec: float, n: int) -> float:
    return sec / n * 1e6


def render(pipe: list[dict], iso: list[dict]) -> str:
    n = pipe[0]["n"]
    lines = [f"### Pipeline, µs per entry (N = {n:,}, {len(pipe)} runs: median (min-max)); "
             f"{pipe[0]['entries_per_datagram']:.2f} entries per sync datagram, {pipe[0]['acks']} acks", "",
             "| side | step | µs/entry |", "|---|---|---:|"]
    side = {"recv_copy": "master", "decode": "master", "kernel_event": "master", "master_pump": "master",
            "master_acks": "master", "backup_src_check": "backup", "backup_datagram": "backup", "backup_pump": "backup"}
    what = {"recv_copy": "copy of the event into the receive buffer (stands in for recv_into's copy)",
            "decode": "CtSocket._queue_datagram: header check, parse_message -> Entry, Event",
            "kernel_event": "Replicator.kernel_event: own-port check, filter, key, encode_new (commit form), Channel.send",
            "master_pump": "pump per batch: handle_timer, not_ready, poll -> pack + wire.encode + HMAC",
            "master_acks": "acks from the backup: Replicator.datagram (decode + HMAC + _on_ack)",
            "backup_src_check": "source address check (ipaddress.ip_address per datagram)",
            "backup_datagram": "Replicator.datagram: wire.decode + HMAC verify, replay window, delivery, key_and_timeout, cache.put",
            "backup_pump": "pump per datagram: handle_timer, not_ready, poll (ack generation + its HMAC)"}
    tot = {"master": [], "backup": []}
    for k in side:
        vals = [_us(r["seconds"][k], r["n"]) for r in pipe]
        lines.append(f"| {side[k]} | {what[k]} | {statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f}) |")
    for s in ("master", "backup"):
        vals = [sum(_us(r["seconds"][k], r["n"]) for k in side if side[k] == s) for r in pipe]
        lines.append(f"| **{s}** | **sum** | **{statistics.median(vals):.2f}** ({min(vals):.2f}-{max(vals):.2f}) |")
    lines += ["", f"### Isolated steps, µs per entry (N = {n:,}, {len(iso)} runs: median)", "",
              "| step | µs/entry |", "|---|---:|"]
    for k in iso[0]["seconds"]:
        vals = [_us(r["seconds"][k], r["n"]) for r in iso]
        lines.append(f"| {k} | {statistics.median(vals):.3f} |")
    return "\n".join(lines) + "\n"


def profile_top(events: list[bytes], path: str | None, top: int = 30) -> str:
    pr = cProfile.Profile()
    pr.enable()
    r = pipeline(events)
    pr.disable()
    if path:
        pr.dump_stats(path)
    st = pstats.Stats(pr)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _callers) in st.stats.items():
        rows.append((tt, ct, nc, f"{file.rsplit('/', 2)[-2:] and '/'.join(file.rsplit('/', 2)[-2:])}:{line}({fn})"))
    rows.sort(reverse=True)
    n = r["n"]
    out = [f"### cProfile of the pipeline (N = {n:,}; profiler overhead inflates small functions), top {top} by own time", "",
           "| function | calls/entry | own µs/entry | cumulative µs/entry |", "|---|---:|---:|---:|"]
    for tt, ct, nc, name in rows[:top]:
        out.append(f"| `{name}` | {nc / n:.2f} | {_us(tt, n):.2f} | {_us(ct, n):.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replicator_micro", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50000, help="entries (default 50000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--cprofile", metavar="PSTATS", help="also run once under cProfile, save the stats here "
                    "and print the top functions")
    args = ap.parse_args(argv)
    entries = lan_udp_flows(args.n)
    events = kernel_events(entries)
    pipe = [pipeline(events) for _ in range(args.runs)]
    iso = [isolated(events) for _ in range(args.runs)]
    md = render(pipe, iso)
    if args.cprofile:
        md += "\n" + profile_top(events, args.cprofile)
    sys.stdout.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pipeline": pipe, "isolated": iso, "event_bytes": len(events[0]),
                       "commit_message_bytes": len(encode_new(entries[0], 0, C.NLM_F_CREATE | C.NLM_F_EXCL, True))},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
