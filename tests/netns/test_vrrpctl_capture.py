"""`vrrpctl capture INSTANCE`: tcpdump on the instance's interface (found through the
daemon's control socket), filtered to VRRP and ARP."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from halab.vrrp import wire_events

pytestmark = pytest.mark.netns

VRRPCTL = [str(Path(sys.executable).with_name("vrrpctl"))]


def test_capture_writes_the_instances_adverts(pair, tmp_path):
    d = pair.start("r1", 200, name="V", advert_interval=1)
    d.wait_state("V", "master", timeout=10)
    out = Path(pair.lab.workdir) / "cap.pcap"
    pair.h.run(["ping", "-c", "1", "-W", "1", "10.0.0.2"])  # some unicast: must not be captured
    cp = pair.r1.run([*VRRPCTL, "-s", d.socket, "capture", "V", "-w", str(out), "--count", "3"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    ev = wire_events(out)
    assert len(ev) == 3
    assert all(e.kind == "advert" and e.vrid == 7 and e.src_ip == "10.0.0.2" for e in ev)

    cp = pair.r1.run([*VRRPCTL, "-s", d.socket, "capture", "NOPE"], timeout=10)
    assert cp.returncode == 1 and "no instance named NOPE (instances: V)" in cp.stderr
    cp = pair.r1.run([*VRRPCTL, "-s", d.socket, "capture", "V", "--count", "2"], timeout=20)
    lines = cp.stdout.splitlines()
    assert cp.returncode == 0 and len(lines) == 2, cp.stdout
    assert all("VRRPv2" in ln or "ARP" in ln for ln in lines), lines  # adverts or the GARP repeat
