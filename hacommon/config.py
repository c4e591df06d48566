"""The configuration checker both daemons use: every problem of a file collected, each
naming the file, the dotted key and what is wrong (with "did you mean" for a typo), e.g.
``r1.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got 300``.

A :class:`Checker` validates the values of one table and records problems instead of
stopping at the first; the caller raises :class:`ConfigError` with all of them at the end.
:func:`read_toml` reads a file as TOML or names what is wrong with it.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path


class ConfigError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Checker:
    """Collects every problem rather than stopping at the first one."""

    def __init__(self, path: str):
        self.file = Path(path).name if path else "<config>"
        self.problems: list[str] = []

    def fail(self, key: str, msg: str) -> None:
        self.problems.append(f"{self.file}: {key}: {msg}")

    def unknown(self, table: dict, allowed: set[str], prefix: str) -> None:
        for k in table:
            if k not in allowed:
                close = difflib.get_close_matches(k, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.fail(f"{prefix}.{k}", f"unknown key{hint}")

    def weighted_names(self, table: dict, key: str, prefix: str, name_key: str, example: str) -> list[tuple[str, int]]:
        """A tracking list: ``[{ NAME_KEY = "x", weight = -60 }, "y", ...]`` (a bare
        string means weight 0) -> [(name, weight)], every bad item reported."""
        raw = table.get(key, [])
        shape = f'{{ {name_key} = "{example}", weight = -60 }}'
        if not isinstance(raw, list):
            self.fail(f"{prefix}.{key}", f"must be a list of {shape} tables")
            return []
        out = []
        for i, item in enumerate(raw):
            ikey = f"{prefix}.{key}[{i}]"
            if isinstance(item, str):
                item = {name_key: item}
            if not isinstance(item, dict):
                self.fail(ikey, f"must be a table like {shape}, got {item!r}")
                continue
            self.unknown(item, {name_key, "weight"}, ikey)
            name = self.string(item, name_key, ikey)
            w = self.integer(item, "weight", ikey, -254, 254, 0)
            if name:
                out.append((name, w or 0))
        return out

    def integer(self, table: dict, key: str, prefix: str, lo: int, hi: int, default: int | None = None) -> int | None:
        if key not in table:
            if default is None:
                self.fail(f"{prefix}.{key}", "missing (required)")
            return default
        v = table[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(f"{prefix}.{key}", f"must be an integer from {lo} to {hi}, got {v!r}")
            return default
        return v

    def number(self, table: dict, key: str, prefix: str, lo: float, hi: float, default: float) -> float:
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            self.fail(f"{prefix}.{key}", f"must be a number of seconds from {lo} to {hi}, got {v!r}")
            return default
        return float(v)

    def boolean(self, table: dict, key: str, prefix: str, default: bool) -> bool:
        v = table.get(key, default)
        if not isinstance(v, bool):
            self.fail(f"{prefix}.{key}", f"must be true or false, got {v!r}")
            return default
        return v

    def string(self, table: dict, key: str, prefix: str, default: str | None = None) -> str | None:
        if key not in table:
            if default is None:
                self.fail(f"{prefix}.{key}", "missing (required)")
            return default
        v = table[key]
        if not isinstance(v, str) or not v:
            self.fail(f"{prefix}.{key}", f"must be a non-empty string, got {v!r}")
            return default
        return v

    def command(self, table: dict, key: str, prefix: str) -> tuple[str, ...]:
        v = table.get(key)
        if v is None:
            return ()
        if isinstance(v, str) and v.strip():
            return (v,)
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            return tuple(v)
        self.fail(f"{prefix}.{key}", f"must be a command: a string or a list of strings, got {v!r}")
        return ()


def read_toml(path: str | Path) -> dict:
    """The file as TOML, or ConfigError naming the file and the problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{p.name}: TOML syntax error: {e}"]) from None
