"""The sync link as the user sees it in Wireshark: a capture of sync0 in the HA pair
(entries replicated while TCP connections open and close, their destroys, heartbeats, acks, the
resync at start) decoded by docs/ctsync-dissector.lua through tshark with nothing
malformed, and by `ctsyncctl decode` with the same number of messages."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ctsync.pcapdecode import decode_lines
from halab.ctsync import start_ctsync
from halab.hapair import build_hapair
from halab.traffic import collect, start_tcp

pytestmark = pytest.mark.netns

DISSECTOR = Path(__file__).resolve().parents[2] / "docs" / "ctsync-dissector.lua"


def tshark(pcap: str, *extra: str) -> str:
    cp = subprocess.run(["tshark", "-n", "-X", f"lua_script:{DISSECTOR}", "-r", pcap, *extra],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_lab_capture_of_the_sync_link_decodes(lab):
    p = build_hapair(lab)
    d = {"r1": p.start_vrrpd("r1", 200), "r2": p.start_vrrpd("r2", 100)}
    cap = lab.capture(p.r2, "sync0", "sync.pcap", bpf="udp port 3780")
    c = {r: start_ctsync(getattr(p, r), "commit", d[r].socket) for r in ("r1", "r2")}
    p.wait_master("r1")
    c["r2"].wait(lambda s: s["in_sync"], 15, "in sync with r1")
    tcp = start_tcp(p, conns=10, interval=0.05, duration=2)
    collect(tcp)
    # Closed connections linger in TIME_WAIT: delete them, their destroys are replicated.
    p.r1.run(["conntrack", "-D", "-p", "tcp", "--dport", "9000"], timeout=30)
    c["r2"].wait(lambda s: s["counters"]["destroys_rx"] >= 1, 10, "destroys replicated")
    time.sleep(1.5)  # a heartbeat or two
    cap.stop()

    lines = list(decode_lines(cap.path))
    kinds = {ln.split(" | ", 1)[1].split()[0] for ln in lines}
    assert {"ENTRY", "DESTROY", "HEARTBEAT", "RESYNC_BEGIN", "RESYNC_END"} <= kinds, kinds
    assert not any("MALFORMED" in ln for ln in lines)
    assert any("ENTRY tcp 192.168.100.10:" in ln and "-> 10.10.0.101:" in ln for ln in lines)

    verbose = tshark(cap.path, "-V")
    assert "ctsync conntrack sync protocol" in verbose
    assert "Malformed" not in verbose and "Lua Error" not in verbose, \
        [ln for ln in verbose.splitlines() if "Malformed" in ln or "Lua" in ln][:5]
    # The dissector and ctsyncctl see the same messages.
    types = tshark(cap.path, "-T", "fields", "-e", "ctsync.msg.type").split()
    n_types = sum(len(t.split(",")) for t in types)
    n_msgs = sum(1 for ln in lines if not ln.endswith("(no message: ACK)") and "(no message" not in ln)
    assert n_types == n_msgs
    frames = tshark(cap.path, "-Y", "ctsync").strip().splitlines()
    assert len(frames) == cap.stats.get("captured", len(frames))
