"""RFC 3768 §6 / RFC 5798 §6 state machine for one virtual router, sans-IO.

Inputs are method calls carrying `now` (seconds, any monotonic origin); outputs are
lists of actions for the driver to carry out, in order. `next_deadline()` tells the
driver when to call `handle_timer()`. Nothing here reads a clock, sleeps, or touches a
socket, so the whole protocol runs in virtual time in the tests.

Beyond the RFC (each a documented choice, see docs/vrrpd.md):
- FAULT state (interface down, sync-group member in fault), as keepalived has.
- A master that hears a lower-priority advert answers at once with an advert and a
  GARP burst (at most once per advert interval), so a healed split brain converges in
  one round trip instead of one advert interval.
- Address-list mismatches are counted and accepted unless `strict`.
- `preempt_delay`: a backup that hears a lower-priority master waits that long, from
  the first such advert, before preempting; meanwhile that master's adverts keep it
  alive, so its death is still noticed after Master_Down_Interval.
- Make-before-break preemption (`preempt_gate`): a backup about to preempt a *live*
  lower-priority master first says PreparePreempt and stays backup (the master keeps
  forwarding) until `preempt_ready()` or `preempt_prepare_timeout`; ctsync commits the
  master's table meanwhile, so the advert that preempts goes out with the state already
  in our kernel. The lower master's adverts keep it alive meanwhile; if they stop, or a
  higher one is heard, the preparation ends (PreemptCancelled for the latter).

VRRPv2 and VRRPv3 share the state machine; `params.version` changes three things:
- v2 drops adverts whose interval differs from ours and authenticates (RFC 3768 §7.1);
  v3 has no authentication, and its backups learn Master_Adver_Interval from the
  master's adverts (RFC 5798 §6.4.2/§6.4.3), so a different interval is only noticed
  and counted (RFC 9568 §7.1 asks for a log line).
- Skew_Time: (256 - Priority) / 256 s in v2; ((256 - Priority) * Master_Adver_Interval)
  / 256 in v3 (RFC 5798 §6.1), so Master_Down_Interval scales with the learned interval.
- Accept_Mode (RFC 5798 §6.1): whether a master that does not own the addresses
  accepts packets addressed to them; it rides on `AddAddresses(accept=...)`.
The address family is the virtual addresses'; nothing here depends on it but words.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from .packet import AUTH_SIMPLE, Advert, Reason, Rejected
from .packet_v3 import MAX_ADVER_INT, AdvertV3
from .status import Counters

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unscoped(addr: IPAddress) -> IPAddress:
    return ipaddress.IPv6Address(addr.packed) if addr.version == 6 and addr.scope_id else addr


class State(str, Enum):
    INIT = "initialize"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"


@dataclass(frozen=True)
class RouterParams:
    """What the state machine needs from an instance's configuration."""

    name: str
    vrid: int
    priority: int
    virtual_addresses: tuple[IPAddress, ...]
    # Seconds. v2: whole seconds, 1 to 255. v3: hundredths, 0.01 to 40.95 (sent in centiseconds).
    advert_interval: float = 1
    preempt: bool = True
    preempt_delay: float = 0.0
    auth_type: int = 0  # v2 only
    auth_data: bytes = bytes(8)  # v2 only
    strict: bool = False
    garp_count: int = 5  # announcements per address per burst: gratuitous ARPs, or NAs for IPv6
    garp_repeat_delay: float = 5.0
    # While master, one more announcement per address every this many seconds (0: off),
    # as keepalived's garp_master_refresh: refreshes caches and switches that forget.
    garp_refresh: float = 0.0
    preempt_prepare_timeout: float = 10.0  # the longest a gated preemption waits for preempt_ready()
    version: int = 2  # 2: RFC 3768; 3: RFC 5798
    # RFC 5798 Accept_Mode; None: the version's default (v2 True, what vrrpd always did;
    # v3 False, as RFC 5798 §6.1 says). An address owner always accepts.
    accept_mode: bool | None = None

    def __post_init__(self) -> None:
        # Addresses from the wire carry no IPv6 scope; a configured "fe80::1%eth0" would
        # never compare equal to them.
        object.__setattr__(self, "virtual_addresses", tuple(_unscoped(a) for a in self.virtual_addresses))
        if self.version not in (2, 3):
            raise ValueError(f"VRRP version {self.version}: 2 or 3")
        families = {a.version for a in self.virtual_addresses}
        if len(families) > 1:
            raise ValueError("a virtual router has IPv4 or IPv6 addresses, not both (RFC 5798 §5.2.9)")
        if self.version == 2 and families == {6}:
            raise ValueError("VRRPv2 carries IPv4 addresses only; IPv6 needs version 3")
        if self.version == 2:
            if self.advert_interval != int(self.advert_interval) or not 1 <= self.advert_interval <= 255:
                raise ValueError(f"VRRPv2 advert interval {self.advert_interval}: whole seconds, 1 to 255")
        else:
            cs = self.advert_interval * 100
            if abs(cs - round(cs)) > 1e-6 or not 1 <= round(cs) <= MAX_ADVER_INT:
                raise ValueError(f"VRRPv3 advert interval {self.advert_interval}: 0.01 to 40.95 s in steps of 0.01")

    @property
    def family(self) -> int:
        """4 or 6, from the virtual addresses (4 when there are none yet)."""
        return self.virtual_addresses[0].version if self.virtual_addresses else 4

    @property
    def advert_interval_cs(self) -> int:
        """The advert interval in centiseconds, as a VRRPv3 advert carries it."""
        return round(self.advert_interval * 100)

    @property
    def accept(self) -> bool:
        """Whether this router, as master, accepts packets addressed to the virtual
        addresses (RFC 5798 §6.4.3): when it owns them (priority 255) or in Accept_Mode."""
        mode = self.version == 2 if self.accept_mode is None else self.accept_mode
        return mode or self.priority == 255


