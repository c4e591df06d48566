"""The blocking client of the daemons' control sockets, for the command-line tools.

A command-line tool pays its imports at every call (a keepalived notify script, a
monitoring probe), so this module imports as little as it can. It uses the C modules
under ``socket`` and ``json`` directly: ``_socket`` (socket.py imports ``enum``,
``selectors`` and ``collections``), and ``_json``'s scanner and string encoder (the
``json`` package imports ``re``, which imports ``enum``, ``functools`` and
``collections``); together about a third of ``vrrpctl status`` (docs/benchmarks.md,
figure 8). :func:`loads_line` and :func:`request_line` fall back to ``json`` where
``_json`` is missing or a value is not a plain one; tests/unit/test_client_lean.py
checks that they agree with ``json`` exactly. :func:`quick_args` spares the common
command lines ``argparse`` (which imports ``re`` and ``gettext`` too). The daemon side
(trio, the protocol cores) is never imported by a client.
"""

from __future__ import annotations

try:  # the C module under socket: socket.py imports enum, selectors and collections
    import _socket
except ImportError:
    import socket as _socket

TYPE_CHECKING = False  # typing itself costs milliseconds of start-up
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

try:
    import _json
except ImportError:  # another Python implementation: the json package does it all
    _json = None


def json_line(obj: Any) -> bytes:
    """One JSON line (the daemons' replies: anything json does not know is written as str)."""
    import json

    return json.dumps(obj, default=str).encode() + b"\n"


def request_line(obj: dict) -> bytes:
    """A request as one JSON line, the same bytes as :func:`json_line` writes; by hand
    (str, int, bool, None values) so that a client needs no ``json`` import."""
    if _json is None or not all(type(k) is str for k in obj):
        return json_line(obj)
    parts = []
    for k, v in obj.items():
        if type(v) is str:
            text = _json.encode_basestring_ascii(v)
        elif v is None or type(v) is bool:
            text = {None: "null", True: "true", False: "false"}[v]
        elif type(v) is int:
            text = int.__repr__(v)
        else:
            return json_line(obj)
        parts.append(f"{_json.encode_basestring_ascii(k)}: {text}")
    return ("{" + ", ".join(parts) + "}\n").encode()


class _Scan:
    """What ``_json.make_scanner`` reads of a decoder: json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity, as json.loads reads them


_scan = _json.make_scanner(_Scan()) if _json is not None else None
_WS = b" \t\n\r"


def loads_line(line: bytes) -> Any:
    """``json.loads(line)`` for a reply line, through the C scanner when there is one.
    Raises ValueError (json's JSONDecodeError is one) on anything json.loads refuses."""
    if _scan is None:
        import json

        return json.loads(line)
    text = line.decode("utf-8") if isinstance(line, (bytes, bytearray)) else line
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        obj, end = _scan(text, start)
    except StopIteration:
        end = -1
    if end < 0 or text[end:].strip(" \t\n\r"):
        import json

        return json.loads(line)  # what json.loads makes of it (an error, with its message; a BOM)
    return obj


def _connect(path: str, timeout: float | None):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def _lines(s) -> Iterator[bytes]:
    """The lines the daemon writes, each with its newline (the last one without, if the
    daemon closes mid-line). The chunks of a long line (a ``dump`` of 100k entries is
    one line of megabytes) are joined once, not appended to one another."""
    parts: list[bytes] = []
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            if parts:
                yield b"".join(parts)
            return
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            parts.append(chunk[start:nl + 1])
            yield b"".join(parts)
            parts = []
            start = nl + 1
        if start < len(chunk):
            parts.append(chunk[start:])


def request(path: str, cmd: str, timeout: float | None = 30.0, **params) -> dict:
    """One request, its one-line reply."""
    s = _connect(path, timeout)
    try:
        s.sendall(request_line({"cmd": cmd, **params}))
        return loads_line(next(_lines(s), b"") or b"{}")
    finally:
        s.close()


def stream(path: str, cmd: str, timeout: float | None = 5.0, **params) -> Iterator[dict]:
    """A subscription: one request, then one object per line until the daemon closes
    (or the caller stops iterating)."""
    s = _connect(path, timeout)
    try:
        s.sendall(request_line({"cmd": cmd, **params}))
        s.settimeout(None)
        for line in _lines(s):
            yield loads_line(line)
    finally:
        s.close()


class SocketPathError(Exception):
    """The config file named on the command line cannot tell the control socket."""


def socket_from_file(path: str, table: str, default: str) -> str:
    """The ``control_socket`` of ``[table]`` in a config file, or ``default``. Only that
    key is read: the file is the daemon's to validate (``--check``), and a client must
    still reach a daemon whose file has since been edited badly."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise SocketPathError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SocketPathError(f"{path}: TOML syntax error: {e}") from None
    t = data.get(table)
    sock = t.get("control_socket") if isinstance(t, dict) else None
    if sock is None:
        return default
    if not isinstance(sock, str) or not sock:
        raise SocketPathError(f"{path}: {table}.control_socket: must be a non-empty string, got {sock!r}")
    return sock


class QuickArgs:
    """The parsed command line of :func:`quick_args`, read like argparse's Namespace."""

    def __init__(self, **values) -> None:
        self.__dict__.update(values)


def quick_args(argv: list[str], commands: dict[str, tuple[tuple[str, ...], str | None]]) -> QuickArgs | None:
    """The command lines a script runs most, parsed without ``argparse`` (start-up):
    ``[-s PATH | --socket PATH | --socket=PATH] COMMAND [FLAG...] [POSITIONAL]``, where
    ``commands`` maps each command taken this way to (its boolean flags, the name of its
    one optional positional argument or None). Anything else (help, -c, other options,
    a mistake) gives None, and the caller parses ``argv`` with argparse, which explains
    errors; tests/unit/test_client_lean.py checks both parse alike."""
    sock = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        if a in ("-s", "--socket") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            sock, i = argv[i + 1], i + 2
        elif a.startswith("--socket=") and len(a) > 9:
            sock, i = a[9:], i + 1
        else:
            return None
    if i >= len(argv) or argv[i] not in commands:
        return None
    cmd = argv[i]
    flags, positional = commands[cmd]
    values = {"socket": sock, "config": None, "cmd": cmd, **{f[2:].replace("-", "_"): False for f in flags}}
    if positional:
        values[positional] = None
    for a in argv[i + 1:]:
        if a in flags:
            values[a[2:].replace("-", "_")] = True
        elif positional and values[positional] is None and a and not a.startswith("-"):
            values[positional] = a
        else:
            return None
    return QuickArgs(**values)
