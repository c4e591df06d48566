"""Command lines: `ctsync` (the daemon) and `ctsyncctl`.

Kept lean: `ctsyncctl status` and `commit` import socket and _json (hacommon.client):
not argparse (hacommon.client.quick_args takes the common command lines), not the json
package, never trio, ctnetlink or the replicator; the daemon side is imported
only by `ctsync` itself (see vrrpd/cli.py; docs/benchmarks.md, "CLI start-up").
"""

from __future__ import annotations

import os
import sys

DEFAULT_CONTROL_SOCKET = "/run/hapair/ctsync.sock"  # hacommon.paths.CTSYNC_CONTROL_SOCKET, not imported: start-up


async def _run(cfg) -> None:
    from .daemon import Daemon

    await Daemon(cfg).run()


def ctsync_main(argv: list[str] | None = None) -> int:
    from hacommon.entry import daemon_main

    from .config import TABLE

    return daemon_main(argv, prog="ctsync", description="conntrack replication for stateful NAT failover",
                       config_help="TOML configuration file (its [ctsync] table; the others are checked too)",
                       table=TABLE, root_reason="ctnetlink", run=_run)


def _text_status(s: dict) -> str:
    c, ch, lc = s["counters"], s["channel"], s["last_commit"]
    lines = [
        f"role            {s['role']} ({s['mode']} mode){'  following vrrpd group ' + s['failover_group'] if s['failover_group'] else ''}"
        + (f"  preparing to preempt: {s['preparation']}" if s.get("preparation") else "")
        + ("" if not s["failover_group"] or s["vrrpd_connected"] else "  [vrrpd not reachable]"),
        f"peer            {'alive' if s['peer_alive'] else 'NOT HEARD'}  role {s['peer_role'] or '?'}  ready {s['peer_ready']}",
        f"in sync         {s['in_sync']}  (ready: {s['ready']})"
        + (f"  NOT READY: vrrpd asked to lower {s['failover_group']} by {s['demoting_vrrpd']}" if s.get("demoting_vrrpd") else ""),
        f"codec           {s.get('codec', '?')}" + (f"  (the compiled one is not used: {s['codec_c_unavailable']})"
                                                   if s.get("codec_c_unavailable") else ""),
        f"caches          internal {s['internal_entries']}  external {s['external_entries']} ({s['external_bytes_per_entry']} bytes/entry)",
        f"kernel events   {c['events_rx']} (own ignored {c['events_ignored_own']}, filtered {c['events_filtered']}"
        f", unreadable {c.get('events_bad', 0)})  overruns {c['overruns']}",
        f"resyncs         requested {c['resyncs_requested']}  sent {c['resyncs_sent']}  received {c['resyncs_received']}  stale dropped {c['stale_dropped']}",
        *([_push_line(s["table_push"])] if s.get("table_push") else []),
        f"sync link       {s.get('transport', 'unicast')}  datagrams tx {ch['datagrams_tx']} rx {ch['datagrams_rx']}  messages tx {ch['messages_tx']} rx {ch['messages_rx']}",
        f"repairs         retransmits {ch['retransmits']}  nacks tx {ch['nacks_tx']} rx {ch['nacks_rx']}  lost {ch['lost']}  unacked {s['unacked']}",
        f"rejected        auth failures {ch['auth_failures']}  replayed {ch['replayed']}  unconfirmed {ch['unconfirmed']}  malformed {ch['malformed']}"
        f"  (epoch renewals {ch.get('epoch_renewals', 0)})  entries refused {c.get('entries_refused', 0)}",
        *([f"uplink flushes  {s['uplink_flush']['requests']} requests, {s['uplink_flush']['deleted']} entries deleted"]
          if s.get("uplink_flush", {}).get("requests") else []),
        f"commits         {s['commits']}  NAT clashes {s['nat_clashes']}  NAT verify failures {s['nat_verify_failures']}",
        f"aged out        {s.get('aged_out', 0)} (as backup: entries the master holds, timeouts shortened)"
        + ("  errors " + "  ".join(f"{k} {v}" for k, v in sorted(s["age_out_errors"].items())) if s.get("age_out_errors") else ""),
        "commit errors   " + ("  ".join(f"{k} {v}" for k, v in sorted(s["commit_errors"].items())) or "none"),
        *([f"control socket  refused {ctl['refused']}  bad requests {ctl['bad_requests']}  failed {ctl['errors']}"
           + (f"  (last refused: {ctl['last_refused']})" if ctl.get("last_refused") else "")]
          if (ctl := s.get("control")) else []),
    ]
    if lc:
        lines.append(f"last commit     {lc.get('committed', lc['count'])}/{lc['count']} entries in {lc['duration']:.3f}s ({lc['reason']})")
    for cl in s["last_clashes"]:
        lines.append(f"  clash: {cl}")
    return "\n".join(lines) + "\n"


