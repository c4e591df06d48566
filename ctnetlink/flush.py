"""Delete the conntrack entries NATed to a dead uplink's address.

After the default route moves to another uplink, a flow whose entry still says "SNAT to
the dead uplink's address" keeps being translated (and routed) as before until the entry
times out: a SIP client refreshing its registration to port 5060 every 30 s never lets
it time out. Deleting the entry makes the next packet of the flow a new connection,
NATed through the live uplink.

`matches` is the pure filter (unit-tested); `flush_nat_address` dumps the table through
a CtSocket and deletes what matches. Used by vrrpd on an uplink switch and by
`ctsyncctl flush-uplink`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field

from .codec import Entry, encode_delete

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "icmp": socket.IPPROTO_ICMP}


@dataclass
class FlushResult:
    address: str
    matched: int = 0
    deleted: int = 0
    gone: int = 0  # already deleted (timed out meanwhile)
    errors: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)  # the first few, for the log

    def to_dict(self) -> dict:
        return {"address": self.address, "matched": self.matched, "deleted": self.deleted, "gone": self.gone,
                "errors": self.errors, "flows": self.flows}


def matches(e: Entry, address: ipaddress.IPv4Address, proto: str | None = None, dport: int | None = None) -> bool:
    """True for an entry source-NATed to `address` (its reply goes to that address),
    optionally only of protocol `proto` and original destination port `dport`."""
    nat = e.nat_src
    if nat is None or nat[0] != address:
        return False
    if proto is not None and e.orig.proto != PROTOS[proto]:
        return False
    if dport is not None and (e.orig.is_icmp or e.orig.dport != dport):
        return False
    return True


def describe(e: Entry) -> str:
    o = e.orig
    name = {v: k for k, v in PROTOS.items()}.get(o.proto, str(o.proto))
    return f"{name} {o.src}:{o.sport} -> {o.dst}:{o.dport} (SNAT {e.nat_src[0]})" if e.nat_src else f"{name} {o}"


async def flush_nat_address(sock, address, proto: str | None = None, dport: int | None = None,
                            keep_flows: int = 5) -> FlushResult:
    """Dump the table through `sock` (a ctnetlink.socket.CtSocket) and delete every
    entry `matches` accepts."""
    address = ipaddress.ip_address(address)
    result = FlushResult(str(address))
    for e in await sock.dump(socket.AF_INET):
        if not matches(e, address, proto, dport):
            continue
        result.matched += 1
        err = await sock.request(encode_delete(e.orig, zone=e.zone))
        if err == 0:
            result.deleted += 1
            if len(result.flows) < keep_flows:
                result.flows.append(describe(e))
        elif err == errno.ENOENT:
            result.gone += 1
        else:
            result.errors.append(f"{describe(e)}: {errno.errorcode.get(err, err)}")
    return result
