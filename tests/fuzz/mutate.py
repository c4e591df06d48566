"""A small, fast mutation engine for the fuzz tests: valid inputs built by the project's
own encoders, changed the way fuzzers change them (bit flips, random and boundary
values in 1, 2 and 4 bytes of either byte order, insertions, deletions, duplicated and
spliced chunks, truncation). Hypothesis explores shapes; this loop gives the volume
(a million inputs per parser under ``-m slow``) at a few microseconds per input.

:func:`run` feeds mutants to a target and stops at the first exception that is not one
of the documented ones, reporting the input in hex so it can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import threading
import time
import traceback
from typing import Callable, Sequence

#: Inputs per target: the default run (seconds for all of them) and `-m slow`.
QUICK = int(os.environ.get("HAPAIR_FUZZ_QUICK", "2000"))
SLOW = int(os.environ.get("HAPAIR_FUZZ_SLOW", "1000000"))
#: A parser that spends this long on one input is hung (a loop bound by an input value).
HANG_SECONDS = 2.0  # an input takes micro- to milliseconds: a margin of 1000x and more

_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40)
_INTERESTING_16 = (0, 1, 4, 8, 16, 20, 0x7FFF, 0x8000, 0xFFFF, 0xFFFE)
_INTERESTING_32 = (0, 1, 16, 20, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE)


def mutate(rng: random.Random, data: bytes, seeds: Sequence[bytes]) -> bytes:
    """One mutant of ``data`` (1 to 8 stacked changes)."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        op = rng.randrange(11)
        n = len(b)
        if op == 0 and n:
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:
            b[rng.randrange(n)] = rng.choice(_INTERESTING_8)
        elif op == 3 and n >= 2:
            i = rng.randrange(n - 1)
            v = rng.choice(_INTERESTING_16)
            if rng.random() < 0.5:  # or near the value already there (a length off by a few)
                v = (struct.unpack_from("<H", b, i)[0] + rng.randint(-8, 8)) & 0xFFFF
            struct.pack_into(rng.choice("<>") + "H", b, i, v)
        elif op == 4 and n >= 4:
            i = rng.randrange(n - 3)
            v = rng.choice(_INTERESTING_32)
            if rng.random() < 0.5:
                v = (struct.unpack_from("<I", b, i)[0] + rng.randint(-8, 8)) & 0xFFFFFFFF
            struct.pack_into(rng.choice("<>") + "I", b, i, v)
        elif op == 5:
            i = rng.randint(0, n)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 4, 8, 16))))
        elif op == 6 and n:
            i = rng.randrange(n)
            del b[i:i + rng.choice((1, 2, 4, 8, 16, 64))]
        elif op == 7 and n:
            i, j = rng.randrange(n), rng.randrange(n)
            b[j:j] = b[i:i + rng.choice((4, 8, 16, 64))]
        elif op == 8 and n:
            del b[rng.randrange(n):]
        elif op == 9 and seeds:
            other = rng.choice(seeds)
            if other:
                i, j = rng.randint(0, n), rng.randrange(len(other))
                b[i:] = other[j:j + rng.choice((8, 32, 128, 100000))]
        elif op == 10 and n:
            i = rng.randrange(n)
            b[i:i + 4] = bytes(4) if rng.random() < 0.5 else b"\xff" * 4
    return bytes(b)


class FuzzFailure(AssertionError):
    pass


class Hang(BaseException):
    """Raised into a target by the alarm: it ran for HANG_SECONDS on one input."""


def _on_alarm(signum, frame):
    raise Hang()


def run(target: Callable[[bytes], object], seeds: Sequence[bytes], allowed: tuple[type[BaseException], ...],
        count: int, seed: int = 0, what: str = "") -> int:
    """Feed ``count`` inputs to ``target``: the seeds themselves, then mutants of them
    (and mutants of mutants: a mutant is kept as a new seed now and then, so changes
    accumulate). Raises :class:`FuzzFailure` with a replayable input at the first
    exception outside ``allowed``, or at the first input that takes HANG_SECONDS.
    Returns how many inputs ended in an allowed error."""
    errors = 0
    inputs = Mutants(seeds, seed)
    for i, data in inputs.take(count):
        if run_one(target, data, allowed, f"{what or target.__name__}: input #{i}"):
            errors += 1
        else:
            inputs.keep(data)
    return errors


class Mutants:
    """The inputs of :func:`run`: the seeds, then mutants, some kept as seeds (call
    :meth:`keep` with an input the target took without an error)."""

    def __init__(self, seeds: Sequence[bytes], seed: int = 0):
        self.rng = random.Random(seed)
        self.seeds = list(seeds)
        self.pool = list(seeds)
        self.i = 0

    def take(self, count: int):
        for self.i in range(count):
            if self.i < len(self.seeds):
                yield self.i, self.seeds[self.i]
            else:
                yield self.i, mutate(self.rng, self.rng.choice(self.pool), self.pool)

    def keep(self, data: bytes) -> None:
        if self.i >= len(self.seeds) and self.rng.random() < 0.01 and len(self.pool) < 4096 and len(data) < 1 << 16:
            self.pool.append(data)


def run_one(target: Callable[[bytes], object], data: bytes, allowed: tuple[type[BaseException], ...] = (),
            what: str = "input") -> bool:
    """``target(data)`` under the hang alarm: True if it raised one of ``allowed``,
    False if it returned; :class:`FuzzFailure` (with the input in hex) otherwise."""
    alarm = threading.current_thread() is threading.main_thread()
    if alarm:  # pytest-timeout's alarm (if any) is put back afterwards, minus the time spent here
        old, outer, t0 = signal.signal(signal.SIGALRM, _on_alarm), signal.getitimer(signal.ITIMER_REAL), time.monotonic()
    try:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            target(data)
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except allowed:
        return True
    except Hang:
        raise FuzzFailure(f"{what} still running after {HANG_SECONDS} s\n"
                          f"input (hex): {data.hex()}\n{traceback.format_exc()}") from None
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
        raise FuzzFailure(f"{what} raised {type(e).__name__}: {e}\n"
                          f"input (hex): {data.hex()}\n{traceback.format_exc()}") from None
    finally:
        if alarm:
            signal.signal(signal.SIGALRM, old)
            if outer[0]:
                signal.setitimer(signal.ITIMER_REAL, max(outer[0] - (time.monotonic() - t0), 0.001), outer[1])
    return False


def apply_edits(data: bytes, edits: Sequence[tuple[int, int, int]]) -> bytes:
    """Hypothesis' way in: edits it can shrink, (op, position, value), applied to a seed.
    op 0 sets a byte, 1 inserts one, 2 deletes value % 16 + 1 bytes, 3 truncates, 4 flips
    bit value % 8, 5 sets a big-endian 16-bit word, 6 a little-endian one."""
    b = bytearray(data)
    for op, pos, val in edits:
        n = len(b)
        i = pos % (n + 1)
        if op == 0 and n:
            b[i % n] = val & 0xFF
        elif op == 1:
            b[i:i] = bytes([val & 0xFF])
        elif op == 2:
            del b[i:i + val % 16 + 1]
        elif op == 3:
            del b[i:]
        elif op == 4 and n:
            b[i % n] ^= 1 << (val % 8)
        elif op in (5, 6) and n >= 2:
            struct.pack_into(">H" if op == 5 else "<H", b, min(i, n - 2), val & 0xFFFF)
    return bytes(b)
