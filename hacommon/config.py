"""The configuration checker both daemons use: every problem of a file collected, each
naming the file, the dotted key and what is wrong (with "did you mean" for a typo), e.g.
``r1.toml: vrrpd.instance.WAN.vrid: must be an integer from 1 to 255, got 300``.

A :class:`Checker` validates the values of one table and records problems instead of
stopping at the first; the caller raises :class:`ConfigError` with all of them at the end.
:func:`read_toml` reads a file as TOML or names what is wrong with it.
:func:`check_file` checks every table of a box's file (each daemon registers its own,
see :class:`TableSpec`) and the names one table takes from another.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(name: str) -> str:
    """A name as it can be printed: control characters (a NUL, a newline) escaped."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", name)


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
        self.problems.append(f"{self.file}: {shown(key)}: {msg}")

    def refuse_nul(self, value, key: str) -> None:
        """Walk a table: a name (any key) with a control character, or a string with a
        NUL, is a problem. A NUL cannot reach argv, the environment or a path (the
        kernel takes it for the end of the string; Python refuses it with ValueError),
        and a newline in a name would forge log lines."""
        if isinstance(value, dict):
            for k, v in value.items():
                sub = f"{key}.{k}"
                if _CONTROL.search(k):
                    self.fail(sub, "names must not contain control characters")
                else:
                    self.refuse_nul(v, sub)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.refuse_nul(v, f"{key}[{i}]")
        elif isinstance(value, str) and "\0" in value:
            self.fail(key, "must not contain a NUL character")

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

    def group(self, table: dict, key: str, prefix: str) -> tuple[str | None, int | None]:
        """A Unix group name (or number) that must exist here -> (name, gid)."""
        v = table.get(key)
        if v is None:
            return None, None
        import grp

        g = None
        try:
            if isinstance(v, int) and not isinstance(v, bool):
                g = grp.getgrgid(v)
            elif isinstance(v, str) and v:
                g = grp.getgrnam(v)
        except (KeyError, OverflowError, ValueError):
            pass
        if g is None:
            self.fail(f"{prefix}.{key}", f"must be the name of a group of this system (see /etc/group), got {v!r}")
            return None, None
        return g.gr_name, g.gr_gid

    def listen_address(self, table: dict, key: str, prefix: str) -> tuple[str, int] | None:
        """``"127.0.0.1:9650"`` or ``"[::1]:9650"`` -> (host, port); absent: None."""
        v = table.get(key)
        if v is None:
            return None
        shape = 'an address and port like "127.0.0.1:9650" or "[::1]:9650"'
        if not isinstance(v, str) or ":" not in v:
            self.fail(f"{prefix}.{key}", f"must be {shape}, got {v!r}")
            return None
        host, _, port = v.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        import ipaddress

        try:
            ipaddress.ip_address(host)
            n = int(port)
            if not 1 <= n <= 65535:
                raise ValueError
        except ValueError:
            self.fail(f"{prefix}.{key}", f"must be {shape} (an IP address, not a name; port 1 to 65535), got {v!r}")
            return None
        return host, n

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
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from None
    return loads_toml(data, p.name)


