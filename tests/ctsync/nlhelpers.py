"""Helpers shared by the ctnetlink tests (this folder is on sys.path: pytest's rootdir
import mode, no package)."""

import struct


def strip_attr(msg: bytes, attr: int) -> bytes:
    """``msg`` without its top-level attribute ``attr``."""
    buf = bytearray(msg)
    off = 20
    while off < len(buf):
        ln, tp = struct.unpack_from("=HH", buf, off)
        if tp & 0x3FFF == attr:
            del buf[off:off + ((ln + 3) & ~3)]
            struct.pack_into("=I", buf, 0, len(buf))
            return bytes(buf)
        off += (ln + 3) & ~3
    raise AssertionError(f"no attribute {attr}")
