"""Benchmarks of vrrpd against keepalived, in halab network namespaces.

``python -m bench`` (see ``bench/__main__.py``) measures

* takeover delay beyond the protocol bound, on the wire (a capture on the lab
  bridge): hard failure of the master (kill -9 of its process group) and
  graceful stop (priority-0 advert), for vrrpd backing up vrrpd and keepalived
  backing up keepalived in the same topology;
* idle cost (CPU % of one core, RSS) of one daemon with 1 and with many
  instances.

Results go to JSON (``--out``) and a Markdown table (``--md``, rendered by
:mod:`bench.report`).  Everything runs inside lab namespaces and is torn down
on every path; each run is bounded in time.
"""
