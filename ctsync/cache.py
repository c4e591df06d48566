"""The external cache: the peer's conntrack entries, kept ready to commit.

Each entry is stored as one bytes object: a 4-byte expiry (seconds, the cache's own
clock) followed by the complete IPCTNL_MSG_CT_NEW message that creates it (the commit
recipe of ctnetlink.codec.encode_new). A failover then only patches sequence
numbers and hands the messages to the kernel in large batches: no parsing, no encoding,
no objects per entry (which also keeps memory per entry low; `bytes_per_entry()` says
how low).

Keys are the entries' identities (:mod:`ctnetlink.key`).
"""

from __future__ import annotations

import itertools
import struct
import sys

_EXP = struct.Struct("!I")


class ExternalCache:
    def __init__(self) -> None:
        self._d: dict[bytes, bytes] = {}
        self.expired = 0

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: bytes) -> bool:
        return key in self._d

    def put(self, key: bytes, message: bytes, expires: float) -> bool:
        """Store (or replace) an entry; True if it is new."""
        new = key not in self._d
        self._d[key] = _EXP.pack(int(expires) & 0xFFFFFFFF) + message
        return new

    def delete(self, key: bytes) -> bool:
        return self._d.pop(key, None) is not None

    def clear(self) -> None:
        self._d.clear()

    def keys(self) -> list[bytes]:
        return list(self._d)

    def message(self, key: bytes) -> bytes | None:
        v = self._d.get(key)
        return v[_EXP.size:] if v is not None else None

    def messages(self) -> list[bytes]:
        """Every entry as a ready-to-send CT_NEW message (the commit)."""
        n = _EXP.size
        return [v[n:] for v in self._d.values()]

    def expire(self, now: float) -> int:
        """Drop entries whose timeout ran out (the kernel would have dropped them too)."""
        t = int(now)
        dead = [k for k, v in self._d.items() if _EXP.unpack_from(v)[0] <= t]
        for k in dead:
            del self._d[k]
        self.expired += len(dead)
        return len(dead)

    def bytes_per_entry(self) -> float:
        """Memory per cached entry: key and value objects plus the dict's share."""
        if not self._d:
            return 0.0
        sample = list(itertools.islice(self._d.items(), 1000))  # not the whole table: status is polled
        objs = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in sample) / len(sample)
        return objs + sys.getsizeof(self._d) / len(self._d)
