import sys

from .cli import ctsync_main

sys.exit(ctsync_main())
