"""One timer task for every instance's deadline.

Each instance's machine says when it next needs ``handle_timer`` (its advert,
Master_Down or GARP-repeat deadline).  Waiting for that with a cancel scope per
instance per wait (``move_on_at`` around the inbox receive) costs a scope, a
``Cancelled`` exception and a scheduler pass per expiry: measured at about
32 µs per expiry against 16 µs for one heap served by one task (a trio-only
micro-benchmark); with 50 idle masters at 1 s the daemon went from 0.25 % to
0.16 % of a core (bench idle figure).  So the deadlines live here instead:
the instance tasks only ever ``receive()`` from their inbox, and this task
sleeps until the earliest deadline and drops a ``TimerDue`` event into the
inbox of every instance that is due.  Instances are still served one event at
a time, in order, by their own task: a timer can never interrupt the handling
of an advert (or the netlink work it causes) halfway.

The heap keeps at most one *live* entry per instance: re-arming with a later
deadline (a backup hearing an advert moves Master_Down forward every second)
pushes nothing; the live entry is re-pushed at the new deadline when it comes
up, so a backup costs one wake-up per Master_Down_Interval, not one per advert.
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio


class TimerDue:
    """What the timer task drops into an instance's inbox when its deadline has come."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TimerDue()"


TIMER_EVENT = TimerDue()
#: A full inbox cannot take the timer message; try again this much later
#: (the instance is busy with the 1024 events ahead of it anyway).
RETRY_FULL = 0.01


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []  # (time, tiebreak, key)
        self._tiebreak = itertools.count()
        self._want: dict[int, float] = {}  # key -> the deadline its owner wants
        self._live: dict[int, float] = {}  # key -> time of its live heap entry
        self._inbox: dict[int, trio.MemorySendChannel] = {}
        self._sleep: trio.CancelScope | None = None
        self.wakeups = 0  # scheduler wake-ups of run(), for tests and profiling

    def arm(self, key: int, deadline: float | None, inbox: trio.MemorySendChannel) -> None:
        """Send ``("timer",)`` to ``inbox`` at ``deadline`` (replacing the key's
        previous deadline); ``None`` disarms."""
        if deadline is None or deadline == math.inf:
            self.disarm(key)
            return
        self._want[key] = deadline
        self._inbox[key] = inbox
        live = self._live.get(key)
        if live is None or deadline < live:
            self._push(key, deadline)

    def disarm(self, key: int) -> None:
        # The live entry stays in the heap; it finds no want when it comes up.
        self._want.pop(key, None)
        self._inbox.pop(key, None)

    def _push(self, key: int, t: float) -> None:
        self._live[key] = t
        heapq.heappush(self._heap, (t, next(self._tiebreak), key))
        if self._sleep is not None and t < self._sleep.deadline:
            self._sleep.deadline = t

    def _drop_dead_head(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            self._drop_dead_head()
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            self.wakeups += 1
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                t, _, key = heapq.heappop(heap)
                if self._live.get(key) != t:
                    continue  # superseded by an earlier deadline
                del self._live[key]
                want = self._want.get(key)
                if want is None:
                    continue
                if want > now:
                    self._push(key, want)  # moved later since this entry was pushed
                    continue
                inbox = self._inbox[key]
                del self._want[key], self._inbox[key]
                try:
                    inbox.send_nowait(TIMER_EVENT)
                except trio.WouldBlock:
                    self.arm(key, now + RETRY_FULL, inbox)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass  # the instance is gone
