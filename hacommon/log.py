"""Logging: one line per event on stderr, as text or JSON lines, plus a rate limiter
so a flood of bad packets cannot flood the log (the counters keep the exact numbers)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": round(record.created, 6), "level": record.levelname.lower(), "msg": record.getMessage()}
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        line = f"{t} {record.levelname.lower():7} {record.getMessage()}"
        if record.exc_info:  # a bug's traceback (log.exception): the one multi-line entry
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(fmt: str = "text", level: str = "info", name: str = "hapair") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    return log


def first_error(e: BaseException) -> str:
    """'Type: text' of an exception, or of the first leaf of an exception group (what a
    trio nursery raises), for a one-line message."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {str(e)[:200]}"


class RateLimiter:
    """Allows one message per key per `period` seconds and reports how many were held back."""

    def __init__(self, period: float = 10.0):
        self.period = period
        self._last: dict[object, tuple[float, int]] = {}

    def allow(self, key: object, now: float) -> tuple[bool, int]:
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last >= self.period:
            self._last[key] = (now, 0)
            return True, suppressed
        self._last[key] = (last, suppressed + 1)
        return False, 0
