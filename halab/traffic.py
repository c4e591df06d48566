"""Traffic through the lab, from the test process: start the traffic programs
(:mod:`halab.trafficgen`) in lab namespaces, wait for them, read their reports.

:func:`start_tcp`, :func:`start_udp`, :func:`short_udp_flows` start the server in
``pair.s`` and the client in ``pair.c`` (each ``python -m halab.trafficgen ...`` in its
namespace) and return a :class:`TrafficRun`; :func:`collect` waits (bounded) for the
clients to end, stops the servers and returns the parsed reports (their fields:
:mod:`halab.trafficgen`).  ``start_tcp_server`` / ``start_tcp_client`` /
``start_udp_server`` / ``start_udp_client`` start one side in any host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sys
import time

from .trafficgen.common import FLOWS_PORT, SIP_PORT, TCP_PORT

__all__ = [
    "TrafficRun", "start_tcp", "start_udp", "short_udp_flows", "collect",
    "start_tcp_server", "start_tcp_client", "start_udp_server", "start_udp_client",
    "TCP_PORT", "SIP_PORT", "FLOWS_PORT",
]

_RUN_COUNTER = itertools.count()


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "halab.trafficgen", *map(str, args)]


@dataclasses.dataclass
class TrafficRun:
    """A traffic server and/or client started in lab namespaces.

    ``expected_end``: time.monotonic() by which the client should have
    written its report (duration + connect/dead/drain margins); :func:`collect`
    waits until then plus ``grace``."""

    kind: str
    client: object | None  # halab.Proc
    server: object | None  # halab.Proc
    client_report: str | None
    server_report: str | None
    expected_end: float
    info: dict = dataclasses.field(default_factory=dict)
    progress_path: str | None = None

    def progress(self) -> dict | None:
        """The client's latest ``--progress`` snapshot (``tcp_progress`` / ``udp_progress``
        of :mod:`halab.trafficgen`), or None before the first one (or without
        ``progress=True``)."""
        if self.progress_path is None:
            return None
        try:
            with open(self.progress_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_established(self, timeout: float = 30.0) -> dict:
        """Wait for the client's ``established`` line; returns it."""
        return _wait_event(self.client, "established", timeout)

    def stop_client(self) -> None:
        """Ask the client to end now (it still writes its report)."""
        if self.client is not None:
            self.client.signal(signal.SIGTERM)


def _wait_event(proc, event: str, timeout: float) -> dict:
    from .lab import LabError
    deadline = time.monotonic() + timeout
    while True:
        for line in proc.read_log().splitlines():
            if line.startswith("{") and f'"event": "{event}"' in line:
                with contextlib.suppress(ValueError):
                    return json.loads(line)
        if not proc.alive():
            raise LabError(f"{proc!r} exited before '{event}':\n{proc.read_log()[-2000:]}")
        if time.monotonic() >= deadline:
            raise LabError(f"{proc!r}: no '{event}' after {timeout}s:\n{proc.read_log()[-2000:]}")
        time.sleep(0.02)


def _report_path(host, tag: str, role: str) -> str:
    return os.path.join(host.lab.workdir, f"{tag}-{role}-{next(_RUN_COUNTER)}.json")


def start_tcp_server(host, port: int = TCP_PORT, tag: str = "tcp", timeout: float = 15.0, bind: str = "0.0.0.0"):
    """TCP echo server in ``host``; returns (Proc, report path) once listening."""
    rep = _report_path(host, tag, "server")
    proc = host.start(_cmd("tcp-server", "--port", port, "--report", rep, "--bind", bind), name=f"{tag}-server")
    _wait_event(proc, "listening", timeout)
    return proc, rep


def start_udp_server(host, port: int = SIP_PORT, nports: int = 1, tag: str = "udp",
                     timeout: float = 15.0, max_sources: int = 1000, bind: str = "0.0.0.0"):
    rep = _report_path(host, tag, "server")
    proc = host.start(_cmd("udp-server", "--port", port, "--nports", nports,
                           "--max-sources", max_sources, "--report", rep, "--bind", bind), name=f"{tag}-server")
    _wait_event(proc, "listening", timeout)
    return proc, rep


def start_tcp_client(host, server: str, conns: int, interval: float, duration: float,
                     port: int = TCP_PORT, dead_after: float = 10.0, tag: str = "tcp",
                     extra: list[str] | None = None):
    rep = _report_path(host, tag, "client")
    proc = host.start(_cmd("tcp-client", "--server", server, "--port", port, "--conns", conns,
                           "--interval", interval, "--duration", duration,
                           "--dead-after", dead_after, "--report", rep, *(extra or [])),
                      name=f"{tag}-client")
    return proc, rep


def start_udp_client(host, server: str, duration: float, interval: float = 0.02,
                     port: int = SIP_PORT, sport: int = SIP_PORT, tag: str = "udp",
                     extra: list[str] | None = None):
    rep = _report_path(host, tag, "client")
    proc = host.start(_cmd("udp-client", "--server", server, "--port", port, "--sport", sport,
                           "--interval", interval, "--duration", duration, "--report", rep,
                           *(extra or [])),
                      name=f"{tag}-client")
    return proc, rep


def _server_ip(pair) -> str:
    from .hapair import SERVER_IP
    return getattr(pair, "server_ip", SERVER_IP)


def _bind(pair) -> str:
    """What the servers listen on: the wildcard of the pair's address family."""
    return "::" if getattr(pair, "family", 4) == 6 else "0.0.0.0"


