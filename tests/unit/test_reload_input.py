"""SIGHUP with a configuration file that cannot be read as one (issue #6): vrrpd keeps
running on the configuration it has, and says which file and why, whatever the file
holds. (Before, only ConfigError was caught: a byte that is not UTF-8 or nesting too
deep for the TOML parser ended the daemon without its shutdown.)"""

from __future__ import annotations

import logging

import pytest
import trio

from vrrpd import config as config_mod
from vrrpd.daemon import Daemon

GOOD = b"""
[vrrpd]
control_socket = "/nonexistent/vrrpd.sock"
[vrrpd.instance.WAN]
interface = "eth0"
vrid = 1
virtual_addresses = ["10.0.0.1/24"]
"""


@pytest.mark.parametrize("bad,expected", [
    (GOOD.replace(b"eth0", b"eth\xff"), "r1.toml: not UTF-8 text: byte 0xff at line 5"),
    (GOOD + b"x = " + b"[" * 1000 + b"]" * 1000 + b"\n", "r1.toml: TOML nested too deeply"),
    (GOOD.replace(b"WAN]", b'"W\\u0000N"]'), "r1.toml: vrrpd.instance.W\\x00N: names must not contain control characters"),
    (GOOD + b'notify = ["/bin/echo", "a\\u0000"]\n', "r1.toml: vrrpd.instance.WAN.notify[1]: must not contain a NUL character"),
])
def test_sighup_with_a_bad_file_keeps_the_running_configuration(tmp_path, caplog, bad, expected):
    path = tmp_path / "r1.toml"
    path.write_bytes(GOOD)
    d = Daemon(config_mod.load(path))
    before = d.cfg
    path.write_bytes(bad)
    with caplog.at_level(logging.ERROR, logger="vrrpd"):
        trio.run(d.reload)
    assert d.cfg is before
    assert any("configuration not reloaded" in r.getMessage() and expected in r.getMessage() for r in caplog.records)


def test_sighup_survives_an_unexpected_loader_error(tmp_path, caplog, monkeypatch):
    """A bug in the loader (no input is known to cause one any more) is logged with
    its traceback; the daemon keeps its configuration."""
    path = tmp_path / "r1.toml"
    path.write_bytes(GOOD)
    d = Daemon(config_mod.load(path))
    before = d.cfg

    def broken(p):
        raise RuntimeError("loader bug")

    monkeypatch.setattr(config_mod, "load_checked", broken)
    with caplog.at_level(logging.ERROR, logger="vrrpd"):
        trio.run(d.reload)
    assert d.cfg is before
    assert any("not reloaded" in r.getMessage() and r.exc_info for r in caplog.records)
