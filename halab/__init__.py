"""halab: reusable network-namespace lab for testing the HA router pair.

A :class:`Lab` builds hosts (network namespaces), bridges (inside a per-lab
"switch" namespace, never in the machine's own namespace), veth links,
long-running daemons (:class:`Proc`) and packet captures (:class:`Capture`),
and tears all of it down on every path.  See :mod:`halab.lab` for the safety
rules, :mod:`halab.daemons` for third-party daemons (keepalived), and
``hapair-lab`` (:mod:`halab.cli`) to list/clean labs left by killed processes.
"""

from .lab import (
    Bridge,
    Capture,
    Host,
    Lab,
    LabCommandError,
    LabError,
    Proc,
    live_labs,
    require_root_and_netns,
    teardown_all,
    wait_for,
)

__all__ = [
    "Lab", "LabError", "LabCommandError", "Host", "Bridge", "Proc", "Capture",
    "require_root_and_netns", "wait_for", "live_labs", "teardown_all",
    "lab_namespaces",
]


def lab_namespaces(pid: int | None = None) -> list[str]:
    """Existing lab namespaces (``hl-*``); only those created by process
    ``pid`` if given (used by the test suite's leak check)."""
    from . import _ns
    prefix = "hl-" if pid is None else f"hl-{pid}-"
    return _ns.list_netns(prefix)
