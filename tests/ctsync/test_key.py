"""The shared key (issue #4): an empty or whitespace key is refused (it used to pass the
length check, and anyone who can spoof peer_address could then forge entries that end
up in the failover commit); a key file that others can read or anyone but its owner can
change is refused; the example keys published with this project (configs/, the lab)
are refused outside a lab."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctsync.config import PUBLISHED_KEYS, load, parse
from hacommon.config import ConfigError, read_toml

REPO = Path(__file__).resolve().parents[2]


def table(**kw) -> dict:
    t = {"sync_interface": "sync0", "local_address": "172.16.0.1", "peer_address": "172.16.0.2"}
    t.update(kw)
    return {"ctsync": t}


def key_file(tmp_path, data: bytes, mode: int = 0o600) -> Path:
    p = tmp_path / "ctsync.key"
    p.write_bytes(data)
    os.chmod(p, mode)
    return p


def problems(data: dict, path: str = "/etc/hapair/r1.toml", lab: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(data, path, lab=lab)
    return exc.value.problems


@pytest.mark.parametrize("content", [b"", b"\n", b"   \t \n  ", b"\0" * 0 + b" " * 40])
def test_an_empty_key_file_is_refused(tmp_path, content):
    p = key_file(tmp_path, content)
    assert problems(table(key_file=str(p))) == [f"r1.toml: ctsync.key_file: {p} holds no key (empty or only whitespace)"]


def test_a_whitespace_key_is_refused():
    assert problems(table(key=" " * 32)) == ["r1.toml: ctsync.key: only whitespace: not a secret"]


def test_short_keys(tmp_path):
    assert problems(table(key="too-short")) == ["r1.toml: ctsync.key: at least 16 bytes of secret, got 9"]
    p = key_file(tmp_path, b"short\n")
    assert problems(table(key_file=str(p))) == ["r1.toml: ctsync.key_file: at least 16 bytes of secret, got 5"]


def test_a_good_key_file(tmp_path):
    p = key_file(tmp_path, b"  " + b"k" * 32 + b"\n")
    assert parse(table(key_file=str(p)), "r1.toml").key == b"k" * 32
    os.chmod(p, 0o640)  # group-readable (root:hapair 0640, like /etc/shadow): allowed
    assert parse(table(key_file=str(p)), "r1.toml").key == b"k" * 32
    os.chmod(p, 0o400)
    assert parse(table(key_file=str(p)), "r1.toml").key == b"k" * 32


@pytest.mark.parametrize("mode,problem", [
    (0o644, "readable by others (mode 0644): chmod o-rwx {p}"),
    (0o604, "readable by others (mode 0604): chmod o-rwx {p}"),
    (0o602, "writable by others (mode 0602): chmod o-rwx {p}"),
    (0o660, "writable by its group (mode 0660): chmod g-w,o-rwx {p}"),
])
def test_a_key_file_others_can_read_or_change_is_refused(tmp_path, mode, problem):
    p = key_file(tmp_path, b"k" * 32, mode)
    assert problems(table(key_file=str(p))) == ["r1.toml: ctsync.key_file: " + problem.format(p=p)]


def test_a_key_file_that_is_not_a_regular_file(tmp_path):
    assert problems(table(key_file="/dev/zero")) == [
        "r1.toml: ctsync.key_file: /dev/zero is not a regular file"]
    assert problems(table(key_file=str(tmp_path))) == [f"r1.toml: ctsync.key_file: {tmp_path} is not a regular file"]
    big = key_file(tmp_path, b"k" * (1 << 20))
    assert problems(table(key_file=str(big))) == [
        f"r1.toml: ctsync.key_file: {big} is too large for a key (1048576 bytes, at most 4096)"]


@pytest.mark.parametrize("key", sorted(k.decode() for k in PUBLISHED_KEYS))
def test_a_published_key_is_refused_outside_the_lab_and_accepted_in_it(key):
    assert problems(table(key=key)) == [
        "r1.toml: ctsync.key: this key is published with hapair (an example): anyone can forge entries with it; "
        "generate a secret (head -c 32 /dev/urandom | base64 > /etc/hapair/ctsync.key, key_file = that file) "
        "(accepted in a lab only)"]
    assert parse(table(key=key), "r1.toml", lab=True).key == key.encode()


def test_published_key_in_a_key_file(tmp_path):
    p = key_file(tmp_path, b"change-me-to-a-long-random-secret\n")
    [problem] = problems(table(key_file=str(p)))
    assert problem.startswith("r1.toml: ctsync.key_file: this key is published with hapair")


def test_every_example_key_of_the_project_is_listed():
    """configs/*.toml and the lab's key: a new example key must be added to PUBLISHED_KEYS."""
    from halab.ctsync import KEY

    keys = {KEY.encode()}
    for f in sorted((REPO / "configs").glob("*.toml")):
        c = read_toml(f).get("ctsync", {})
        if "key" in c:
            keys.add(c["key"].encode())
    assert len(keys) >= 2 and keys <= PUBLISHED_KEYS


def test_the_example_files_are_refused_outside_the_lab():
    """A process outside any lab (this one: no HAPAIR_LAB) loading configs/r1.toml."""
    assert "HAPAIR_LAB" not in os.environ
    with pytest.raises(ConfigError) as exc:
        load(REPO / "configs" / "r1.toml")
    assert [p.split(": ")[1] for p in exc.value.problems] == ["ctsync.key"]


def test_a_lab_name_in_the_environment_is_not_enough(monkeypatch):
    """HAPAIR_LAB set, but this process is not in a namespace of that lab."""
    monkeypatch.setenv("HAPAIR_LAB", "hl-1-0")
    with pytest.raises(ConfigError):
        load(REPO / "configs" / "r1.toml")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_key_file_owned_by_someone_else_is_refused(tmp_path):
    p = key_file(tmp_path, b"k" * 32, 0o600)
    os.chown(p, 65534, -1)
    assert problems(table(key_file=str(p))) == [
        f"r1.toml: ctsync.key_file: owned by uid 65534, who can change it: chown root {p}"]
