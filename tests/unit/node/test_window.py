"""The ordered window: bounded concurrency, results in start order, no task outlives it."""

from __future__ import annotations

import asyncio

import pytest

from shoal.node.window import OrderedWindow


async def test_results_come_in_start_order_whatever_the_finish_order() -> None:
    gates = [asyncio.Event() for _ in range(4)]

    async def work(i: int) -> int:
        await gates[i].wait()
        return i

    async with OrderedWindow[int](4) as window:
        for i in range(4):
            window.start(work(i))
        for gate in reversed(gates):  # the newest finishes first
            gate.set()
        assert [await window.next() for _ in range(4)] == [0, 1, 2, 3]
        assert not window


async def test_never_more_than_size_at_once() -> None:
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        running -= 1

    async with OrderedWindow[None](3) as window:
        for _ in range(20):
            if window.full:
                await window.next()
            window.start(work())
        while window:
            await window.next()
    assert peak == 3
    full = OrderedWindow[None](1)
    full.start(asyncio.sleep(0))
    with pytest.raises(RuntimeError, match="full"):
        full.start(asyncio.sleep(0))
    await full.aclose()


async def test_a_failure_is_raised_in_order_and_the_rest_is_cancelled_on_close() -> None:
    cancelled = asyncio.Event()

    async def fails() -> int:
        raise ValueError("bad block")

    async def slow() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def run() -> None:
        async with OrderedWindow[int](2) as window:
            window.start(fails())
            window.start(slow())
            await window.next()

    with pytest.raises(ValueError, match="bad block"):
        await run()
    assert cancelled.is_set()


async def test_cancelling_the_consumer_leaves_no_task_behind() -> None:
    started = asyncio.Event()
    finished = asyncio.Event()

    async def work() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.set()
        return 0

    async def consumer() -> None:
        async with OrderedWindow[int](1) as window:
            window.start(work())
            await window.next()

    task = asyncio.create_task(consumer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
