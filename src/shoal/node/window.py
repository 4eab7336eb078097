"""A bounded, ordered concurrency window: the shape of every pipeline in the node.

Puts seal and place chunks, gets fetch and open them, repair will copy blocks and place
shares: each runs up to ``size`` pieces of work at once and consumes the results in the order
the work was started (file order), so memory is bounded by the window, not by the file.

Resource handling: the window owns its tasks. ``aclose()`` (or leaving ``async with``)
cancels whatever is still running and waits for it, so no task outlives the transfer that
started it, whether it ended normally, failed or was cancelled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["OrderedWindow"]

T = TypeVar("T")


class OrderedWindow(Generic[T]):
    """Up to ``size`` tasks at once, whose results are taken in the order they were started.

    Example::

        async with OrderedWindow[bytes](8) as window:
            for item in work:
                if window.full:
                    use(await window.next())
                window.start(fetch(item))
            while window:
                use(await window.next())
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.size = size
        self._tasks: deque[asyncio.Task[T]] = deque()

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    @property
    def full(self) -> bool:
        """True when starting more work must wait for :meth:`next`."""
        return len(self._tasks) >= self.size

    def start(self, coro: Coroutine[Any, Any, T]) -> None:
        """Start ``coro`` as the newest piece of work.

        Raises:
            RuntimeError: The window is full (take a result with :meth:`next` first).
        """
        if self.full:
            coro.close()
            raise RuntimeError("the window is full: take the oldest result first")
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def next(self) -> T:
        """Wait for the oldest piece of work and return its result (or raise its error).

        Raises:
            IndexError: Nothing is running.
        """
        task = self._tasks[0]
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._tasks.popleft()

    async def aclose(self) -> None:
        """Cancel every task still running and wait until all have finished."""
        tasks = list(self._tasks)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> OrderedWindow[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