# ---- actions -------------------------------------------------------------------------


@dataclass(frozen=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True)
class AddAddresses:
    """Add the virtual addresses. With accept=False (a non-owner master without
    Accept_Mode, RFC 5798 §6.4.3) the box must not deliver packets addressed to them
    locally, except Neighbour Discovery (it still answers NS for them, §6.4.3 (625))."""

    accept: bool = True


@dataclass(frozen=True)
class RemoveAddresses:
    pass


@dataclass(frozen=True)
class SendGarp:
    count: int


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    reason: str
    # a move to master that the subscribers prepared (make-before-break preemption): the
    # driver sends its advert only once the VIPs' side is ready (vrrpd/prepared_move.py)
    prepared: bool = False


@dataclass(frozen=True)
class Dropped:
    """A received advert failed an instance-level check (already counted)."""

    reason: Reason
    detail: str


@dataclass(frozen=True)
class Noticed:
    """An advert was accepted but something about it deserves a (rate-limited) log line."""

    reason: Reason
    detail: str


@dataclass(frozen=True)
class PreparePreempt:
    """We are about to preempt a live lower-priority master: subscribers may prepare
    (commit its table) first; answer with ``preempt_ready()``."""

    reason: str


@dataclass(frozen=True)
class PreemptCancelled:
    """A PreparePreempt will not be followed by our taking over (a higher or equal master
    was heard, or our priority dropped): what was prepared may be undone."""

    reason: str


Action = (SendAdvert | AddAddresses | RemoveAddresses | SendGarp | Transition | Dropped | Noticed | PreparePreempt
          | PreemptCancelled)


def skew_time(priority: int) -> float:
    """VRRPv2 (RFC 3768 §6.1): independent of the advert interval."""
    return (256 - priority) / 256


def master_down_interval(advert_interval: float, priority: int) -> float:
    """VRRPv2 (RFC 3768 §6.1)."""
    return 3 * advert_interval + skew_time(priority)


def skew_time_v3(priority: int, master_adver_interval: float) -> float:
    """VRRPv3 (RFC 5798 §6.1), in seconds. Not rounded to centiseconds (FRR rounds down,
    keepalived keeps microseconds): the difference is below 0.01 s."""
    return (256 - priority) * master_adver_interval / 256


