"""`hapair-install-units`: install the systemd units shipped in the package
(hacommon/units: vrrpd.service, ctsync.service, hapair.target) for the hapair installed
next to this interpreter.

    hapair-install-units --config /etc/hapair/r1.toml
    systemctl daemon-reload && systemctl enable --now hapair.target

The units name the daemons as /opt/hapair/bin/...; they are written with the bin folder
of the running interpreter instead (a venv anywhere works). ``--config`` writes
/etc/default/hapair (HAPAIR_CONFIG=...), the file both units read; the modules the
hardened units may not load themselves go into /etc/modules-load.d/hapair.conf.
Nothing is started or enabled: the command prints what to run next.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

UNITS = ("vrrpd.service", "ctsync.service", "hapair.target")
SHIPPED_BINDIR = "/opt/hapair/bin"
#: Kernel modules the daemons need; the units' ProtectKernelModules keeps them from
#: loading any, so they are loaded at boot.
MODULES = ("nf_conntrack", "nf_conntrack_netlink", "macvlan")


def unit_text(name: str, bindir: str) -> str:
    text = resources.files("hacommon").joinpath("units", name).read_text()
    return text.replace(SHIPPED_BINDIR + "/", bindir.rstrip("/") + "/")


def install(dest: Path, bindir: str, config: str | None, default_file: Path, modules_file: Path | None) -> list[Path]:
    written = []
    dest.mkdir(parents=True, exist_ok=True)
    for name in UNITS:
        p = dest / name
        p.write_text(unit_text(name, bindir))
        p.chmod(0o644)
        written.append(p)
    if config is not None:
        default_file.parent.mkdir(parents=True, exist_ok=True)
        default_file.write_text(f"# read by vrrpd.service and ctsync.service (hapair-install-units)\nHAPAIR_CONFIG={config}\n")
        written.append(default_file)
    if modules_file is not None:
        modules_file.parent.mkdir(parents=True, exist_ok=True)
        modules_file.write_text("# loaded at boot for hapair's units (they may not load modules)\n" + "\n".join(MODULES) + "\n")
        written.append(modules_file)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hapair-install-units", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="the box's file, e.g. /etc/hapair/r1.toml (written to /etc/default/hapair)")
    ap.add_argument("--dest", default="/etc/systemd/system", help="where the unit files go (default %(default)s)")
    ap.add_argument("--bindir", default=str(Path(sys.executable).parent),
                    help="folder of the vrrpd and ctsync commands (default: this interpreter's, %(default)s)")
    ap.add_argument("--default-file", default="/etc/default/hapair", help=argparse.SUPPRESS)
    ap.add_argument("--modules-file", default="/etc/modules-load.d/hapair.conf", help=argparse.SUPPRESS)
    ap.add_argument("--print", dest="show", metavar="UNIT", choices=UNITS, help="print one unit as it would be written, and exit")
    args = ap.parse_args(argv)
    if args.show:
        sys.stdout.write(unit_text(args.show, args.bindir))
        return 0
    for cmd in ("vrrpd", "ctsync"):
        if not (Path(args.bindir) / cmd).exists():
            print(f"hapair-install-units: no {cmd} in {args.bindir} (give --bindir)", file=sys.stderr)
            return 1
    if args.config and not Path(args.config).is_absolute():
        print(f"hapair-install-units: --config must be an absolute path, got {args.config}", file=sys.stderr)
        return 1
    try:
        written = install(Path(args.dest), args.bindir, args.config, Path(args.default_file),
                          Path(args.modules_file) if args.modules_file else None)
    except OSError as e:
        print(f"hapair-install-units: {e}", file=sys.stderr)
        return 1
    for p in written:
        print(f"wrote {p}")
    if args.config is None:
        print(f"config: HAPAIR_CONFIG from {args.default_file} if present, else /etc/hapair/hapair.toml (give --config)")
    print("next: systemctl daemon-reload && systemctl enable --now hapair.target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
