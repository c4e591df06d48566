"""vrrpd.timers: every armed deadline is delivered once, never early, and the
latest arm wins; in virtual time (trio's MockClock)."""

import math

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrpd.timers import TIMER_EVENT, Timers


def run_virtual(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


async def _collect(recv, out, key):
    async for ev in recv:
        assert ev is TIMER_EVENT
        out.append((key, trio.current_time()))


def drive(script) -> list[tuple[int, float]]:
    """Run ``await script(timers, inbox)`` in virtual time with a Timers task and a
    collector on one inbox (key 1); returns the deliveries as (key, time)."""
    got: list[tuple[int, float]] = []

    async def main():
        t = Timers()
        send, recv = trio.open_memory_channel(10)
        async with trio.open_nursery() as n:
            n.start_soon(t.run)
            n.start_soon(_collect, recv, got, 1)
            await script(t, send)
            n.cancel_scope.cancel()

    run_virtual(main)
    return got


def test_delivers_at_deadline_not_before():
    async def script(t, inbox):
        t.arm(1, trio.current_time() + 1.5, inbox)
        await trio.sleep(5)

    got = drive(script)
    assert len(got) == 1 and got[0][1] >= 1.5 and got[0][1] < 1.5 + 1e-6


def test_later_rearm_wins_and_costs_one_extra_wakeup_at_most():
    """A backup moving Master_Down forward every second: one delivery, at the last deadline."""
    async def script(t, inbox):
        for _ in range(10):  # 10 adverts, 1 s apart, Master_Down 3.6 s
            t.arm(1, trio.current_time() + 3.6, inbox)
            await trio.sleep(1)
        await trio.sleep(10)
        assert t.wakeups <= 4  # re-pushes at 3.6, 7.2, then the delivery

    got = drive(script)
    assert len(got) == 1 and abs(got[0][1] - (9 + 3.6)) < 1e-6


def test_earlier_rearm_and_disarm():
    async def script(t, inbox):
        t.arm(1, 10.0, inbox)
        await trio.sleep(1)
        t.arm(1, 2.0, inbox)  # earlier: the sleeping task must wake sooner
        await trio.sleep(5)
        t.arm(1, 20.0, inbox)
        t.disarm(1)
        t.arm(2, None, inbox)  # None disarms too
        await trio.sleep(30)

    got = drive(script)
    assert [round(when, 6) for _, when in got] == [2.0]


def test_full_inbox_retries_instead_of_losing_the_timer():
    got = []

    async def main():
        t = Timers()
        send, recv = trio.open_memory_channel(1)
        send.send_nowait(("advert",))  # the inbox is full when the deadline comes
        async with trio.open_nursery() as n:
            n.start_soon(t.run)
            t.arm(1, 1.0, send)
            await trio.sleep(2)
            assert recv.receive_nowait() == ("advert",)
            await trio.sleep(1)
            got.append(recv.receive_nowait())
            n.cancel_scope.cancel()

    run_virtual(main)
    assert got == [TIMER_EVENT]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(0, 80)), st.integers(0, 12)),
                max_size=40))
def test_model(ops):
    """Random arm/disarm/sleep sequences against a model: a key's timer fires
    once, at the deadline of its last arm (unless disarmed or re-armed before
    it came due), never earlier.  Steps happen on a 0.25 s grid and deadlines
    0.1 s off it, so no deadline coincides with a step (whose order against
    the timer task at the same instant would be trio's choice)."""
    got: list[tuple[int, float]] = []
    expect: dict[int, float] = {}
    fired_model: list[tuple[int, float]] = []

    async def main():
        t = Timers()
        chans = {k: trio.open_memory_channel(100) for k in range(5)}
        async with trio.open_nursery() as n:
            n.start_soon(t.run)
            for k, (s, r) in chans.items():
                n.start_soon(_collect, r, got, k)
            for key, rel, pause in ops:
                now = trio.current_time()
                # The model fires whatever came due before this step.
                for k, d in sorted(expect.items(), key=lambda kv: kv[1]):
                    if d <= now:
                        fired_model.append((k, d))
                        del expect[k]
                deadline = None if rel is None else now + rel * 0.25 + 0.1
                t.arm(key, deadline, chans[key][0])
                if deadline is None:
                    expect.pop(key, None)
                else:
                    expect[key] = deadline
                await trio.sleep(pause * 0.25)
            await trio.sleep(30)
            for k, d in expect.items():
                fired_model.append((k, d))
            n.cancel_scope.cancel()

    run_virtual(main)
    assert sorted(k for k, _ in got) == sorted(k for k, _ in fired_model)
    want = {}
    for k, d in fired_model:
        want.setdefault(k, []).append(d)
    for k, when in got:
        ds = want[k]
        d = min(ds, key=lambda x: abs(x - when))
        assert when >= d - 1e-9 and when - d < 1e-6, (k, when, ds)
        ds.remove(d)
    assert math.isfinite(sum(w for _, w in got))
