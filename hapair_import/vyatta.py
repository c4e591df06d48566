"""Vyatta / VyOS configuration -> [vrrpd] and [ctsync].

Two input forms, one meaning: a file of ``set ...`` commands (``show configuration
commands``; ``edit``/``top``/``up`` relative paths work), or the curly-brace
``config.boot``. Both become a list of paths (words) with their line numbers.

What is read (VyOS 1.3+ names; VyOS 1.2's ``virtual-address`` too):

* ``high-availability vrrp group NAME ...`` -> [vrrpd.instance.NAME]: interface,
  vrid, priority, advertise-interval, no-preempt, preempt-delay, address,
  authentication plaintext-password, track interface, rfc3768-compatibility
  (-> ``use_vmac = true``; without it VyOS, like keepalived, keeps the VIPs on the
  interface: ``use_vmac = false``), garp, transition-script (one notify wrapper).
* ``high-availability vrrp sync-group NAME member ...`` -> [vrrpd.sync_group.NAME].
* ``service conntrack-sync ...`` -> [ctsync]: interface [peer, port],
  listen-address (else the interface's own address from ``interfaces``),
  mcast-group (VyOS's default 225.0.0.50 without a peer), accept-protocol,
  ignore-address, disable-external-cache (inject mode), failover-mechanism vrrp
  sync-group -> failover.
* Vyatta's older ``interfaces ethernet ETH [vif N] vrrp vrrp-group N ...`` groups
  (instance name ETH-vrrpN).

Lines about anything else (firewall, NAT, routing, ...) are counted in one report
line: they are not VRRP or conntrack sync. Everything under high-availability and
conntrack-sync that is not translated is listed one by one.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from . import target
from .box import Conversion, InputError
from .keepalived_syntax import read_text
from .scripts import notify_wrapper, split_command

UNICAST = "unicast VRRP: vrrpd sends its adverts to 224.0.0.18 only"
_BOOT_WORD = re.compile(r'"((?:[^"\\]|\\.)*)"|([{}])|([^\s{}"]+)')
STATE_OF = {"master": "master", "backup": "backup", "fault": "fault", "stop": "stop"}
VYOS_MCAST_DEFAULT = "225.0.0.50"


@dataclass
class _P:
    words: list[str]
    file: str
    line: int

    def text(self) -> str:
        return " ".join(shlex.quote(w) if (not w or any(c.isspace() for c in w)) else w for w in self.words)


@dataclass
class _Group:
    name: str
    first: _P
    leaves: list = field(default_factory=list)  # [( [words after the group], _P )]
    old_style: bool = False


def read_paths(path: str) -> list[_P]:
    text = read_text(path, path)
    lines = text.split("\n")
    boot = any(ln.rstrip().endswith("{") for ln in lines if not ln.lstrip().startswith(("#", "/*", "//")))
    return _boot(path, lines) if boot else _commands(path, lines)


def _commands(path: str, lines: list[str]) -> list[_P]:
    out, cwd = [], []
    for i, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        try:
            words = shlex.split(s, comments=True)
        except ValueError as e:
            raise InputError(path, i, f"{e} (a quote is not closed)") from None
        if not words:
            continue
        verb, rest = words[0], words[1:]
        if verb == "set":
            if rest:
                out.append(_P(cwd + rest, path, i))
        elif verb == "edit":
            cwd = cwd + rest
        elif verb == "top":
            cwd = []
        elif verb == "up":
            cwd = cwd[:-1]
        elif verb in ("configure", "commit", "save", "exit"):
            continue  # CLI verbs, not configuration
        else:
            out.append(_P(["<command>", *words], path, i))
    return out


def _boot(path: str, lines: list[str]) -> list[_P]:
    out: list[_P] = []
    stack: list[tuple[list[str], int, int]] = []  # (node words, line, paths emitted before it)
    in_comment = False
    for i, raw in enumerate(lines, 1):
        s = raw.strip()
        if in_comment:
            if "*/" in s:
                in_comment = False
                s = s.split("*/", 1)[1].strip()
            else:
                continue
        if s.startswith("/*"):
            if "*/" not in s:
                in_comment = True
            continue
        if not s or s.startswith(("//", "#")):
            continue
        words: list[str] = []
        pos = 0
        for m in _BOOT_WORD.finditer(s):
            if s[pos:m.start()].strip():
                raise InputError(path, i, "a quote is not closed")
            pos = m.end()
            words.append(re.sub(r"\\(.)", r"\1", m.group(1)) if m.group(1) is not None else m.group(2) or m.group(3))
        if s[pos:].strip():
            raise InputError(path, i, "a quote is not closed")
        if words == ["{"]:
            raise InputError(path, i, "'{' without a node name before it")
        if words and words[-1] == "{" and "{" not in words[:-1] and "}" not in words:
            stack.append((words[:-1], i, len(out)))
        elif words == ["}"]:
            if not stack:
                raise InputError(path, i, "'}' closes no block")
            prefix = [w for ws, _, _ in stack for w in ws]
            _, _, emitted = stack.pop()
            if len(out) == emitted:  # an empty node ("address 10.0.0.1/24 { }") is a value
                out.append(_P(prefix, path, i))
        elif "{" in words or "}" in words:
            raise InputError(path, i, "braces must end a line (config.boot form)")
        elif words:
            out.append(_P([w for ws, _, _ in stack for w in ws] + words, path, i))
    if stack:
        raise InputError(path, stack[-1][1], "block is never closed")
    return out


def convert(path: str, *, key_file: str = target.DEFAULT_KEY_FILE, peer_address: str | None = None) -> Conversion:
    paths = read_paths(path)
    conv = Conversion()
    conv.sources.append(("vyatta", path))
    conv.files.append(path)
    m = _Mapper(conv)
    m.run(paths, key_file, peer_address)
    conv.check_problems = target.check(conv.data)
    return conv


class _Mapper:
    def __init__(self, conv: Conversion):
        self.conv = conv
        self.groups: dict[str, _Group] = {}
        self.sync_groups: dict[str, tuple[_P, list]] = {}
        self.ct: list[tuple[list[str], _P]] = []
        self.addresses: dict[str, list[str]] = {}  # interface -> its own addresses
        self.globals: dict[str, tuple[float, _P]] = {}
        self.version = 2
        self.other: list[_P] = []
        self.vips: set[str] = set()

    def drop(self, p: _P, why: str) -> None:
        self.conv.drop(p.file, p.line, p.text(), why)

    def note(self, p: _P, why: str) -> None:
        self.conv.note(p.file, p.line, p.text(), why)

    def run(self, paths: list[_P], key_file: str, peer_address: str | None) -> None:
        for p in paths:
            w = p.words
            if w[0] == "<command>":
                self.drop(p, "not a set command: not applied (convert the result, `show configuration commands`)")
            elif w[:3] == ["high-availability", "vrrp", "group"] and len(w) >= 4:
                g = self.groups.setdefault(w[3], _Group(w[3], p))
                g.leaves.append((w[4:], p))
            elif w[:3] == ["high-availability", "vrrp", "sync-group"] and len(w) >= 4:
                self.sync_groups.setdefault(w[3], (p, []))[1].append((w[4:], p))
            elif w[:3] == ["high-availability", "vrrp", "global-parameters"]:
                self._global(w[3:], p)
            elif w[:2] == ["high-availability", "virtual-server"]:
                self.drop(p, "LVS (IPVS) load balancing is not part of hapair")
            elif w[:1] == ["high-availability"]:
                self.drop(p, "unknown high-availability setting")
            elif w[:2] == ["service", "conntrack-sync"]:
                self.ct.append((w[2:], p))
            elif w[:1] == ["interfaces"] and "vrrp" in w:
                self._old_style(w, p)
            elif w[:1] == ["interfaces"]:
                self._interface(w, p)
            else:
                self.other.append(p)
        if self.other:
            p = self.other[0]
            self.conv.note(p.file, p.line, f"{len(self.other)} lines about other things (firewall, NAT, routing, ...)",
                           "not VRRP or conntrack sync: not part of a box file (the first is here)")
        done = {name: self._instance(g) for name, g in self.groups.items()}
        self._sync_groups(done)
        for name, k in done.items():
            if k:
                cmd = notify_wrapper(k.pop("~notify"))
                if cmd:
                    k["notify"] = cmd
                    k["#notify"] = [("VyOS transition scripts, in one /bin/sh wrapper: vrrpd runs it with INSTANCE "
                                    "GROUP STATE, the wrapper runs the script of STATE ($3)")]
                for key, v in k.items():
                    if not key.startswith("#"):
                        self.conv.put(("vrrpd", "instance", name), key, v, k.get("#" + key))
                if k.get("#"):
                    self.conv.comment(("vrrpd", "instance", name), k["#"])
        for name, members in self.members.items():
            self.conv.put(("vrrpd", "sync_group", name), "instances", members)
        if self.ct:
            self._conntrack_sync(key_file, peer_address)

    # -- interfaces ------------------------------------------------------------------
    def _ifname(self, w: list[str]) -> str | None:
        """interfaces TYPE NAME [vif N | vif-s N [vif-c M]] ... -> NAME[.N[.M]]"""
        if len(w) < 3:
            return None
        name = w[2]
        for tag in ("vif", "vif-s", "vif-c"):
            if tag in w[3:]:
                i = w.index(tag, 3)
                if i + 1 < len(w):
                    name += "." + w[i + 1]
        return name

    def _interface(self, w: list[str], p: _P) -> None:
        if "address" in w[3:]:
            i = w.index("address", 3)
            if i + 1 < len(w) and i + 2 == len(w):
                self.addresses.setdefault(self._ifname(w[:i]) or "", []).append(w[i + 1])
                return
        self.other.append(p)

    def _old_style(self, w: list[str], p: _P) -> None:
        i = w.index("vrrp")
        iface = self._ifname(w[:i])
        rest = w[i + 1:]
        if rest[:1] != ["vrrp-group"] or len(rest) < 2 or iface is None:
            self.drop(p, "unknown vrrp setting")
            return
        vrid, leaf = rest[1], rest[2:]
        name = f"{iface}-vrrp{vrid}"
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = _Group(name, p, old_style=True)
            g.leaves += [(["interface", iface], p), (["vrid", vrid], p)]
        rename = {"virtual-address": "address", "run-transition-scripts": "transition-script"}
        if leaf[:1] == ["preempt"]:
            leaf = ["no-preempt"] if leaf[1:] == ["false"] else []
        elif leaf[:1] == ["sync-group"] and len(leaf) == 2:
            self.sync_groups.setdefault(leaf[1], (p, []))[1].append((["member", name], p))
            return
        elif leaf[:1] and leaf[0] in rename:
            leaf = [rename[leaf[0]], *leaf[1:]]
        if leaf:
            g.leaves.append((leaf, p))

    def _global(self, w: list[str], p: _P) -> None:
        if w[:1] == ["garp"] and len(w) == 3 and w[1] in ("interval", "master-delay", "master-repeat", "master-refresh"):
            try:
                self.globals[w[1]] = (float(w[2]), p)
            except ValueError:
                self.drop(p, "not a number")
        elif w[:1] == ["version"] and w[1:] in (["2"], ["3"]):
            self.version = int(w[1])
        elif w[:1] == ["garp"]:
            self.drop(p, "vrrpd's gratuitous ARPs / NAs: interval, master-delay, master-repeat and master-refresh "
                      "(one per VIP at each refresh)")
        elif w[:1] == ["startup-delay"]:
            self.drop(p, "vrrpd starts its instances as backup at once (RFC 3768)")
        else:
            self.drop(p, "unknown global parameter")

    # -- groups --------------------------------------------------------------------
    def _num(self, leaf: list[str], p: _P, lo: float, hi: float, integer: bool = True):
        try:
            v = float(leaf[1]) if len(leaf) == 2 else None
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi or (integer and v != int(v)):
            self.drop(p, f"must be {'an integer' if integer else 'a number'} from {lo:g} to {hi:g}")
            return None
        return int(v) if v == int(v) else v

    def _instance(self, g: _Group) -> dict | None:
        k: dict = {}
        vips: list = []  # [(ip_interface, where)], settled with the version below
        tracks: list = []
        per_state: dict[str, list] = {}
        garp: dict = {}
        auth = {}
        for leaf, p in g.leaves:
            key = leaf[0] if leaf else ""
            if key == "disable":
                self.drop(p, "a disabled group: not translated")
                return None
            if key == "interface" and len(leaf) == 2 and len(leaf[1]) <= target.IFNAME_MAX:
                k["interface"] = leaf[1]
            elif key == "vrid":
                v = self._num(leaf, p, 1, 255)
                if v is not None:
                    k["vrid"] = v
            elif key == "priority":
                v = self._num(leaf, p, *target.PRIORITY)
                if v is not None:
                    k["priority"] = v
            elif key == "advertise-interval":
                v = self._num(leaf, p, *target.ADVERT_INTERVAL)
                if v is not None:
                    k["advert_interval"] = (v, p)
            elif key == "no-preempt" and len(leaf) == 1:
                k["preempt"] = False
            elif key == "preempt-delay":
                v = self._num(leaf, p, *target.PREEMPT_DELAY, integer=False)
                if v is not None:
                    k["preempt_delay"] = v
            elif key in ("address", "virtual-address") and len(leaf) >= 2:
                self._vip(leaf, p, vips, k)
            elif key == "excluded-address":
                self.drop(p, "addresses outside the advert: vrrpd has none (add them with a notify command)")
            elif key == "authentication" and len(leaf) == 3 and leaf[1] in ("type", "password"):
                auth[leaf[1]] = (leaf[2], p)
            elif key == "track" and leaf[1:2] == ["interface"] and len(leaf) == 3:
                tracks.append(leaf[2])
            elif key == "track" and leaf[1:2] == ["interface"] and len(leaf) == 5 and leaf[3] == "weight":
                try:
                    tracks.append({"interface": leaf[2], "weight": int(leaf[4])})
                except ValueError:
                    self.drop(p, "weight must be an integer")
            elif key == "track" and leaf[1:] == ["exclude-vrrp-interface"]:
                self.drop(p, "vrrpd always tracks the instance's own interface (FAULT while it is down)")
            elif key in ("peer-address", "hello-source-address"):
                self.drop(p, UNICAST if key == "peer-address" else "vrrpd sends its adverts from the interface's "
                          "first IPv4 address")
            elif key == "rfc3768-compatibility" and len(leaf) == 1:
                k["use_vmac"] = True
            elif key == "transition-script" and len(leaf) == 3 and leaf[1] in STATE_OF:
                per_state.setdefault(STATE_OF[leaf[1]], []).append(split_command(leaf[2]))
            elif key == "health-check":
                self.drop(p, "vrrpd runs no health-check scripts; a ping could be a probe pinned to an uplink: add "
                          "[vrrpd.probe.NAME] and track_probes (docs/uplinks.md)")
            elif key == "garp" and len(leaf) == 3 and leaf[1] in ("interval", "master-delay", "master-repeat",
                                                                   "master-refresh"):
                try:
                    garp[leaf[1]] = (float(leaf[2]), p)
                except ValueError:
                    self.drop(p, "not a number")
            elif key == "garp":
                self.drop(p, "vrrpd's gratuitous ARPs / NAs: interval, master-delay, master-repeat and master-refresh "
                          "(one per VIP at each refresh)")
            elif key == "description" and len(leaf) == 2:
                k["#"] = [f"VyOS description: {leaf[1]}"]
            else:
                self.drop(p, "unknown VRRP group setting")
        for name, (v, p) in self.globals.items():
            garp.setdefault(name, (v, p))
        for src, key, (lo, hi) in (("master-repeat", "garp_count", target.GARP_COUNT),
                                   ("interval", "garp_interval", target.GARP_INTERVAL),
                                   ("master-delay", "garp_repeat_delay", target.GARP_REPEAT_DELAY),
                                   ("master-refresh", "garp_refresh", target.GARP_REFRESH)):
            if src in garp:
                v, p = garp[src]
                if lo <= v <= hi and (key != "garp_count" or v == int(v)):
                    k[key] = int(v) if v == int(v) else v
                else:
                    self.drop(p, f"vrrpd's {key} is from {lo} to {hi}")
        if "type" in auth or "password" in auth:
            typ, p = auth.get("type", ("plaintext-password", None))
            pw, pp = auth.get("password", ("", None))
            where = p or pp
            if typ != "plaintext-password":
                self.drop(where, "IP Authentication Header: RFC 3768 removed it, vrrpd refuses it")
            elif not pw:
                self.drop(where, "authentication without a password")
            else:
                if len(pw.encode()) > 8:
                    self.note(pp, "VRRPv2 passwords are 8 bytes: the first 8 are used, as keepalived does")
                    pw = pw.encode()[:8].decode("utf-8", "ignore")
                k["auth"] = {"type": "pass", "password": pw}
        for req in ("interface", "vrid"):
            if req not in k:
                self.drop(g.first, f"group {g.name} has no valid {req}: not translated")
                return None
        if not vips:
            self.drop(g.first, f"group {g.name} has no virtual address vrrpd can hold: not translated")
            return None
        version = self.version
        family, kept, drops, notes, refused = target.settle_addresses(vips)
        for p, why in drops:
            self.drop(p, why)
        for p, why in notes:
            self.note(p, why)
        if refused:
            self.drop(g.first, f"group {g.name}: {refused}: not translated")
            return None
        if family == 6 and version == 2:
            self.note(g.first, f"group {g.name}: IPv6 addresses: VRRPv3 (version = 3), as VyOS runs an IPv6 group")
            version = 3
        if version != 2:
            k["version"] = version
            if "auth" in k:
                del k["auth"]
                self.note(g.first, f"group {g.name}: VRRPv3 has no authentication (RFC 5798 §9): not written")
        interval = 1
        if "advert_interval" in k:
            v, p = k["advert_interval"]
            interval = target.advert_interval(v, version)
            if interval != v:
                self.note(p, f"VRRPv3's advert interval is at most {target.ADVERT_INTERVAL_V3[1]:g} s: {interval:g}")
        vips = [f"{a.ip}/{a.network.prefixlen}" for a, _ in kept]
        out = {"interface": k["interface"], "vrid": k["vrid"], "priority": k.get("priority", 100),
               "advert_interval": interval, "preempt": k.get("preempt", True)}
        if "preempt_delay" in k and out["preempt"]:
            out["preempt_delay"] = k["preempt_delay"]
        out["virtual_addresses"] = vips
        out["use_vmac"] = k.get("use_vmac", False)
        if not out["use_vmac"]:
            out["#use_vmac"] = [("VyOS without rfc3768-compatibility: the VIPs on the interface itself, with its own "
                                "MAC (vrrpd's default, true, uses the virtual MAC on a macvlan)")]
        for key in ("auth", "version", "garp_count", "garp_interval", "garp_repeat_delay", "garp_refresh"):
            if key in k:
                out[key] = k[key]
        if version == 3:
            out["accept_mode"] = True
            out["#accept_mode"] = ["VyOS's keepalived accepts packets to the VIPs (no strict mode); vrrpd's VRRPv3 "
                                   "default is RFC 5798's (false)"]
        if tracks:
            out["track_interfaces"] = tracks
        out["~notify"] = per_state  # the sync group's scripts join them (_sync_groups), then notify is written
        if "#" in k:
            out["#"] = k["#"]
        self.vips.update(v.split("/")[0] for v in vips)
        return out

    def _vip(self, leaf: list[str], p: _P, vips: list, k: dict) -> None:
        try:
            a = ipaddress.ip_interface(leaf[1])
        except ValueError:
            self.drop(p, "not an IP address")
            return
        if a.version == 6 and a.ip.scope_id:
            self.note(p, "the scope is the group's interface: written without it")
            a = ipaddress.ip_interface(f"{str(a.ip).split('%')[0]}/{a.network.prefixlen}")
        if any(a.ip == b.ip for b, _ in vips):
            return
        vips.append((a, p))
        if len(leaf) > 2:
            self.note(p, f"{' '.join(leaf[2:])} ignored: vrrpd adds every VIP to the group's interface (or its macvlan)")

    def _sync_groups(self, done: dict) -> None:
        self.members: dict[str, list[str]] = {}
        member_of: dict[str, str] = {}
        for name, (first, leaves) in self.sync_groups.items():
            members, per_state = [], {}
            for leaf, p in leaves:
                key = leaf[0] if leaf else ""
                if key in ("member", "members") and len(leaf) == 2:
                    m = leaf[1]
                    if m not in done:
                        self.drop(p, f"no VRRP group {m}")
                    elif not done[m]:
                        self.drop(p, f"{m} is not translated")
                    elif m in member_of:
                        self.drop(p, f"{m} is already in sync group {member_of[m]}")
                    elif m not in members:
                        members.append(m)
                        member_of[m] = name
                elif key == "transition-script" and len(leaf) == 3 and leaf[1] in STATE_OF:
                    per_state.setdefault(STATE_OF[leaf[1]], []).append((split_command(leaf[2]), p))
                elif key == "health-check":
                    self.drop(p, "vrrpd runs no health-check scripts")
                elif key == "disable":
                    self.drop(p, "a disabled sync group: not translated")
                    members = []
                    break
                else:
                    self.drop(p, "unknown sync-group setting")
            if not members:
                self.drop(first, f"sync group {name} has no member left: not translated")
                continue
            self.members[name] = members
            if per_state:
                inst = done[members[0]]
                for st, v in per_state.items():
                    inst["~notify"].setdefault(st, []).extend(argv for argv, _ in v)
                for leaf, p in leaves:
                    if leaf[:1] == ["transition-script"]:
                        self.note(p, f"runs from {members[0]}'s notify (the members move together)")

    # -- conntrack-sync -----------------------------------------------------------------
    def _conntrack_sync(self, key_file: str, peer_address: str | None) -> None:
        t: dict = {}
        com: dict[str, list[str]] = {}
        iface_p = None
        accept: list[tuple[str, _P]] = []
        ignore: list[str] = []
        failover = None
        for w, p in self.ct:
            key = w[0] if w else ""
            if key == "interface" and len(w) >= 2:
                t["sync_interface"] = w[1]
                iface_p = p
                rest = w[2:]
                if rest[:1] == ["peer"] and len(rest) == 2:
                    t["peer_address"] = rest[1]
                elif rest[:1] == ["port"] and len(rest) == 2 and rest[1].isdigit() and 0 < int(rest[1]) < 65536:
                    t["port"] = int(rest[1])
                elif rest:
                    self.drop(p, "unknown interface setting")
            elif key == "listen-address" and len(w) == 2:
                t["local_address"] = w[1]
            elif key == "mcast-group" and len(w) == 2:
                t["multicast_group"] = w[1]
            elif key == "accept-protocol" and len(w) == 2:
                accept += [(x, p) for x in w[1].split(",") if x]
            elif key == "ignore-address" and len(w) >= 2:
                a = w[-1]
                if a.split("/")[0] in self.vips:
                    self.note(p, "a VIP: left out of ignore_addresses (ctsync compares the original destination, so "
                              "it would skip flows DNATed from the VIP; conntrackd compares the reply source)")
                else:
                    ignore.append(a)
            elif key == "disable-external-cache" and len(w) == 1:
                t["mode"] = "inject"
                com["mode"] = [("VyOS disable-external-cache: the peer's entries go straight into the kernel "
                               "(ctsync's inject mode)")]
            elif key == "failover-mechanism" and w[1:3] == ["vrrp", "sync-group"] and len(w) == 4:
                failover = w[3]
                if failover not in self.members:
                    self.drop(p, f"no translated sync group {failover}: ctsync has no failover")
                    failover = None
            elif key == "startup-resync":
                self.note(p, "ctsync always asks its peer for the whole table when it starts")
            elif key == "expect-sync":
                self.drop(p, "ctsync does not replicate expectations (FTP/SIP helpers' related flows)")
            elif key == "event-listen-queue-size" and len(w) == 2 and w[1].isdigit():
                v = int(w[1]) << 20
                if v > 32 << 20:
                    t["netlink_rcvbuf"] = min(v, 1 << 30)
                else:
                    self.note(p, "ctsync's netlink_rcvbuf default (32 MiB) is larger: kept")
            elif key in ("sync-queue-size", "hash-size", "table-size", "disable-syslog"):
                self.drop(p, "conntrackd tuning with no equivalent in ctsync")
            else:
                self.drop(p, "unknown conntrack-sync setting")
        first = self.ct[0][1]
        if "sync_interface" in t and "local_address" not in t:
            own = [a for a in self.addresses.get(t["sync_interface"], []) if _v4(a)]
            if own:
                t["local_address"] = own[0].split("/")[0]
                com["local_address"] = [f"the address of {t['sync_interface']} (interfaces ... address {own[0]})"]
        if "peer_address" not in t and "multicast_group" not in t:
            t["multicast_group"] = VYOS_MCAST_DEFAULT
            com["multicast_group"] = ["VyOS's default group (no peer given: multicast)"]
        if peer_address:
            t["peer_address"] = peer_address
            com["peer_address"] = ["given with --peer-address"]
        elif "peer_address" not in t:
            self.conv.action("VyOS multicast conntrack-sync does not name the peer: set peer_address in [ctsync] to "
                             "the other router's address on the sync link (or convert with --peer-address)")
        t["key_file"] = key_file
        com["key_file"] = [("ctsync authenticates every datagram with this shared secret; conntrack-sync had none. "
                           f"Create it once, copy the same file to both routers: head -c 32 /dev/urandom > {key_file}")]
        self.conv.action(f"create ctsync's shared key, the same file on both routers: head -c 32 /dev/urandom > "
                         f"{key_file} && chmod 600 {key_file}")
        t.setdefault("mode", "commit")
        if failover:
            t["failover"] = {"vrrp_sync_group": failover}
            com["failover"] = [("VyOS failover-mechanism vrrp sync-group: ctsync commits the peer's state before "
                               "vrrpd adds the VIPs")]
        if accept:
            nums = {}
            for x, p in accept:
                n = target.CTSYNC_PROTOCOLS.get({"icmp6": "icmpv6"}.get(x.lower(), x.lower()))
                if n is None:
                    self.drop(p, f"unknown protocol {x!r}")
                else:
                    nums[n] = x
            names = {v: k for k, v in target.CTSYNC_PROTOCOLS.items()}
            rest = [n for n in range(256) if n not in nums]
            t["ignore_protocols"] = sorted((names[n] for n in rest if n in names), key=target.CTSYNC_PROTOCOLS.get) \
                + [n for n in rest if n not in names]
            com["ignore_protocols"] = [(f"VyOS accept-protocol {','.join(nums.values())}: every other protocol is "
                                       "ignored (named ones first, then the numbers of the rest)")]
        if ignore:
            t["ignore_addresses"] = ignore
        if "sync_interface" not in t:
            self.drop(first, "conntrack-sync names no interface: ctsync needs sync_interface")
        elif "local_address" not in t:
            self.drop(iface_p, f"no address of {t['sync_interface']} found: set local_address (or listen-address)")
        for k in ("sync_interface", "local_address", "peer_address", "multicast_group", "port", "key_file", "mode",
                  "failover", "ignore_addresses", "ignore_protocols", "netlink_rcvbuf"):
            if k in t:
                self.conv.put(("ctsync",), k, t[k], com.get(k))


def _v4(a: str) -> bool:
    try:
        return ipaddress.ip_interface(a).version == 4
    except ValueError:
        return False
