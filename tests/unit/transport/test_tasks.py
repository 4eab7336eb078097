"""TaskSet: every task has an owner that cancels and awaits it."""

from __future__ import annotations

import asyncio

import pytest

from shoal.transport.tasks import TaskSet


@pytest.mark.timeout(20)
async def test_aclose_right_after_a_task_finished_does_not_spin() -> None:
    """A task that finished in this very loop turn has its done callback still queued; since
    Python 3.12 a gather of it completes without yielding, which once made aclose spin
    forever (seen on 3.13 in CI)."""
    tasks = TaskSet("test")
    event = asyncio.Event()
    task = tasks.spawn(event.wait())
    await asyncio.sleep(0)  # the task now waits for the event
    event.set()  # its wake-up is queued first...
    await asyncio.sleep(0)  # ...then ours: we resume right after it finished
    assert task.done()
    await tasks.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        tasks.spawn(asyncio.sleep(0))


async def test_aclose_cancels_and_awaits_every_task() -> None:
    tasks = TaskSet("test")
    cancelled = []

    async def forever(i: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    for i in range(5):
        tasks.spawn(forever(i))
    await asyncio.sleep(0)
    await tasks.aclose()
    assert sorted(cancelled) == [0, 1, 2, 3, 4]
