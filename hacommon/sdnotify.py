"""systemd's notify protocol (sd_notify(3)), written here rather than bound from
libsystemd: one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or an abstract name when it starts with ``@``).

The daemons (units with ``Type=notify``) send ``READY=1`` once their sockets are bound and
their initial state is known, ``STATUS=`` lines as that state changes ("WAN master, LAN
master", "backup, in sync, 12034 entries"), ``RELOADING=1`` ... ``READY=1`` around a
SIGHUP reload, ``STOPPING=1`` when they leave, and, when the unit sets ``WatchdogSec``,
``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` from a trio task, only while the daemon
says its main loop is healthy (a daemon that stops pinging is restarted by systemd).
Without ``$NOTIFY_SOCKET`` (run by hand, in the lab) every call does nothing.
A failed send is logged once and never raised: notification must not stop a router.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

log = logging.getLogger("hapair")


def format_message(fields: dict[str, object]) -> bytes:
    """``{"READY": 1, "STATUS": "x"}`` -> ``b"READY=1\\nSTATUS=x\\n"``. Values are one line
    each (the protocol is newline-separated): a newline in a value becomes a space."""
    lines = []
    for k, v in fields.items():
        if not k or "=" in k or "\n" in k:
            raise ValueError(f"not a notify variable name: {k!r}")
        text = str(v).replace("\r", " ").replace("\n", " ")
        lines.append(f"{k}={text}\n")
    return "".join(lines).encode()


def socket_address(name: str) -> str | bytes:
    """$NOTIFY_SOCKET -> what to sendto(): a path, or an abstract address (``@x`` is ``\\0x``)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """The daemon's side of the protocol. ``Notifier.from_env()`` reads (and removes, so
    that notify hooks do not inherit them) $NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failed = False
        self.sent = 0
        self.last_status: str | None = None  # the STATUS= last sent, by any message

    @classmethod
    def from_env(cls, environ: dict | None = None, unset: bool = True) -> "Notifier":
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = None
        raw_usec, raw_pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if raw_usec:
            try:
                usec = int(raw_usec)
                # WATCHDOG_PID names the process systemd expects pings from; another
                # process (a child that inherited the environment) must not ping.
                if raw_pid and int(raw_pid) != os.getpid():
                    usec = None
            except ValueError:
                usec = None
            if usec is not None and usec <= 0:
                usec = None
        if unset and environ is None:
            for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(k, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of what systemd waits (sd_watchdog_enabled(3))."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: object) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(format_message(fields), socket_address(self.address))
            if "STATUS" in fields:
                self.last_status = str(fields["STATUS"])
        except OSError as e:
            if not self._failed:
                log.warning("sd_notify to %s failed: %s (further failures not logged)", self.address, e)
                self._failed = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) match the reload; older
        # versions ignore it.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


#: How often the status line is re-read for changes (cheap: a few attribute reads).
STATUS_POLL = 0.5


async def run(notifier: Notifier, status: Callable[[], str], healthy: Callable[[], str | None]) -> None:
    """The daemon's notify task: STATUS= whenever ``status()`` changes, and WATCHDOG=1 at
    half of $WATCHDOG_USEC while ``healthy()`` returns None (else the reason it is not,
    logged once; no ping, so systemd restarts the daemon after WatchdogSec). Returns at
    once when not run by systemd."""
    import trio

    if not notifier.enabled:
        return
    interval = notifier.watchdog_interval
    next_ping = trio.current_time()
    unhealthy: str | None = None
    while True:
        text = status()
        if text != notifier.last_status:  # READY=1 may have carried it already
            notifier.status(text)
        now = trio.current_time()
        if interval is not None and now >= next_ping:
            reason = healthy()
            if reason is None:
                notifier.watchdog()
                if unhealthy is not None:
                    log.warning("watchdog: healthy again; pinging systemd")
            elif reason != unhealthy:
                log.error("watchdog: not pinging systemd: %s", reason)
            unhealthy = reason
            next_ping = now + interval
        wake = STATUS_POLL if interval is None else min(STATUS_POLL, max(0.0, next_ping - now))
        await trio.sleep(wake)
