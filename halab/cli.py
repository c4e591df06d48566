"""``hapair-lab``: inspect and clean lab namespaces on this machine.

A lab whose creator was SIGKILLed (or lost power mid-test) cannot tear itself
down.  Its namespaces are named ``hl-<creator pid>-<n>-<host>``, so we can
tell which labs are orphaned and remove them: kill the processes inside first
(a namespace that still has processes survives ``ip netns del``, invisibly,
with its veths), then delete the names.  Only names starting with ``hl-``
are ever touched, and never a name that resolves to the host namespace.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
from collections import defaultdict

from . import _ns


def _collect() -> dict[str, dict]:
    labs: dict[str, dict] = defaultdict(lambda: {"pid": None, "namespaces": []})
    for name in _ns.list_netns(_ns.LAB_PREFIX):
        parsed = _ns.parse_lab_ns(name)
        lab_id, pid = parsed if parsed else (name, None)
        labs[lab_id]["pid"] = pid
        labs[lab_id]["namespaces"].append(name)
    return dict(labs)


def _creator_alive(pid: int | None) -> bool:
    # A reused pid makes us think the creator lives: errs on the safe side.
    # Names not of the form hl-<pid>-... have no known creator (pid None).
    return pid is not None and _ns.pid_alive(pid)


def cmd_list(args) -> int:
    labs = _collect()
    if not labs:
        print("no lab namespaces")
        return 0
    print(f"{'LAB':<24} {'CREATOR':>8} {'ALIVE':<5} {'PROCS':>5}  NAMESPACES")
    for lab_id, info in sorted(labs.items()):
        nprocs = sum(len(_ns.ns_pids(n)) for n in info["namespaces"])
        alive = "?" if info["pid"] is None else ("yes" if _creator_alive(info["pid"]) else "no")
        pid = info["pid"] if info["pid"] is not None else "?"
        names = " ".join(n[len(lab_id) + 1:] or n for n in info["namespaces"])
        print(f"{lab_id:<24} {pid:>8} {alive:<5} {nprocs:>5}  {names}")
    return 0


def cmd_clean(args) -> int:
    labs = _collect()
    if args.labs:
        for lab in args.labs:
            if lab not in labs:
                print(f"{lab}: no namespaces", file=sys.stderr)
        labs = {k: v for k, v in labs.items() if k in args.labs}
    rc = 0
    if args.workdirs:
        rc |= _clean_workdirs(args)
    for lab_id, info in sorted(labs.items()):
        if not args.all and info["pid"] is None:
            # Not named by halab (hl-<pid>-...): someone else's, maybe in use.
            print(f"{lab_id}: creator unknown, skipped (use --all to force)")
            continue
        if not args.all and _creator_alive(info["pid"]):
            print(f"{lab_id}: creator pid {info['pid']} is alive, skipped (use --all to force)")
            continue
        for netns in info["namespaces"]:
            if _ns.is_host_netns(netns):
                print(f"{netns}: resolves to the HOST namespace: only removing the name",
                      file=sys.stderr)
                pids = []
            else:
                pids = _ns.ns_pids(netns)
            if args.dry_run:
                print(f"would remove {netns} (killing {len(pids)} processes: {pids})")
                continue
            try:
                if not _ns.is_host_netns(netns):
                    left = _ns.kill_ns_processes(netns, grace=1.0 if pids else 0.0)
                    if left:
                        print(f"{netns}: processes survive SIGKILL: {left}", file=sys.stderr)
                        rc = 1
                _ns.delete_ns(netns)
                print(f"removed {netns}" + (f" (killed {len(pids)} processes)" if pids else ""))
            except _ns.NetnsError as e:
                print(f"{netns}: {e}", file=sys.stderr)
                rc = 1
    return rc


def _clean_workdirs(args) -> int:
    """Remove lab workdirs (``$TMPDIR/hl-<pid>-<n>-*``) whose creator is dead.

    Opt-in: a SIGKILLed lab's logs may be what you want to read, and
    HALAB_KEEP=1 keeps workdirs on purpose.
    """
    for path in sorted(glob.glob(os.path.join(tempfile.gettempdir(), "hl-*-*-*"))):
        parsed = _ns.parse_lab_ns(os.path.basename(path))
        if not os.path.isdir(path) or parsed is None or parsed[0] == os.path.basename(path):
            continue
        lab_id, pid = parsed
        if args.labs and lab_id not in args.labs:
            continue
        if not args.all and _creator_alive(pid):
            continue
        if args.dry_run:
            print(f"would remove workdir {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            print(f"removed workdir {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hapair-lab", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list lab namespaces and whether their creator is alive")
    pc = sub.add_parser("clean", help="remove namespaces of labs whose creator is gone")
    pc.add_argument("--all", action="store_true",
                    help="also remove labs whose creator is alive (breaks running tests)")
    pc.add_argument("--workdirs", action="store_true",
                    help="also remove their work directories ($TMPDIR/hl-<pid>-<n>-*)")
    pc.add_argument("-n", "--dry-run", action="store_true", help="only say what would be done")
    pc.add_argument("labs", nargs="*", metavar="LAB_ID", help="only these labs (e.g. hl-1234-0)")
    args = p.parse_args(argv)
    if args.cmd == "list":
        return cmd_list(args)
    return cmd_clean(args)


if __name__ == "__main__":
    sys.exit(main())
