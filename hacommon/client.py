"""The blocking client of the daemons' control sockets, for the command-line tools.

Standard library only (json, socket; tomllib when a config file names the socket), so
that ``vrrpctl status`` or ``ctsyncctl commit`` starts in a few tens of milliseconds:
the daemon side (trio, the protocol cores) is never imported by a client.
"""

from __future__ import annotations

import json
import socket
TYPE_CHECKING = False  # typing itself costs milliseconds of start-up
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def json_line(obj: Any) -> bytes:
    return json.dumps(obj, default=str).encode() + b"\n"


def _connect(path: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def request(path: str, cmd: str, timeout: float | None = 30.0, **params) -> dict:
    """One request, its one-line reply."""
    s = _connect(path, timeout)
    try:
        s.sendall(json_line({"cmd": cmd, **params}))
        with s.makefile("rb") as f:
            return json.loads(f.readline() or b"{}")
    finally:
        s.close()


def stream(path: str, cmd: str, timeout: float | None = 5.0, **params) -> Iterator[dict]:
    """A subscription: one request, then one object per line until the daemon closes
    (or the caller stops iterating)."""
    s = _connect(path, timeout)
    try:
        s.sendall(json_line({"cmd": cmd, **params}))
        s.settimeout(None)
        with s.makefile("rb") as f:
            for line in f:
                yield json.loads(line)
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
