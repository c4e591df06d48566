"""The fault injector of the HA pair soak (:mod:`halab.soak`): what can go wrong, drawn
from a seeded random generator.

Each kind of fault is one declarative :class:`FaultKind` record in :data:`KINDS`: how its
parameters are drawn (which box, how long), how it is applied, how it is healed, and what
"settled" means for it beyond the pair's own invariants (which :mod:`halab.soak` checks
after every fault: one master per VRID, the backup in sync, every connection alive, ...).

====================  ==========================================================================
``kill-vrrpd``        SIGKILL vrrpd on a box; restarted 1 s later (as systemd's Restart= would)
``kill-ctsync``       SIGKILL ctsync on a box; restarted 1 s later
``link-down``         a box's LAN (eth1) or WAN (eth0) link down for 3-6 s, then up: the other
                      box takes over, and back, as the priorities say
``sync-impair``       5 % loss, 5 % duplication and 5 % reordering of the sync datagrams, both
                      directions, for 8-15 s (nft drops and ``dup``; reordering by an NFQUEUE
                      that holds packets 20-200 ms: :mod:`halab.impair`, there is no netem);
                      the roles, VIPs and flows must hold throughout
``clock-back``        a box restarts with its clock set back an hour: both daemons SIGKILLed,
                      restarted 1 s later under ``faketime`` (the wall clock only); the box
                      stays behind for the rest of the run (every later restart too)
``sync-garbage``      a flood of junk datagrams (random, or a valid-looking header) to a box's
                      sync port from its peer's sync address; settled once every datagram is
                      counted (malformed or auth_failures) or was dropped by the kernel's
                      receive buffer (Udp RcvbufErrors), so none went unnoticed, and the
                      daemon counted at least one itself; the roles,
                      VIPs and flows must hold throughout
====================  ==========================================================================

:class:`FaultInjector` draws the faults and the pauses between them from
``random.Random(seed)`` alone: the same seed gives the same sequence of faults, boxes and
parameters (the timing of the daemons' reactions still varies from run to run).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .lab import LabError

if TYPE_CHECKING:
    from .soak import Soak

__all__ = ["KINDS", "ROUTERS", "Fault", "FaultInjector", "FaultKind"]

ROUTERS = ("r1", "r2")
SYNC_PORT = 3780  # ctsync's default port (ctsync.config.DEFAULT_PORT)
RESTART_AFTER = 1.0  # a killed daemon comes back this long after (systemd's RestartSec=1)
CLOCK_STEP = 3600  # seconds a box's clock goes back per clock-back fault
REORDER_QUEUE = 3990  # NFQUEUE number of the reorderer (parking's default is 3780)
IMPAIR_PERCENT = 5


@dataclass(frozen=True)
class Fault:
    """One fault as drawn: its kind and parameters (``router``: the box it hits or
    ``"both"``; ``hold``: seconds between applying and healing it)."""

    n: int
    kind: str
    params: dict

    @property
    def router(self) -> str:
        return self.params["router"]

    @property
    def hold(self) -> float:
        return self.params["hold"]

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params.items() if k not in ("router", "hold"))
        return f"#{self.n} {self.kind} on {self.router} (hold {self.hold:.1f}s{', ' + extra if extra else ''})"


@dataclass(frozen=True)
class FaultKind:
    """A kind of fault: ``draw(rng)`` its parameters (with ``router`` and ``hold``),
    ``apply``/``heal`` it to the soak's pair, and ``settled`` what it needs besides the
    pair's invariants (None once there, else what is still awaited). ``ctx`` is one
    fault's scratch dict; what it holds under ``"notes"`` goes into the report."""

    name: str
    what: str
    draw: Callable[[random.Random], dict]
    apply: Callable[[Soak, Fault, dict], None]
    heal: Callable[[Soak, Fault, dict], None]
    settled: Callable[[Soak, Fault, dict], str | None] = lambda soak, fault, ctx: None
    # The pair must ride it out: the roles, the VIPs and the flows hold while it lasts
    # (checked during the hold, not only once it is healed).
    ridden_out: bool = False


def _peer(router: str) -> str:
    return "r2" if router == "r1" else "r1"


# ---- kill a daemon ------------------------------------------------------------------------

def _kill(daemon: str):
    def apply(soak: Soak, f: Fault, ctx: dict) -> None:
        soak.kill(f.router, daemon)

    def heal(soak: Soak, f: Fault, ctx: dict) -> None:
        soak.restart(f.router, daemon)

    return apply, heal


def _draw_kill(rng: random.Random) -> dict:
    return {"router": rng.choice(ROUTERS), "hold": RESTART_AFTER}


# ---- pull a link --------------------------------------------------------------------------

