"""The traffic programs of the lab: long-lived TCP connections, a "SIP" UDP flow and bursts
of short UDP flows, against echo servers, each side writing a JSON report.

They run *inside* lab namespaces, each in a fresh interpreter started by the test process's
helpers (:mod:`halab.traffic`: ``start_tcp``, ``start_udp``, ``short_udp_flows``, ``collect``).
Nothing here imports those helpers, the lab or the product: the standard library only.

Command line::

    python -m halab.trafficgen tcp-server --port 9000 --report FILE [--duration S]
    python -m halab.trafficgen tcp-client --server 10.10.0.200 --port 9000 --conns 200 \\
        --interval 0.05 --duration 30 --report FILE [--dead-after 10]
    python -m halab.trafficgen udp-server --port 5060 --report FILE [--nports K]
    python -m halab.trafficgen udp-client --server 10.10.0.200 --port 5060 --sport 5060 \\
        --interval 0.02 --duration 30 --report FILE
    python -m halab.trafficgen udp-flows --server 10.10.0.200 --port 6000 --rate 2000 \\
        --count 20000 --duration 30 --report FILE

Every process is bounded in time: clients stop after ``--duration`` (plus a
short drain), servers after ``--duration`` if given, or on SIGTERM/SIGINT;
all write their report then (atomically: ``FILE.tmp`` renamed).  Each prints
one JSON line ``{"event": "listening" | "established" | ...}`` on stdout when
it is ready, which the lab helpers wait for.

Reports (all times are epoch seconds, comparable across namespaces; gaps in
seconds).  TCP client ``summary``: conns, established, kept, lost, rsts,
errors (by errno name), gap_max / gap_median / gap_p99 (over the longest gap
of each kept connection), and per connection: id, local_port, state
(``open`` | ``lost``), reason (``no_echo``, ``ECONNRESET``, ``ETIMEDOUT``,
``EPIPE``, ``EOF``, ``connect: ...``), rst, sent, echoed, max_gap, max_gap_at
(when the gap ended), max_rtt, last_echo_age.  TCP server: per connection the
peer address/port as seen by the server (the NATed public address/port),
client id, bytes in/out, eof, rst, error; ``summary.peers`` counts the peer
addresses.  UDP: sent/received/max gap on the client, and on the server per
source address:port seen (to check the public port survives a failover).

Modules: :mod:`.common` (default ports, reports, the gap tracker), :mod:`.tcp` (echo server,
client), :mod:`.udp` (echo server, the SIP-like client, short flows), :mod:`.__main__` (the
command line).
"""
