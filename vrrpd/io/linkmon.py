"""Link and address change notifications from rtnetlink, in trio.

We only need to know *that* something changed; the daemon then re-reads the few links
it watches (pyroute2, worker thread). So this reads raw RTMGRP_LINK / RTMGRP_IPV4_IFADDR / RTMGRP_IPV6_IFADDR
datagrams and does not decode them.
"""

from __future__ import annotations

import socket

import trio

from .constants import NETLINK_ROUTE, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK


async def watch_links(changed: "callable") -> None:
    """Call `changed()` after each burst of link/address notifications; runs until cancelled."""
    sock = trio.socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # IPv6 addresses too: an IPv6 instance's advert source is the link-local address,
        # usable once its duplicate address detection is over (a flag change, notified).
        await sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        while True:
            try:
                await sock.recv(65536)
            except OSError:
                pass  # ENOBUFS: we missed some, which a re-read covers anyway
            changed()
