"""The batch codec: the per-entry work of ctsync, one call per netlink datagram.

    filt = Filter(ignore_protocols, ignore_tcp_states, ignore_addresses)   # once, from config
    records, skipped, filtered, errors, other = events(datagram, filt, own_portids)
    # or straight from a socket, every datagram queued (recvmmsg in C):
    records, skipped, filtered, errors, n_other, datagrams, overrun, empty = recv_events(sock, 256, filt, own_portids)
    for kind, portid, key, body in records: ...   # body: the compact form, what the sync link carries
    key, timeout, message = expand(body)          # a compact form back into its commit message
    key, timeout, message = accept(body)          # a backup, per replicated entry: expand, refused (CodecError)
                                                  # unless the message may be kept and committed

Two implementations with the same functions and the same results: the C extension
``ctnetlink._batch`` (``ctnetlink/_batch.c``, built by the package's own build) and the
pure-Python reference :mod:`ctnetlink.batch_python` (the existing codec composed; the
differential tests hold the C one to it). This module takes the C one when it imports and
matches this source's API version, else the Python one, and says which and why:

- :data:`IMPLEMENTATION`: ``"c"`` or ``"python"``;
- :data:`C_UNAVAILABLE`: None, or why the C one is not used (not built, stale build, forced).

The environment variable ``HAPAIR_CODEC`` overrides the choice (differential runs,
debugging): ``python`` forces the reference; ``c`` insists on the extension (ImportError if
it is not there); unset, empty or ``auto`` picks as above.
"""

from __future__ import annotations

import os

from . import batch_python

__all__ = ["IMPLEMENTATION", "C_UNAVAILABLE", "Filter", "events", "recv_events", "expand", "accept", "key_and_timeout",
           "KIND_NEW", "KIND_UPDATE", "KIND_DESTROY", "ENV", "load_c"]

ENV = "HAPAIR_CODEC"
#: the API of ctnetlink/_batch.c this module was written for (its API_VERSION)
C_API_VERSION = 4

KIND_NEW, KIND_UPDATE, KIND_DESTROY = batch_python.KIND_NEW, batch_python.KIND_UPDATE, batch_python.KIND_DESTROY


def load_c():
    """The C module, or ImportError saying why it cannot be used."""
    try:
        from . import _batch
    except ImportError as e:
        raise ImportError(f"ctnetlink._batch is not built ({e}); the build needs gcc and the Python "
                          f"headers (python3-dev): pip install -e . or ./run setup") from e
    if getattr(_batch, "API_VERSION", None) != C_API_VERSION:
        raise ImportError(f"ctnetlink._batch is a stale build (API {getattr(_batch, 'API_VERSION', None)}, "
                          f"this source wants {C_API_VERSION}): rebuild it (pip install -e . or ./run setup)")
    return _batch


def _choose():
    want = os.environ.get(ENV, "").strip().lower()
    if want == "python":
        return batch_python, f"{ENV}=python"
    if want == "c":
        return load_c(), None
    if want not in ("", "auto"):
        raise ImportError(f"{ENV}={os.environ[ENV]!r}: use 'c', 'python' or 'auto'")
    try:
        return load_c(), None
    except ImportError as e:
        return batch_python, str(e)


_impl, C_UNAVAILABLE = _choose()
IMPLEMENTATION = "python" if _impl is batch_python else "c"

Filter = _impl.Filter
events = _impl.events
recv_events = _impl.recv_events
key_and_timeout = _impl.key_and_timeout
expand = _impl.expand
accept = _impl.accept
