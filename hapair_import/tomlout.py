"""A readable TOML writer for box files: the report block on top, then the tables in
the order they were made, each key with the comments the mapping put above it.

Only what box files hold: tables, strings, integers, floats, booleans, lists, and
inline tables for ``auth``, ``failover``, ``flush`` and the items of lists. Any
string is written so that ``tomllib`` reads it back unchanged (control characters
escaped); any text in a comment is made printable, since a TOML comment may hold
no control character.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from .box import Conversion, Finding

INLINE_TABLES = {"auth", "failover", "flush"}
WIDTH = 100
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def render(conv: Conversion) -> str:
    out = _header(conv)
    body = _table(conv.data, (), conv.comments)
    if body:
        out.append("")
        out.extend(body)
    return "\n".join(out).rstrip("\n") + "\n"


# -- the report block ---------------------------------------------------------------

def comment_text(s: str) -> str:
    """``s`` made fit for a TOML comment (no control characters but tab)."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(comment_text(text), WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


def _findings(title: str, items: list[Finding]) -> list[str]:
    out = ["#", f"# {title} ({len(items)})"]
    for f in items:
        out += _wrap(f"{f.where()}: {f.what}: {f.why}", "#   ", "#       ")
    return out


def _header(conv: Conversion) -> list[str]:
    out = ["# hapair box file (vrrpd + ctsync), written by hapair-import from:"]
    for fmt, src in conv.sources:
        out += _wrap(f"{fmt}: {src}", "#   ", "#     ")
    tables = [t for t in ("vrrpd", "ctsync") if t in conv.data]
    if tables:
        out.append("# Check it with " + " and ".join(f"`{t} -c FILE --check`" for t in tables) + ";")
        out.append("# docs/importers.md says what maps to what.")
    else:
        out.append("# Nothing in the input is something vrrpd or ctsync does: this file has no table.")
    if conv.actions:
        out += ["#", "# BEFORE USE"]
        for a in conv.actions:
            out += _wrap(a, "#   - ", "#     ")
    if conv.check_problems:
        out += ["#", f"# NOT VALID YET ({len(conv.check_problems)}): what --check says of this file as written"]
        for p in conv.check_problems:
            out += _wrap(p, "#   ", "#       ")
    if conv.dropped:
        out += _findings("NOT TRANSLATED: nothing of these is in this file", conv.sorted_findings(conv.dropped))
    if conv.notes:
        out += _findings("TRANSLATED WITH A DIFFERENCE, or deduced", conv.sorted_findings(conv.notes))
    return out


# -- tables ---------------------------------------------------------------------------

def key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else string(k)


def _is_table(k: str, v: Any) -> bool:
    return isinstance(v, dict) and k not in INLINE_TABLES


def _comments(comments: dict, path: tuple[str, ...]) -> list[str]:
    out = []
    for c in comments.get(path, []):
        for line in c.split("\n"):
            out += _wrap(line, "# ", "# ") if line else ["#"]
    return out


def _table(t: dict, path: tuple[str, ...], comments: dict) -> list[str]:
    out: list[str] = []
    simple = [(k, v) for k, v in t.items() if not _is_table(k, v)]
    subs = [(k, v) for k, v in t.items() if _is_table(k, v)]
    head = _comments(comments, path)
    # A table with only subtables needs no header of its own (TOML makes it implicitly).
    if path and (simple or head or not subs):
        out += head
        out.append("[" + ".".join(key(p) for p in path) + "]")
    for k, v in simple:
        out += _comments(comments, (*path, k))
        out.append(f"{key(k)} = {value(v, len(key(k)) + 3)}")
    for k, v in subs:
        sub = _table(v, (*path, k), comments)
        if sub:
            if out:
                out.append("")
            out += sub
    return out


# -- values ---------------------------------------------------------------------------

def string(s: str) -> str:
    if "'" not in s and ('"' in s or "\\" in s) and not _UNPRINTABLE.search(s) and "\t" not in s:
        return f"'{s}'"  # a literal string: shell code stays readable
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def value(v: Any, indent: int = 0) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return string(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }" if v else "{}"
    if isinstance(v, (list, tuple)):
        items = [value(x) for x in v]
        one = "[" + ", ".join(items) + "]"
        if indent + len(one) <= WIDTH:
            return one
        lines, cur = [], ""
        for it in items:  # several short items to a line, each line indented 4
            if cur and len(cur) + len(it) + 2 > WIDTH - 4:
                lines.append(cur)
                cur = ""
            cur = f"{cur} {it}," if cur else f"{it},"
        lines.append(cur)
        return "[\n" + "\n".join("    " + ln for ln in lines) + "\n]"
    raise TypeError(f"cannot write {v!r} as TOML")