def _draw_link(rng: random.Random) -> dict:
    return {"router": rng.choice(ROUTERS), "link": rng.choice(("eth0", "eth1")),
            "hold": round(rng.uniform(3.0, 6.0), 1)}


def _link_down(soak: Soak, f: Fault, ctx: dict) -> None:
    soak.set_link(f.router, f.params["link"], False)


def _link_up(soak: Soak, f: Fault, ctx: dict) -> None:
    soak.set_link(f.router, f.params["link"], True)


# ---- impair the sync link ---------------------------------------------------------------------

def _draw_impair(rng: random.Random) -> dict:
    return {"router": "both", "loss": IMPAIR_PERCENT, "dup": IMPAIR_PERCENT, "reorder": IMPAIR_PERCENT,
            "hold": round(rng.uniform(8.0, 15.0), 1), "seed": rng.randrange(1 << 30)}


def _impair_nft(peer_sync: str, loss: int, dup: int) -> str:
    # Loss at the receiver's ingress (a drop on output would fail the sender's sendto);
    # duplicates made on output, sent straight to the peer.
    return f"""\
table netdev soak_loss {{
    chain in {{
        type filter hook ingress device "sync0" priority 0; policy accept;
        udp dport {SYNC_PORT} numgen random mod 100 < {loss} counter drop
    }}
}}
table ip soak_dup {{
    chain out {{
        type filter hook output priority 0; policy accept;
        oifname "sync0" udp dport {SYNC_PORT} numgen random mod 100 < {dup} counter dup to {peer_sync} device "sync0"
    }}
}}
"""


def _reorder_rule(percent: int) -> list[str]:
    return ["POSTROUTING", "-o", "sync0", "-p", "udp", "--dport", str(SYNC_PORT),
            "-m", "statistic", "--mode", "random", "--probability", f"{percent / 100:.2f}",
            "-j", "NFQUEUE", "--queue-num", str(REORDER_QUEUE), "--queue-bypass"]


def _impair(soak: Soak, f: Fault, ctx: dict) -> None:
    from .hapair import SYNC_ADDRS
    ctx["reorderers"] = {}
    for i, r in enumerate(ROUTERS):
        host = soak.pair.router(r)
        host.run(["nft", "-f", "-"], check=True, input=_impair_nft(SYNC_ADDRS[_peer(r)], f.params["loss"],
                                                                   f.params["dup"]))
        proc = soak.start_helper(r, ["reorder", "--queue", REORDER_QUEUE, "--seed", f.params["seed"] + i],
                                 name="reorder")
        ctx["reorderers"][r] = proc
        host.run(["iptables", "-t", "mangle", "-A", *_reorder_rule(f.params["reorder"])], check=True)


def _counter(host, family: str, table: str) -> int:
    out = host.run(["nft", "list", "table", family, table]).stdout
    return sum(int(x) for x in re.findall(r"counter packets (\d+)", out))


def _unimpair(soak: Soak, f: Fault, ctx: dict) -> None:
    notes = ctx["notes"]
    for r in ROUTERS:
        host = soak.pair.router(r)
        host.run(["iptables", "-t", "mangle", "-D", *_reorder_rule(f.params["reorder"])])
        notes[f"dropped_to_{r}"] = _counter(host, "netdev", "soak_loss")
        notes[f"duplicated_by_{r}"] = _counter(host, "ip", "soak_dup")
        host.run(["nft", "delete", "table", "netdev", "soak_loss"])
        host.run(["nft", "delete", "table", "ip", "soak_dup"])
        proc = ctx["reorderers"].get(r)
        if proc is not None:
            proc.terminate(timeout=5)
            line = [ln for ln in proc.read_log().splitlines() if '"event": "reorder"' in ln]
            notes[f"reordered_by_{r}"] = json.loads(line[-1])["released"] if line else None


# ---- a box restarts with its clock set back -------------------------------------------------

def _draw_clock(rng: random.Random) -> dict:
    return {"router": rng.choice(ROUTERS), "hold": RESTART_AFTER, "back": CLOCK_STEP}


def _box_down(soak: Soak, f: Fault, ctx: dict) -> None:
    soak.kill(f.router, "vrrpd")
    soak.kill(f.router, "ctsync")


def _box_up(soak: Soak, f: Fault, ctx: dict) -> None:
    soak.set_clock_back(f.router, soak.clock_behind[f.router] + f.params["back"])
    soak.restart(f.router, "vrrpd")
    soak.restart(f.router, "ctsync")


def _box_behind(soak: Soak, f: Fault, ctx: dict) -> str | None:
    behind = soak.clock_behind[f.router]
    started = soak.ctsync(f.router).status()["started_at"]
    lag = time.time() - started
    ctx["notes"]["ctsync_clock_behind_s"] = round(lag)
    if abs(lag - behind) > 300:
        return f"{f.router}'s ctsync runs {lag:.0f}s behind, not {behind}s (faketime?)"
    return None