def _push_line(p: dict) -> str:
    more = "" if p["dump_complete"] else " (the dump is still being read)"
    return f"table push      {p['id']} under way ({p['reason']}): {p['sent']} of {p['dumped']} entries sent{more}"


#: the command lines hacommon.client.quick_args takes without argparse: command -> (flags, positional)
QUICK = {"status": (("--json",), None), "commit": ((), None), "metrics": ((), None)}


def ctsyncctl_parser():
    import argparse

    ap = argparse.ArgumentParser(prog="ctsyncctl", description="query and drive a running ctsync")
    ap.add_argument("-s", "--socket", help=f"control socket (default {DEFAULT_CONTROL_SOCKET} or $CTSYNCCTL_SOCKET)")
    ap.add_argument("-c", "--config", help="read the control socket path from this config file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="role, peer, caches, counters")
    st.add_argument("--json", action="store_true")
    sub.add_parser("metrics", help="Prometheus text exposition (what metrics_listen serves)")
    sub.add_parser("commit", help="commit the external cache into the kernel; returns when done (for keepalived notify_master)")
    sub.add_parser("flush", help="empty the external cache")
    sub.add_parser("resync", help="act as backup: stop committing, ask the peer for its whole table")
    sub.add_parser("dump", help="print the external cache as JSON lines")
    dec = sub.add_parser("decode", help="print the sync-protocol messages of a capture of the sync link (pcap/pcapng), one line each")
    dec.add_argument("file", help="capture file, e.g. from tcpdump -i eth2 -w sync.pcap udp port 3780")
    dec.add_argument("--key-file", help="check each datagram's HMAC with this key (the file's whole content, stripped)")
    fu = sub.add_parser("flush-uplink", help="delete the conntrack entries source-NATed to ADDRESS (a dead uplink's); "
                        "for a vrrpd uplinks notify hook")
    fu.add_argument("address", help="the uplink's NAT address, e.g. $UPLINK_OLD_ADDRESS")
    fu.add_argument("--proto", choices=("tcp", "udp", "icmp"), help="only this protocol")
    fu.add_argument("--dport", type=int, help="only this original destination port (with --proto tcp or udp)")
    return ap


def ctsyncctl_main(argv: list[str] | None = None) -> int:
    from hacommon.client import SocketPathError, quick_args, request, socket_from_file

    if argv is None:
        argv = sys.argv[1:]
    args = quick_args(argv, QUICK) or ctsyncctl_parser().parse_args(argv)
    if args.cmd == "decode":
        return _decode(args)
    try:
        path = args.socket or (socket_from_file(args.config, "ctsync", DEFAULT_CONTROL_SOCKET) if args.config else
                               os.environ.get("CTSYNCCTL_SOCKET", DEFAULT_CONTROL_SOCKET))
        params = {}
        if args.cmd == "flush-uplink":
            params = {"address": args.address, "proto": args.proto, "dport": args.dport}
        reply = request(path, args.cmd, timeout=None if args.cmd == "commit" else 30, **params)
    except SocketPathError as e:
        print(f"ctsyncctl: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"ctsyncctl: cannot talk to ctsync: {e}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"ctsyncctl: {reply.get('error', 'no answer')}", file=sys.stderr)
        return 1
    if args.cmd == "status":
        if args.json:
            import json

            print(json.dumps(reply["status"], indent=2))
        else:
            print(_text_status(reply["status"]), end="")
    elif args.cmd == "metrics":
        sys.stdout.write(reply["text"])
    elif args.cmd == "commit":
        c = reply["commit"]
        print(f"committed {c.get('committed', c['count'])} of {c['count']} entries in {c['duration']:.3f}s")
    elif args.cmd == "flush":
        print(f"flushed {reply['flushed']} entries")
    elif args.cmd == "flush-uplink":
        f = reply["flush"]
        print(f"deleted {f['deleted']} of {f['matched']} entries NATed to {f['address']}"
              + (f" ({len(f['errors'])} errors: {'; '.join(f['errors'][:3])})" if f["errors"] else ""))
        for flow in f["flows"]:
            print(f"  {flow}")
    elif args.cmd == "dump":
        import json

        for e in reply["entries"]:
            print(json.dumps(e))
    return 0


def _decode(args) -> int:
    """`ctsyncctl decode`: needs no daemon, only the file."""
    from .pcapdecode import PcapError, decode_lines

    key = None
    try:
        if args.key_file:
            with open(args.key_file, "rb") as f:
                key = f.read().strip()
        n = 0
        for line in decode_lines(args.file, key):
            print(line)
            n += 1
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    except (OSError, PcapError) as e:
        print(f"ctsyncctl: decode: {e}", file=sys.stderr)
        return 1
    if n == 0:
        print(f"ctsyncctl: decode: no ctsync datagram in {args.file}", file=sys.stderr)
    return 0
