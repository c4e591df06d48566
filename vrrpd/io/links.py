"""Links, addresses and the virtual-MAC macvlan, through pyroute2 (slow path).

pyroute2's async API is asyncio-only, so under trio its sync API runs in one worker
thread at a time (`NetlinkWorker.call`). Everything here is idempotent: adding an
address that exists or deleting one that is gone is not an error, so a restart after a
crash converges instead of failing.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
IFA_F_NOPREFIXROUTE = 0x200


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    mac: bytes
    up: bool  # administratively up and carrier present
    kind: str | None = None


class NetlinkWorker:
    """Serialises pyroute2 calls in a worker thread; one IPRoute for the daemon's life."""

    def __init__(self) -> None:
        self._ipr: IPRoute | None = None
        self._limiter = trio.CapacityLimiter(1)

    def _get(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    async def call(self, fn, *args):
        return await trio.to_thread.run_sync(lambda: fn(self._get(), *args), limiter=self._limiter)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


def _link_info(msg) -> LinkInfo:
    flags = msg["flags"]
    mac = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
    return LinkInfo(
        name=msg.get_attr("IFLA_IFNAME"),
        index=msg["index"],
        mac=bytes(int(x, 16) for x in mac.split(":")),
        up=bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP),
        kind=kind,
    )


def get_links(ipr: IPRoute) -> dict[str, LinkInfo]:
    return {li.name: li for li in map(_link_info, ipr.get_links())}


@dataclass(frozen=True)
class AddrInfo:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    flags: int  # IFA_F_*


def _addr_info(msg) -> AddrInfo:
    flags = msg.get_attr("IFA_FLAGS")
    return AddrInfo(ipaddress.ip_address(msg.get_attr("IFA_ADDRESS")), msg["flags"] if flags is None else flags)


def get_addresses(ipr: IPRoute) -> dict[int, list[AddrInfo]]:
    """Every address of every interface, by interface index, in the kernel's order: one
    dump, however many instances need their advert source (a refresh after a burst of
    notifications reads the addresses once, not once per instance)."""
    out: dict[int, list[AddrInfo]] = {}
    for msg in ipr.get_addr():
        out.setdefault(msg["index"], []).append(_addr_info(msg))
    return out


def pick_primary(addrs: list[AddrInfo], family: int, exclude: set) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The advert source among an interface's addresses. IPv4: the primary address, i.e.
    the first non-secondary one that is not a VIP (else the first non-VIP). IPv6: its
    link-local address (RFC 5798 §5.1.2.1), the first that is not a VIP and has passed (or
    skipped) duplicate address detection; None while it is tentative or if there is none."""
    if family == 6:
        for a in addrs:
            if (a.ip.version == 6 and a.ip.is_link_local and a.ip not in exclude
                    and not a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)):
                return a.ip
        return None
    best = None
    for a in addrs:
        if a.ip.version != 4 or a.ip in exclude:
            continue
        if not a.flags & IFA_F_SECONDARY:
            return a.ip
        best = best or a.ip
    return best


def primary_ipv4(ipr: IPRoute, index: int, exclude: set) -> ipaddress.IPv4Address | None:
    """The interface's primary IPv4 address: the first non-secondary one that is not a VIP."""
    return pick_primary([_addr_info(m) for m in ipr.get_addr(family=socket.AF_INET, index=index)], 4, exclude)


def primary_ipv6(ipr: IPRoute, index: int, exclude: set) -> ipaddress.IPv6Address | None:
    """The interface's usable IPv6 link-local address (see pick_primary)."""
    return pick_primary([_addr_info(m) for m in ipr.get_addr(family=socket.AF_INET6, index=index)], 6, exclude)


