"""The conntrack sysctls ctsync depends on (per network namespace).

``net.netfilter.nf_conntrack_events``:

* 0: no conntrack events at all;
* 1: every new entry gets an event cache: NEW/UPDATE/DESTROY are always
  reported;
* 2 (the default on recent kernels): the event cache is only allocated for
  entries created *while a ctnetlink listener exists*; entries created before
  ctsync subscribed never report their DESTROY.

ctsync wants 1.  /proc/sys/net is resolved against the network namespace of
the *calling thread*, so these helpers act on the caller's namespace, or on
``netns`` (via :func:`ctnetlink.netns.run_in_netns`).
"""

from __future__ import annotations

from .netns import run_in_netns

__all__ = ["get_sysctl", "set_sysctl", "get_conntrack_events", "set_conntrack_events",
           "ensure_conntrack_events"]

EVENTS_KEY = "net.netfilter.nf_conntrack_events"


def _path(key: str) -> str:
    if not key or ".." in key or key.startswith(("/", ".")):
        raise ValueError(f"bad sysctl key {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


def _read(key: str) -> str:
    with open(_path(key)) as f:
        return f.read().strip()


def _write(key: str, value: str) -> None:
    with open(_path(key), "w") as f:
        f.write(value)


def get_sysctl(key: str, netns: str | None = None) -> str:
    return run_in_netns(netns, _read, key)


def set_sysctl(key: str, value, netns: str | None = None) -> None:
    run_in_netns(netns, _write, key, str(value))


def get_conntrack_events(netns: str | None = None) -> int:
    return int(get_sysctl(EVENTS_KEY, netns))


def set_conntrack_events(value: int = 1, netns: str | None = None) -> int:
    """Set nf_conntrack_events (0, 1 or 2); return the previous value."""
    if value not in (0, 1, 2):
        raise ValueError(f"nf_conntrack_events must be 0, 1 or 2, not {value!r}")

    def swap() -> int:
        old = int(_read(EVENTS_KEY))
        if old != value:
            _write(EVENTS_KEY, str(value))
        return old

    return run_in_netns(netns, swap)


def ensure_conntrack_events(netns: str | None = None) -> int:
    """Make sure events are reported for every entry (value 1); return the
    previous value."""
    return set_conntrack_events(1, netns)
