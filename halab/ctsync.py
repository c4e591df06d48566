"""ctsync in the lab: write its config, start it in a router, read its status."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hacommon.control import request

from .lab import Host, Proc, wait_for
from .vrrp import toml_dump

SYNC_ADDR = {"r1": ("172.16.0.1", "172.16.0.2"), "r2": ("172.16.0.2", "172.16.0.1")}
KEY = "lab-only-shared-secret-0123456789"


def ctsync_binary() -> list[str]:
    script = Path(sys.executable).with_name("ctsync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ctsync"]


@dataclass
class Ctsync:
    host: Host
    proc: Proc
    config_path: Path
    socket: str

    def status(self) -> dict:
        return request(self.socket, "status", timeout=5)["status"]

    def commit(self) -> dict:
        return request(self.socket, "commit", timeout=60)["commit"]

    def wait_commit(self, after: float, timeout: float = 10.0) -> dict:
        """The ``last_commit`` of a commit that ended after epoch time ``after``."""
        st = self.wait(lambda s: s if (s["last_commit"] or {}).get("time", 0) > after else None,
                       timeout, "a commit")
        return st["last_commit"]

    def wait(self, predicate, timeout: float = 10.0, what: str = "ctsync condition"):
        def check():
            try:
                return predicate(self.status())
            except (OSError, ValueError, KeyError):
                return False

        return wait_for(check, timeout=timeout, what=f"{self.host.name}: {what}")


def ctsync_table(router: str, socket: str, vrrpd_socket: str | None, mode: str = "commit",
                 group: str | None = "MAIN-GW", **extra) -> dict:
    local, peer = SYNC_ADDR[router]
    t = {
        "sync_interface": "sync0",
        "local_address": local,
        "peer_address": peer,
        "key": KEY,
        "mode": mode,
        "control_socket": socket,
        # the routers' own addresses (IPv4, and the IPv6 ones of a family=6 pair)
        "ignore_addresses": ["172.16.0.0/30", "10.10.0.2/32", "10.10.0.3/32",
                             "192.168.100.2/32", "192.168.100.3/32",
                             "2001:db8:10::2/128", "2001:db8:10::3/128", "fd00:100::2/128", "fd00:100::3/128"],
    }
    if group:
        t["failover"] = {"vrrp_sync_group": group, "vrrpd_socket": vrrpd_socket}
    t.update(extra)
    return {"ctsync": t}


def start_ctsync(host: Host, mode: str = "commit", vrrpd_socket: str | None = None, group: str | None = "MAIN-GW",
                 name: str = "ctsync", wait: bool = True, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, **extra) -> Ctsync:
    """Start ctsync in a router of the HA pair (only in this lab's namespaces); ``extra``
    keys go into its [ctsync] table, ``env`` into its environment, ``prefix`` before the
    command."""
    workdir = Path(host.lab.workdir)
    sock = str(workdir / f"{name}-{host.name}.sock")
    cfg_path = workdir / f"{name}-{host.name}.toml"
    cfg_path.write_text(toml_dump(ctsync_table(host.name, sock, vrrpd_socket, mode, group, **extra)) + "\n")
    proc = host.start([*(prefix or []), *ctsync_binary(), "-c", str(cfg_path)], name=name, env=env)
    c = Ctsync(host, proc, cfg_path, sock)
    if wait:
        c.wait(lambda s: True, timeout=10, what="control socket")
    return c
