"""The command line every daemon of the pair shares (vrrpd, ctsync): one config file,
``--check`` that validates the whole file (every daemon's table and the names one takes
from another, hacommon.config.check_file) and names file, key and problem, a root check,
logging, then trio."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Awaitable, Callable

from .config import ConfigError, TableSpec, check_file


def daemon_main(argv: list[str] | None, *, prog: str, description: str, config_help: str,
                table: TableSpec, root_reason: str, run: Callable[[Any], Awaitable[None]]) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("-c", "--config", required=True, help=config_help)
    ap.add_argument("--check", action="store_true",
                    help="validate the whole configuration file (every table, and the names one takes from another) "
                         "and exit (0 ok, 1 problems)")
    ap.add_argument("--log-format", choices=("text", "json"), default="text")
    ap.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    args = ap.parse_args(argv)
    try:
        checked = check_file(args.config, table)
    except ConfigError as e:
        for p in e.problems:
            print(f"{prog}: {p}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a loader bug: still say which file, not a traceback
        print(f"{prog}: {args.config}: cannot load the configuration: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.config}: ok: {checked.summary()}")
        return 0
    if os.geteuid() != 0:
        print(f"{prog}: needs root ({root_reason})", file=sys.stderr)
        return 1
    import trio

    from . import log as log_mod

    log_mod.setup(args.log_format, args.log_level, name=prog)
    trio.run(run, checked.configs[table.name])
    return 0
