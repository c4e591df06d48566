"""Benchmarks: vrrpd + ctsync side by side with keepalived + conntrackd, in halab
network namespaces.

``python -m bench`` (see ``bench/__main__.py``) measures, for both stacks in the
same topology with the same traffic: VRRP takeover on the wire (1), stateful NAT
failover and failback (2), the takeover race (3), replication rate (4), commit
time (5), memory per entry and idle cost (6), and the VRRP daemon with many
instances (7).  The stacks are in :mod:`bench.stacks`; results go to JSON and to
the Results section of docs/benchmarks.md (rendered by :mod:`bench.report`).
Everything runs inside lab namespaces and is torn down on every path; each run is
bounded in time.
"""
