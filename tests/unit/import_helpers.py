"""Shared by the hapair-import tests: where the samples are, and the checks every
converted file must pass (the output is TOML that reads back as the converted data,
and the project's own config checkers accept it)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from ctsync import config as ctsync_config
from hapair_import.box import Conversion
from hapair_import.tomlout import render
from vrrpd import config as vrrpd_config

SAMPLES = Path(__file__).parent / "import_samples"
KEEPALIVED_SAMPLES = sorted(glob.glob("/usr/share/doc/keepalived/samples/keepalived.conf*"))
CONNTRACKD_EXAMPLES = "/usr/share/doc/conntrackd/examples/sync"
CONNTRACKD_CONFS = sorted(glob.glob(f"{CONNTRACKD_EXAMPLES}/*/conntrackd.conf"))


def round_trip(conv: Conversion) -> dict:
    """The rendered file, read back: must be the converted data exactly."""
    text = render(conv)
    data = tomllib.loads(text)
    assert data == conv.data
    return data


def write_key(path: Path) -> Path:
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)  # ctsync refuses a key file others can read
    return path


def check_with_daemons(path: Path, tables: tuple[str, ...]) -> None:
    """`vrrpd -c FILE --check` / `ctsync -c FILE --check`, the commands a user runs."""
    for daemon in tables:
        cp = subprocess.run([sys.executable, "-m", daemon, "-c", str(path), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)
        assert cp.returncode == 0, f"{daemon} --check {path}: {cp.stderr}"


def parse_with_project(data: dict, path: str = "converted.toml") -> None:
    """The project's own checkers (what --check runs)."""
    if "vrrpd" in data:
        vrrpd_config.parse(data, path)
    if "ctsync" in data:
        ctsync_config.parse(data, path)


def findings_point_into_files(conv: Conversion) -> None:
    """Every finding names a file that was read and a line inside it."""
    for f in conv.dropped + conv.notes:
        assert f.file in conv.files, f
        with open(f.file, errors="replace") as fh:
            n = fh.read().count("\n") + 1
        assert 1 <= f.line <= n, f
