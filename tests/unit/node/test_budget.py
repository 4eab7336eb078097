"""The byte budget: the bytes granted never run ahead of the rate (counted on virtual time)."""

from __future__ import annotations

import asyncio
import random

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.node.budget import ByteBudget


def test_grants_never_run_ahead_of_the_rate_and_the_budget_is_used() -> None:
    rate, burst = 1000.0, 2500.0
    rng = random.Random(3)
    sizes = [[rng.randrange(1, 4000) for _ in range(40)] for _ in range(3)]
    grants: list[tuple[float, int]] = []  # (virtual time, bytes granted before this one)

    async def main(clock: VirtualClock) -> None:
        budget = ByteBudget(rate, burst=burst, clock=clock)
        start = clock.monotonic()

        async def taker(mine: list[int]) -> None:
            for size in mine:
                before = budget.granted
                await budget.take(size)
                # Granted bytes before this grant, and when (the one being granted may exceed
                # the burst: it goes whole once the budget caught up).
                grants.append((clock.monotonic() - start, budget.granted - size))
                assert budget.granted >= before + size

        await asyncio.gather(*(taker(s) for s in sizes))
        total = sum(map(sum, sizes))
        assert budget.granted == total
        assert budget.waits > 0
        # Work-conserving: the last grant is no later than the bytes before it need.
        last_time, last_before = max(grants)
        assert last_time <= last_before / rate + 1e-6

    run_virtual(main)
    assert len(grants) == 120
    for when, before in grants:
        assert before <= burst + rate * when + 1e-6, (when, before)


def test_a_quiet_spell_earns_at_most_the_burst() -> None:
    async def main(clock: VirtualClock) -> None:
        budget = ByteBudget(100.0, burst=100.0, clock=clock)
        await budget.take(100)
        await asyncio.sleep(3600)  # an hour of quiet
        start = clock.monotonic()
        for _ in range(5):
            await budget.take(100)
        # The burst's worth is granted beyond what the rate paid for: two takes go at once
        # (100 granted before the second <= burst), the next three wait a second each.
        assert clock.monotonic() - start == pytest.approx(3.0)
        assert budget.waits == 3

    run_virtual(main)


def test_a_cancelled_take_books_nothing() -> None:
    async def main(clock: VirtualClock) -> None:
        budget = ByteBudget(10.0, burst=10.0, clock=clock)
        await budget.take(100)  # the budget is 9 s behind now
        waiting = asyncio.create_task(budget.take(50))
        await asyncio.sleep(1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert budget.granted == 100

    run_virtual(main)


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (10, 0)])
def test_a_budget_needs_a_positive_rate_and_burst(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError, match="positive"):
        ByteBudget(rate, burst=burst)
