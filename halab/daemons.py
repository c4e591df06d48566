"""Third-party daemons in lab hosts.

keepalived is the reference VRRP implementation: running it in the lab shows
that the lab itself works (multicast adverts cross the bridge, VIPs appear,
failover happens), and gives interop partners for ``vrrpd``.
"""

from __future__ import annotations

import os
import shutil

from .lab import Host, LabError, Proc


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