def master_down_interval_v3(master_adver_interval: float, priority: int) -> float:
    """VRRPv3 (RFC 5798 §6.1): from the learned Master_Adver_Interval."""
    return 3 * master_adver_interval + skew_time_v3(priority, master_adver_interval)


@dataclass
class VirtualRouter:
    params: RouterParams
    # The advert source: the interface's primary IPv4 address, or for IPv6 its link-local
    # address (RFC 5798 §5.1.2.1). Also what equal priorities are compared by.
    primary_ip: IPAddress | None = None
    state: State = State.INIT
    effective_priority: int = 0
    master_ip: IPAddress | None = None
    master_priority: int | None = None
    master_reason: str = "not started"
    # RFC 5798 Master_Adver_Interval, seconds: ours until a master's advert says otherwise
    # (always ours in v2, which drops adverts with another interval).
    master_adver_interval: float = 0.0
    last_event: str = "created"
    counters: Counters = field(default_factory=Counters)
    fault_reasons: dict[str, str] = field(default_factory=dict)
    started: bool = False
    # timers (absolute times, None when not armed)
    adver_at: float | None = None
    master_down_at: float | None = None
    garp_repeat_at: float | None = None
    garp_refresh_at: float | None = None
    # preempt_delay bookkeeping: when we first heard the current lower-priority master
    lower_seen_at: float | None = None
    # why the master-down timer was last set, to explain a takeover
    _down_cause: str = "startup"
    _last_answer_at: float | None = None
    _last_prio0_answer_at: float | None = None
    # make-before-break preemption: on (the driver sets it) a preemption of a live lower
    # master waits for preempt_ready(); pending since, and when it stops waiting
    preempt_gate: bool = False
    preempt_pending_since: float | None = None
    preempt_give_up_at: float | None = None
    _lower_heard_at: float | None = None  # last advert of a lower-priority master we will preempt

    def __post_init__(self) -> None:
        if not self.effective_priority:
            self.effective_priority = self.params.priority
        if not self.master_adver_interval:
            self.master_adver_interval = self.params.advert_interval

    # ---- derived values --------------------------------------------------------------

    @property
    def owner(self) -> bool:
        return self.effective_priority == 255

    @property
    def v3(self) -> bool:
        return self.params.version == 3

    @property
    def skew_time(self) -> float:
        if self.v3:
            return skew_time_v3(self.effective_priority, self.master_adver_interval)
        return skew_time(self.effective_priority)

    @property
    def master_down_interval(self) -> float:
        if self.v3:
            return master_down_interval_v3(self.master_adver_interval, self.effective_priority)
        return master_down_interval(self.params.advert_interval, self.effective_priority)

    def advert(self, priority: int) -> Advert | AdvertV3:
        """What a SendAdvert(priority) puts on the wire (the driver adds the source and
        encodes it with the instance's codec). A v3 master sends its own interval."""
        p = self.params
        if self.v3:
            return AdvertV3(p.vrid, priority, p.virtual_addresses, p.advert_interval_cs)
        return Advert(p.vrid, priority, p.virtual_addresses, p.advert_interval, p.auth_type, p.auth_data)

    def next_deadline(self) -> float | None:
        timers = [t for t in (self.adver_at, self.master_down_at, self.garp_repeat_at, self.garp_refresh_at,
                              self.preempt_give_up_at) if t is not None]
        return min(timers) if timers else None

    # ---- events ----------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Startup event (§6.4.1). Enters FAULT instead while a fault reason is set."""
        self.started = True
        if self.state != State.INIT:
            return []
        return self._startup(now)

    def _no_address_reason(self) -> str:
        return "no IPv4 address on the interface" if self.params.family == 4 else "no IPv6 link-local address on the interface"

    def _startup(self, now: float) -> list[Action]:
        if self.primary_ip is None:
            self.fault_reasons.setdefault("no-address", self._no_address_reason())
        if self.fault_reasons:
            return self._to_fault(now)
        self.master_adver_interval = self.params.advert_interval  # RFC 5798 §6.4.1
        if self.owner:
            return self._to_master(now, "priority 255: address owner")
        self._to_backup_timers(now, self.master_down_interval, "startup")
        self.master_reason = "waiting for adverts"
        return [self._transition(State.BACKUP, now, "startup: waiting Master_Down_Interval for a master")]

    def shutdown(self, now: float) -> list[Action]:
        """Shutdown event: a master says goodbye with priority 0 (§6.4.3)."""
        self.started = False
        actions: list[Action] = []
        if self.state == State.MASTER:
            actions += [self._advert(0), RemoveAddresses()]
            self.counters.released_master += 1
        self._clear_timers()
        if self.state != State.INIT:
            actions.append(self._transition(State.INIT, now, "shutdown"))
        return actions

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state == State.MASTER:
            if self.adver_at is not None and now >= self.adver_at:
                actions.append(self._advert(self.effective_priority))
                # The next one counts from when this one was due, not from when it went
                # out: a driver that runs a little late (a busy process, 0.01 s adverts)
                # keeps the cadence instead of stretching every interval by its latency.
                # One that is a whole interval late starts afresh (never a burst).
                nxt = self.adver_at + self.params.advert_interval
                self.adver_at = nxt if nxt > now else now + self.params.advert_interval
            if self.garp_repeat_at is not None and now >= self.garp_repeat_at:
                self.garp_repeat_at = None
                actions.append(SendGarp(self.params.garp_count))
            if self.garp_refresh_at is not None and now >= self.garp_refresh_at:
                self.garp_refresh_at = now + self.params.garp_refresh
                actions.append(SendGarp(1))
        elif self.state == State.BACKUP:
            if self.preempt_pending_since is not None:
                if self.master_down_at is not None and now >= self.master_down_at:
                    actions += self._to_master(now, self._takeover_reason())  # the lower master died meanwhile
                elif self.preempt_give_up_at is not None and now >= self.preempt_give_up_at:
                    waited = now - self.preempt_pending_since
                    actions += self._to_master(now, f"{self._down_cause} (not prepared after {waited:.1f}s)")
            elif self.master_down_at is not None and now >= self.master_down_at:
                if self.preempt_gate and self._preempting_live_master(now):
                    actions += self._prepare_preempt(now)
                else:
                    actions += self._to_master(now, self._takeover_reason())
        return actions

    def preempt_ready(self, now: float) -> list[Action]:
        """The subscribers have prepared a gated preemption: take over now."""
        if self.state != State.BACKUP or self.preempt_pending_since is None:
            return []
        waited = now - self.preempt_pending_since
        return self._to_master(now, f"{self._down_cause} (prepared in {waited:.3f}s)", prepared=True)

    def _preempting_live_master(self, now: float) -> bool:
        """Is this expiry a preemption of a master that is still advertising (not a
        dead master's Master_Down)?"""
        return self._lower_heard_at is not None and now - self._lower_heard_at < self.master_down_interval

    def _prepare_preempt(self, now: float) -> list[Action]:
        self.preempt_pending_since = now
        self.preempt_give_up_at = now + self.params.preempt_prepare_timeout
        # The lower master is alive: its adverts (or their absence) still count.
        self.master_down_at = self._lower_heard_at + self.master_down_interval
        self.last_event = f"preparing to preempt: {self._down_cause}"
        return [PreparePreempt(self._down_cause)]

    def _cancel_preempt(self, why: str) -> list[Action]:
        if self.preempt_pending_since is None:
            return []
        self.preempt_pending_since = self.preempt_give_up_at = None
        self.last_event = f"preemption cancelled: {why}"
        return [PreemptCancelled(why)]

    def receive(self, adv: Advert | AdvertV3, now: float) -> list[Action]:
        """An advert that passed the packet-level checks and carries our VRID."""
        if adv.src is not None and self.primary_ip is not None and adv.src.packed == self.primary_ip.packed:
            # Our own advert looped back (compared without any IPv6 scope), or someone
            # using our address: never an event, but counted.
            return [self._drop(Reason.OWN_ADDRESS, f"advert with our own address {adv.src} as source")]
        findings = self.check(adv)
        if findings and isinstance(findings[0], Dropped):
            return findings
        actions: list[Action] = list(findings)
        self.counters.adverts_rx += 1
        if adv.priority == 0:
            self.counters.prio0_rx += 1
        if self.state == State.BACKUP:
            actions += self._backup_receive(adv, now)
        elif self.state == State.MASTER:
            actions += self._master_receive(adv, now)
        return actions

    def check(self, adv: Advert | AdvertV3) -> list[Dropped | Noticed]:
        """Instance-level checks of §7.1 after the VRID match, in RFC order: one Dropped
        (the packet is discarded; counted once, under its reason) or what was noticed
        about an accepted one (each counted)."""
        p = self.params
        if adv.version != p.version:
            # The driver parses with our version's codec, so only a wiring bug gets here.
            return [self._drop(Reason.VERSION, f"VRRPv{adv.version} advert from {adv.src}, configured version {p.version}")]
        if self.owner:
            return [self._drop(Reason.OWNER, f"address owner ignores advert from {adv.src}")]
        if not self.v3:
            if adv.auth_type != p.auth_type:
                return [self._drop(Reason.AUTH_TYPE, f"auth type {adv.auth_type} from {adv.src}, configured {p.auth_type}")]
            if p.auth_type == AUTH_SIMPLE and adv.auth_data != p.auth_data:
                return [self._drop(Reason.AUTH, f"wrong password from {adv.src}")]
        mismatch = set(adv.addresses) != set(p.virtual_addresses)
        detail = (
            f"{adv.src} advertises {', '.join(map(str, adv.addresses)) or 'no address'}, "
            f"configured {', '.join(map(str, p.virtual_addresses))}"
        )
        if mismatch and p.strict and adv.priority != 255:
            self.counters.address_list_errors += 1
            return [Dropped(Reason.ADDRESS_LIST, detail + " (strict: dropped)")]
        found: list[Dropped | Noticed] = []
        if not self.v3:
            if adv.advert_interval != p.advert_interval:
                # Dropped for the interval: counted under that reason only, one count per packet.
                return [self._drop(
                    Reason.INTERVAL, f"advert interval {adv.advert_interval}s from {adv.src}, configured {p.advert_interval}s"
                )]
        elif adv.max_adver_int == 0:
            # Would make Master_Down_Interval zero: every backup would take over at once.
            return [self._drop(Reason.INTERVAL, f"max advert interval 0 from {adv.src}")]
        elif adv.max_adver_int != p.advert_interval_cs:
            # RFC 9568 §7.1: log it; the backups learn the master's interval, so no harm.
            self.counters.interval_errors += 1
            found.append(Noticed(
                Reason.INTERVAL,
                f"max advert interval {adv.interval:g}s from {adv.src}, configured {p.advert_interval:g}s (accepted)",
            ))
        if mismatch:
            self.counters.address_list_errors += 1
            found.insert(0, Noticed(Reason.ADDRESS_LIST, detail + " (accepted)"))
        return found

    def count_rejected(self, rej: Rejected) -> None:
        """Count a packet-level rejection attributed to this instance."""
        self.counters.bump(rej.reason.value)

    def set_primary_ip(self, ip: IPAddress | None, now: float) -> list[Action]:
        """The advert source changed: IPv4 primary address, or IPv6 link-local address."""
        self.primary_ip = ip
        return self.set_fault("no-address", None if ip else self._no_address_reason(), now)

    def set_fault(self, key: str, reason: str | None, now: float) -> list[Action]:
        """Set (reason given) or clear (None) one fault cause, e.g. 'link', 'group'."""
        if reason is None:
            if self.fault_reasons.pop(key, None) is None:
                return []
            if self.fault_reasons or self.state != State.FAULT or not self.started:
                return []
            self.last_event = f"fault cleared ({key})"
            return self._startup(now)  # leave FAULT the way Initialize does at startup
        new = key not in self.fault_reasons
        self.fault_reasons[key] = reason
        if not new or not self.started or self.state == State.FAULT:
            return []
        return self._to_fault(now)

    def set_effective_priority(self, priority: int, now: float) -> list[Action]:
        """Tracking changed our priority. A master tells the others at once."""
        # Only a configured owner may advertise 255; weights never make one.
        priority = max(1, min(255 if self.params.priority == 255 else 254, priority))
        if priority == self.effective_priority:
            return []
        old, self.effective_priority = self.effective_priority, priority
        self.last_event = f"effective priority {old} -> {priority}"
        if self.state == State.MASTER:
            self.adver_at = now + self.params.advert_interval
            return [self._advert(priority)]
        return []

    def force(self, target: State, now: float, reason: str) -> list[Action]:
        """Sync group: move with the group. Only BACKUP<->MASTER moves are forced."""
        if target == State.MASTER and self.state == State.BACKUP:
            return self._to_master(now, reason)
        if target == State.BACKUP and self.state == State.MASTER:
            return self._to_backup(now, reason)
        return []

    # ---- state logic ----------------------------------------------------------------

    def _backup_receive(self, adv: Advert, now: float) -> list[Action]:
        if adv.priority == 0:
            if self.master_ip is None or adv.src is None or adv.src.packed != self.master_ip.packed:
                # Only the master we know can leave: one spoofed packet would otherwise make
                # us take over after Skew_Time (VIPs, GARPs, a commit) and fall back.
                return [self._drop(Reason.PRIO0_NOT_MASTER, f"priority 0 from {adv.src}, which is not the master "
                                                            f"({self.master_ip or 'none heard yet'}): ignored")]
            # The master is leaving: take over after Skew_Time only (§6.4.2).
            self.master_down_at = now + self.skew_time
            self._down_cause = f"master {adv.src} left (priority 0)"
            self.last_event = f"priority 0 from {adv.src}"
            return []
        if not self.params.preempt or adv.priority >= self.effective_priority:
            self._learn_interval(adv)
            self.master_down_at = now + self.master_down_interval
            self._down_cause = f"no advert from master {adv.src} for Master_Down_Interval"
            self.lower_seen_at = None
            self._lower_heard_at = None
            self._note_master(adv)
            return self._cancel_preempt(f"{adv.src} advertises priority {adv.priority} (ours {self.effective_priority})")
        # Lower priority and we preempt: the advert is discarded, the timer runs on.
        self._lower_heard_at = now
        self._down_cause = f"preempting lower-priority master {adv.src} ({adv.priority} < {self.effective_priority})"
        if self.preempt_pending_since is not None:
            self.master_down_at = now + self.master_down_interval  # still alive while we prepare
            self._note_master(adv)
            return []
        if self.params.preempt_delay > 0:
            # While we wait, that master's adverts are what keep it alive: time it by its
            # interval (RFC 5798 would discard the advert; keepalived learns it too).
            self._learn_interval(adv)
            if self.lower_seen_at is None:
                self.lower_seen_at = now
            preempt_at = self.lower_seen_at + self.params.preempt_delay
            # Until preempt_at the lower master's adverts keep it alive (as keepalived
            # does): if it dies meanwhile we take over Master_Down_Interval after its
            # last advert, instead of leaving the segment masterless until preempt_at.
            keep = min(preempt_at, now + self.master_down_interval)
            if self.master_down_at is None or self.master_down_at < keep:
                self.master_down_at = keep
                if keep < preempt_at:
                    self._down_cause = f"no advert from lower-priority master {adv.src} for Master_Down_Interval"
        self._note_master(adv)
        return []

    def _master_receive(self, adv: Advert, now: float) -> list[Action]:
        if adv.priority == 0:
            # Another master left; make sure the backups hear us at once (§6.4.3), but at
            # most once per advert interval: a flood of them must not make us flood.
            if self._last_prio0_answer_at is not None and now - self._last_prio0_answer_at < self.params.advert_interval:
                self.counters.prio0_answers_limited += 1
                return []
            self._last_prio0_answer_at = now
            self.adver_at = now + self.params.advert_interval
            return [self._advert(self.effective_priority)]
        higher = adv.priority > self.effective_priority or (
            adv.priority == self.effective_priority
            and self.primary_ip is not None
            and adv.src is not None
            and int(adv.src) > int(self.primary_ip)
        )
        if higher:
            why = (
                f"{adv.src} has higher priority {adv.priority} > {self.effective_priority}"
                if adv.priority != self.effective_priority
                else f"{adv.src} has equal priority {adv.priority} and a higher IP"
            )
            self._note_master(adv)
            self._learn_interval(adv)  # RFC 5798 §6.4.3 (745)
            return self._to_backup(now, why)
        # A lower-priority master (a healed split brain, a restarted peer): answer now.
        if self._last_answer_at is not None and now - self._last_answer_at < self.params.advert_interval:
            return []
        self._last_answer_at = now
        self.adver_at = now + self.params.advert_interval
        self.last_event = f"answered lower-priority advert from {adv.src} ({adv.priority})"
        return [self._advert(self.effective_priority), SendGarp(self.params.garp_count)]

    def _learn_interval(self, adv: Advert | AdvertV3) -> None:
        """RFC 5798: Master_Adver_Interval := the advert's; Skew_Time and
        Master_Down_Interval follow (they are computed from it). v2 adverts carry ours."""
        if self.v3:
            self.master_adver_interval = adv.interval

    def _note_master(self, adv: Advert | AdvertV3) -> None:
        self.master_ip = adv.src
        self.master_priority = adv.priority
        if self.state == State.BACKUP:
            self.master_reason = f"{adv.src} is master with priority {adv.priority} (ours {self.effective_priority})"

    def _takeover_reason(self) -> str:
        return self._down_cause if self._down_cause != "startup" else "no master heard within Master_Down_Interval of startup"

    def _to_master(self, now: float, reason: str, prepared: bool = False) -> list[Action]:
        self._clear_timers()
        self.adver_at = now + self.params.advert_interval
        self.master_adver_interval = self.params.advert_interval  # the master's is ours now
        if self.params.garp_repeat_delay > 0:
            self.garp_repeat_at = now + self.params.garp_repeat_delay
        if self.params.garp_refresh > 0:
            self.garp_refresh_at = now + self.params.garp_refresh
        self.master_ip = self.primary_ip
        self.master_priority = self.effective_priority
        self.master_reason = reason
        self.lower_seen_at = None
        self.counters.became_master += 1
        t = self._transition(State.MASTER, now, reason, prepared)
        return [t, self._advert(self.effective_priority), AddAddresses(self.params.accept), SendGarp(self.params.garp_count)]

    def _to_backup(self, now: float, reason: str) -> list[Action]:
        was_master = self.state == State.MASTER
        self._last_answer_at = None
        self._to_backup_timers(now, self.master_down_interval, "no advert from the new master for Master_Down_Interval")
        if self.master_ip == self.primary_ip:
            self.master_ip = None
        self.master_reason = reason
        actions: list[Action] = [self._transition(State.BACKUP, now, reason)]
        if was_master:
            self.counters.released_master += 1
            actions.append(RemoveAddresses())
        return actions

    def _to_backup_timers(self, now: float, delay: float, cause: str) -> None:
        self._clear_timers()
        self.master_down_at = now + delay
        self._down_cause = cause
        self.lower_seen_at = None
        self._lower_heard_at = None

    def _to_fault(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state == State.MASTER:
            # Hand over quickly if we still can send: peers wait Skew_Time, not MDI.
            actions += [self._advert(0), RemoveAddresses()]
            self.counters.released_master += 1
        self._clear_timers()
        self.master_ip = None
        reason = "; ".join(self.fault_reasons.values())
        self.master_reason = f"fault: {reason}"
        actions.insert(0, self._transition(State.FAULT, now, reason))
        return actions

    def _clear_timers(self) -> None:
        self.adver_at = self.master_down_at = self.garp_repeat_at = self.garp_refresh_at = None
        self.preempt_pending_since = self.preempt_give_up_at = None

    def _transition(self, new: State, now: float, reason: str, prepared: bool = False) -> Transition:
        old, self.state = self.state, new
        self.last_event = f"{old.value} -> {new.value}: {reason}"
        return Transition(old, new, reason, prepared)

    def _advert(self, priority: int) -> SendAdvert:
        self.counters.adverts_tx += 1
        if priority == 0:
            self.counters.prio0_tx += 1
        return SendAdvert(priority)

    def _drop(self, reason: Reason, detail: str) -> Dropped:
        self.counters.bump(reason.value)
        return Dropped(reason, detail)