def start_tcp(pair, conns: int = 20, interval: float = 0.05, duration: float = 10.0, *,
              port: int = TCP_PORT, dead_after: float = 10.0, tag: str = "tcp",
              wait_established: bool = True, extra: list[str] | None = None,
              progress: bool = False) -> TrafficRun:
    """Echo server in ``pair.s``, ``conns`` connections from ``pair.c`` to it
    (through the VIPs and the NAT).  With ``wait_established`` returns once
    every connect has finished (the traffic phase of ``duration`` s then
    starts).  ``progress``: the client keeps a snapshot of its connections in a
    file, read by :meth:`TrafficRun.progress` while it runs."""
    server, srep = start_tcp_server(pair.s, port, tag, bind=_bind(pair))
    connect_budget = 5.0 * (1 + conns // 128) + 5.0
    prog = _report_path(pair.c, tag, "progress") if progress else None
    client, crep = start_tcp_client(pair.c, _server_ip(pair), conns, interval, duration, port,
                                    dead_after, tag, [*(extra or []), *(["--progress", prog] if prog else [])])
    run = TrafficRun("tcp", client, server, crep, srep,
                     time.monotonic() + connect_budget + duration + 3.0,
                     {"conns": conns, "interval": interval, "duration": duration, "port": port},
                     progress_path=prog)
    if wait_established:
        run.info["established"] = run.wait_established(connect_budget + 10)
        run.expected_end = time.monotonic() + duration + 3.0
    return run


def start_udp(pair, duration: float = 10.0, interval: float = 0.02, *, port: int = SIP_PORT,
              sport: int = SIP_PORT, tag: str = "udp", wait_established: bool = True,
              progress: bool = False) -> TrafficRun:
    """The "SIP" flow: ``pair.c``:``sport`` -> ``pair.s``:``port`` every ``interval`` s
    (``progress``: as for :func:`start_tcp`)."""
    server, srep = start_udp_server(pair.s, port, 1, tag, bind=_bind(pair))
    prog = _report_path(pair.c, tag, "progress") if progress else None
    client, crep = start_udp_client(pair.c, _server_ip(pair), duration, interval, port, sport, tag,
                                    ["--progress", prog] if prog else None)
    run = TrafficRun("udp", client, server, crep, srep, time.monotonic() + duration + 10.0,
                     {"interval": interval, "duration": duration, "port": port, "sport": sport},
                     progress_path=prog)
    if wait_established:
        run.info["established"] = run.wait_established(15)
        run.expected_end = time.monotonic() + duration + 3.0
    return run


def short_udp_flows(pair, rate: float, count: int, duration: float, *, port: int = FLOWS_PORT,
                    nports: int = 1, packets: int = 1, hold: float = 0.2,
                    sport_lo: int = 10000, sport_hi: int = 60999, tag: str = "flows",
                    start_server: bool = True) -> TrafficRun:
    """Many short UDP flows from ``pair.c`` (distinct source ports, see
    :func:`halab.trafficgen.udp.iter_flows`) at ``rate`` flows/s, at most ``count`` and for at
    most ``duration`` s, to an echo server in ``pair.s`` (started unless
    ``start_server=False``).  Each flow creates a conntrack entry (and its
    events) on the master."""
    server = srep = None
    if start_server:
        server, srep = start_udp_server(pair.s, port, nports, tag, max_sources=0)
    crep = _report_path(pair.c, tag, "client")
    client = pair.c.start(_cmd("udp-flows", "--server", _server_ip(pair), "--port", port,
                               "--nports", nports, "--rate", rate, "--count", count,
                               "--duration", duration, "--packets", packets, "--hold", hold,
                               "--sport-lo", sport_lo, "--sport-hi", sport_hi, "--report", crep),
                          name=f"{tag}-client")
    return TrafficRun("udp-flows", client, server, crep, srep,
                      time.monotonic() + min(duration, count / rate) + hold + 10.0,
                      {"rate": rate, "count": count, "duration": duration})


def _read_report(path: str | None, proc, require: bool = True) -> dict | None:
    from .lab import LabError
    if path is None:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        if not require:
            return None
        log = proc.read_log()[-3000:] if proc is not None else ""
        raise LabError(f"no report {path} from {proc!r}: {e}\n{log}") from None


def collect(runs, grace: float = 15.0, server_timeout: float = 10.0, require: bool = True):
    """Wait for the client(s) of ``runs`` (a TrafficRun or a list) to end --
    at most until their ``expected_end`` + ``grace``, then they are SIGTERMed
    (and killed 5 s later) -- then stop the servers (SIGTERM, they write their
    report) and return ``{"client": report, "server": report}`` (a list of
    them for a list).  A missing report raises LabError (with the process's
    log), or is None with ``require=False`` (e.g. a server you killed)."""
    import subprocess
    single = isinstance(runs, TrafficRun)
    runs = [runs] if single else list(runs)
    for run in runs:
        if run.client is None:
            continue
        left = max(0.0, run.expected_end + grace - time.monotonic())
        try:
            run.client.wait(left)
        except subprocess.TimeoutExpired:
            run.client.signal(signal.SIGTERM)
            try:
                run.client.wait(5)
            except subprocess.TimeoutExpired:
                run.client.kill()
    for run in runs:
        if run.server is not None and run.server.alive():
            run.server.signal(signal.SIGTERM)
    for run in runs:
        if run.server is not None:
            try:
                run.server.wait(server_timeout)
            except subprocess.TimeoutExpired:
                run.server.kill()
    out = [{"client": _read_report(r.client_report, r.client, require),
            "server": _read_report(r.server_report, r.server, require)} for r in runs]
    return out[0] if single else out