def loads_toml(data: bytes, name: str = "<config>") -> dict:
    """``data`` as TOML, or ConfigError naming ``name`` and the problem; nothing else
    comes out, whatever the bytes (not UTF-8, nested deeper than the parser recurses)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError([f"{name}: not UTF-8 text: byte {data[e.start]:#04x} at line {line}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{name}: TOML syntax error: {e}"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: TOML nested too deeply (arrays or inline tables)"]) from None
    except ValueError as e:  # tomllib's own checks raise TOMLDecodeError; a value it builds may not
        raise ConfigError([f"{name}: TOML value error: {e}"]) from None


# ---- one check for the whole file --------------------------------------------------------
#
# A box has one file with a table per daemon ([vrrpd], [ctsync]). Each daemon's package
# registers its table's checker under the entry-point group below (pyproject.toml), so
# that either daemon's --check, start and reload validate every table of the file and
# their cross-references without importing the other daemon. A table says which names
# it provides to the others (from its raw TOML: vrrpd its sync groups, instances and
# control socket) and which names it refers to (ctsync the sync group it follows); the
# checker here resolves one against the other, knowing neither daemon.

ENTRY_POINT_GROUP = "hapair.config_tables"


@dataclass(frozen=True)
class Reference:
    """A name one table uses that another table of the same file must provide.
    ``namespaces`` maps each acceptable namespace (``"vrrpd.sync_group"``: the table
    before the dot) to how to call its names in an error (``"sync groups"``)."""

    key: str
    value: str
    namespaces: dict[str, str]
    what: str  # "sync group or instance"


def _no_names(table: dict) -> dict[str, set[str]]:
    return {}


def _no_references(data: dict) -> list[Reference]:
    return []


@dataclass(frozen=True)
class TableSpec:
    """One daemon's top-level table: how to check it (``parse(data, path)`` returns
    the daemon's config or raises ConfigError), a one-line summary for ``--check``, the
    names it provides (``provides(raw_table)``: namespace -> names) and the references
    it makes (``references(data)``)."""

    name: str
    parse: Callable[[dict, str], Any]
    summary: Callable[[Any], str] = str
    provides: Callable[[dict], dict[str, set[str]]] = _no_names
    references: Callable[[dict], list[Reference]] = _no_references


def registered_tables() -> dict[str, TableSpec]:
    """Every table checker installed (entry points of ENTRY_POINT_GROUP), by name."""
    from importlib.metadata import entry_points

    out: dict[str, TableSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        if isinstance(spec, TableSpec):
            out[spec.name] = spec
    return out


@dataclass
class FileCheck:
    """What :func:`check_file` found: each present table's config, by table name."""

    path: str
    configs: dict[str, Any] = field(default_factory=dict)
    specs: dict[str, TableSpec] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(f"[{n}] {self.specs[n].summary(c)}" for n, c in self.configs.items())


def check_file(path: str | Path, own: TableSpec, data: dict | None = None) -> FileCheck:
    """Validate every table of the file and their cross-references; ConfigError with
    all the problems, each naming file, key and problem. ``own`` (the calling daemon's
    table) is required; the others are checked when present."""
    path = str(path)
    if data is None:
        data = read_toml(path)
    specs = registered_tables()
    specs[own.name] = own
    c = Checker(path)
    result = FileCheck(path, specs=specs)
    for name, raw in data.items():
        if name not in specs:
            close = difflib.get_close_matches(name, sorted(specs), n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            c.fail(name, f"unknown table{hint}; this file may hold {', '.join(f'[{n}]' for n in sorted(specs))}")
    for name in [own.name] + sorted(n for n in data if n in specs and n != own.name):
        try:
            result.configs[name] = specs[name].parse(data, path)
        except ConfigError as e:
            c.problems += e.problems
    for name in sorted(n for n in data if n in specs and isinstance(data[n], dict)):
        for ref in specs[name].references(data):
            _resolve(c, ref, data, specs)
    if c.problems:
        raise ConfigError(c.problems)
    return result


def _resolve(c: Checker, ref: Reference, data: dict, specs: dict[str, TableSpec]) -> None:
    """Check a reference against the tables of the file that provide its namespaces;
    a reference to a table the file does not hold (the daemon's own file is elsewhere)
    cannot be checked here and is left alone."""
    found: dict[str, set[str]] = {}
    tables = set()
    for ns in ref.namespaces:
        table = ns.split(".", 1)[0]
        raw = data.get(table)
        if table in specs and isinstance(raw, dict):
            tables.add(table)
            found[ns] = set(specs[table].provides(raw).get(ns, set()))
    if not tables or any(ref.value in names for names in found.values()):
        return
    have = "; ".join(f"{ref.namespaces[ns]}: {', '.join(sorted(names)) or 'none'}" for ns, names in found.items())
    where = ", ".join(f"[{t}]" for t in sorted(tables))
    c.fail(ref.key, f"no {ref.what} {ref.value!r} in {where} ({have})")
