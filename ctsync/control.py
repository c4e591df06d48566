"""ctsync's control socket: JSON lines, like vrrpd's (one request, one reply).

Requests: {"cmd": "status"} | {"cmd": "commit"} (blocks until the commit is done) |
{"cmd": "flush"} (empty the external cache) | {"cmd": "resync"} (act as backup: ask the
peer for its whole table) | {"cmd": "dump"} (the external cache, one entry per item).
"""

from __future__ import annotations

import json
import logging
import socket

import trio

from vrrpd.control import UnixControlServer

from .ctnetlink.codec import CodecError, Entry, parse_message

log = logging.getLogger("ctsync")


class ControlServer(UnixControlServer):
    prog = "ctsync"

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                buf = b""
                while b"\n" not in buf:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    buf += chunk
                try:
                    req = json.loads(buf.split(b"\n", 1)[0] or b"{}")
                    cmd = req.get("cmd") if isinstance(req, dict) else None
                except ValueError:
                    cmd = None
                d = self.daemon
                if cmd == "status":
                    reply = {"ok": True, "status": d.status()}
                elif cmd == "commit":
                    reply = {"ok": True, "commit": await d.commit("ctsyncctl commit")}
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
                    reply = {"ok": False, "error": "unknown request; try status, commit, flush, resync, dump"}
                await stream.send_all(json.dumps(reply, default=str).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass


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


def request(path: str, cmd: str, timeout: float | None = 30.0) -> dict:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        f = s.makefile("rb")
        return json.loads(f.readline() or b"{}")
    finally:
        s.close()
