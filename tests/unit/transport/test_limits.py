"""The tools that enforce limits: the dial token bucket and the once-a-minute limit log."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.transport.limits import LimitLog, TokenBucket, TransportLimits


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    async def main(clock: VirtualClock) -> list[float]:
        bucket = TokenBucket(rate=10, burst=20, clock=clock)
        times = []
        for _ in range(50):
            await bucket.acquire()
            times.append(clock.monotonic())
        return times

    times = run_virtual(main)
    assert times[:20] == [0.0] * 20
    assert times[-1] == pytest.approx(3.0)  # 30 more at 10 a second
    gaps = [b - a for a, b in itertools.pairwise(times[20:])]
    assert all(g == pytest.approx(0.1) for g in gaps)


def test_token_bucket_refills_while_idle_but_never_above_its_burst() -> None:
    async def main(clock: VirtualClock) -> int:
        bucket = TokenBucket(rate=10, burst=5, clock=clock)
        for _ in range(5):
            await bucket.acquire()
        await asyncio.sleep(3600)
        waited = 0
        for _ in range(10):
            waited += await bucket.acquire()
        return waited

    assert run_virtual(main) == 5  # 5 tokens saved up, not 36,000


def test_token_bucket_with_rounding_errors_still_hands_out_tokens() -> None:
    # Regression: float rounding left the bucket 1e-16 short of a token, and on a virtual
    # clock (which only moves when asked) it waited forever in zero-length sleeps.
    async def main(clock: VirtualClock) -> float:
        bucket = TokenBucket(rate=3, burst=1, clock=clock)
        for _ in range(3000):
            await bucket.acquire()
        return clock.monotonic()

    assert run_virtual(main, limit=2000) == pytest.approx(999.667, abs=0.01)


def test_limit_log_says_it_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = VirtualClock()
    limits = LimitLog(logging.getLogger("test.limits"), clock=clock, interval=60)
    for _ in range(1000):
        limits.hit("max_pending", "%d connections are being set up", 16)
    clock.advance(61)
    limits.hit("max_pending", "%d connections are being set up", 16)
    limits.hit("other", "something else")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "limit max_pending: 16 connections are being set up",
        "limit max_pending: 16 connections are being set up (999 more since the last such line)",
        "limit other: something else",
    ]
    assert limits.counts == {"max_pending": 1001, "other": 1}


@pytest.mark.parametrize(
    "change",
    [
        {"max_connections": 0},
        {"max_pending": 0},
        {"dial_burst": 0},
        {"dial_rate": 0},
        {"forget_after": -1},
        {"max_learnt_per_peer": -1},
    ],
)
def test_limits_must_be_sensible(change: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(change))):
        TransportLimits(**change)  # type: ignore[arg-type]


def test_default_limits() -> None:
    limits = TransportLimits()
    assert limits.max_connections == 64
    assert limits.max_pending == 16
    assert limits.max_addresses_per_peer == 4
    assert (limits.dial_rate, limits.dial_burst) == (10.0, 20)
    assert limits.forget_after == 24 * 3600
