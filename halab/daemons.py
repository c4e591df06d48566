"""Third-party daemons in lab hosts.

keepalived is the reference VRRP implementation: running it in the lab shows
that the lab itself works (multicast adverts cross the bridge, VIPs appear,
failover happens), and gives interop partners for ``vrrpd``. FRR's vrrpd (with the
zebra it needs) is the second VRRPv3 partner.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from .lab import Host, LabError, Proc, wait_for


def start_keepalived(host: Host, conf_text: str, name: str = "keepalived",
                     extra_args: list[str] | tuple[str, ...] = ()) -> Proc:
    """Start keepalived (VRRP only) in ``host`` with config ``conf_text``.

    Everything instance-specific lives in the lab workdir, named
    ``<name>-<host>.*``: the config, and the parent/VRRP/checker/BFD pid
    files (so instances never share the default /run/keepalived*.pid and do
    not mistake each other for an already-running keepalived).

    Flags: ``-n`` stay in the foreground (the Proc is the parent; its VRRP
    child is in the same process group, so ``Proc.kill()`` takes both down,
    like a crashed box); ``-l -D`` detailed log to the console, i.e. into the
    Proc's log file; ``-G`` no syslog; ``--vrrp -B`` only the VRRP subsystem.
    """
    exe = shutil.which("keepalived")
    if exe is None:
        raise LabError("keepalived is not installed")
    lab = host.lab
    lab._check_target(host)
    base = os.path.join(lab.workdir, f"{name}-{host.name}")
    conf = base + ".conf"
    with open(conf, "w") as f:
        f.write(conf_text)
    argv = [exe, "-n", "-l", "-D", "-G", "--vrrp", "-B",
            "-f", conf,
            "-p", base + ".pid",
            "-r", base + ".vrrp.pid",
            "-c", base + ".checkers.pid",
            "-b", base + ".bfd.pid",
            *extra_args]
    return lab.start(host, argv, name=name)


def keepalived_vrrp_conf(*, iface: str, vrid: int, priority: int, vips: list[str],
                         advert_int: int = 1, state: str = "BACKUP",
                         router_id: str = "halab", instance: str = "VI_1",
                         extra: str = "") -> str:
    """A minimal keepalived config for one VRRPv2 instance."""
    vip_lines = "\n".join(f"        {v}" for v in vips)
    return f"""global_defs {{
    router_id {router_id}
}}

vrrp_instance {instance} {{
    state {state}
    interface {iface}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert_int}
    virtual_ipaddress {{
{vip_lines}
    }}
{extra}}}
"""


def keepalived_v3_conf(*, iface: str, vrid: int, priority: int, vips: list[str], advert_int: float,
                       state: str = "BACKUP", router_id: str = "halab", instance: str = "VI_1",
                       extra: str = "") -> str:
    """A minimal keepalived config for one VRRPv3 instance (IPv4 or IPv6 by its VIPs;
    ``advert_int`` may be fractional in VRRPv3)."""
    vip_lines = "\n".join(f"        {v}" for v in vips)
    return f"""global_defs {{
    router_id {router_id}
    vrrp_version 3
}}

