"""vrrpd in the lab: write configs, start daemons in lab hosts, read their status,
and read VRRP/ARP timelines out of captures. Shared by the tests and the demo.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hacommon.control import request
from vrrpd.codec import V2Codec, V3Codec, parse_frame_with
from vrrpd.packet import ETH_P_ARP, ETH_P_IP, Advert
from vrrpd.packet_v3 import ETH_P_IPV6, AdvertV3

from .lab import Host, Proc, wait_for

_INLINE_TABLES = {"auth"}  # written as { type = "pass", password = "..." }


def toml_dump(data: dict, prefix: str = "") -> str:
    """Just enough TOML for our configs: nested tables, scalars, lists, inline tables."""
    lines, subtables = [], []
    for k, v in data.items():
        key = k if k.replace("-", "").replace("_", "").isalnum() else json.dumps(k)
        if isinstance(v, dict) and k not in _INLINE_TABLES:
            subtables.append((key, v))
        else:
            lines.append(f"{key} = {_toml_value(v)}")
    out = []
    if lines:
        if prefix:
            out.append(f"\n[{prefix}]")
        out += lines
    for key, v in subtables:
        out.append(toml_dump(v, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def vrrpd_binary() -> list[str]:
    """How to run vrrpd: the console script next to this interpreter, or the module."""
    script = Path(sys.executable).with_name("vrrpd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vrrpd"]


@dataclass
class Vrrpd:
    """A vrrpd running in a lab host."""

    host: Host
    proc: Proc
    config_path: Path
    socket: str

    def status(self) -> dict[str, dict]:
        reply = request(self.socket, "status", timeout=3)
        return {i["name"]: i for i in reply["instances"]}

    def state(self, instance: str) -> str | None:
        try:
            return self.status()[instance]["state"]
        except (OSError, KeyError, ValueError):
            return None

    def counters(self, instance: str) -> dict[str, int]:
        return self.status()[instance]["counters"]

    def wait_state(self, instance: str, state: str, timeout: float = 10.0) -> float:
        """Wait until `instance` is in `state`; returns the time.monotonic() it was seen."""
        wait_for(lambda: self.state(instance) == state, timeout=timeout,
                 what=f"{self.host.name} {instance} to be {state}")
        return time.monotonic()

    def wait_ready(self, timeout: float = 10.0) -> None:
        def ready():
            if not self.proc.alive():
                from .lab import LabError

                raise LabError(f"vrrpd on {self.host.name} exited with {self.proc.returncode}:\n"
                               f"{self.proc.read_log()[-2000:]}")
            return os.path.exists(self.socket) and self._answers()

        wait_for(ready, timeout=timeout, what=f"vrrpd on {self.host.name} to answer on its control socket "
                 f"(log: {self.proc.read_log()[-500:]!r})")

    def _answers(self) -> bool:
        try:
            self.status()
            return True
        except (OSError, ValueError):
            return False

    def write_config(self, cfg: dict) -> None:
        self.config_path.write_text(toml_dump(cfg) + "\n")


def vrrpd_config(socket: str, instances: dict[str, dict], sync_groups: dict[str, list[str]] | None = None) -> dict:
    cfg: dict = {"vrrpd": {"control_socket": socket, "instance": instances}}
    if sync_groups:
        cfg["vrrpd"]["sync_group"] = {g: {"instances": m} for g, m in sync_groups.items()}
    return cfg


def start_vrrpd(host: Host, instances: dict[str, dict], sync_groups: dict[str, list[str]] | None = None,
                name: str = "vrrpd", extra_args: list[str] | None = None, wait: bool = True,
                config: dict | None = None, env: dict[str, str] | None = None, prefix: list[str] | None = None,
                top: dict | None = None) -> Vrrpd:
    """Write a config into the lab's workdir and start vrrpd in `host` (never elsewhere:
    Host.start refuses anything that is not this lab's namespace). ``env`` is added to
    its environment (NOTIFY_SOCKET, say), ``prefix`` goes before the command (setpriv),
    ``top`` adds keys to the [vrrpd] table (metrics_listen)."""
    workdir = Path(host.lab.workdir)
    sock = str(workdir / f"{name}-{host.name}.sock")
    cfg_path = workdir / f"{name}-{host.name}.toml"
    cfg = config or vrrpd_config(sock, instances, sync_groups)
    if config is not None:
        sock = cfg["vrrpd"]["control_socket"]
    if top:
        cfg["vrrpd"] = {**top, **cfg["vrrpd"]}
    cfg_path.write_text(toml_dump(cfg) + "\n")
    proc = host.start([*(prefix or []), *vrrpd_binary(), "-c", str(cfg_path), *(extra_args or [])], name=name, env=env)
    d = Vrrpd(host, proc, cfg_path, sock)
    if wait:
        d.wait_ready()
    return d


# ---- captures ----------------------------------------------------------------------


@dataclass(frozen=True)
class WireEvent:
    time: float  # capture timestamp (seconds since the epoch)
    kind: str  # "advert", "garp", "arp" or "na" (an unsolicited neighbour advertisement)
    src_ip: str  # adverts: the IP source; garp/arp: the sender address; na: the target
    src_mac: str
    priority: int | None = None
    vrid: int | None = None
    version: int | None = None  # adverts: 2 or 3
    interval: float | None = None  # adverts: the advert interval they carry, seconds

    @property
    def announce(self) -> bool:
        """A gratuitous ARP or an unsolicited NA: a new master telling the segment."""
        return self.kind in ("garp", "na")


def read_pcap(path: str | os.PathLike) -> list[tuple[float, bytes]]:
    """(timestamp, frame) for each packet of a classic pcap file (what tcpdump -w writes)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack_from(">I", data)[0]
    nano = magic == 0xA1B23C4D
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        frame = data[off:off + caplen]
        off += caplen
        out.append((sec + frac / (1e9 if nano else 1e6), frame))
    return out