# ---- garbage on the sync port -------------------------------------------------------------

def _draw_garbage(rng: random.Random) -> dict:
    return {"router": rng.choice(ROUTERS), "hold": 0.0, "count": rng.randrange(1500, 4000),
            "rate": 2000, "seed": rng.randrange(1 << 30)}


def _udp_rcvbuf_errors(host) -> int:
    """Udp RcvbufErrors of the namespace (datagrams its sockets' buffers had no room for)."""
    lines = [ln.split() for ln in host.run(["cat", "/proc/net/snmp"], check=True).stdout.splitlines()
             if ln.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["RcvbufErrors"])


def _refused(status: dict) -> int:
    ch = status["channel"]
    return ch["malformed"] + ch["auth_failures"]


def _flood(soak: Soak, f: Fault, ctx: dict) -> None:
    from .hapair import SYNC_ADDRS
    target, sender = f.router, _peer(f.router)
    ctx["before"] = (_refused(soak.ctsync(target).status()), _udp_rcvbuf_errors(soak.pair.router(target)))
    out = soak.run_helper(sender, ["garbage", "--src", SYNC_ADDRS[sender], "--dst", SYNC_ADDRS[target],
                                   "--port", SYNC_PORT, "--device", "sync0", "--count", f.params["count"],
                                   "--rate", f.params["rate"], "--seed", f.params["seed"]])
    ctx["sent"] = out["sent"]
    ctx["notes"].update(sent=out["sent"], send_errors=out["errors"])


def _garbage_counted(soak: Soak, f: Fault, ctx: dict) -> str | None:
    refused0, drops0 = ctx["before"]
    refused = _refused(soak.ctsync(f.router).status()) - refused0
    drops = _udp_rcvbuf_errors(soak.pair.router(f.router)) - drops0
    ctx["notes"].update(counted=refused, kernel_dropped=drops)
    if refused == 0:
        # The kernel's drops alone must not explain the flood away: the daemon itself saw it.
        return f"{f.router}'s ctsync counted none of {ctx['sent']} junk datagrams ({drops} dropped by the kernel)"
    if refused + drops < ctx["sent"]:
        return f"{f.router}'s ctsync counted {refused} of {ctx['sent']} junk datagrams ({drops} dropped by the kernel)"
    return None


def _nothing(soak: Soak, f: Fault, ctx: dict) -> None:
    pass


KINDS: dict[str, FaultKind] = {k.name: k for k in (
    FaultKind("kill-vrrpd", "SIGKILL vrrpd, restart it 1 s later", _draw_kill, *_kill("vrrpd")),
    FaultKind("kill-ctsync", "SIGKILL ctsync, restart it 1 s later", _draw_kill, *_kill("ctsync")),
    FaultKind("link-down", "a LAN or WAN link down for 3-6 s", _draw_link, _link_down, _link_up),
    FaultKind("sync-impair", "5 % loss, duplication and reordering on the sync link for 8-15 s",
              _draw_impair, _impair, _unimpair, ridden_out=True),
    FaultKind("clock-back", "a box restarts (both daemons killed, back 1 s later) with its clock an hour behind",
              _draw_clock, _box_down, _box_up, _box_behind),
    FaultKind("sync-garbage", "a flood of junk datagrams to a box's sync port", _draw_garbage, _flood, _nothing,
              _garbage_counted, ridden_out=True),
)}


@dataclass
class FaultInjector:
    """Draws faults and the pauses between them from ``random.Random(seed)``.

    ``kinds``: the kinds to draw from (default: all of :data:`KINDS`); ``distinct``:
    draw them without replacement (a short run then covers different kinds), starting
    over once all were drawn; ``interval``: the pause between the starts of two faults,
    uniform in (low, high) seconds."""

    seed: int
    kinds: tuple[str, ...] = tuple(KINDS)
    interval: tuple[float, float] = (20.0, 40.0)
    distinct: bool = False
    rng: random.Random = field(init=False)
    _bag: list[str] = field(init=False, default_factory=list)
    _n: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise LabError(f"unknown fault kinds {unknown} (known: {', '.join(KINDS)})")
        self.rng = random.Random(self.seed)

    def next_fault(self) -> Fault:
        if self.distinct:
            if not self._bag:
                self._bag = self.rng.sample(list(self.kinds), len(self.kinds))
            kind = self._bag.pop(0)
        else:
            kind = self.rng.choice(self.kinds)
        self._n += 1
        return Fault(self._n, kind, KINDS[kind].draw(self.rng))

    def next_interval(self) -> float:
        return round(self.rng.uniform(*self.interval), 1)
