"""conntrackd.conf -> the [ctsync] table.

conntrackd.conf(5) is blocks and ``Key value`` lines, ``#`` comments; keywords are
matched here without regard to case (conntrackd's own lexer takes ``on``/``On``).

* Sync: Mode FTFW / NOTRACK / ALARM (ctsync's channel is always reliable and
  ordered; DisableExternalCache On -> ``mode = "inject"``, else ``"commit"``;
  PurgeTimeout -> backup_purge_timeout, the same ``conntrackd -t``), the UDP or
  Multicast dedicated link (addresses, Port/Group, Interface). Multicast names
  no peer: ``--peer-address`` gives it, else the output says it is missing.
* General: NetlinkBufferSize(MaxGrowth) -> netlink_rcvbuf when larger than
  ctsync's default; Filter: Protocol Accept/Ignore -> ignore_protocols (Accept is
  written as every other protocol), Address Ignore -> ignore_addresses, State
  Accept/Ignore -> ignore_tcp_states.
* conntrackd has no key; ctsync authenticates every datagram: ``key_file`` is
  written with the command that creates it, under BEFORE USE.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from . import target
from .box import Conversion
from .keepalived_syntax import Stmt, _Line, build, read_text

NETLINK_DEFAULT = 32 << 20  # ctsync's netlink_rcvbuf default
# conntrackd's protocol names (getprotobyname) -> ctsync's names
PROTO_ALIASES = {"ipv6-icmp": "icmpv6", "icmp6": "icmpv6", "udp-lite": "udplite"}
# conntrackd's TCP state names -> ctsync's; LISTEN is the kernel's state 9 (SYN_SENT2 today)
STATE_ALIASES = {"closed": "close", "listen": "syn_sent2"}
KEY_ORDER = ("sync_interface", "local_address", "peer_address", "multicast_group", "port", "key_file", "mode",
             "failover", "backup_purge_timeout", "ignore_addresses", "ignore_protocols", "ignore_tcp_states",
             "netlink_rcvbuf")
GENERAL_DROPPED = {
    "systemd": "conntrackd's systemd notify support", "nice": "a process setting (run ctsync with nice)",
    "scheduler": "a process setting (run ctsync with chrt)",
    "hashsize": "conntrackd's cache tuning; ctsync sizes its cache itself",
    "hashlimit": "conntrackd's cache tuning; ctsync sizes its cache itself",
    "logfile": "ctsync logs to stderr (or the journal)", "syslog": "ctsync logs to stderr (or the journal)",
    "lockfile": "conntrackd's lock file", "unix": "conntrackd's control socket; ctsync's is control_socket (ctsyncctl)",
    "netlinkeventsreliable": "ctsync answers a netlink overrun by pushing its whole table",
    "netlinkoverrunresync": "ctsync answers a netlink overrun by pushing its whole table",
    "pollsecs": "ctsync follows conntrack events, it does not poll",
    "eventiterationlimit": "conntrackd's event loop tuning",
}
MODE_DROPPED = {
    "resendqueuesize": "counts entries; ctsync's resend_queue counts datagrams (default 8192)",
    "commitsize": "conntrackd's commit batching; ctsync commits in 64 KiB batches",
    "committimeout": "a fixed timeout for committed entries: ctsync commits each entry with its own timeout",
    "ackwindowsize": "ctsync acknowledges by its own rules",
    "disableinternalcache": "ctsync keeps its internal cache",
    "refreshtime": "ALARM's resend period: ctsync sends changes reliably and pushes the whole table every 30 s",
    "cachetimeout": "ALARM's cache timeout: ctsync drops entries when the peer's destroy arrives",
}


def parse(path: str) -> list[Stmt]:
    text = read_text(path, path)
    lines = [_Line(path, i + 1, raw.rstrip("\r")) for i, raw in enumerate(text.split("\n"))]
    return build(lines, _words)


_WORD = re.compile(r'"([^"]*)"|([{}])|([^\s{}"#]+)|(#.*)')


def _words(s: str) -> list[tuple[str, bool]]:
    """conntrackd's words: white space separates, ``{ }`` stand alone, ``"..."``
    groups, ``#`` starts a comment (outside quotes)."""
    out = []
    pos = 0
    for m in _WORD.finditer(s):
        if s[pos:m.start()].strip():
            raise ValueError(f"unexpected {s[pos:m.start()].strip()[:10]!r}")
        pos = m.end()
        if m.group(4) is not None:
            return out
        if m.group(1) is not None:
            out.append((m.group(1), True))
        else:
            out.append((m.group(2) or m.group(3), False))
    if s[pos:].strip():
        raise ValueError("unterminated \" quote")
    return out


