"""hapair-import in the HA pair: the keepalived + conntrackd configuration the benchmark
runs (halab/conntrackd.py: keepalived's sync group MAIN-GW drives conntrackd's
primary/backup sequence, conntrackd in FTFW over the sync link) is converted with
the hapair-import command, and the converted files run as they are -- only the
control sockets move into the lab's directory (halab.boxconfig) -- with vrrpd and
ctsync in the lab. r1 fails hard while long-lived TCP connections and a UDP flow go
through it: every one must carry on through r2 with no RST, as the stateful
failover of the original stack promises (ctsync commits before the VIPs move).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from halab.boxconfig import BoxDaemons, lab_box_config
from halab.conntrackd import conntrackd_conf, keepalived_hapair_conf, notify_script
from halab.hapair import build_hapair
from halab.traffic import collect, start_tcp, start_udp
from halab.vrrp import toml_dump

pytestmark = pytest.mark.netns

CONNS = 100
PRIORITY = {"r1": 200, "r2": 100}


def hapair_import() -> list[str]:
    script = Path(sys.executable).with_name("hapair-import")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hapair_import.cli"]


def convert_router(p, router: str, key: Path) -> tuple[BoxDaemons, dict, str]:
    """Write the benchmark's keepalived.conf, notify script and conntrackd.conf for
    ``router``, convert them with hapair-import, map the sockets to the lab."""
    host = p.router(router)
    work = Path(p.lab.workdir)
    base = work / f"orig-{router}"
    script = f"{base}.notify.sh"
    conntrackd = shutil.which("conntrackd") or "/usr/sbin/conntrackd"
    Path(script).write_text(notify_script(conntrackd, f"{base}.conntrackd.conf", f"{base}.ctl", f"{base}.lock",
                                          f"{base}.notify.log"))
    os.chmod(script, 0o700)
    Path(f"{base}.keepalived.conf").write_text(keepalived_hapair_conf(p, router, PRIORITY[router], script))
    Path(f"{base}.conntrackd.conf").write_text(conntrackd_conf(host))
    out = work / f"converted-{router}.toml"
    cp = subprocess.run([*hapair_import(), "keepalived", f"{base}.keepalived.conf", "--config-id", router,
                         "--conntrackd", f"{base}.conntrackd.conf", "--key-file", str(key), "-o", str(out)],
                        capture_output=True, text=True, timeout=60, check=False)
    assert cp.returncode == 0, cp.stderr
    assert "does not pass --check" not in cp.stderr, cp.stderr
    converted = tomllib.loads(out.read_text())
    cfg, changes = lab_box_config(router, work, source=out)
    path = work / f"{router}.toml"
    path.write_text(toml_dump(cfg) + "\n")
    return BoxDaemons(host, cfg, path, changes), converted, out.read_text()


def test_converted_keepalived_conntrackd_pair_fails_over_statefully(lab):
    p = build_hapair(lab, ruleset="strict")
    key = Path(lab.workdir) / "ctsync.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)  # ctsync refuses a key file others can read
    boxes, converted = {}, {}
    for r in ("r1", "r2"):
        boxes[r], converted[r], text = convert_router(p, r, key)
    # What the conversion made of the benchmark's stack (the rest of the file is in the lab's workdir).
    c1 = converted["r1"]
    assert c1["ctsync"]["failover"] == {"vrrp_sync_group": "MAIN-GW"} and c1["ctsync"]["mode"] == "commit"
    assert (c1["ctsync"]["local_address"], c1["ctsync"]["peer_address"]) == ("172.16.0.1", "172.16.0.2")
    assert c1["vrrpd"]["sync_group"]["MAIN-GW"]["instances"] == ["WAN", "LAN"]
    assert all("notify" not in i for i in c1["vrrpd"]["instance"].values())  # conntrackd's script is gone
    assert "primary-backup" in text or "drives conntrackd" in text

    d = {r: boxes[r].start_vrrpd() for r in ("r1", "r2")}
    p.vrrpd.update(d)
    c = {r: boxes[r].start_ctsync() for r in ("r1", "r2")}
    p.wait_master("r1")
    p.wait_backup("r2")
    c["r2"].wait(lambda s: s["in_sync"], 15, "in sync with r1")
    tcp = start_tcp(p, conns=CONNS, interval=0.05, duration=20)
    udp = start_udp(p, duration=20)
    c["r2"].wait(lambda s: s["external_entries"] >= CONNS + 1, 15, "the flows replicated")
    time.sleep(1)
    p.hard_fail("r1")
    p.wait_master("r2", timeout=10)
    st2 = c["r2"].wait(lambda s: s if s["last_commit"] else None, 10, "the failover commit")
    tcp_r, udp_r = collect([tcp, udp])
    t = tcp_r["client"]["summary"]
    u = udp_r["client"]["summary"]
    print(f"TCP: kept {t['kept']}/{t['conns']}, RSTs {t['rsts']}, longest gap {t['gap_max']}s; "
          f"UDP: longest gap {u['max_gap']}s, lost {u['lost']} of {u['sent']}; commit {st2['last_commit']}")
    assert t["established"] == CONNS
    assert t["kept"] == CONNS and t["lost"] == 0 and t["rsts"] == 0, t
    assert st2["last_commit"]["committed"] >= CONNS
    assert not st2["commit_errors"] and st2["nat_clashes"] == 0
    assert u["max_gap"] < 6.0  # Master_Down_Interval (3.6 s) + the commit