_V2, _V3_4, _V3_6 = V2Codec(), V3Codec(4), V3Codec(6)


def _codec_of(frame: bytes, ethertype: int):
    """The codec that reads this frame: VRRPv3 for IPv6; for IPv4 the message's version."""
    if ethertype == ETH_P_IPV6:
        return _V3_6
    ihl = (frame[14] & 0x0F) * 4 if len(frame) > 14 else 20
    version = frame[14 + ihl] >> 4 if len(frame) > 14 + ihl else 2
    return _V3_4 if version == 3 else _V2


def _neighbour_advert(frame: bytes) -> str | None:
    """The target of an ICMPv6 Neighbour Advertisement (without extension headers), or None."""
    if len(frame) < 14 + 40 + 24 or frame[14 + 6] != 58 or frame[14 + 40] != 136:
        return None
    return str(ipaddress.IPv6Address(frame[14 + 40 + 8:14 + 40 + 24]))


def wire_events(path: str | os.PathLike) -> list[WireEvent]:
    """VRRP adverts (v2, v3 over IPv4 and IPv6), ARP packets and neighbour
    advertisements in a capture, in order."""
    events = []
    for ts, frame in read_pcap(path):
        if len(frame) < 14:
            continue
        src_mac = ":".join(f"{b:02x}" for b in frame[6:12])
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        if ethertype == ETH_P_ARP and len(frame) >= 42:
            op = struct.unpack_from("!H", frame, 20)[0]
            spa = str(ipaddress.IPv4Address(frame[28:32]))
            tpa = str(ipaddress.IPv4Address(frame[38:42]))
            kind = "garp" if spa == tpa else "arp"
            events.append(WireEvent(ts, kind if op in (1, 2) else "arp", spa, src_mac))
            continue
        if ethertype == ETH_P_IPV6:
            target = _neighbour_advert(frame)
            if target is not None:
                events.append(WireEvent(ts, "na", target, src_mac))
                continue
        if ethertype not in (ETH_P_IP, ETH_P_IPV6):
            continue
        adv = parse_frame_with(frame, _codec_of(frame, ethertype))
        if isinstance(adv, (Advert, AdvertV3)):
            interval = adv.interval if isinstance(adv, AdvertV3) else adv.advert_interval
            events.append(WireEvent(ts, "advert", str(adv.src), src_mac, adv.priority, adv.vrid, adv.version, interval))
    return events


def tcpdump_available() -> bool:
    return shutil.which("tcpdump") is not None