def convert(path: str, *, key_file: str = target.DEFAULT_KEY_FILE, peer_address: str | None = None) -> Conversion:
    """A conntrackd.conf alone: the [ctsync] table, without failover."""
    conv = Conversion()
    convert_into(conv, path, failover=None, vips=set(), key_file=key_file, peer_address=peer_address)
    conv.check_problems = target.check(conv.data)
    return conv


def _k(s: Stmt) -> str:
    return s.key.lower()


def convert_into(conv: Conversion, path: str, *, failover: str | None, vips: set[str], key_file: str,
                 peer_address: str | None) -> None:
    stmts = parse(path)
    conv.sources.append(("conntrackd", path))
    conv.files.append(path)
    m = _Mapper(conv, vips)
    syncs = [s for s in stmts if _k(s) == "sync" and s.block is not None]
    for s in stmts:
        k = _k(s)
        if k == "sync" and s.block is not None:
            if s is syncs[0]:
                m.sync(s)
            else:
                m.drop(s, "a second Sync section: conntrackd takes the first")
        elif k == "general" and s.block is not None:
            m.general(s)
        elif k == "stats":
            m.drop(s, "conntrackd's statistics mode: not part of hapair")
        elif k == "helper":
            m.drop(s, "user-space conntrack helpers: ctsync replicates entries, it runs no helpers")
        else:
            m.drop(s, "unknown section or keyword")
    m.finish(failover, key_file, peer_address)


