"""hacommon.client's JSON lines without the json package: the same bytes out and the same
objects (or a ValueError) in as json, on any JSON value and on junk."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacommon import client

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                      max_leaves=20)


def same(a, b) -> bool:
    """Equal, NaN included."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def test_the_c_scanner_is_used_here():
    assert client._scan is not None  # CPython: otherwise this file tests only the fallback


@settings(max_examples=400)
@given(values, st.sampled_from(["", " ", "\n", " \t\r\n"]))
def test_loads_line_reads_what_json_writes(v, ws):
    line = (ws + json.dumps(v) + ws).encode()
    assert same(client.loads_line(line), json.loads(line))


@settings(max_examples=400)
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_loads_line_refuses_what_json_refuses(data):
    try:
        want = json.loads(data)
    except ValueError as e:
        with pytest.raises(ValueError):
            client.loads_line(data)
        assert type(e) in (json.JSONDecodeError, UnicodeDecodeError)
    else:
        assert same(client.loads_line(data), want)


@pytest.mark.parametrize("line", [b"{} {}", b"[1,]", b"\xef\xbb\xbf{}", b"NaN", b"-Infinity", b'"\\ud800"', b"", b"{"])
def test_loads_line_edge_cases_like_json(line):
    try:
        want = json.loads(line)
    except ValueError:
        with pytest.raises(ValueError):
            client.loads_line(line)
    else:
        assert same(client.loads_line(line), want)


requests = st.dictionaries(st.text(), st.none() | st.booleans() | st.integers() | st.text(), max_size=5)


@settings(max_examples=400)
@given(requests)
def test_request_line_is_json_line(obj):
    assert client.request_line(obj) == client.json_line(obj)


@pytest.mark.parametrize("obj", [{"cmd": "x", "f": 1.5}, {"cmd": "x", "l": [1, "a"]}, {"cmd": "é\u2028\"\\"}, {1: "x"}])
def test_request_line_falls_back_to_json_for_the_rest(obj):
    assert client.request_line(obj) == client.json_line(obj)


# ---- quick_args: the common command lines without argparse, parsed as argparse would


TOKENS = ["-s", "--socket", "/run/x.sock", "--socket=/q.sock", "-c", "f.toml", "status", "commit", "metrics", "events",
          "--json", "--uplinks", "WAN", "LAN", "-h", "--", "-x", ""]


def _argparse(parser, argv):
    try:
        return vars(parser.parse_args(argv))
    except SystemExit:
        return None


def _check(parser, quick, argv):
    got = client.quick_args(argv, quick)
    if got is None:
        return  # argparse's turn: nothing to compare
    want = _argparse(parser, argv)
    assert want is not None, f"quick_args took {argv} that argparse refuses"
    assert vars(got) == {k: want[k] for k in vars(got)}, argv


@settings(max_examples=600)
@given(st.lists(st.sampled_from(TOKENS), max_size=5))
def test_vrrpctl_quick_args_agree_with_argparse(argv):
    from vrrpd.cli import QUICK, vrrpctl_parser

    _check(vrrpctl_parser(), QUICK, argv)


@settings(max_examples=600)
@given(st.lists(st.sampled_from(TOKENS), max_size=5))
def test_ctsyncctl_quick_args_agree_with_argparse(argv):
    from ctsync.cli import QUICK, ctsyncctl_parser

    _check(ctsyncctl_parser(), QUICK, argv)


@pytest.mark.parametrize("argv, taken", [
    (["status"], True), (["-s", "/s", "status", "--json"], True), (["--socket=/s", "status", "WAN"], True),
    (["status", "WAN", "LAN"], False), (["-c", "f.toml", "status"], False), (["status", "-h"], False),
    (["-s", "--json", "status"], False), (["events"], False), ([], False), (["status", "--json", "--json"], True),
])
def test_vrrpctl_quick_args_take_only_the_common_lines(argv, taken):
    from vrrpd.cli import QUICK

    assert (client.quick_args(argv, QUICK) is not None) == taken


def test_clients_import_neither_argparse_json_nor_socket():
    """The point of it all (start-up, docs/benchmarks.md figure 8): a status or commit
    imports none of the heavy modules. Run in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys; from vrrpd.cli import vrrpctl_main; from ctsync.cli import ctsyncctl_main; "
            "from hacommon.client import quick_args, request; import vrrpd.status_text; "
            "from vrrpd.cli import QUICK; quick_args(['status'], QUICK); "
            "print(sorted(m for m in ('argparse', 'json', 'socket', 're', 'enum', 'trio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
