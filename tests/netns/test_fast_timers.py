"""Fast adverts (VRRPv3, 0.05 s) with many instances: a backup never takes over from a
live master because of its own scheduling.

The backup's process is frozen (SIGSTOP) for several Master_Down_Intervals while the
master keeps advertising, then resumed: its timers have all expired, and the adverts
that arrived meanwhile wait in its socket. It must hear them first (each counted from
its kernel receive time) and stay backup, every instance, every time. The master
frozen the same way is a real failure (it stopped advertising): the backup takes over.
Speed is bench/'s business (figure 7); this checks behaviour only.
"""

from __future__ import annotations

import signal
import time

import pytest

from halab import wait_for
from halab.vrrp import start_vrrpd

pytestmark = pytest.mark.netns

COUNT = 20
INTERVAL = 0.05  # Master_Down_Interval 0.18 s at priority 100


def instances(priority: int) -> dict[str, dict]:
    return {f"V{i}": {"interface": "eth0", "vrid": i, "priority": priority, "version": 3,
                      "advert_interval": INTERVAL, "virtual_addresses": [f"10.0.1.{i}/24"]}
            for i in range(1, COUNT + 1)}


def states(d) -> dict[str, str]:
    return {n: i["state"] for n, i in d.status().items()}


def became_master(d) -> int:
    return sum(i["counters"]["became_master"] for i in d.status().values())


def test_frozen_backup_stays_backup_frozen_master_is_replaced(pair):
    r1 = start_vrrpd(pair.r1, instances(200))
    wait_for(lambda: set(states(r1).values()) == {"master"}, timeout=15, what="r1 master of every instance")
    r2 = start_vrrpd(pair.r2, instances(100))
    wait_for(lambda: set(states(r2).values()) == {"backup"}, timeout=15, what="r2 backup of every instance")
    time.sleep(1.0)
    rx0 = sum(i["counters"]["adverts_rx"] for i in r2.status().values())
    for pause in (0.5, 1.0, 0.3, 2.0, 0.7):  # 2 to 11 Master_Down_Intervals
        r2.proc.signal(signal.SIGSTOP)
        time.sleep(pause)
        r2.proc.signal(signal.SIGCONT)
        time.sleep(0.5)
        assert set(states(r2).values()) == {"backup"}, f"after a {pause} s freeze: {states(r2)}"
    assert became_master(r2) == 0
    assert set(states(r1).values()) == {"master"}
    # the adverts of the freezes were heard, not skipped
    assert sum(i["counters"]["adverts_rx"] for i in r2.status().values()) - rx0 > COUNT * 5 / INTERVAL * 0.5
    # A frozen master does stop advertising: that is a failure the backup must act on.
    r1.proc.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: set(states(r2).values()) == {"master"}, timeout=5, what="r2 to take over from a frozen r1")
    finally:
        r1.proc.signal(signal.SIGCONT)
    wait_for(lambda: set(states(r1).values()) == {"master"} and set(states(r2).values()) == {"backup"},
             timeout=10, what="r1 to preempt again once it runs")
