"""Owned background tasks.

Every long-lived task in Shoal belongs to a ``TaskSet``: the owner starts it with ``spawn`` and
``aclose`` cancels every task still running and waits for all of them. A task that fails is
logged, never silently dropped, and does not take its siblings down (a peer's read loop dying
must not stop the node).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskSet:
    """A set of tasks with one owner, cancelled and awaited together on ``aclose``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned by this set."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"task set {self._name} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        """Tasks still running."""
        return len(self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s of %s failed", task.get_name(), self._name, exc_info=exc)

    async def aclose(self) -> None:
        """Cancel every task and wait until all have finished."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Since Python 3.12 a gather of finished tasks completes without yielding to the
            # loop, so their done callbacks (which remove them from the set) may not have run
            # yet: remove them here, or this loop would spin forever.
            self._tasks.difference_update(task for task in tasks if task.done())
