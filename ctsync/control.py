"""ctsync's control socket: JSON lines (hacommon.control), one request, one reply.

Requests: {"cmd": "status"} | {"cmd": "metrics"} (Prometheus text, ctsync/metrics.py) |
{"cmd": "commit"} (blocks until the commit is done, at most commit_timeout) |
{"cmd": "flush"} (empty the external cache) | {"cmd": "resync"} (act as backup: ask the
peer for its whole table) | {"cmd": "dump"} (the external cache, one entry per item) |
{"cmd": "flush-uplink", "address": "198.51.100.2", "proto": "udp", "dport": 5060} (delete
the kernel's conntrack entries source-NATed to that address: see docs/uplinks.md).

status, metrics and dump are open to whoever can connect (the socket is 0660, see
hacommon.control); the others change something and need uid 0 or a member of
``control_group`` ({"ok": false, "error": "permission denied: ..."} otherwise).
"""

from __future__ import annotations

import logging

import trio

from ctnetlink.codec import CodecError, Entry, parse_message
from ctnetlink.flush import PROTOS, flush_nat_address
from hacommon.control import (
    BadRequest,
    LineReader,
    LineTooLong,
    Peer,
    UnixControlServer,
    parse_json_object,
    send_json,
)

log = logging.getLogger("ctsync")
COMMANDS = "status, metrics, commit, flush, resync, dump, flush-uplink"
#: Requests that change something: only for uid 0 or a member of control_group.
CHANGES = frozenset({"commit", "flush", "resync", "flush-uplink"})


class ControlServer(UnixControlServer):
    prog = "ctsync"

    def __init__(self, daemon, path: str, group: str | None = None, gid: int | None = None):
        super().__init__(daemon, path, group, gid)
        # flush-uplink counters, reported in "status" under "uplink_flush".
        self.uplink_flush = {"requests": 0, "deleted": 0, "errors": 0, "last": None}

    async def _serve(self, stream: trio.SocketStream, peer: Peer) -> None:
        try:
            line = await LineReader(stream).next_line()
            req = parse_json_object(line or b"{}")
        except LineTooLong as e:
            await send_json(stream, self.bad_request(f"request too long: {e}"))
            return
        except BadRequest as e:
            await send_json(stream, self.bad_request(f"bad request: {e}; try {COMMANDS}"))
            return
        cmd = req.get("cmd")
        if not isinstance(cmd, str):  # (a list is not even hashable)
            cmd = None
        if cmd in CHANGES and not self.allowed(peer):
            await send_json(stream, self.refuse(peer, str(cmd)))
            return
        d = self.daemon
        if cmd == "status":
            reply = {"ok": True, "status": {**d.status(), "uplink_flush": self.uplink_flush, "control": self.stats.to_dict()}}
        elif cmd == "flush-uplink":
            reply = await _flush_uplink(self, req)
        elif cmd == "commit":
            c = await d.commit("ctsyncctl commit")
            reply = ({"ok": False, "commit": c, "error": f"commit not done after commit_timeout "
                      f"({d.cfg.commit_timeout:g}s); it goes on: see ctsyncctl status"}
                     if c.get("timed_out") else {"ok": True, "commit": c})
        elif cmd == "metrics":
            from .metrics import render

            reply = {"ok": True, "text": render(d.metrics_registry())}
        elif cmd == "flush":
            n = len(d.rep.cache)
            d.rep.cache.clear()
            reply = {"ok": True, "flushed": n}
        elif cmd == "resync":
            d.become_backup("ctsyncctl resync")
            reply = {"ok": True}
        elif cmd == "dump":
            entries = []
            for msg in d.rep.cache.messages():
                try:
                    _, _, _, _, e = parse_message(msg)
                except CodecError:
                    continue
                if isinstance(e, Entry):
                    entries.append(_entry_json(e))
            reply = {"ok": True, "entries": entries}
        else:
            reply = self.bad_request(f"unknown request; try {COMMANDS}")
        await send_json(stream, reply)


async def _flush_uplink(server: "ControlServer", req: dict) -> dict:
    """Validate a flush-uplink request and run it; the reply object."""
    import ipaddress

    from ctnetlink.socket import CtSocket

    try:
        if not isinstance(req.get("address"), str):  # ipaddress takes an int (and a bool) too
            raise TypeError
        address = ipaddress.IPv4Address(req.get("address"))
    except (ValueError, TypeError):
        return {"ok": False, "error": f"flush-uplink: address must be an IPv4 address, got {req.get('address')!r}"}
    proto, dport = req.get("proto"), req.get("dport")
    if proto is not None and (not isinstance(proto, str) or proto not in PROTOS):  # a list is unhashable
        return {"ok": False, "error": f"flush-uplink: proto must be one of {', '.join(PROTOS)}, got {proto!r}"}
    if dport is not None and (proto not in ("tcp", "udp") or isinstance(dport, bool) or not isinstance(dport, int)
                              or not 1 <= dport <= 65535):
        return {"ok": False, "error": "flush-uplink: dport must be a port from 1 to 65535, with proto tcp or udp"}
    # A socket of its own, not the daemon's command socket: the kernel's destroy events
    # of these deletions must not look like our own and must reach the peer.
    stats = server.uplink_flush
    stats["requests"] += 1
    try:
        with CtSocket.open() as s:
            res = await flush_nat_address(s, address, proto, dport)
    except OSError as e:
        stats["errors"] += 1
        return {"ok": False, "error": f"flush-uplink: {e}"}
    stats["deleted"] += res.deleted
    stats["errors"] += len(res.errors)
    stats["last"] = {"proto": proto, "dport": dport, **res.to_dict()}
    log.warning("flush-uplink: deleted %d conntrack entries NATed to %s (%s%s)%s", res.deleted, address, proto or "any protocol",
                f" dport {dport}" if dport else "", f": {'; '.join(res.flows)}" if res.flows else "")
    return {"ok": True, "flush": res.to_dict()}


def _entry_json(e: Entry) -> dict:
    o = e.orig
    d = {"proto": o.proto, "src": str(o.src), "dst": str(o.dst), "sport": o.sport, "dport": o.dport,
         "timeout": e.timeout, "mark": e.mark, "zone": e.zone, "status": e.status}
    if e.tcp_state is not None:
        d["tcp_state"] = e.tcp_state
    if e.nat_src:
        d["snat"] = f"{e.nat_src[0]}:{e.nat_src[1]}"
    if e.nat_dst:
        d["dnat"] = f"{e.nat_dst[0]}:{e.nat_dst[1]}"
    return d
