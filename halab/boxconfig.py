"""The example box files (``configs/r1.toml``, ``configs/r2.toml``) run in the lab.

The lab's routers are the boxes these files describe (eth0 WAN, eth1 LAN, same
addresses, VRIDs, VIPs and sync group; see :mod:`halab.hapair`).  Only what
cannot be the same in a lab is mapped, and nothing else is touched:

* the control sockets move into the lab's work directory (several labs may run
  at once; ``/run/hapair`` belongs to a real installation);
* the sync link is ``eth2`` on the box and ``sync0`` in the lab;
* optional overrides the demo offers: ``version`` and ``advert_interval`` (every
  instance; VRRPv3 takes hundredths of a second) and ctsync's ``mode``. With adverts
  faster than 1 s, ``preempt_delay`` becomes at least FAST_PREEMPT_DELAY: a router that
  comes back would otherwise preempt (Master_Down_Interval later: 0.18 s at 0.05 s)
  before its ctsync has even subscribed, i.e. without the peer's state (see
  docs/ctsync.md, make-before-break failback).

:func:`lab_box_config` returns the mapped file as a dict plus the list of
changes made (the demo prints it, so the user sees exactly how the lab's
daemons differ from the example files).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from hacommon.config import read_toml

from .ctsync import Ctsync, ctsync_binary
from .lab import Host, Proc
from .vrrp import Vrrpd, toml_dump, vrrpd_binary

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: seconds a returning router waits before preempting, with sub-second adverts (see above)
FAST_PREEMPT_DELAY = 2.0
#: box interface name -> lab interface name
LAB_IFNAMES = {"eth2": "sync0"}


def example_path(router: str) -> Path:
    return CONFIG_DIR / f"{router}.toml"


def lab_box_config(router: str, workdir: str | Path, *, advert_interval: float | None = None,
                   mode: str | None = None, source: Path | None = None,
                   version: int | None = None) -> tuple[dict, list[str]]:
    """The example file of ``router`` mapped to the lab (see the module doc)."""
    src = source or example_path(router)
    cfg = read_toml(src)
    out = copy.deepcopy(cfg)
    changes: list[str] = []
    workdir = Path(workdir)
    v = out["vrrpd"]
    old = v.get("control_socket")
    v["control_socket"] = str(workdir / f"vrrpd-{router}.sock")
    changes.append(f"vrrpd.control_socket {old} -> {v['control_socket']}")
    if version is not None:
        for name, inst in v.get("instance", {}).items():
            if inst.get("version", 2) != version:
                changes.append(f"vrrpd.instance.{name}.version {inst.get('version', 2)} -> {version}")
                inst["version"] = version
    if advert_interval is not None:
        for name, inst in v.get("instance", {}).items():
            if inst.get("advert_interval", 1) != advert_interval:
                changes.append(f"vrrpd.instance.{name}.advert_interval "
                               f"{inst.get('advert_interval', 1)} -> {advert_interval}")
                inst["advert_interval"] = advert_interval
        if advert_interval < 1:
            for name, inst in v.get("instance", {}).items():
                if inst.get("preempt_delay", 0) < FAST_PREEMPT_DELAY:
                    changes.append(f"vrrpd.instance.{name}.preempt_delay {inst.get('preempt_delay', 0)} -> "
                                   f"{FAST_PREEMPT_DELAY:g} (sub-second adverts: ctsync subscribes before a preemption)")
                    inst["preempt_delay"] = FAST_PREEMPT_DELAY
    c = out.get("ctsync")
    if c is not None:
        old = c.get("control_socket")
        c["control_socket"] = str(workdir / f"ctsync-{router}.sock")
        changes.append(f"ctsync.control_socket {old} -> {c['control_socket']}")
        iface = c.get("sync_interface")
        if iface in LAB_IFNAMES:
            c["sync_interface"] = LAB_IFNAMES[iface]
            changes.append(f"ctsync.sync_interface {iface} -> {c['sync_interface']}")
        if mode is not None and c.get("mode", "commit") != mode:
            changes.append(f"ctsync.mode {c.get('mode', 'commit')} -> {mode}")
            c["mode"] = mode
    return out, changes


@dataclass
class BoxDaemons:
    """One router's config file (in the lab's workdir) and how to start its daemons."""

    host: Host
    config: dict
    path: Path
    changes: list[str]

    @property
    def vrrpd_socket(self) -> str:
        return self.config["vrrpd"]["control_socket"]

    @property
    def ctsync_socket(self) -> str:
        return self.config["ctsync"]["control_socket"]

    def start_vrrpd(self, wait: bool = True) -> Vrrpd:
        proc = self.host.start([*vrrpd_binary(), "-c", str(self.path)], name="vrrpd")
        d = Vrrpd(self.host, proc, self.path, self.vrrpd_socket)
        if wait:
            d.wait_ready()
        return d

    def start_ctsync(self, wait: bool = True) -> Ctsync:
        proc: Proc = self.host.start([*ctsync_binary(), "-c", str(self.path)], name="ctsync")
        c = Ctsync(self.host, proc, self.path, self.ctsync_socket)
        if wait:
            c.wait(lambda s: True, timeout=10, what="control socket")
        return c


def write_box_config(host: Host, **kw) -> BoxDaemons:
    """Map ``configs/<host>.toml`` to the lab and write it as ``<workdir>/<host>.toml``."""
    workdir = Path(host.lab.workdir)
    cfg, changes = lab_box_config(host.name, workdir, **kw)
    path = workdir / f"{host.name}.toml"
    path.write_text(f"# configs/{host.name}.toml mapped to the lab by halab.boxconfig:\n"
                    + "".join(f"#   {c}\n" for c in changes) + toml_dump(cfg) + "\n")
    return BoxDaemons(host, cfg, path, changes)
