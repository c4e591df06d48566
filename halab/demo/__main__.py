"""``python -m halab.demo`` (``./run demo``): see :mod:`halab.demo`."""

import sys

from . import main

sys.exit(main())
