"""Scripts in the sources: notify commands, and health checks.

vrrpd has ONE notify command per instance, run on each transition with the
arguments ``INSTANCE GROUP STATE`` (docs/vrrpd.md). keepalived and Vyatta have one
script per state (and keepalived a generic one with its own arguments). They are
expressible together as one small ``/bin/sh`` wrapper that picks the commands of
the state vrrpd passes as ``$3``::

    notify = ["/bin/sh", "-c", 'case "$3" in master) /x/up.sh ;; backup) /x/down.sh ;; esac', "keepalived-notify"]

(the last word is the wrapper's ``$0``; vrrpd appends INSTANCE GROUP STATE as $1 $2 $3).

A script that drives conntrackd (Debian's primary-backup.sh, VyOS's
vyos-vrrp-conntracksync.sh, ``conntrackd -c`` itself, or a script file that
calls conntrackd's commit) is recognised, so that ctsync's failover can take its
place. A health check is recognised when it is plainly a ping of an IPv4 address
or a TCP connect to one: only those can become vrrpd probes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass

STATES = ("master", "backup", "fault", "stop")
WRAPPER_NAME = "hapair-notify"
_CONNTRACKD_SCRIPTS = re.compile(r"(primary-backup|conntracksync|conntrackd)", re.IGNORECASE)
_COMMIT = re.compile(r"(^|\s)(-c|--commit)(\s|$)", re.MULTILINE)


def split_command(s: str) -> list[str]:
    """A script string as argv: unquoted white space separates, single (or double)
    quotes group, as keepalived splits its script strings."""
    try:
        return shlex.split(s, comments=False, posix=True)
    except ValueError:
        return s.split()


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def notify_wrapper(per_state: dict[str, list[list[str]]]) -> list[str] | None:
    """One vrrpd notify command running, for each state, its commands in order."""
    branches = []
    for st in STATES:
        cmds = per_state.get(st) or []
        if cmds:
            branches.append(f"{st}) " + "; ".join(quote(c) for c in cmds) + " ;;")
    if not branches:
        return None
    return ["/bin/sh", "-c", 'case "$3" in ' + " ".join(branches) + " esac", WRAPPER_NAME]


def drives_conntrackd(argv: list[str], base_dir: str = "") -> bool:
    """Does this notify command run conntrackd's primary/backup sequence?"""
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name == "conntrackd" or _CONNTRACKD_SCRIPTS.search(name):
        return True
    if name in ("sh", "bash", "dash") and len(argv) > 1:  # sh /path/script.sh primary
        return drives_conntrackd(argv[1:], base_dir)
    path = argv[0] if os.path.isabs(argv[0]) or not base_dir else os.path.join(base_dir, argv[0])
    if not os.path.isfile(path):  # never open a FIFO or a device named in a configuration
        return False
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return False
    # A script of its own that commits conntrackd's external cache (conntrackd -c).
    return "conntrackd" in text and bool(_COMMIT.search(text))


@dataclass(frozen=True)
class Check:
    """A health check vrrpd can do as a probe: ICMP echo or TCP connect to target."""

    kind: str  # "icmp" or "tcp"
    target: ipaddress.IPv4Address
    port: int = 0
    interface: str | None = None  # ping -I IFACE
    timeout: float | None = None


_TCP_REDIRECT = re.compile(r"^\s*(?:exec\s+)?(?:\d?<>?|>)\s*/dev/tcp/([^/\s]+)/(\d+)\s*$")


def classify_check(argv: list[str]) -> Check | None:
    """A ping of / TCP connect to an IPv4 address, or None (anything else)."""
    if not argv:
        return None
    name = os.path.basename(argv[0])
    if name in ("bash", "sh") and len(argv) == 3 and argv[1] == "-c":
        return classify_check(split_command(argv[2])) or _tcp_redirect(argv[2])
    if len(argv) == 1:
        return _tcp_redirect(argv[0])
    if name in ("ping", "ping4"):
        return _ping(argv[1:])
    if name in ("nc", "ncat", "netcat", "nc.openbsd", "nc.traditional"):
        return _nc(argv[1:])
    return None


def _ipv4(s: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(s)
    except ValueError:
        return None


def _tcp_redirect(s: str) -> Check | None:
    m = _TCP_REDIRECT.match(s)
    if not m:
        return None
    ip = _ipv4(m.group(1))
    port = int(m.group(2))
    return Check("tcp", ip, port) if ip and 0 < port < 65536 else None


def _ping(args: list[str]) -> Check | None:
    iface, timeout, target = None, None, None
    # "-c1" is "-c 1"
    args = [x for a in args for x in ([a[:2], a[2:]] if re.fullmatch(r"-[cWwIist]\S+", a) else [a])]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-c", "-W", "-w", "-I", "-i", "-s", "-t"):
            if i + 1 >= len(args):
                return None
            v = args[i + 1]
            if a == "-I":
                iface = v
            elif a == "-W":
                try:
                    timeout = float(v)
                except ValueError:
                    return None
            i += 2
        elif re.fullmatch(r"-[qnv4]+", a):
            i += 1
        elif a.startswith("-"):
            return None  # an option we do not understand: not plainly a ping
        elif target is None:
            target = a
            i += 1
        else:
            return None
    ip = _ipv4(target or "")
    if ip is None:
        return None
    if iface is not None and _ipv4(iface) is not None:
        iface = None  # -I with a source address: the interface is not named
    return Check("icmp", ip, 0, iface, timeout)


def _nc(args: list[str]) -> Check | None:
    rest, zero, timeout = [], False, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-w" and i + 1 < len(args):
            try:
                timeout = float(args[i + 1])
            except ValueError:
                return None
            i += 2
            continue
        if re.fullmatch(r"-[zvn4]+", a):
            zero = zero or "z" in a
        elif a.startswith("-"):
            return None
        else:
            rest.append(a)
        i += 1
    if not zero or len(rest) != 2 or not rest[1].isdigit():
        return None
    ip, port = _ipv4(rest[0]), int(rest[1])
    return Check("tcp", ip, port, None, timeout) if ip and 0 < port < 65536 else None
