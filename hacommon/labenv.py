"""Is this process running inside a lab (halab)? Some things are allowed only there: the
example key published with the project, for one (ctsync/config.py).

A process is in a lab when both hold:

* ``HAPAIR_LAB`` names a lab (``hl-<pid>-<n>``): halab's launcher sets it for every
  process it starts in a lab namespace (``Lab.start``, ``Host.run``); and
* this process's network namespace *is* one of that lab's: a file ``/run/netns/<lab
  id>-*`` (what ``ip netns add`` creates for the lab's hosts) refers to the same
  namespace as ``/proc/self/ns/net`` (same device and inode: how ``ip netns identify``
  finds a name).

The variable alone is not enough (anyone can set it); the namespace alone neither (a
production box may well use named namespaces).
"""

from __future__ import annotations

import os
import re

LAB_ENV = "HAPAIR_LAB"
NETNS_DIR = "/run/netns"
_LAB_ID = re.compile(r"hl-\d+-\d+")


def in_lab(environ=None) -> bool:
    lab = (os.environ if environ is None else environ).get(LAB_ENV, "")
    if not _LAB_ID.fullmatch(lab):
        return False
    try:
        me = os.stat("/proc/self/ns/net")
        names = os.listdir(NETNS_DIR)
    except OSError:
        return False
    for name in names:
        if not name.startswith(lab + "-"):
            continue
        try:
            st = os.stat(os.path.join(NETNS_DIR, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
            return True
    return False
