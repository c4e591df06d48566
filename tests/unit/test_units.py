"""The systemd units shipped in the package (hacommon/units), as `hapair-install-units`
writes them: `systemd-analyze verify` has nothing to say about them, and they are what
docs and README promise (Type=notify, reload by SIGHUP, watchdog, hardening)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hacommon.install_units import UNITS, main, unit_text

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
BINDIR = str(Path(sys.executable).parent)


@pytest.fixture
def installed(tmp_path):
    rc = main(["--dest", str(tmp_path / "units"), "--bindir", BINDIR, "--config", "/etc/hapair/r1.toml",
               "--default-file", str(tmp_path / "default"), "--modules-file", str(tmp_path / "modules.conf")])
    assert rc == 0
    return tmp_path


def verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True,
                          cwd=paths[0].parent, timeout=60)


def test_systemd_analyze_verify_is_silent(installed):
    r = verify(*(installed / "units" / u for u in UNITS))
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr


def test_verify_would_say_so(installed):
    """The check above can fail: a typo in a unit is reported."""
    bad = installed / "units" / "bad.service"
    bad.write_text(unit_text("vrrpd.service", BINDIR).replace("Type=notify", "Type=notifyy"))
    assert "Failed to parse service type" in verify(bad).stderr


def test_units_promise_what_the_docs_say(installed):
    for daemon in ("vrrpd", "ctsync"):
        text = (installed / "units" / f"{daemon}.service").read_text()
        assert f"ExecStart={BINDIR}/{daemon} -c ${{HAPAIR_CONFIG}}\n" in text
        assert f"ExecStartPre={BINDIR}/{daemon} -c ${{HAPAIR_CONFIG}} --check\n" in text
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=10", "RuntimeDirectory=hapair",
                     "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "ProtectSystem=strict", "ProtectHome=yes",
                     "NoNewPrivileges=yes", "EnvironmentFile=-/etc/default/hapair", "RuntimeDirectoryPreserve=yes"):
            assert line + "\n" in text, (daemon, line)
        assert "/opt/hapair" not in text
    assert "After=network-online.target vrrpd.service" in (installed / "units" / "ctsync.service").read_text()
    assert (installed / "default").read_text().endswith("HAPAIR_CONFIG=/etc/hapair/r1.toml\n")
    assert "nf_conntrack_netlink" in (installed / "modules.conf").read_text()


def test_hardening_exposure(installed):
    for daemon in ("vrrpd", "ctsync"):
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(installed / "units" / f"{daemon}.service")],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
        if m is None:
            pytest.skip("systemd-analyze security --offline not supported here")
        assert float(m.group(1)) <= 5.0, r.stdout


def test_shipped_units_name_opt_hapair():
    for u in ("vrrpd.service", "ctsync.service"):
        assert "/opt/hapair/bin/" in unit_text(u, "/opt/hapair/bin")
