"""Virtual time: asyncio's own timers follow it, idle waits take no real time, threads do."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shoal.clock import SYSTEM_CLOCK, VirtualClock, run_virtual


def test_sleep_and_timeouts_follow_virtual_time() -> None:
    async def main(clock: VirtualClock) -> tuple[float, float, float]:
        await asyncio.sleep(30)
        after_sleep = clock.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3600):
                await asyncio.Event().wait()
        after_timeout = clock.monotonic()
        await clock.sleep(0.5)
        return after_sleep, after_timeout, clock.monotonic()

    assert run_virtual(main) == (30.0, 3630.0, 3630.5)


def test_wall_time_moves_with_the_clock() -> None:
    clock = VirtualClock(epoch=1_000_000.0)
    clock.advance(60)
    assert clock.time() == 1_000_060.0
    assert clock.monotonic() == 60.0
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_time_stands_still_while_a_thread_works() -> None:
    release = threading.Event()

    def work() -> str:
        release.wait(10)
        return "done"

    async def main(clock: VirtualClock) -> tuple[str, float]:
        # A timer is pending, but a worker thread is busy: the clock must not jump to it.
        asyncio.get_running_loop().call_later(1000, lambda: None)
        threading.Timer(0.2, release.set).start()
        result = await asyncio.to_thread(work)
        return result, clock.monotonic()

    assert run_virtual(main) == ("done", 0.0)


def test_a_run_that_never_ends_is_stopped_at_its_virtual_limit() -> None:
    async def main(clock: VirtualClock) -> None:
        while True:
            await asyncio.sleep(60)

    with pytest.raises(TimeoutError):
        run_virtual(main, limit=3600)


def test_the_system_clock_is_asyncio_s_clock() -> None:
    async def main() -> float:
        return asyncio.get_running_loop().time() - SYSTEM_CLOCK.monotonic()

    assert abs(asyncio.run(main())) < 1.0
    assert abs(SYSTEM_CLOCK.time() - time.time()) < 1.0
