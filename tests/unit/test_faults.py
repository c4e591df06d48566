"""The soak's fault injector and resource bound (halab.faults, halab.soak): pure parts."""

from __future__ import annotations

import pytest

from halab import LabError
from halab.faults import KINDS, ROUTERS, FaultInjector
from halab.soak import growth


def draws(seed: int, n: int = 12, **kw) -> list:
    inj = FaultInjector(seed, **kw)
    return [(f.kind, f.params, inj.next_interval()) for f in (inj.next_fault() for _ in range(n))]


def test_a_seed_gives_the_same_faults_and_pauses():
    assert draws(1234) == draws(1234)
    assert draws(1234, distinct=True) == draws(1234, distinct=True)
    assert len({repr(draws(s)) for s in range(20)}) == 20


def test_distinct_draws_every_kind_once_before_repeating():
    for seed in range(50):
        kinds = [k for k, _, _ in draws(seed, n=2 * len(KINDS), distinct=True)]
        assert sorted(kinds[:len(KINDS)]) == sorted(KINDS)
        assert sorted(kinds[len(KINDS):]) == sorted(KINDS)


def test_parameters_and_pauses_stay_in_their_ranges():
    seen = set()
    for seed in range(200):
        for kind, params, pause in draws(seed, n=6, interval=(20.0, 40.0)):
            seen.add((kind, params["router"]))
            assert 20.0 <= pause <= 40.0
            assert params["router"] in (*ROUTERS, "both")
            assert 0 <= params["hold"] <= 15.0
            if kind == "link-down":
                assert params["link"] in ("eth0", "eth1") and 3.0 <= params["hold"] <= 6.0
            if kind == "sync-impair":
                assert params["loss"] == params["dup"] == params["reorder"] == 5
    # every kind hits both boxes (the impairment hits the link between them)
    assert seen == {(k, r) for k in KINDS for r in ROUTERS if k != "sync-impair"} | {("sync-impair", "both")}


def test_only_known_kinds():
    with pytest.raises(LabError, match="unknown fault kinds"):
        FaultInjector(1, kinds=("kill-vrrpd", "unplug-the-moon"))
    assert {f.kind for f in (FaultInjector(3, kinds=("link-down",)).next_fault() for _ in range(5))} == {"link-down"}


def test_growth_bound():
    flat = [(t, 40000 + (t % 3) * 100, 19 + t % 2) for t in range(100)]
    assert growth(flat, (1.5, 32 << 10), 16) == []
    leak = [(t, 40000, 19 + t // 5) for t in range(100)]  # one fd every 5 samples
    assert growth(leak, (1.5, 32 << 10), 16) == ["fds 19 -> 38 at 95s (bound 35)"]
    bloat = [(t, 40000 + t * 1000, 19) for t in range(100)]
    (msg,) = growth(bloat, (1.5, 32 << 10), 16)
    assert msg.startswith("RSS 40000 -> 139000 KiB at 99s")
    assert growth(bloat[:1], (1.5, 0), 0) == []  # one sample: nothing to compare
