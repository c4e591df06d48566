"""hapair-import: print a box file (TOML) converted from another router's configuration.

    hapair-import keepalived /etc/keepalived/keepalived.conf [--conntrackd /etc/conntrackd/conntrackd.conf]
    hapair-import vyatta config.boot          (or a file of `set ...` commands)
    hapair-import conntrackd /etc/conntrackd/conntrackd.conf

Exit status 0 when converted (what is not translated is listed at the top of the
output, and summed up on stderr), 1 when an input cannot be read or parsed
(``file:line: problem`` on stderr), 2 for a wrong command line.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import conntrackd, keepalived, target, vyatta
from .box import Conversion, InputError
from .keepalived_syntax import default_config_id
from .tomlout import render

PROG = "hapair-import"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Convert keepalived (+ conntrackd) or Vyatta/VyOS "
                                 "configurations to a hapair box file (vrrpd + ctsync). See docs/importers.md.")
    sub = ap.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", metavar="FILE", help="write the box file here (default: stdout)")
        p.add_argument("--key-file", default=target.DEFAULT_KEY_FILE, metavar="PATH",
                       help=f"ctsync's key_file in the output (default {target.DEFAULT_KEY_FILE}); "
                            "the output says how to create it")
        p.add_argument("--peer-address", metavar="ADDR",
                       help="the other router's address on the sync link (a multicast conntrackd or VyOS "
                            "conntrack-sync configuration does not name it)")

    k = sub.add_parser("keepalived", help="a keepalived.conf (its includes are followed)")
    k.add_argument("file")
    k.add_argument("--conntrackd", metavar="FILE", help="the conntrackd.conf that goes with it: adds [ctsync]")
    k.add_argument("--config-id", metavar="ID",
                   help="the config-id that chooses keepalived's @ID conditional lines (keepalived -i); "
                        f"default: keepalived's default on this machine, the host name ({default_config_id()!r})")
    common(k)
    v = sub.add_parser("vyatta", help="a Vyatta/VyOS config.boot, or a file of `set ...` commands")
    v.add_argument("file")
    common(v)
    c = sub.add_parser("conntrackd", help="a conntrackd.conf alone: [ctsync] without failover")
    c.add_argument("file")
    common(c)
    return ap


def _convert(args: argparse.Namespace) -> Conversion:
    kw = {"key_file": args.key_file, "peer_address": args.peer_address}
    if args.format == "keepalived":
        return keepalived.convert(args.file, config_id=args.config_id, conntrackd=args.conntrackd, **kw)
    if args.format == "vyatta":
        return vyatta.convert(args.file, **kw)
    return conntrackd.convert(args.file, **kw)


def _summary(conv: Conversion) -> str:
    v = conv.data.get("vrrpd", {})
    parts = []
    for key, word in (("instance", "instance"), ("sync_group", "sync group"), ("probe", "probe")):
        n = len(v.get(key, {}))
        if n:
            parts.append(f"{n} {word}{'s' if n > 1 else ''}")
    if "ctsync" in conv.data:
        parts.append("[ctsync]")
    return ", ".join(parts) or "no table"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        conv = _convert(args)
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- a bug here must not look like a problem of the input: say so
        print(f"{PROG}: internal error (a bug in hapair-import, please report it with the input): "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    text = render(conv)
    dest = args.output or "stdout"
    if args.output:
        try:
            tmp = args.output + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, args.output)
        except OSError as e:
            print(f"{PROG}: {args.output}: cannot write: {e.strerror or e}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    msg = f"{PROG}: {dest}: {_summary(conv)}; {len(conv.dropped)} not translated, {len(conv.notes)} notes"
    if conv.dropped or conv.notes:
        msg += " (listed at the top of the file)"
    print(msg, file=sys.stderr)
    for a in conv.actions:
        print(f"{PROG}: before use: {a}", file=sys.stderr)
    if conv.check_problems:
        print(f"{PROG}: the file does not pass --check as written ({len(conv.check_problems)} problems, "
              "listed at the top):", file=sys.stderr)
        for p in conv.check_problems:
            print(f"{PROG}:   {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
