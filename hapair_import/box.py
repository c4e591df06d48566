"""The result of a conversion: the box file as data, its comments, and the report.

``Conversion.data`` is exactly what ``tomllib.loads`` of the output gives back, so it
is what vrrpd.config.parse / ctsync.config.parse check (target.py). Comments live
beside it, keyed by the dotted path of the key or table they stand above. The
report has two lists of findings, each with file:line: what was *not translated*
(nothing of it is in the output) and *notes* on translations that behave
differently from the original; plus what the user must do before use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Path_ = tuple[str, ...]


class InputError(Exception):
    """Input that cannot be read or parsed; the CLI prints ``file:line: problem``
    and exits 1."""

    def __init__(self, file: str, line: int | None, problem: str):
        super().__init__(f"{file}:{line}: {problem}" if line else f"{file}: {problem}")
        self.file, self.line, self.problem = file, line, problem


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str  # the construct, as the user wrote it (or close to it)
    why: str

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class Conversion:
    data: dict[str, Any] = field(default_factory=dict)
    comments: dict[Path_, list[str]] = field(default_factory=dict)
    dropped: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (format, "path (detail)")
    files: list[str] = field(default_factory=list)  # every file read, in order: findings are sorted by it
    check_problems: list[str] = field(default_factory=list)  # what --check says of the output

    # -- the data
    def table(self, *path: str) -> dict[str, Any]:
        """The table at ``path``, created (with its parents) if absent."""
        t = self.data
        for p in path:
            t = t.setdefault(p, {})
        return t

    def put(self, path: Path_, key: str, value: Any, comment: str | list[str] | None = None) -> None:
        self.table(*path)[key] = value
        if comment:
            self.comment((*path, key), comment)

    def comment(self, path: Path_, text: str | list[str]) -> None:
        lines = [text] if isinstance(text, str) else list(text)
        self.comments.setdefault(tuple(path), []).extend(lines)

    # -- the report
    def drop(self, file: str, line: int, what: str, why: str) -> None:
        """Not translated: the output has nothing of ``what``."""
        f = Finding(file, line, what, why)
        if f not in self.dropped:
            self.dropped.append(f)

    def note(self, file: str, line: int, what: str, why: str) -> None:
        """Translated, but it behaves differently or was deduced: worth reading."""
        f = Finding(file, line, what, why)
        if f not in self.notes:
            self.notes.append(f)

    def sorted_findings(self, items: list[Finding]) -> list[Finding]:
        """By file (in the order read), then line."""
        rank = {f: i for i, f in reversed(list(enumerate(self.files)))}
        return sorted(items, key=lambda f: (rank.get(f.file, len(rank)), f.line))

    def action(self, text: str) -> None:
        if text not in self.actions:
            self.actions.append(text)