vrrp_instance {instance} {{
    state {state}
    interface {iface}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert_int:g}
    virtual_ipaddress {{
{vip_lines}
    }}
{extra}}}
"""


# ---- FRR's vrrpd ---------------------------------------------------------------------

FRR_DIR = "/usr/lib/frr"


@dataclass
class Frr:
    """zebra + vrrpd of FRR in a lab host; ``dir`` holds their config, pid files, the
    zserv socket and the vty sockets (vtysh reaches them with ``--vty_socket``)."""

    host: Host
    dir: str
    zebra: Proc
    vrrpd: Proc

    def vtysh(self, *commands: str) -> str:
        argv = ["vtysh", "--vty_socket", self.dir]
        for c in commands:
            argv += ["-c", c]
        cp = self.host.run(argv, timeout=15)
        if cp.returncode != 0:
            raise LabError(f"vtysh in {self.host.name}: {cp.stderr.strip() or cp.stdout.strip()}")
        return cp.stdout

    def vrrp(self) -> list[dict]:
        """``show vrrp json``: one object per VRID (keys v4, v6 with status, ...)."""
        import json
        return json.loads(self.vtysh("show vrrp json") or "[]")

    def status(self, vrid: int, family: int) -> str | None:
        """'Master', 'Backup', 'Initialize' of the virtual router (None if unknown)."""
        for vr in self.vrrp():
            if vr.get("vrid") == vrid:
                return (vr.get(f"v{family}") or {}).get("status")
        return None

    def kill(self) -> None:
        """Hard failure: both daemons SIGKILLed."""
        for p in (self.vrrpd, self.zebra):
            p.kill()

    def procs(self) -> list[Proc]:
        return [self.zebra, self.vrrpd]


def frr_available() -> bool:
    return all(os.access(os.path.join(FRR_DIR, d), os.X_OK) for d in ("zebra", "vrrpd")) and bool(shutil.which("vtysh"))


def frr_macvlan(host: Host, iface: str, vrid: int, family: int, vips: list[str], name: str | None = None) -> str:
    """The macvlan FRR's vrrpd needs (it does not create one, docs/user/vrrp.rst): the
    virtual MAC, bridge mode, a random link-local address (IPv6 adverts leave from it),
    the VIPs on it (without DAD); FRR puts it in protodown while backup."""
    name = name or f"vrrp{family}-{vrid}"
    mac = f"00:00:5e:00:0{1 if family == 4 else 2}:{vrid:02x}"
    host.ip("link", "add", name, "link", iface, "type", "macvlan", "mode", "bridge")
    host.ip("link", "set", "dev", name, "address", mac, "addrgenmode", "random")
    if family == 6:
        host.sysctl(f"net.ipv6.conf.{name}.accept_dad", 0)
    for v in vips:
        host.ip("addr", "add", v, "dev", name, *(("nodad",) if family == 6 else ()))
    host.ip("link", "set", "dev", name, "up")
    return name


def frr_vrrp_conf(*, iface: str, vrid: int, priority: int, vips: list[str], interval_ms: int,
                  preempt: bool = True) -> str:
    """vrrpd.conf for one VRRPv3 virtual router (IPv4 or IPv6 by its VIPs, bare addresses)."""
    lines = ["log stdout debugging", f"interface {iface}", f" vrrp {vrid} version 3", f" vrrp {vrid} priority {priority}",
             f" vrrp {vrid} advertisement-interval {interval_ms}"]
    if not preempt:
        lines.append(f" no vrrp {vrid} preempt")
    for v in vips:
        ip = v.split("/")[0]
        lines.append(f" vrrp {vrid} {'ipv6' if ':' in ip else 'ip'} {ip}")
    return "\n".join(lines) + "\n!\n"


def start_frr(host: Host, vrrpd_conf: str, name: str = "frr", timeout: float = 15.0) -> Frr:
    """Start zebra and FRR's vrrpd in ``host`` with their own pathspace in the lab's
    workdir (config, pid files, zserv and vty sockets), as the frr user the packages
    run them as; waits until vtysh answers."""
    if not frr_available():
        raise LabError("FRR (zebra, vrrpd, vtysh) is not installed (apt-get install frr)")
    lab = host.lab
    lab._check_target(host)
    os.chmod(lab.workdir, 0o711)  # the frr user must reach its directory inside
    d = os.path.join(lab.workdir, f"{name}-{host.name}")
    os.makedirs(d, exist_ok=True)
    shutil.chown(d, "frr", "frr")
    with open(os.path.join(d, "zebra.conf"), "w") as f:
        f.write(f"hostname {host.name}\nlog stdout informational\n")
    with open(os.path.join(d, "vrrpd.conf"), "w") as f:
        f.write(vrrpd_conf)
    for fn in ("zebra.conf", "vrrpd.conf"):
        shutil.chown(os.path.join(d, fn), "frr", "frr")

    def argv(daemon: str) -> list[str]:
        return [os.path.join(FRR_DIR, daemon), "-f", os.path.join(d, f"{daemon}.conf"), "-i",
                os.path.join(d, f"{daemon}.pid"), "-z", os.path.join(d, "zserv.api"), "--vty_socket", d,
                "-A", "127.0.0.1", "-P", "0", "--log", "stdout"]

    zebra = lab.start(host, argv("zebra"), name=f"{name}-zebra")
    wait_for(lambda: os.path.exists(os.path.join(d, "zserv.api")) or not zebra.alive(), timeout=timeout,
             interval=0.05, what=f"zebra in {host.name}")
    if not zebra.alive():
        raise LabError(f"zebra in {host.name} exited: {zebra.read_log()[-1500:]}")
    vrrpd = lab.start(host, argv("vrrpd"), name=f"{name}-vrrpd")
    frr = Frr(host, d, zebra, vrrpd)

    def answers() -> bool:
        if not vrrpd.alive():
            raise LabError(f"FRR vrrpd in {host.name} exited: {vrrpd.read_log()[-1500:]}")
        try:
            frr.vrrp()
            return True
        except (LabError, ValueError):
            return False

    wait_for(answers, timeout=timeout, interval=0.1, what=f"FRR vrrpd in {host.name} to answer vtysh")
    return frr
