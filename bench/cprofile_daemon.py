"""Run ctsync under cProfile, switched on and off by signals (a measurement aid).

    python -m bench.cprofile_daemon OUT.pstats -c ctsync.toml      # the arguments of `ctsync`

SIGUSR1 starts profiling the main thread (where trio runs everything); SIGUSR2 stops it
and writes the statistics to OUT.pstats (read them with ``python -m pstats``).  So only
the window of interest is profiled (bench/profile_replication.py sends the signals
around the replication burst), not the start-up.  cProfile roughly doubles the cost of
every Python call: use it for the shape (which functions, how many calls per entry), and
py-spy or CPU seconds for the time.
"""

from __future__ import annotations

import cProfile
import signal
import sys


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bench.cprofile_daemon OUT.pstats CTSYNC-ARGS...", file=sys.stderr)
        return 2
    out, args = argv[0], argv[1:]
    prof = cProfile.Profile()

    def on(signum, frame):
        prof.enable()

    def off(signum, frame):
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    from ctsync.cli import ctsync_main

    return ctsync_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