def primary_address(ipr: IPRoute, index: int, family: int, exclude: set) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The advert source of an instance of `family` on the interface."""
    return primary_ipv6(ipr, index, exclude) if family == 6 else primary_ipv4(ipr, index, exclude)


#: Sysctls of an IPv6 instance's macvlan, set while it is down. RFC 5798 §7.4 (no
#: link-local address derived from the virtual MAC, which both routers own: addr_gen_mode 1
#: makes none at all; the adverts leave from the parent's); the VIPs skip duplicate
#: address detection (the backup may hold the same address on its down macvlan, and a
#: takeover must not wait a second); a virtual MAC interface learns nothing from Router
#: Advertisements.
MACVLAN_IPV6_SYSCTLS = {"addr_gen_mode": "1", "accept_dad": "0", "dad_transmits": "0", "accept_ra": "0",
                        "autoconf": "0", "disable_ipv6": "0"}


def ensure_macvlan(ipr: IPRoute, parent_index: int, name: str, mac: str, family: int = 4) -> int:
    """Create (or reuse) the macvlan carrying the virtual MAC; returns its index.

    IPv4: IPv6 is disabled on it before it ever comes up, otherwise it would send DAD/MLD
    with the virtual MAC when it does. IPv6: see MACVLAN_IPV6_SYSCTLS.

    Mode "bridge", not "private": both routers own a macvlan with the same virtual MAC,
    and in private mode a multicast frame arriving with our own macvlan's MAC as its
    source is taken for a local loop and consumed by that macvlan, so the parent's VRRP
    socket would never see the peer's adverts (both would become master).
    """
    found = ipr.link_lookup(ifname=name)
    if found:
        idx = found[0]
        msg = ipr.get_links(idx)[0]
        info = _link_info(msg)
        data = (msg.get_attr("IFLA_LINKINFO") or {}).get_attr("IFLA_INFO_DATA") if msg.get_attr("IFLA_LINKINFO") else None
        mode = data.get_attr("IFLA_MACVLAN_MODE") if data else None
        if info.kind != "macvlan" or info.mac != bytes(int(x, 16) for x in mac.split(":")) or mode != 4:
            ipr.link("del", index=idx)
            found = []
    if not found:
        ipr.link("add", ifname=name, kind="macvlan", link=parent_index, macvlan_mode="bridge", address=mac)
        idx = ipr.link_lookup(ifname=name)[0]
    else:
        idx = found[0]
    if family == 6:
        for key, value in MACVLAN_IPV6_SYSCTLS.items():
            write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
    else:
        write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1", missing_ok=True)
    # Answer ARP only for addresses on this interface (the VIPs), and do not drop the
    # replies that arrive on it while the route back goes through the parent.
    write_sysctl(f"net/ipv4/conf/{name}/arp_ignore", "1")
    write_sysctl(f"net/ipv4/conf/{name}/rp_filter", "0")
    # Down until the instance holds its addresses: see set_link_state.
    ipr.link("set", index=idx, state="down")
    return idx


def set_link_state(ipr: IPRoute, index: int, up: bool) -> None:
    """Bring the macvlan up with the VIPs and down without them.

    A down macvlan does not claim frames sent to the virtual MAC, so the kernel drops
    them instead of forwarding them. That matters right after a takeover: our first
    advert (from the virtual MAC) already moves the switch's forwarding entry to us, and
    until the replicated conntrack state is committed a forwarded packet would create a
    fresh entry that clashes with the committed one. Dropped, it is retransmitted.
    """
    ipr.link("set", index=index, state="up" if up else "down")


def delete_link(ipr: IPRoute, name: str) -> None:
    for idx in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise


def add_addresses(ipr: IPRoute, index: int, addrs: list, noprefixroute: bool) -> None:
    """Add the VIPs (IPv4 or IPv6 interfaces); IPv6 ones without duplicate address
    detection (`nodad`): the address is ours the moment we are master."""
    for a in addrs:
        flags = IFA_F_NOPREFIXROUTE if noprefixroute else 0
        if a.version == 6:
            flags |= IFA_F_NODAD
        kw = {"flags": flags} if flags else {}
        try:
            ipr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen, **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


def remove_addresses(ipr: IPRoute, index: int, addrs: list) -> None:
    for a in addrs:
        try:
            ipr.addr("del", index=index, address=str(a.ip), prefixlen=a.network.prefixlen)
        except NetlinkError as e:
            if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                raise


def write_sysctl(path: str, value: str, missing_ok: bool = False) -> None:
    try:
        Path("/proc/sys", path).write_text(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def read_sysctl(path: str) -> str | None:
    try:
        return Path("/proc/sys", path).read_text().strip()
    except OSError:
        return None
