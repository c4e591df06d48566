"""One check for the whole file: vrrpd --check and ctsync --check both validate every
table of a box's file and the names [ctsync] takes from [vrrpd], through the checkers
each package registers (entry points), without importing each other."""

from __future__ import annotations

from pathlib import Path

import pytest

import ctsync.config as CC
import vrrpd.config as VC
from ctsync.cli import ctsync_main
from hacommon.config import ConfigError, check_file, registered_tables
from vrrpd.cli import vrrpd_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

VRRPD = """
[vrrpd]
control_socket = "/run/hapair/vrrpd.sock"
[vrrpd.instance.WAN]
interface = "eth0"
vrid = 1
virtual_addresses = ["10.0.0.1/24"]
[vrrpd.instance.LAN]
interface = "eth1"
vrid = 2
virtual_addresses = ["10.0.1.1/24"]
[vrrpd.sync_group.MAIN-GW]
instances = ["WAN", "LAN"]
"""


def ctsync_table(failover: str = '{ vrrp_sync_group = "MAIN-GW" }', **extra) -> str:
    lines = ["[ctsync]", 'sync_interface = "eth2"', 'local_address = "172.16.0.1"', 'peer_address = "172.16.0.2"',
             'key = "0123456789abcdef0123"', f"failover = {failover}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write(tmp_path, text: str, name: str = "r1.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(path, spec) -> list[str]:
    with pytest.raises(ConfigError) as e:
        check_file(path, spec)
    return e.value.problems


def test_both_tables_are_registered_as_entry_points():
    tables = registered_tables()
    assert set(tables) >= {"vrrpd", "ctsync"}
    assert tables["vrrpd"] is VC.TABLE and tables["ctsync"] is CC.TABLE


@pytest.mark.parametrize("spec", [VC.TABLE, CC.TABLE], ids=["vrrpd", "ctsync"])
def test_shipped_pair_passes_from_either_side(spec, monkeypatch):
    """In the lab (the example key is accepted only there); outside it, the key is the
    one problem (tests/ctsync/test_key.py)."""
    for f in ("r1.toml", "r2.toml"):
        with pytest.raises(ConfigError) as exc:
            check_file(CONFIGS / f, spec)
        assert [p.split(": ")[1] for p in exc.value.problems] == ["ctsync.key"]
    monkeypatch.setattr(CC, "in_lab", lambda: True)
    for f in ("r1.toml", "r2.toml"):
        checked = check_file(CONFIGS / f, spec)
        assert set(checked.configs) == {"vrrpd", "ctsync"}
        assert checked.configs["ctsync"].failover.vrrp_sync_group == "MAIN-GW"


@pytest.mark.parametrize("spec", [VC.TABLE, CC.TABLE], ids=["vrrpd", "ctsync"])
def test_unknown_sync_group_names_file_key_and_what_exists(tmp_path, spec):
    p = write(tmp_path, VRRPD + ctsync_table('{ vrrp_sync_group = "NOPE" }'))
    assert problems(p, spec) == [
        "r1.toml: ctsync.failover.vrrp_sync_group: no sync group or instance 'NOPE' in [vrrpd] "
        "(sync groups: MAIN-GW; instances: LAN, WAN)"]


def test_an_instance_name_is_a_valid_reference(tmp_path):
    p = write(tmp_path, VRRPD + ctsync_table('{ vrrp_sync_group = "LAN" }'))
    assert check_file(p, CC.TABLE).configs["ctsync"].failover.vrrp_sync_group == "LAN"


def test_vrrpd_check_rejects_a_broken_ctsync_table(tmp_path, capsys):
    p = write(tmp_path, VRRPD + ctsync_table(port=99999, mode='"fast"'))
    assert vrrpd_main(["-c", str(p), "--check"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "vrrpd: r1.toml: ctsync.port: must be an integer from 1 to 65535, got 99999" in err
    assert "vrrpd: r1.toml: ctsync.mode: must be \"commit\" or \"inject\", got 'fast'" in err


def test_ctsync_check_rejects_a_broken_vrrpd_table(tmp_path, capsys):
    p = write(tmp_path, VRRPD.replace("vrid = 2", "vrid = 300") + ctsync_table())
    assert ctsync_main(["-c", str(p), "--check"]) == 1
    assert "ctsync: r1.toml: vrrpd.instance.LAN.vrid: must be an integer from 1 to 255, got 300" in capsys.readouterr().err


def test_check_ok_summarises_every_table(tmp_path, capsys):
    p = write(tmp_path, VRRPD + ctsync_table())
    assert vrrpd_main(["-c", str(p), "--check"]) == 0
    out = capsys.readouterr().out
    assert "[vrrpd] 2 instance(s), 1 sync group(s)" in out and "[ctsync] mode commit" in out


def test_references_are_checked_even_when_vrrpd_has_problems(tmp_path):
    p = write(tmp_path, VRRPD.replace("vrid = 2", "vrid = 300") + ctsync_table('{ vrrp_sync_group = "NOPE" }'))
    got = problems(p, CC.TABLE)
    assert any("vrrpd.instance.LAN.vrid" in x for x in got)
    assert any("ctsync.failover.vrrp_sync_group: no sync group or instance 'NOPE'" in x for x in got)


def test_vrrpd_socket_must_be_the_one_of_the_vrrpd_table(tmp_path):
    p = write(tmp_path, VRRPD + ctsync_table('{ vrrp_sync_group = "MAIN-GW", vrrpd_socket = "/run/other.sock" }'))
    assert problems(p, VC.TABLE) == [
        "r1.toml: ctsync.failover.vrrpd_socket: no control socket '/run/other.sock' in [vrrpd] "
        "(its control_socket: /run/hapair/vrrpd.sock)"]
    ok = write(tmp_path, VRRPD + ctsync_table('{ vrrp_sync_group = "MAIN-GW", vrrpd_socket = "/run/hapair/vrrpd.sock" }'), "ok.toml")
    check_file(ok, VC.TABLE)


def test_a_reference_to_a_table_the_file_does_not_hold_is_left_alone(tmp_path):
    # ctsync next to a vrrpd whose file is elsewhere (the lab does this): nothing to check against.
    p = write(tmp_path, ctsync_table('{ vrrp_sync_group = "NOPE", vrrpd_socket = "/tmp/v.sock" }'))
    assert check_file(p, CC.TABLE).configs["ctsync"].failover.vrrp_sync_group == "NOPE"


def test_unknown_top_level_table_with_did_you_mean(tmp_path):
    p = write(tmp_path, VRRPD + ctsync_table() + "[ctsinc]\nx = 1\n")
    assert problems(p, VC.TABLE) == [
        "r1.toml: ctsinc: unknown table (did you mean [ctsync]?); this file may hold [ctsync], [vrrpd]"]


def test_own_table_is_required_the_other_is_not(tmp_path):
    p = write(tmp_path, VRRPD)
    assert set(check_file(p, VC.TABLE).configs) == {"vrrpd"}
    assert problems(p, CC.TABLE) == ["r1.toml: ctsync: missing table [ctsync]"]


def test_daemons_load_the_checked_file(tmp_path):
    p = write(tmp_path, VRRPD + ctsync_table('{ vrrp_sync_group = "NOPE" }'))
    for load in (VC.load_checked, CC.load_checked):
        with pytest.raises(ConfigError):
            load(p)
