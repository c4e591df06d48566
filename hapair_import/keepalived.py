"""keepalived.conf -> the [vrrpd] table (and, with a conntrackd.conf, [ctsync]).

Long (about 800 lines) because keepalived has that many keywords: each one is
either mapped here or listed, with the reason, in one of the tables below; the
language itself (include, conditionals, $VAR) is in keepalived_syntax.py.

What maps to what (docs/importers.md has the same as a table):

* vrrp_instance -> [vrrpd.instance.NAME]: interface, virtual_router_id (vrid),
  priority, advert_int, nopreempt / preempt_delay, virtual_ipaddress, authentication
  PASS (keepalived truncates the password to 8 characters, so does this), use_vmac
  (absent: ``use_vmac = false``, keepalived's default), garp_master_delay /
  garp_master_repeat / garp_interval (also from global_defs' vrrp_garp_*),
  strict_mode, track_interface, track_script (only a plain ping / TCP connect that
  can be pinned to an uplink becomes a probe), the notify scripts (one /bin/sh
  wrapper, scripts.py). ``state`` is a start-up hint: a comment.
* Tracking weights: keepalived adds a positive weight while the tracked thing is
  up; vrrpd subtracts while it is down. ``priority P`` with ``+w`` is the same as
  ``priority P+w`` with ``-w``, so that is what is written (with a comment).
  keepalived sets the tracking weights of sync group members to 0 (unless the group
  has sync_group_tracking_weight): so does this.
* vrrp_sync_group -> [vrrpd.sync_group.NAME]; its notify scripts run from its first
  member's notify (members move together); a notify that drives conntrackd
  (primary-backup.sh) becomes ctsync's ``failover = { vrrp_sync_group = NAME }``
  when a conntrackd.conf is given.
* Everything else (LVS, static routes, e-mail, unicast peers, ...) is reported.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field

from . import conntrackd as conntrackd_mod
from . import target
from .box import Conversion
from .keepalived_syntax import Stmt, default_config_id, load
from .scripts import STATES, Check, classify_check, drives_conntrackd, notify_wrapper, split_command

LVS = "LVS (IPVS) load balancing is not part of hapair"
NO_EMAIL = "vrrpd sends no e-mail (a notify command can)"
UNICAST = "unicast VRRP: vrrpd sends its adverts to 224.0.0.18 only"

TOP_DROPPED = {
    "virtual_server": LVS, "virtual_server_group": LVS,
    "static_ipaddress": "static addresses belong in the system's network configuration",
    "static_routes": "static routes belong in the system's network configuration",
    "static_rules": "static policy rules belong in the system's network configuration",
    "track_file": "vrrpd tracks interfaces and uplink probes only", "vrrp_track_file": "vrrpd tracks interfaces and uplink probes only",
    "vrrp_track_process": "vrrpd tracks interfaces and uplink probes only", "track_process": "vrrpd tracks interfaces and uplink probes only",
    "bfd_instance": "vrrpd has no BFD", "linkbeat_interfaces": "vrrpd follows the kernel's link state (netlink)",
    "garp_group": "vrrpd has no gratuitous ARP rate groups",
    "net_namespace": "a keepalived process option: run vrrpd in that namespace instead (ip netns exec)",
    "net_namespace_ipvs": LVS, "namespace_with_ipsets": "a keepalived process option",
    "instance": "a keepalived process option", "use_pid_dir": "a keepalived process option",
    "child_wait_time": "a keepalived process option",
}
INSTANCE_DROPPED = {
    "dont_track_primary": "vrrpd always tracks the instance's own interface (FAULT while it is down)",
    "mcast_src_ip": "vrrpd sends its adverts from the interface's first IPv4 address (IPv6: its link-local address)",
    "unicast_src_ip": UNICAST, "unicast_peer": UNICAST, "unicast_ttl": UNICAST, "unicast_fault_no_peer": UNICAST,
    "check_unicast_src": UNICAST, "old_unicast_checksum": UNICAST,
    "track_file": "vrrpd tracks interfaces and uplink probes only", "track_process": "vrrpd tracks interfaces and uplink probes only",
    "track_bfd": "vrrpd has no BFD", "lvs_sync_daemon_interface": LVS,
    "garp_lower_prio_delay": "vrrpd sends no gratuitous ARPs on a lower-priority advert",
    "garp_lower_prio_repeat": "vrrpd sends no gratuitous ARPs on a lower-priority advert",
    "lower_prio_no_advert": "vrrpd answers a lower-priority advert as RFC 3768 says",
    "higher_prio_send_advert": "vrrpd answers a higher-priority advert as RFC 3768 says",
    "gna_interval": "vrrpd spaces its unsolicited neighbour adverts by garp_interval, as its gratuitous ARPs",
    "native_ipv6": "vrrpd's instance is of its addresses' family (IPv6: version 3, the first address link-local)",
    "virtual_routes": "vrrpd adds no routes with the VIPs (a notify command can)",
    "virtual_rules": "vrrpd adds no policy rules with the VIPs (a notify command can)",
    "promote_secondaries": "a sysctl (net.ipv4.conf.IFACE.promote_secondaries) to set in the system",
    "smtp_alert": NO_EMAIL, "debug": "keepalived's debug level", "kernel_rx_buf_size": "a keepalived socket setting",
    "linkbeat_use_polling": "vrrpd follows the kernel's link state (netlink)",
    "down_timer_adverts": "vrrpd's Master_Down_Interval is RFC 3768's (3 adverts and the skew)",
    "vmac_xmit_base": "vrrpd sends adverts from the macvlan's virtual MAC",
    "use_ipvlan": "vrrpd uses a macvlan (use_vmac)", "notify_deleted": "vrrpd has no 'deleted' state",
    "notify_master_rx_lower_pri": "vrrpd has no such event", "notify_priority_changes": "vrrpd has no such event",
    "track_src_ip": "vrrpd sends adverts from the interface's first IPv4 address",
}
GROUP_DROPPED = {
    "smtp_alert": NO_EMAIL, "notify_deleted": "vrrpd has no 'deleted' state",
    "track_file": "vrrpd tracks interfaces and uplink probes only", "track_process": "vrrpd tracks interfaces and uplink probes only",
    "track_bfd": "vrrpd has no BFD", "notify_priority_changes": "vrrpd has no such event",
}
GLOBAL_GARP = {"vrrp_garp_master_delay": "garp_master_delay", "vrrp_garp_master_repeat": "garp_master_repeat",
               "vrrp_garp_interval": "garp_interval", "vrrp_garp_master_refresh": "garp_master_refresh"}
NOTIFY_STATE = {"notify_master": "master", "notify_backup": "backup", "notify_fault": "fault", "notify_stop": "stop"}
VIP_OPTIONS_WITH_VALUE = {"dev", "label", "scope", "brd", "broadcast", "peer", "preferred_lft", "track_group"}
VIP_FLAGS = {"no_track", "home", "-nodad", "nodad", "noprefixroute", "autojoin"}
INSTANCE_KEY_ORDER = ("interface", "vrid", "version", "priority", "advert_interval", "preempt", "preempt_delay",
                      "virtual_addresses", "accept_mode", "use_vmac", "auth", "strict", "track_interfaces",
                      "track_probes", "garp_count", "garp_interval", "garp_repeat_delay", "garp_refresh", "notify")


@dataclass
class _Track:
    name: str
    weight: int | None  # None: not given (an interface: 0; a script: the vrrp_script's weight)
    stmt: Stmt


@dataclass
class _Inst:
    name: str
    stmt: Stmt
    keys: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)  # key -> [comment lines]
    head: list = field(default_factory=list)  # comments above the table
    version: int | None = None
    advert: tuple | None = None  # (advert_int, Stmt): settled once the version is known
    vips: list = field(default_factory=list)  # [(ip_interface, Stmt)] in order, settled with the version
    accept: Stmt | None = None  # `accept` / `no_accept`, the last one given
    ifaces: list = field(default_factory=list)  # [_Track]
    scripts: list = field(default_factory=list)  # [_Track] (name of vrrp_script)
    notify: list = field(default_factory=list)  # [(state or "generic", argv, Stmt)]
    group: str | None = None
    ok: bool = True


@dataclass
class _Group:
    name: str
    stmt: Stmt
    members: list = field(default_factory=list)
    ifaces: list = field(default_factory=list)
    scripts: list = field(default_factory=list)
    notify: list = field(default_factory=list)
    keep_weights: bool = False


def _effect(weight: int) -> str:
    if weight < 0:
        return f"lowers the priority by {-weight} while it fails"
    if weight > 0:
        return f"adds {weight} to the priority while it succeeds"
    return "puts the instance in FAULT while it fails"


def convert(path: str, *, config_id: str | None = None, conntrackd: str | None = None,
            key_file: str = target.DEFAULT_KEY_FILE, peer_address: str | None = None) -> Conversion:
    """Convert a keepalived.conf (and optionally its conntrackd.conf); InputError if
    a file cannot be read or parsed."""
    cid = config_id if config_id is not None else default_config_id()
    parsed = load(path, cid)
    conv = Conversion()
    detail = f" (config-id {cid!r} chose its @ lines)" if parsed.conditionals else ""
    conv.sources.append(("keepalived", path + detail))
    for f in parsed.files[1:]:
        conv.sources.append(("keepalived include", f))
    conv.files += parsed.files
    m = _Mapper(conv, os.path.dirname(os.path.abspath(path)), with_ctsync=conntrackd is not None)
    m.run(parsed, cid)
    if conntrackd is not None:
        conntrackd_mod.convert_into(conv, conntrackd, failover=m.failover, vips=m.vips, key_file=key_file,
                                    peer_address=peer_address)
    conv.check_problems = target.check(conv.data)
    return conv


class _Mapper:
    def __init__(self, conv: Conversion, base_dir: str, with_ctsync: bool):
        self.conv = conv
        self.base_dir = base_dir
        self.with_ctsync = with_ctsync
        self.instances: dict[str, _Inst] = {}
        self.groups: dict[str, _Group] = {}
        self.scripts: dict[str, Stmt] = {}
        self.used_scripts: set[str] = set()
        self.routes: list[tuple[str, str | None, str | None, Stmt]] = []  # (dest, gateway, dev, stmt)
        self.defaults: dict = {}  # from global_defs
        self.default_version = 2
        self.strict_all: Stmt | None = None
        self.probes: dict[str, dict] = {}
        self.failover: str | None = None
        self.vips: set[str] = set()
        self.ct_owners: list[tuple[str, str, Stmt]] = []  # (kind, name, notify stmt)

    def drop(self, s: Stmt, why: str, what: str | None = None) -> None:
        self.conv.drop(s.file, s.line, what or s.text(), why)

    def note(self, s: Stmt, why: str, what: str | None = None) -> None:
        self.conv.note(s.file, s.line, what or s.text(), why)

    # -- the walk ------------------------------------------------------------------
    def run(self, parsed, cid: str) -> None:
        for file, line, what, why in parsed.problems:
            self.conv.drop(file, line, what, why)
        if parsed.skipped:
            by_file: dict[str, list[int]] = {}
            for file, line, _ in parsed.skipped:
                by_file.setdefault(file, []).append(line)
            for file, lines in by_file.items():
                self.conv.note(file, lines[0], f"@ conditional lines {', '.join(map(str, lines))}",
                               f"left out: they are for another config-id than {cid!r} (--config-id)")
        for s in parsed.stmts:  # routes first: a probe may need a gateway from them
            if s.key == "static_routes" and s.block:
                self._routes(s)
        for s in parsed.stmts:
            handler = {"global_defs": self._global_defs, "vrrp_instance": self._instance,
                       "vrrp_sync_group": self._group, "vrrp_script": self._script_def}.get(s.key)
            if handler:
                handler(s)
            elif s.key in TOP_DROPPED:
                self.drop(s, TOP_DROPPED[s.key])
            else:
                self.drop(s, "unknown keyword (keepalived ignores it too)" if s.block is None
                          else "unknown block (keepalived ignores it too)")
        self._resolve_weights()
        self._link_groups()
        for inst in self.instances.values():
            if inst.ok:
                self._finish(inst)
        for name, s in self.scripts.items():
            if name not in self.used_scripts:
                self.drop(s, "tracked by no instance or group (keepalived does not run it either)",
                          f"vrrp_script {name}")
        self._failover()
        self._write()

    # -- global_defs ---------------------------------------------------------------
    def _global_defs(self, s: Stmt) -> None:
        for c in s.block or []:
            k = c.key
            if k in GLOBAL_GARP:
                v = self._number(c)
                if v is not None:
                    self.defaults[GLOBAL_GARP[k]] = (v, c)
            elif k == "vrrp_version":
                v = self._number(c)
                if v in (2, 3):
                    self.default_version = int(v)
                else:
                    self.drop(c, "must be 2 or 3")
            elif k == "vrrp_strict":
                self.strict_all = c
            elif k == "vrrp_min_garp":
                self.defaults["garp_master_repeat"] = (1, c)
                self.defaults["garp_master_delay"] = (0, c)
            elif k == "vrrp_skip_check_adv_addr":
                self.note(c, "vrrpd accepts adverts whose address list differs from its own unless strict = true "
                          "(counted as address_list_errors)")
            elif k == "vrrp_mcast_group4" and c.args == ["224.0.0.18"]:
                self.note(c, "vrrpd always uses 224.0.0.18")
            elif k in ("notification_email", "notification_email_from", "smtp_server", "smtp_connect_timeout",
                       "smtp_helo_name", "smtp_alert", "smtp_alert_vrrp", "no_email_faults"):
                self.drop(c, NO_EMAIL)
            elif k in ("script_user", "enable_script_security"):
                self.drop(c, "vrrpd runs notify commands as its own user (root), with no script security check")
            elif k.startswith(("lvs_", "checker_")) or k in ("smtp_alert_checker",):
                self.drop(c, LVS)
            elif k == "router_id":
                self.drop(c, "names the router in keepalived's e-mails and logs; vrrpd has no such name")
            else:
                self.drop(c, "a keepalived global setting with no equivalent in vrrpd or ctsync")

    # -- helpers for values -------------------------------------------------------
    def _number(self, c: Stmt, lo: float | None = None, hi: float | None = None, integer: bool = False):
        if len(c.args) != 1:
            self.drop(c, "takes one value: ignored (keepalived ignores it too)")
            return None
        try:
            v = float(c.args[0])
        except ValueError:
            v = math.nan
        if math.isnan(v) or math.isinf(v) or (integer and v != int(v)) or (lo is not None and v < lo) \
                or (hi is not None and v > hi):
            rng = f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else ""
            self.drop(c, f"not {'an integer' if integer else 'a number'}{rng}: ignored")
            return None
        return int(v) if v == int(v) else v

    def _routes(self, s: Stmt) -> None:
        for r in s.block or []:
            w = list(r.words)
            if w[:1] == ["src"] and len(w) > 2:
                w = w[2:]
            dest = w[0] if w else ""
            gw = dev = None
            for i, x in enumerate(w[:-1]):
                if x in ("via", "gw"):
                    gw = w[i + 1]
                elif x == "dev":
                    dev = w[i + 1]
            self.routes.append((dest, gw, dev, r))

    # -- vrrp_script / vrrp_sync_group --------------------------------------------
    def _script_def(self, s: Stmt) -> None:
        if len(s.args) != 1 or s.block is None:
            self.drop(s, "vrrp_script needs one name and a block")
        elif s.args[0] in self.scripts:
            self.drop(s, f"a second vrrp_script {s.args[0]}: keepalived refuses it")
        else:
            self.scripts[s.args[0]] = s

    def _group(self, s: Stmt) -> None:
        if len(s.args) != 1 or s.block is None:
            self.drop(s, "vrrp_sync_group needs one name and a block")
            return
        name = s.args[0]
        if name in self.groups:
            self.drop(s, f"a second vrrp_sync_group {name}: keepalived refuses it")
            return
        g = _Group(name, s)
        for c in s.block:
            if c.key == "group" and c.block is not None:
                g.members += [(w, m) for m in c.block for w in m.words]
            elif c.key == "track_interface" and c.block is not None:
                g.ifaces += self._tracks(c)
            elif c.key == "track_script" and c.block is not None:
                g.scripts += self._tracks(c)
            elif c.key in NOTIFY_STATE or c.key == "notify":
                self._notify_stmt(c, g.notify, "group", name)
            elif c.key in ("sync_group_tracking_weight", "global_tracking"):
                g.keep_weights = True
                self.note(c, "the members' tracking weights are kept (vrrpd honours weights in sync groups)")
            elif c.key in GROUP_DROPPED:
                self.drop(c, GROUP_DROPPED[c.key])
            else:
                self.drop(c, "unknown keyword in vrrp_sync_group (members go in group { ... })")
        self.groups[name] = g

    def _tracks(self, c: Stmt) -> list[_Track]:
        out = []
        for t in c.block or []:
            w = t.words
            weight = None
            if len(w) >= 3 and w[1] == "weight":
                try:
                    weight = int(w[2])
                except ValueError:
                    self.drop(t, "weight must be an integer", f"{c.key} {t.text()}")
                    continue
                if not -253 <= weight <= 253:
                    self.drop(t, "weight must be from -253 to 253", f"{c.key} {t.text()}")
                    continue
                extra = w[3:]
            else:
                extra = w[1:]
            if extra == ["reverse"]:
                self.drop(t, "reverse: vrrpd changes the priority only while the tracked thing is down",
                          f"{c.key} {t.text()}")
                continue
            if extra and extra != ["noreverse"] and extra != ["no_reverse"]:
                self.drop(t, "expected NAME [weight N [reverse|noreverse]]", f"{c.key} {t.text()}")
                continue
            out.append(_Track(w[0], weight, t))
        return out

    def _notify_stmt(self, c: Stmt, into: list, kind: str, name: str) -> None:
        if not c.args:
            self.drop(c, "needs a script")
            return
        argv = split_command(c.args[0])
        if not argv:
            self.drop(c, "an empty script")
            return
        if len(c.args) > 1:
            self.note(c, f"runs as vrrpd's user (root), not as {' '.join(c.args[1:])}")
        state = NOTIFY_STATE.get(c.key, "generic")
        if drives_conntrackd(argv, os.path.dirname(os.path.abspath(c.file)) if c.file else self.base_dir):
            self.ct_owners.append((kind, name, c))
            if self.with_ctsync:
                self.note(c, "drives conntrackd (its primary/backup sequence): replaced by ctsync, which "
                          "follows vrrpd (failover in [ctsync]) and commits before the VIPs are added")
                return
            self.note(c, "drives conntrackd: kept in notify, which works with vrrpd too; give --conntrackd "
                      "FILE to replace conntrackd with ctsync (commit before the VIPs)")
        into.append((state, argv, c))

    # -- vrrp_instance --------------------------------------------------------------
    def _instance(self, s: Stmt) -> None:
        if len(s.args) != 1 or s.block is None:
            self.drop(s, "vrrp_instance needs one name and a block")
            return
        name = s.args[0]
        if name in self.instances:
            self.drop(s, f"a second vrrp_instance {name}: keepalived refuses it")
            return
        inst = _Inst(name, s)
        self.instances[name] = inst
        k = inst.keys
        garp = {}
        for c in s.block:
            key = c.key
            if key == "interface" and len(c.args) == 1:
                if len(c.args[0]) > target.IFNAME_MAX:
                    self.drop(c, f"interface names are at most {target.IFNAME_MAX} characters")
                else:
                    k["interface"] = c.args[0]
            elif key == "virtual_router_id":
                v = self._number(c, 1, 255, integer=True)
                if v is not None:
                    k["vrid"] = v
            elif key == "priority":
                v = self._number(c, 1, 255, integer=True)
                if v is not None:
                    k["priority"] = v
            elif key == "advert_int":
                v = self._number(c, 0.01, 255)
                if v is not None:
                    inst.advert = (v, c)
                    k["advert_interval"] = None  # its value once the version is known (_settle_version)
            elif key == "nopreempt" and not c.args:
                k["preempt"] = False
            elif key == "preempt" and not c.args:
                k["preempt"] = True
            elif key == "preempt_delay":
                v = self._number(c, *target.PREEMPT_DELAY)
                if v is not None:
                    k["preempt_delay"] = v
            elif key == "state" and len(c.args) == 1:
                inst.head.append(f"keepalived: state {c.args[0]} (a start-up hint; vrrpd starts every instance as "
                                 "backup and lets the election decide)")
            elif key == "virtual_ipaddress" and c.block is not None:
                self._vips(inst, c)
            elif key == "virtual_ipaddress_excluded":
                self.drop(c, "addresses outside the advert: vrrpd has none (add them with a notify command)")
            elif key == "authentication" and c.block is not None:
                self._auth(inst, c)
            elif key == "use_vmac":
                k["use_vmac"] = True
                if c.args:
                    self.note(c, f"vrrpd names the macvlan vrrp{{VRID}}.{{IFACE}}, not {c.args[0]}")
            elif key in ("garp_master_delay", "garp_master_repeat", "garp_interval"):
                v = self._number(c, 0, None)
                if v is not None:
                    garp[key] = (v, c)
            elif key == "version":
                v = self._number(c, 2, 3, integer=True)
                if v is not None:
                    inst.version = v
            elif key == "strict_mode" and len(c.args) <= 1:
                if c.args and c.args[0].lower() in ("off", "false", "no"):
                    k["strict"] = False  # not written: vrrpd's default; it overrides vrrp_strict
                else:
                    self._strict(inst, c)
            elif key in ("accept", "no_accept") and not c.args:
                inst.accept = c
            elif key == "garp_master_refresh":
                v = self._number(c, *target.GARP_REFRESH)
                if v is not None:
                    garp[key] = (v, c)
            elif key == "garp_master_refresh_repeat":
                v = self._number(c, 1, None, integer=True)
                if v is not None and v != 1:
                    self.drop(c, "vrrpd sends one gratuitous ARP / neighbour advert per VIP at each refresh")
            elif key == "skip_check_adv_addr":
                self.note(c, "vrrpd accepts adverts whose address list differs unless strict = true")
            elif key == "track_interface" and c.block is not None:
                inst.ifaces += self._tracks(c)
            elif key == "track_script" and c.block is not None:
                inst.scripts += self._tracks(c)
            elif key in NOTIFY_STATE or key == "notify":
                self._notify_stmt(c, inst.notify, "instance", name)
            elif key in INSTANCE_DROPPED:
                self.drop(c, INSTANCE_DROPPED[key])
            else:
                self.drop(c, "unknown keyword in vrrp_instance, or wrong arguments")
        for key in ("garp_master_delay", "garp_master_repeat", "garp_interval", "garp_master_refresh"):
            if key not in garp and key in self.defaults:
                garp[key] = self.defaults[key]
        self._garp(inst, garp)
        if self.strict_all is not None and "strict" not in k:
            self._strict(inst, self.strict_all)
        if k.get("strict") is False:
            del k["strict"]
        for req, kw in (("interface", "interface"), ("vrid", "virtual_router_id")):
            if req not in k:
                inst.ok = False
                self.drop(s, f"no valid {kw}: the instance is not translated", f"vrrp_instance {name}")
                return
        self._settle_version(inst)
        if not k.get("virtual_addresses"):
            inst.ok = False
            self.drop(s, "no virtual address vrrpd can hold: the instance is not translated",
                      f"vrrp_instance {name}")

    def _strict(self, inst: _Inst, c: Stmt) -> None:
        inst.keys["strict"] = True
        self.note(c, "strict = true: vrrpd drops adverts whose address list differs from its own; the rest of "
                  "keepalived's strict mode (no unicast, no authentication) is not checked")

    def _garp(self, inst: _Inst, garp: dict) -> None:
        for src, key, (lo, hi), integer in (("garp_master_repeat", "garp_count", target.GARP_COUNT, True),
                                            ("garp_interval", "garp_interval", target.GARP_INTERVAL, False),
                                            ("garp_master_delay", "garp_repeat_delay", target.GARP_REPEAT_DELAY, False),
                                            ("garp_master_refresh", "garp_refresh", target.GARP_REFRESH, False)):
            if src not in garp:
                continue
            v, c = garp[src]
            if (integer and v != int(v)) or not lo <= v <= hi:
                self.drop(c, f"vrrpd's {key} is from {lo} to {hi}")
                continue
            inst.keys[key] = int(v) if integer or v == int(v) else v

    def _vips(self, inst: _Inst, c: Stmt) -> None:
        """Collect the addresses (both families, in order); _settle_version keeps those of
        the instance's family once its version is known."""
        inst.keys.setdefault("virtual_addresses", [])
        seen = {str(a.ip) for a, _ in inst.vips}
        for v in c.block or []:
            w = v.words
            try:
                addr = ipaddress.ip_interface(w[0])
            except ValueError:
                self.drop(v, "not an IP address", f"virtual_ipaddress {v.text()}")
                continue
            if addr.version == 6 and addr.ip.scope_id:
                self.note(v, "the scope is the instance's interface: written without it", f"virtual_ipaddress {v.text()}")
                addr = ipaddress.ip_interface(f"{str(addr.ip).split('%')[0]}/{addr.network.prefixlen}")
            if str(addr.ip) in seen:
                self.note(v, "the same address twice: written once", f"virtual_ipaddress {v.text()}")
                continue
            extras, i = [], 1
            while i < len(w):
                if w[i] in VIP_OPTIONS_WITH_VALUE and i + 1 < len(w):
                    extras.append(f"{w[i]} {w[i + 1]}")
                    i += 2
                else:
                    extras.append(w[i])
                    i += 1
            inst.vips.append((addr, v))
            seen.add(str(addr.ip))
            if extras:
                where = inst.keys.get("interface", "the instance's interface")
                self.note(v, f"{', '.join(extras)} ignored: vrrpd adds every VIP to {where} (or its macvlan), "
                          "with its prefix and no label", f"virtual_ipaddress {v.text()}")

    def _settle_version(self, inst: _Inst) -> None:
        """What depends on the VRRP version, once the whole instance is read: its family
        (keepalived's: the first address's; an IPv6 instance is VRRPv3), the addresses of
        that family (an IPv6 one's link-local address first, RFC 5798 §5.2.9), the advert
        interval's unit, authentication (none in VRRPv3) and Accept_Mode."""
        k, name = inst.keys, inst.name
        version = inst.version or self.default_version
        family = inst.vips[0][0].version if inst.vips else 4
        if family == 6 and version == 2:
            self.note(inst.stmt, "IPv6 addresses: VRRPv3 (version = 3), as keepalived runs an IPv6 instance",
                      f"vrrp_instance {name}")
            version = 3
        if version != 2:
            k["version"] = version
        family, vips, drops, notes, refused = target.settle_addresses(inst.vips)
        for v, why in drops:
            self.drop(v, why, f"virtual_ipaddress {v.text()}")
        for v, why in notes:
            self.note(v, why, f"virtual_ipaddress {v.text()}")
        if refused:
            self.drop(inst.stmt, f"{refused} to virtual_ipaddress", f"vrrp_instance {name}")
        if "virtual_addresses" in k:
            k["virtual_addresses"] = [f"{a.ip}/{a.network.prefixlen}" for a, _ in vips]
        self.vips.update(str(a.ip) for a, _ in vips)
        if inst.advert is not None:
            v, c = inst.advert
            r = target.advert_interval(v, version)
            if abs(r - v) > 1e-9:
                self.note(c, f"vrrpd's advert interval is whole seconds (VRRPv2): {r}" if version == 2 else
                          "VRRPv3's advert interval is {:g} to {:g} s in hundredths: {:g}".format(
                              *target.ADVERT_INTERVAL_V3, r))
            k["advert_interval"] = r
        if version == 3 and "auth" in k:
            del k["auth"]
            inst.comments.pop("auth", None)
            self.note(inst.stmt, "VRRPv3 has no authentication (RFC 5798 §9; keepalived ignores it too): not written",
                      f"vrrp_instance {name}")
        acc = inst.accept
        if version == 2:
            if acc is not None and acc.key == "no_accept":
                self.drop(acc, "vrrpd's VRRPv2 master accepts packets to its VIPs (they are ordinary addresses)")
            elif acc is not None:
                self.note(acc, "vrrpd's VIPs are ordinary addresses: the master accepts packets to them")
        elif acc is not None and acc.key == "accept":
            k["accept_mode"] = True
        elif acc is None and not k.get("strict"):
            k["accept_mode"] = True
            inst.comments["accept_mode"] = ["keepalived accepts packets to the VIPs unless no_accept or strict mode; "
                                            "vrrpd's VRRPv3 default is RFC 5798's (false)"]

    def _auth(self, inst: _Inst, c: Stmt) -> None:
        kv = {a.key: a for a in c.block or []}
        for a in c.block or []:
            if a.key not in ("auth_type", "auth_pass"):
                self.drop(a, "unknown keyword in authentication")
        t = kv.get("auth_type")
        p = kv.get("auth_pass")
        kind = t.args[0].upper() if t and len(t.args) == 1 else None
        if kind == "AH":
            self.drop(t, "IP Authentication Header: RFC 3768 removed it, vrrpd refuses it; the instance runs "
                      "without authentication")
            return
        if kind != "PASS":
            self.drop(t or c, "auth_type must be PASS or AH")
            return
        if p is None or len(p.args) != 1 or not p.args[0]:
            self.drop(c, "auth_type PASS without auth_pass: keepalived sends no password either")
            return
        pw = p.args[0]
        raw = pw.encode()
        if len(raw) > 8:
            cut = raw[:8].decode("utf-8", "ignore")
            self.note(p, f"keepalived uses the first 8 characters; so does this: {cut!r}", "auth_pass (hidden)")
            pw = cut
        inst.keys["auth"] = {"type": "pass", "password": pw}

    # -- groups, tracking, notify -----------------------------------------------
    def _resolve_weights(self) -> None:
        """Weights not given in track_*: 0 for an interface, the vrrp_script's own for a
        script (before a sync group zeroes them: keepalived zeroes the effective weight)."""
        for owner in list(self.instances.values()) + list(self.groups.values()):
            for t in owner.ifaces:
                if t.weight is None:
                    t.weight = 0
            for t in owner.scripts:
                if t.weight is None:
                    t.weight = self._script_weight(t.name)

    def _script_weight(self, name: str) -> int:
        s = self.scripts.get(name)
        for c in (s.block or []) if s else []:
            if c.key == "weight" and c.args:
                try:
                    w = int(c.args[0])
                except ValueError:
                    return 0
                return w if -253 <= w <= 253 else 0
        return 0

    def _link_groups(self) -> None:
        for g in self.groups.values():
            good = []
            for name, m in g.members:
                inst = self.instances.get(name)
                if inst is None:
                    self.drop(m, f"no vrrp_instance {name}", f"vrrp_sync_group {g.name} member {name}")
                elif inst.group is not None:
                    self.drop(m, f"{name} is already in sync group {inst.group}", f"vrrp_sync_group {g.name} member {name}")
                elif not inst.ok:
                    self.drop(m, f"{name} is not translated", f"vrrp_sync_group {g.name} member {name}")
                else:
                    inst.group = g.name
                    good.append(name)
            g.members = good
            if not good:
                self.drop(g.stmt, "no member left: not translated", f"vrrp_sync_group {g.name}")
                continue
            first = self.instances[good[0]]
            if g.notify:
                self.note(g.stmt, f"its notify scripts run from {first.name}'s notify (the members move together)",
                          f"vrrp_sync_group {g.name}")
            for name in good:
                inst = self.instances[name]
                # Group tracking applies to every member; its weights are the group's own.
                inst.ifaces += g.ifaces
                inst.scripts += g.scripts
                if not g.keep_weights:
                    self._zero_weights(inst, g)
                if name == first.name:
                    inst.notify = [(st, [*argv, "GROUP", g.name, "{STATE}", "0"] if st == "generic" else argv, c)
                                   for st, argv, c in g.notify] + inst.notify

    def _zero_weights(self, inst: _Inst, g: _Group) -> None:
        own = [t for t in inst.ifaces + inst.scripts if t.weight and t not in g.ifaces + g.scripts]
        for t in own:
            self.note(t.stmt, f"weight {t.weight} is 0 here, as keepalived makes it for a member of sync group "
                      f"{g.name} (FAULT while down): vrrpd would honour a weight, set one if you want it",
                      f"{inst.name}: track {t.name} weight {t.weight}")
            t.weight = 0

    def _finish(self, inst: _Inst) -> None:
        k = inst.keys
        prio = k.get("priority", 100)
        ifaces = []
        for t in inst.ifaces:
            if len(t.name) > target.IFNAME_MAX:
                self.drop(t.stmt, f"interface names are at most {target.IFNAME_MAX} characters",
                          f"{inst.name}: track_interface {t.name}")
            else:
                ifaces.append({"interface": t.name, "weight": t.weight})
        probes = []
        for t in inst.scripts:
            self.used_scripts.add(t.name)
            p = self._probe(inst, t)
            if p:
                probes.append({"probe": p, "weight": t.weight})
        tracked = ifaces + probes
        positive = sum(t["weight"] for t in tracked if t["weight"] > 0)
        if positive and prio == 255:
            self.note(inst.stmt, "the address owner (priority 255) ignores tracking weights in keepalived: they are 0",
                      f"vrrp_instance {inst.name}")
            for t in tracked:
                t["weight"] = 0
        elif positive:
            new = min(254, prio + positive)
            for t in tracked:
                if t["weight"] > 0:
                    t["weight"] = -t["weight"]
            k["priority"] = new
            inst.comments.setdefault("priority", []).append(
                f"keepalived: priority {prio} plus positive tracking weights ({positive}) while all is up; vrrpd "
                f"subtracts weights while down, so the same is priority {new} with those weights negative")
            if prio + positive > 254:
                self.note(inst.stmt, f"priority {prio} + positive weights {positive} is above 254: written as 254, "
                          "so a tracked failure lowers it less than in keepalived", f"vrrp_instance {inst.name}")
        if ifaces:
            k["track_interfaces"] = [t if t["weight"] else t["interface"] for t in ifaces]
        if probes:
            k["track_probes"] = [t if t["weight"] else t["probe"] for t in probes]
        per_state: dict[str, list[list[str]]] = {}
        # keepalived runs the generic "notify" after the notify_STATE scripts.
        for st, argv, c in sorted(inst.notify, key=lambda n: n[0] == "generic"):
            if st == "generic":
                kind = "INSTANCE" if "{STATE}" not in argv else None
                for s2 in STATES:
                    if kind:
                        per_state.setdefault(s2, []).append([*argv, kind, inst.name, s2.upper(), str(prio)])
                    elif s2 != "stop":
                        per_state.setdefault(s2, []).append([a.replace("{STATE}", s2.upper()) for a in argv])
            else:
                per_state.setdefault(st, []).append(argv)
        cmd = notify_wrapper(per_state)
        if cmd:
            k["notify"] = cmd
            inst.comments.setdefault("notify", []).append(
                "keepalived's notify scripts, one per state, in one /bin/sh wrapper: vrrpd runs it on each "
                "transition with INSTANCE GROUP STATE, and the wrapper runs the commands of STATE ($3)")

    def _probe(self, inst: _Inst, t: _Track) -> str | None:
        """A tracked vrrp_script as a vrrpd probe: the probe's name, or None (reported)."""
        s = self.scripts.get(t.name)
        what = f"{inst.name}: track_script {t.name}"
        effect = _effect(t.weight)
        if s is None:
            self.drop(t.stmt, "no vrrp_script of that name", what)
            return None
        kv = {c.key: c for c in s.block or []}
        script = kv.get("script")
        argv = split_command(script.args[0]) if script and script.args else []
        chk = classify_check(argv)
        if "weight" in kv and kv["weight"].args[1:2] == ["reverse"]:
            chk = None  # vrrpd changes the priority only while a probe is down
        generic = (f"vrrpd runs no health-check scripts (it tracks interfaces, and ICMP/TCP probes pinned to an "
                   f"uplink): keepalived {effect}, nothing does that here")
        if chk is None:
            self.drop(t.stmt, generic, what)
            return None
        if chk.target.is_loopback or chk.target.is_unspecified:
            self.drop(t.stmt, f"{generic} (it checks a local service)", what)
            return None
        gw = self._gateway(chk)
        if gw is None:
            self.drop(t.stmt, f"a {'ping' if chk.kind == 'icmp' else 'TCP connect'} of {chk.target} could be a vrrpd "
                      "probe, but a probe is pinned to an uplink (interface and gateway) and none is known here: add "
                      f"[vrrpd.probe.{t.name}] and track_probes (docs/uplinks.md); keepalived {effect}",
                      what)
            return None
        iface, gateway, route = gw
        name = t.name
        if name not in self.probes:
            p = {"interface": iface, "gateway": gateway, "target": str(chk.target)}
            if chk.kind == "tcp":
                p.update(kind="tcp", port=chk.port)
            interval = self._script_num(kv, "interval", 1.0)
            timeout = self._script_num(kv, "timeout", None) or chk.timeout
            interval = min(max(interval, target.PROBE_INTERVAL[0]), target.PROBE_INTERVAL[1])
            p["interval"] = interval
            if timeout:
                p["timeout"] = min(timeout, interval)
            for key, default in (("rise", 1), ("fall", 1)):
                v = int(self._script_num(kv, key, default) or default)
                p[key] = min(max(v, 1), 100)
            self.probes[name] = p
            self.note(s, f"translated to [vrrpd.probe.{name}]: {'an ICMP' if chk.kind == 'icmp' else 'a TCP'} probe of {chk.target} pinned to "
                      f"{iface} via {gateway} (the route at {route.file}:{route.line}); vrrpd sends it, the script "
                      "is not run", f"vrrp_script {name}")
        return name

    def _script_num(self, kv: dict, key: str, default):
        c = kv.get(key)
        try:
            return float(c.args[0]) if c and c.args else default
        except ValueError:
            return default

    def _gateway(self, chk: Check) -> tuple[str, str, Stmt] | None:
        for dest, gw, dev, r in self.routes:
            if gw is None or (chk.interface and dev != chk.interface) or not (chk.interface or dev):
                continue
            try:
                net = ipaddress.IPv4Network("0.0.0.0/0" if dest == "default" else dest, strict=False)
                ipaddress.IPv4Address(gw)
            except ValueError:
                continue
            if chk.target in net:
                return chk.interface or dev, gw, r
        return None

    def _failover(self) -> None:
        if not self.ct_owners:
            return
        names = []
        for kind, name, c in self.ct_owners:
            if kind == "instance" and self.instances[name].group:
                name = self.instances[name].group
            elif kind == "group" and not (name in self.groups and self.groups[name].members) or kind == "instance" and not self.instances[name].ok:
                continue
            if name not in names:
                names.append(name)
        if not names:
            return
        self.failover = names[0]
        if len(names) > 1:
            kind, name, c = self.ct_owners[0]
            self.note(c, f"conntrackd is driven by {', '.join(names)}: ctsync follows one sync group, {names[0]}; "
                      "put the instances in one vrrp_sync_group")

    # -- output ---------------------------------------------------------------------
    def _write(self) -> None:
        for inst in self.instances.values():
            if not inst.ok:
                continue
            k = inst.keys
            k.setdefault("priority", 100)
            k.setdefault("advert_interval", 1)
            k.setdefault("preempt", True)
            if "use_vmac" not in k:
                k["use_vmac"] = False
                inst.comments.setdefault("use_vmac", []).append(
                    "keepalived's default: the VIPs on the interface itself, with its own MAC (vrrpd's default, "
                    "true, uses the virtual MAC 00:00:5e:00:01:VRID on a macvlan)")
            if k.get("preempt") is False and "preempt_delay" in k:
                del k["preempt_delay"]
            path = ("vrrpd", "instance", inst.name)
            for key in INSTANCE_KEY_ORDER + tuple(x for x in k if x not in INSTANCE_KEY_ORDER):
                if key in k:
                    self.conv.put(path, key, k[key], inst.comments.get(key))
            if inst.head:
                self.conv.comment(path, inst.head)
        for g in self.groups.values():
            if g.members:
                self.conv.put(("vrrpd", "sync_group", g.name), "instances", g.members)
        for name, p in self.probes.items():
            for key, v in p.items():
                self.conv.put(("vrrpd", "probe", name), key, v)