class _Mapper:
    def __init__(self, conv: Conversion, vips: set[str]):
        self.conv = conv
        self.vips = vips
        self.t: dict = {}
        self.comments: dict[str, list[str]] = {}
        self.mode_stmt: Stmt | None = None
        self.link: tuple[str, Stmt] | None = None  # ("udp" | "multicast", stmt)

    def drop(self, s: Stmt, why: str, what: str | None = None) -> None:
        self.conv.drop(s.file, s.line, what or s.text(), why)

    def note(self, s: Stmt, why: str, what: str | None = None) -> None:
        self.conv.note(s.file, s.line, what or s.text(), why)

    def comment(self, key: str, text: str) -> None:
        self.comments.setdefault(key, []).append(text)

    def _int(self, c: Stmt, lo: int, hi: int) -> int | None:
        if len(c.args) == 1 and c.args[0].isdigit() and lo <= int(c.args[0]) <= hi:
            return int(c.args[0])
        self.drop(c, f"must be an integer from {lo} to {hi}")
        return None

    def _bool(self, c: Stmt) -> bool | None:
        v = c.args[0].lower() if len(c.args) == 1 else ""
        if v in ("on", "yes", "true", "1"):
            return True
        if v in ("off", "no", "false", "0"):
            return False
        self.drop(c, "must be on or off")
        return None

    # -- Sync ------------------------------------------------------------------------
    def sync(self, s: Stmt) -> None:
        links = {"udp": [], "multicast": [], "tcp": []}
        for c in s.block or []:
            k = _k(c)
            if k == "mode" and c.block is not None:
                if self.mode_stmt is None:
                    self.mode(c)
                else:
                    self.drop(c, "a second Mode: conntrackd takes one")
            elif k in links and c.block is not None:
                links[k].append(c)
            elif k == "options" and c.block is not None:
                for o in c.block:
                    if _k(o) == "expectationsync":
                        self.drop(o, "ctsync does not replicate expectations (FTP/SIP helpers' related flows)")
                    elif _k(o) == "tcpwindowtracking":
                        self.drop(o, "ctsync commits TCP entries with the be-liberal flags, as conntrackd does by default")
                    else:
                        self.drop(o, "unknown option")
            else:
                self.drop(c, "unknown keyword in Sync")
        for c in links["tcp"]:
            self.drop(c, "ctsync has no TCP transport: use UDP (unicast) or Multicast")
        chosen = None
        for kind in ("udp", "multicast"):
            for c in links[kind]:
                default = [a.lower() for a in c.args] == ["default"]
                if chosen is None or (default and chosen[2] is False):
                    if chosen is not None:
                        self.drop(chosen[1], "a second dedicated link: ctsync uses one sync link")
                    chosen = (kind, c, default)
                else:
                    self.drop(c, "a second dedicated link: ctsync uses one sync link")
        if chosen is None:
            if not links["tcp"]:
                self.drop(s, "no UDP or Multicast dedicated link: sync_interface and the addresses are missing",
                          "Sync")
            return
        self.link = (chosen[0], chosen[1])
        (self.udp if chosen[0] == "udp" else self.multicast)(chosen[1])

    def mode(self, c: Stmt) -> None:
        self.mode_stmt = c
        kind = c.args[0].upper() if c.args else ""
        if kind == "FTFW":
            self.comment("mode", "conntrackd: Mode FTFW (reliable); ctsync's channel is reliable and ordered too")
        elif kind == "NOTRACK":
            self.note(c, "best effort in conntrackd; ctsync's channel is always reliable and ordered")
        elif kind == "ALARM":
            self.note(c, "ALARM resends every entry periodically; ctsync sends each change reliably and pushes the "
                      "whole table every 30 s")
        else:
            self.drop(c, "Mode must be FTFW, NOTRACK or ALARM: mode commit assumed")
        self.t["mode"] = "commit"
        for o in c.block or []:
            k = _k(o)
            if k == "disableexternalcache":
                v = self._bool(o)
                if v:
                    self.t["mode"] = "inject"
                    self.comments["mode"] = [("conntrackd: DisableExternalCache On (the peer's entries go straight "
                                             "into the kernel): ctsync's inject mode")]
            elif k == "purgetimeout":
                v = self._int(o, 0, 1 << 31)
                if v is not None:
                    self.t["backup_purge_timeout"] = v
                    self.comment("backup_purge_timeout", "conntrackd: PurgeTimeout (conntrackd -t on becoming backup)")
            elif k == "startupresync":
                self.note(o, "ctsync always asks its peer for the whole table when it starts")
            elif k in MODE_DROPPED:
                self.drop(o, MODE_DROPPED[k])
            else:
                self.drop(o, "unknown keyword in Mode")

    def _addr(self, c: Stmt, key: str, multicast: bool = False) -> None:
        try:
            a = ipaddress.ip_address(c.args[0]) if len(c.args) == 1 else None
        except ValueError:
            a = None
        if a is None or (multicast and not a.is_multicast):
            self.drop(c, "not an IP address" if not multicast else "not a multicast address")
            return
        if key in self.t and self.t[key] != str(a):
            self.drop(c, f"a second address for {key}: the first is kept")
            return
        self.t[key] = str(a)

    def _common_link(self, o: Stmt) -> bool:
        k = _k(o)
        if k == "interface" and len(o.args) == 1 and len(o.args[0]) <= target.IFNAME_MAX:
            self.t["sync_interface"] = o.args[0]
        elif k in ("sndsocketbuffer", "rcvsocketbuffer"):
            self.drop(o, "ctsync sizes its sync sockets itself (8 MiB; more with a larger resend_queue)")
        elif k == "checksum":
            self.note(o, "ctsync checks an HMAC-SHA256 of every datagram (key_file), whatever this says")
        else:
            return False
        return True

    def udp(self, c: Stmt) -> None:
        for o in c.block or []:
            k = _k(o)
            if k in ("ipv4_address", "ipv6_address"):
                self._addr(o, "local_address")
            elif k in ("ipv4_destination_address", "ipv6_destination_address", "ipv6_destionation_address"):
                self._addr(o, "peer_address")
            elif k == "port":
                v = self._int(o, 1, 65535)
                if v is not None:
                    self.t["port"] = v
            elif not self._common_link(o):
                self.drop(o, "unknown keyword in UDP")

    def multicast(self, c: Stmt) -> None:
        for o in c.block or []:
            k = _k(o)
            if k in ("ipv4_address", "ipv6_address"):
                self._addr(o, "multicast_group", multicast=True)
            elif k in ("ipv4_interface", "ipv6_interface"):
                self._addr(o, "local_address")
            elif k == "group":
                v = self._int(o, 1, 65535)
                if v is not None:
                    self.t["port"] = v
                    self.comment("port", "conntrackd: Multicast Group (the UDP port of the group)")
            elif not self._common_link(o):
                self.drop(o, "unknown keyword in Multicast")

    # -- General -------------------------------------------------------------------
    def general(self, s: Stmt) -> None:
        netlink = []
        for c in s.block or []:
            k = _k(c)
            if k in ("netlinkbuffersize", "netlinkbuffersizemaxgrowth"):
                v = self._int(c, 0, 1 << 40)
                if v is not None:
                    netlink.append((v, c))
            elif k == "filter" and c.block is not None:
                self.filter(c)
            elif k in GENERAL_DROPPED:
                self.drop(c, GENERAL_DROPPED[k])
            else:
                self.drop(c, "unknown keyword in General")
        if netlink:
            # conntrackd starts at NetlinkBufferSize and doubles up to ...MaxGrowth on
            # overruns; ctsync does not grow its buffer: it starts at the largest.
            v, c = max(netlink, key=lambda x: x[0])
            if v > NETLINK_DEFAULT:
                self.t["netlink_rcvbuf"] = min(v, 1 << 30)
                self.comment("netlink_rcvbuf", f"conntrackd: {c.key} (ctsync does not grow its buffer: it starts there)")
            for v2, c2 in netlink:
                if c2 is not c or v <= NETLINK_DEFAULT:
                    self.note(c2, f"ctsync's netlink_rcvbuf ({max(v, NETLINK_DEFAULT)} bytes, not grown on overruns) "
                              "is at least as large")

    def filter(self, f: Stmt) -> None:
        for c in f.block or []:
            k = _k(c)
            policy = c.args[0].lower() if len(c.args) == 1 else ""
            if policy not in ("accept", "ignore") or c.block is None:
                self.drop(c, "expected Protocol|Address|State Accept|Ignore { ... }")
            elif k == "protocol":
                self.protocols(c, policy)
            elif k == "address":
                self.addresses(c, policy)
            elif k == "state":
                self.states(c, policy)
            else:
                self.drop(c, "unknown filter")

    def protocols(self, c: Stmt, policy: str) -> None:
        nums: dict[int, str] = {}
        for w, line in ((w, x) for x in c.block or [] for w in x.words):
            n = _proto(w)
            if n is None:
                self.drop(line, f"unknown protocol {w!r}", f"Protocol {c.args[0]} {w}")
            else:
                nums[n] = w
        names = {v: k for k, v in target.CTSYNC_PROTOCOLS.items()}
        if policy == "ignore":
            chosen = sorted(nums)
        else:
            chosen = [n for n in range(256) if n not in nums]
            self.comment("ignore_protocols", f"conntrackd: Protocol Accept {{ {' '.join(nums.values())} }}: every "
                         "other protocol is ignored (named ones first, then the numbers of the rest)")
        named = [names[n] for n in chosen if n in names]
        self.t["ignore_protocols"] = sorted(named, key=lambda x: target.CTSYNC_PROTOCOLS[x]) + \
            [n for n in chosen if n not in names]

    def addresses(self, c: Stmt, policy: str) -> None:
        if policy == "accept":
            self.drop(c, "ctsync has only ignore lists (ignore_addresses): an accept list cannot be expressed; "
                      "every address is replicated")
            return
        out = self.t.setdefault("ignore_addresses", [])
        for a in c.block or []:
            k = _k(a)
            try:
                net = ipaddress.ip_network(a.args[0], strict=False) if len(a.args) == 1 else None
            except ValueError:
                net = None
            if k not in ("ipv4_address", "ipv6_address") or net is None:
                self.drop(a, "expected IPv4_address or IPv6_address with an address or CIDR")
                continue
            if net.num_addresses == 1 and str(net.network_address) in self.vips:
                self.note(a, "a VIP: left out of ignore_addresses. conntrackd compares the reply source, so it still "
                          "replicated flows DNATed from the VIP; ctsync compares the original destination and would not")
                continue
            out.append(a.args[0])
        if any(s.words for s in c.block or []) and out:
            self.comment("ignore_addresses", "conntrackd: Address Ignore. ctsync skips an entry whose original source "
                         "or destination is in one (conntrackd: original source or reply source)")
        if not out:
            del self.t["ignore_addresses"]

    def states(self, c: Stmt, policy: str) -> None:
        words = [w for s in c.block or [] for w in s.words]
        if "for" in [w.lower() for w in words]:
            i = [w.lower() for w in words].index("for")
            states, proto = words[:i], [w.lower() for w in words[i + 1:]]
        else:
            states, proto = words, []
        if proto != ["tcp"]:
            self.drop(c, "expected STATE ... for TCP")
            return
        chosen = set()
        for w in states:
            n = STATE_ALIASES.get(w.lower(), w.lower())
            if n not in target.CTSYNC_TCP_STATES:
                self.drop(c, f"unknown TCP state {w!r}", f"State {c.args[0]} {w}")
            else:
                chosen.add(n)
        if policy == "accept":
            chosen = {s for s in target.CTSYNC_TCP_STATES if s not in chosen and s != "none"}
            self.comment("ignore_tcp_states", "conntrackd: State Accept: every other TCP state is ignored")
        self.t["ignore_tcp_states"] = sorted(chosen, key=lambda s: target.CTSYNC_TCP_STATES[s])

    # -- the table -----------------------------------------------------------------
    def finish(self, failover: str | None, key_file: str, peer_address: str | None) -> None:
        t = self.t
        src = self.link[1] if self.link else None
        if peer_address:
            if "peer_address" in t and t["peer_address"] != peer_address and src is not None:
                self.note(src, f"--peer-address {peer_address} replaces {t['peer_address']}", "peer address")
            t["peer_address"] = peer_address
            self.comment("peer_address", "given with --peer-address")
        elif self.link and self.link[0] == "multicast" and "peer_address" not in t:
            self.conv.action("conntrackd's Multicast section does not name the peer: set peer_address in [ctsync] "
                             "to the other router's address on the sync link (or convert with --peer-address)")
        t["key_file"] = key_file
        self.comment("key_file", "ctsync authenticates every datagram with this shared secret; conntrackd had none. "
                     f"Create it once, copy the same file to both routers: head -c 32 /dev/urandom > {key_file}")
        self.conv.action(f"create ctsync's shared key, the same file on both routers (conntrackd had none): "
                         f"head -c 32 /dev/urandom > {key_file} && chmod 600 {key_file}")
        t.setdefault("mode", "commit")
        if failover:
            t["failover"] = {"vrrp_sync_group": failover}
            self.comment("failover", f"keepalived's notify ran conntrackd's primary/backup sequence for {failover}: "
                         "ctsync follows it in vrrpd, and commits the peer's state before vrrpd adds the VIPs")
            if t["mode"] == "commit":
                self.comment("mode", "commit on becoming master, as conntrackd -c in the notify script did")
        else:
            self.comment("mode", "no failover: drive ctsync with ctsyncctl commit/resync, or add "
                         "failover = { vrrp_sync_group = \"NAME\" } to follow a vrrpd sync group")
        for k in ("sync_interface", "local_address", "peer_address"):
            if k not in t and self.link and not (k == "peer_address" and self.link[0] == "multicast"):
                self.drop(self.link[1], f"names no {k} (ctsync needs it)", self.link[1].key)
        for k in KEY_ORDER:
            if k in t:
                self.conv.put(("ctsync",), k, t[k], self.comments.get(k))
        if "ctsync" not in self.conv.data:
            self.conv.table("ctsync")


def _proto(w: str) -> int | None:
    n = w.lower()
    n = PROTO_ALIASES.get(n, n)
    if n in target.CTSYNC_PROTOCOLS:
        return target.CTSYNC_PROTOCOLS[n]
    if n.isdigit() and int(n) < 256:
        return int(n)
    try:
        return socket.getprotobyname(n)
    except OSError:
        return None
