"""keepalived's configuration language, read the way keepalived(8) 2.x reads it
(keepalived.conf(5)): blocks of keywords in ``{ }``, comments from ``#`` or ``!``
(outside quotes) to the end of the line, ``"..."`` / ``'...'`` quoting with
escapes, and its preprocessor:

* ``include PATTERN`` (and includer/includem/includew/includeb/includea): a glob,
  with csh-style ``{a,b}`` braces, relative to the directory of the file that
  includes it. A pattern that matches nothing or a file that cannot be read is
  reported, not fatal (plain ``include`` tolerates it in keepalived too).
* ``@ID line`` / ``@^ID line``: the line is kept only if the config-id is (is not)
  ID. keepalived's default config-id is the first part of the host name; here it
  is given by the caller (``--config-id``, default the same as keepalived's on the
  machine that converts).
* ``$NAME=value`` definitions (multi-line ones with a trailing ``\\``), replaced
  where ``$NAME`` is followed by white space or the end of the line, or as
  ``${NAME}``; recursively, at the time of use. ``${_PWD}``, ``${_INSTANCE}``,
  ``${_HASH}``, ``${_BANG}`` are predefined. A line that a substitution turns into
  a conditional or a definition is read again as such, as keepalived does.

Not handled, and reported with file:line: ``~SEQ``/``~LST`` lines and
``${_RANDOM}`` (which would make the output differ from run to run).

One difference from keepalived, documented in docs/importers.md: an ``include``
line may use a substitution (keepalived looks for includes before substituting).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from .box import InputError

INCLUDE_WORDS = {"include", "includer", "includem", "includew", "includeb", "includea"}
MAX_DEPTH = 16  # nested includes, and lines re-read after a substitution
MAX_SUBSTITUTIONS = 10000  # per line: a definition that refers to itself never ends
MAX_LINE = 1 << 20
MAX_LINES = 1 << 20  # lines read in all, expansions included: a definition that expands into itself
MAX_FILE = 64 << 20
MAX_GLOBS = 1000  # patterns a {a,b} brace expansion may make
_DEF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.DOTALL)
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)(?=\s|\Z)")
_COND = re.compile(r"@(\^?)(\S+)\s*(.*)\Z", re.DOTALL)
_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass
class Stmt:
    """One keyword line, and its block if it opens one."""

    words: list[str]
    file: str
    line: int
    block: list[Stmt] | None = None
    end_line: int = 0

    @property
    def key(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def args(self) -> list[str]:
        return self.words[1:]

    def text(self, limit: int = 80) -> str:
        s = " ".join(self.words) + (" { ... }" if self.block is not None else "")
        return s if len(s) <= limit else s[: limit - 3] + "..."


@dataclass
class Parsed:
    stmts: list[Stmt]
    files: list[str] = field(default_factory=list)  # every file read, in order
    problems: list[tuple[str, int, str, str]] = field(default_factory=list)  # (file, line, what, why)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # conditional lines left out
    conditionals: int = 0  # conditional lines seen (kept or not)


@dataclass
class _Line:
    file: str
    line: int
    text: str


def read_text(path: str, display: str) -> str:
    """A file's text, or InputError: unreadable, not UTF-8, or binary."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)
    except OSError as e:
        raise InputError(display, None, f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_FILE:
        raise InputError(display, None, f"larger than {MAX_FILE >> 20} MiB: not a configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(display, raw[: e.start].count(b"\n") + 1, "not UTF-8 text") from None
    if "\0" in text:
        raise InputError(display, text[: text.index("\0")].count("\n") + 1, "a NUL byte: this is not a text file")
    return text


def strip_comment(s: str) -> str:
    quote = None
    i = 0
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "#!":
            return s[:i]
        i += 1
    return s


def brace_expand(pattern: str) -> list[str]:
    """csh-style ``{a,b}`` alternatives (nested), as glob(3) with GLOB_BRACE."""
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                inner, parts, d, last = pattern[start + 1:i], [], 0, 0
                for j, c in enumerate(inner):
                    d += c == "{"
                    d -= c == "}"
                    if c == "," and d == 0:
                        parts.append(inner[last:j])
                        last = j + 1
                parts.append(inner[last:])
                if len(parts) == 1:
                    continue  # "{x}" is no alternative
                head, tail = pattern[:start], pattern[i + 1:]
                out: list[str] = []
                for p in parts:
                    out += brace_expand(head + p + tail)
                    if len(out) > MAX_GLOBS:  # the caller refuses that many
                        return out
                return out
    return [pattern]


class _Reader:
    def __init__(self, config_id: str):
        self.config_id = config_id
        self.params: dict[str, list[str]] = {}
        self.lines: list[_Line] = []
        self.parsed = Parsed([])
        self.open_files: list[str] = []
        self.count = 0

    def problem(self, file: str, line: int, what: str, why: str) -> None:
        self.parsed.problems.append((file, line, what, why))

    def read_file(self, path: str, display: str, depth: int = 0) -> None:
        real = os.path.realpath(path)
        text = read_text(path, display)
        self.parsed.files.append(display)
        self.open_files.append(real)
        raw = [_Line(display, i + 1, t.rstrip("\r")) for i, t in enumerate(text.split("\n"))]
        self.process(raw, depth, os.path.dirname(os.path.abspath(path)), strip=True)
        self.open_files.pop()

    # -- one list of lines (a file, or the lines a substitution produced)
    def process(self, lines: list[_Line], depth: int, pwd: str, strip: bool) -> None:
        """``strip``: remove comments (not in lines a substitution made: ``${_HASH}`` is
        a ``#`` that starts no comment)."""
        if depth > MAX_DEPTH:
            ln = lines[0] if lines else _Line("?", 0, "")
            raise InputError(ln.file, ln.line, f"nesting deeper than {MAX_DEPTH} (includes, or substitutions "
                             "that make new definitions)")
        i = 0
        while i < len(lines):
            ln = lines[i]
            i += 1
            self.count += 1
            if self.count > MAX_LINES:
                raise InputError(ln.file, ln.line, f"more than {MAX_LINES} lines once includes and definitions are "
                                 "expanded (a definition that expands into itself?)")
            s = (strip_comment(ln.text) if strip else ln.text).strip()
            if not s:
                continue
            m = _COND.match(s)
            if m:
                self.parsed.conditionals += 1
                negate, ident, rest = m.groups()
                if (ident == self.config_id) == bool(negate):
                    self.parsed.skipped.append((ln.file, ln.line, s))
                    while rest.rstrip().endswith("\\") and i < len(lines):  # its continuation lines go too
                        rest = lines[i].text
                        i += 1
                    continue
                s = rest.strip()
                if not s:
                    continue
            m = _DEF.match(s)
            if m:
                name, value = m.groups()
                if value.rstrip().endswith("\\"):
                    body, first = [], value.rstrip()[:-1].strip()
                    if first:
                        body.append(first)
                    while i < len(lines):
                        t = strip_comment(lines[i].text).rstrip()
                        i += 1
                        if t.endswith("\\"):
                            if t[:-1].strip():
                                body.append(t[:-1].strip())
                            continue
                        if t.strip():
                            body.append(t.strip())
                        break
                    self.params[name] = body
                else:
                    self.params[name] = [value.strip()]
                continue
            if s.startswith(("~SEQ", "~LST")):
                self.problem(ln.file, ln.line, s[:60], "~SEQ/~LST sequence blocks are not expanded by hapair-import: "
                             "write the lines they produce")
                continue
            if "${_RANDOM" in s:
                self.problem(ln.file, ln.line, s[:60], "${_RANDOM}: a random value would make every conversion "
                             "different; the line is left out")
                continue
            t = self.substitute(s, ln, pwd)
            if t != s:
                self.process([_Line(ln.file, ln.line, x) for x in t.split("\n")], depth + 1, pwd, strip=False)
                continue
            words = s.split(None, 1)
            if words[0] in INCLUDE_WORDS:
                self.include(words[1] if len(words) > 1 else "", ln, pwd, depth)
                continue
            self.lines.append(_Line(ln.file, ln.line, s))

    def value(self, name: str, pwd: str) -> str | None:
        if name in self.params:
            return "\n".join(self.params[name])
        return {"_PWD": pwd, "_INSTANCE": self.config_id, "_HASH": "#", "_BANG": "!"}.get(name)

    def substitute(self, s: str, ln: _Line, pwd: str) -> str:
        pos = n = 0
        while True:
            m = _REF.search(s, pos)
            if not m:
                return s
            v = self.value(m.group(1) or m.group(2), pwd)
            if v is None:  # undefined: left as it is (keepalived does the same)
                pos = m.end()
                continue
            s = s[: m.start()] + v + s[m.end():]
            if "\n" in v:
                # A multi-line definition: its lines are read one after the other (the
                # definitions among them take effect in order), so stop here.
                return s
            pos = m.start()  # the value may hold references itself
            n += 1
            if n > MAX_SUBSTITUTIONS or len(s) > MAX_LINE:
                raise InputError(ln.file, ln.line, f"parameter substitution does not end (${m.group(1) or m.group(2)} "
                                 "refers to itself?)")

    def include(self, arg: str, ln: _Line, pwd: str, depth: int) -> None:
        pattern = arg.strip()
        if len(pattern) >= 2 and pattern[0] == pattern[-1] and pattern[0] in "\"'":
            pattern = pattern[1:-1]
        elif not pattern or any(c.isspace() for c in pattern):
            self.problem(ln.file, ln.line, f"include {arg}"[:80], "include takes one file name or pattern")
            return
        full = pattern if os.path.isabs(pattern) else os.path.join(pwd, pattern)
        patterns = brace_expand(full)
        if len(patterns) > MAX_GLOBS:
            self.problem(ln.file, ln.line, f"include {pattern}"[:80], f"more than {MAX_GLOBS} brace alternatives: "
                         "nothing included")
            return
        matches = sorted({m for p in patterns for m in glob.glob(p)})
        if not matches:
            self.problem(ln.file, ln.line, f"include {pattern}", "matches no file: nothing included")
            return
        for path in matches:
            display = path if os.path.isabs(pattern) else os.path.relpath(path)
            if os.path.realpath(path) in self.open_files:
                self.problem(ln.file, ln.line, f"include {pattern}", f"{display} includes itself: left out")
                continue
            if not os.path.isfile(path):
                self.problem(ln.file, ln.line, f"include {pattern}", f"{display} is not a regular file: left out")
                continue
            try:
                self.read_file(path, display, depth + 1)
            except InputError as e:
                if e.problem.startswith("cannot read"):
                    self.problem(ln.file, ln.line, f"include {pattern}", f"{display}: {e.problem}: left out")
                else:
                    raise


def tokenize(s: str) -> list[tuple[str, bool]]:
    """Words of one line: (text, quoted). Unquoted ``{`` and ``}`` are words of their
    own; quotes group and are removed; ``"a"b`` is one word. ValueError on an
    unterminated quote."""
    words: list[tuple[str, bool]] = []
    cur: list[str] = []
    quoted = in_word = False

    def flush():
        nonlocal cur, quoted, in_word
        if in_word:
            words.append(("".join(cur), quoted))
        cur, quoted, in_word = [], False, False

    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            flush()
            i += 1
        elif ch in "{}":
            flush()
            words.append((ch, False))
            i += 1
        elif ch in "\"'":
            q, i, quoted, in_word = ch, i + 1, True, True
            while i < n and s[i] != q:
                if s[i] == "\\" and i + 1 < n:
                    i = _escape(s, i + 1, cur)
                else:
                    cur.append(s[i])
                    i += 1
            if i >= n:
                raise ValueError(f"unterminated {q} quote")
            i += 1
        else:
            cur.append(ch)
            in_word = True
            i += 1
    flush()
    return words


def _escape(s: str, i: int, out: list[str]) -> int:
    """The escape at s[i] (after the backslash) appended to out; returns the next index."""
    c = s[i]
    if c in _ESCAPES:
        out.append(_ESCAPES[c])
        return i + 1
    if c in "01234567":
        m = re.match(r"[0-7]{1,3}", s[i:])
        out.append(chr(int(m.group(), 8)))
        return i + len(m.group())
    if c == "x":
        m = re.match(r"[0-9A-Fa-f]{1,2}", s[i + 1:])
        if m:
            out.append(chr(int(m.group(), 16)))
            return i + 1 + len(m.group())
    if c == "c" and i + 1 < len(s):
        out.append(chr(ord(s[i + 1].upper()) ^ 0x40) if ord(s[i + 1]) < 128 else s[i + 1])
        return i + 2
    out.append(c)
    return i + 1


def build(lines: list[_Line], words_of=None) -> list[Stmt]:
    """The block tree. A ``{`` alone on a line opens the block of the line before.
    ``words_of``: the tokenizer (default keepalived's :func:`tokenize`)."""
    root: list[Stmt] = []
    stack: list[tuple[list[Stmt], Stmt | None]] = [(root, None)]
    for ln in lines:
        try:
            words = (words_of or tokenize)(ln.text)
        except ValueError as e:
            raise InputError(ln.file, ln.line, str(e)) from None
        cur: list[str] = []
        for w, quoted in words:
            if w == "{" and not quoted:
                if cur:
                    stack[-1][0].append(Stmt(cur, ln.file, ln.line))
                    cur = []
                target = stack[-1][0][-1] if stack[-1][0] else None
                if target is None or target.block is not None:
                    raise InputError(ln.file, ln.line, "'{' without a keyword before it")
                target.block = []
                stack.append((target.block, target))
            elif w == "}" and not quoted:
                if cur:
                    stack[-1][0].append(Stmt(cur, ln.file, ln.line))
                    cur = []
                if len(stack) == 1:
                    raise InputError(ln.file, ln.line, "'}' closes no block")
                _, owner = stack.pop()
                owner.end_line = ln.line
            else:
                cur.append(w)
        if cur:
            stack[-1][0].append(Stmt(cur, ln.file, ln.line))
    if len(stack) > 1:
        owner = stack[-1][1]
        raise InputError(owner.file, owner.line, f"block '{owner.text(40)}' is never closed")
    return root


def load(path: str, config_id: str) -> Parsed:
    r = _Reader(config_id)
    r.read_file(path, path)
    r.parsed.stmts = build(r.lines)
    return r.parsed


def default_config_id() -> str:
    """keepalived's default: the first part of the node name (uname -n)."""
    return os.uname().nodename.split(".")[0]
