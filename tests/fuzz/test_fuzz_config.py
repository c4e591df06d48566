"""Configuration files: vrrpd's and ctsync's loaders on mutated files (bytes: not UTF-8,
broken TOML, nesting), on random TOML, and on well-formed TOML whose values are random
(any type where a key expects one). ConfigError and nothing else, always naming the
file; the same for `--check` on a file."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctsync import config as ctsync_config
from ctsync.cli import ctsync_main
from hacommon.config import ConfigError, check_file, loads_toml
from vrrpd import config as vrrpd_config
from vrrpd import uplink_config
from vrrpd.cli import vrrpd_main

from . import corpus
from .mutate import QUICK, SLOW, apply_edits, run


def _problems_name_the_file(e: ConfigError) -> None:
    assert e.problems and all(p.startswith("fuzz.toml: ") for p in e.problems), e.problems


def vrrpd_file(data: bytes) -> None:
    try:
        vrrpd_config.parse(loads_toml(data, "fuzz.toml"), "fuzz.toml")
    except ConfigError as e:
        _problems_name_the_file(e)
        raise


def ctsync_file(data: bytes) -> None:
    try:
        ctsync_config.parse(loads_toml(data, "fuzz.toml"), "fuzz.toml", lab=False)
    except ConfigError as e:
        _problems_name_the_file(e)
        raise


def whole_file(data: bytes) -> None:
    """What start-up, --check and SIGHUP run: every table of the file and the names one
    takes from another (hacommon.config.check_file), from either daemon's side."""
    parsed = loads_toml(data, "fuzz.toml")
    for spec in (vrrpd_config.TABLE, ctsync_config.TABLE):
        try:
            check_file("fuzz.toml", spec, parsed)
        except ConfigError as e:
            _problems_name_the_file(e)
    raise ConfigError(["fuzz.toml: (both sides checked)"])  # counted as an allowed outcome


TARGETS = {"vrrpd": vrrpd_file, "ctsync": ctsync_file, "whole_file": whole_file}


@pytest.mark.parametrize("name", TARGETS)
def test_mutants(name):
    errors = run(TARGETS[name], corpus.config_files(), (ConfigError,), QUICK, seed=len(name), what=name)
    assert errors < QUICK or name == "whole_file"


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("name", TARGETS)
def test_a_million_mutants(name):
    # The whole-file check reads the installed table checkers (importlib metadata) per
    # call: 1.5 ms a file. The two loaders under it get their million each; this a tenth.
    run(TARGETS[name], corpus.config_files(), (ConfigError,), SLOW // 10 if name == "whole_file" else SLOW, seed=1, what=name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), data=st.binary(max_size=500))
def test_random_bytes(name, data):
    try:
        TARGETS[name](data)
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), i=st.integers(0, 10),
       edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3000), st.integers(0, 0xFFFF)), max_size=6))
def test_edited_files(name, i, edits):
    files = corpus.config_files()
    try:
        TARGETS[name](apply_edits(files[i % len(files)], edits))
    except ConfigError:
        pass


# ---- well-formed TOML, values of any type -------------------------------------------------

_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=True) | st.text(max_size=20)
            | st.sampled_from(["eth0", "10.0.0.1/24", "10.0.0.1", "fd00::1", "225.0.0.50", "tcp", "syn_sent", "G", "*",
                               "WAN", "none", "pass", "root", "/bin/true", "\x00", "", " "]))
_values = st.recursive(_scalars, lambda inner: (st.lists(inner, max_size=4)
                                                | st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

VRRPD_KEYS = sorted(vrrpd_config._TOP_KEYS)
INSTANCE_KEYS = sorted(vrrpd_config._INSTANCE_KEYS)
CTSYNC_KEYS = sorted(ctsync_config._KEYS) + ["failover"]


@st.composite
def vrrpd_tables(draw):
    inst = {k: draw(_values) for k in draw(st.lists(st.sampled_from(INSTANCE_KEYS), max_size=6))}
    inst.update(draw(st.fixed_dictionaries({}, optional={"interface": st.just("eth0"), "vrid": st.integers(0, 300),
                                                         "virtual_addresses": st.just(["10.0.0.1/24"])})))
    top = {k: draw(_values) for k in draw(st.lists(st.sampled_from(VRRPD_KEYS), max_size=3))}
    top.setdefault("instance", {draw(st.sampled_from(["WAN", "LAN", ""])): inst})
    if draw(st.booleans()):
        top["probe"] = {"P": {k: draw(_values) for k in draw(st.lists(st.sampled_from(sorted(uplink_config._PROBE_KEYS))))}}
        top["uplinks"] = {k: draw(_values) for k in draw(st.lists(st.sampled_from(sorted(uplink_config._UPLINKS_KEYS))))}
    return {"vrrpd": top}


@st.composite
def ctsync_tables(draw):
    t = {"sync_interface": "sync0", "local_address": "172.16.0.1", "peer_address": "172.16.0.2", "key": "k" * 20}
    for k in draw(st.lists(st.sampled_from(CTSYNC_KEYS), max_size=5)):
        if k != "key_file":  # a random path would be read: not here
            t[k] = draw(_values)
    return {"ctsync": t}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=vrrpd_tables())
def test_vrrpd_values_of_any_type(data):
    try:
        vrrpd_config.parse(data, "fuzz.toml")
    except ConfigError as e:
        _problems_name_the_file(e)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=ctsync_tables())
def test_ctsync_values_of_any_type(data):
    try:
        ctsync_config.parse(data, "fuzz.toml", lab=False)
    except ConfigError as e:
        _problems_name_the_file(e)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(i=st.integers(0, 10), edits=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3000), st.integers(0, 0xFFFF)),
                                            min_size=1, max_size=4))
def test_check_on_a_file_says_file_and_problem(tmp_path, capsys, i, edits):
    """`vrrpd --check` and `ctsync --check` on a mutated file: exit 0 or 1, no traceback."""
    files = corpus.config_files()
    p = tmp_path / "fuzz.toml"
    p.write_bytes(apply_edits(files[i % len(files)], edits))
    for main in (vrrpd_main, ctsync_main):
        assert main(["-c", str(p), "--check"]) in (0, 1)
        err = capsys.readouterr().err
        assert "Traceback" not in err and "cannot load the configuration" not in err, err
