"""domain/rate.py (GCRA) and BlockingCalls with a rate: a burst starts at once, then one call per interval."""

from __future__ import annotations

import asyncio

import pytest

from vault_sts_operator.domain.rate import Rate
from vault_sts_operator.services.limiter import BlockingCalls


def test_a_burst_then_one_per_interval() -> None:
    rate = Rate(per_second=10, burst=3)
    waits = [rate.reserve(100.0) for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_idle_time_refills_the_burst_but_never_beyond_it() -> None:
    rate = Rate(per_second=10, burst=3)
    for _ in range(6):
        rate.reserve(0.0)  # reserved up to 0.3 s ahead
    assert rate.reserve(0.2) == pytest.approx(0.2)  # still behind: starts at 0.4
    assert [rate.reserve(60.0) for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])  # a minute idle: 3, not 600


def test_10000_calls_at_20_per_second_take_500_seconds() -> None:
    """The design's figure (docs/design/pod-identity.md 6.3): 10,000 credentials due at once, --sts-rate 20."""
    rate = Rate(per_second=20, burst=20)
    last = max(rate.reserve(0.0) for _ in range(10_000))
    assert last == pytest.approx((10_000 - 20) / 20)


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        Rate(per_second=0, burst=1)
    with pytest.raises(ValueError):
        Rate(per_second=1, burst=0)


def test_blocking_calls_wait_for_the_rate() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    async def scenario() -> list[int]:
        calls = BlockingCalls(4, Rate(per_second=2, burst=2), clock=lambda: 0.0, sleep=sleep)
        return list(await asyncio.gather(*(calls.run("ops", lambda i=i: i) for i in range(4))))  # type: ignore[misc]

    assert asyncio.run(scenario()) == [0, 1, 2, 3]
    assert sorted(slept) == [0.5, 1.0]  # two at once, then one per half second


def test_allow_takes_a_start_only_when_one_is_free() -> None:
    rate = Rate(10.0, 3)
    assert [rate.allow(100.0) for _ in range(5)] == [True, True, True, False, False]
    assert not rate.allow(100.05)  # refused calls took nothing, but the burst is spent until 0.1 s later
    assert rate.allow(100.1) and not rate.allow(100.1)
    assert all(rate.allow(200.0) for _ in range(3))  # idle long enough: the whole burst again
