"""Time, injectable: the real clock, and a virtual one whose event loop skips idle waits.

Everything that measures intervals (backoff, liveness, forgetting unreachable peers, rate
limits) reads a :class:`Clock` instead of the ``time`` module, so tests and simulations can run
it on virtual time.

How virtual time works: a clock alone is not enough, because ``asyncio.timeout``,
``asyncio.sleep`` and every ``call_later`` inside the transport read the *event loop's* time.
So :class:`VirtualClock` comes with an event loop (:func:`run_virtual`,
:meth:`VirtualClock.new_event_loop`) whose ``time()`` is the clock, and whose selector, when
nothing is ready, advances the clock straight to the next timer instead of sleeping. A 30 s
backoff then takes microseconds, and thousands of nodes can run in one process. Time stands
still while worker threads (``run_in_executor``, ``asyncio.to_thread``) are busy, so a slow
disk or hash never makes virtual timeouts fire early. The virtual loop is for in-memory
networks (``shoal.transport.memory``): real sockets would keep real time.

A leaf module: no Shoal imports.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "SystemClock",
    "VirtualClock",
    "VirtualTimeLoop",
    "run_virtual",
]

T = TypeVar("T")

#: Wall-clock time at which a virtual clock starts by default (2024-01-01T00:00:00Z).
VIRTUAL_EPOCH = 1_704_067_200.0


class Clock(Protocol):
    """What the transport needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything.

        Always the running event loop's time, so it agrees with ``asyncio.timeout``.
        """
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (for what is shown or stored)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class SystemClock:
    """The real clock: asyncio's monotonic loop time and ``time.time()``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class VirtualClock:
    """A clock that only moves when its event loop has nothing else to do.

    Args:
        start: Initial monotonic reading.
        epoch: Wall-clock time (``time()``) at the initial reading.
    """

    def __init__(self, start: float = 0.0, *, epoch: float = VIRTUAL_EPOCH) -> None:
        self._now = start
        self._epoch = epoch - start

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward (the loop does this by itself when idle)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds

    def new_event_loop(self) -> VirtualTimeLoop:
        """An event loop that runs on this clock."""
        return VirtualTimeLoop(self)


class _VirtualSelector(selectors.BaseSelector):
    """Wraps the real selector; an idle wait advances the virtual clock instead of sleeping."""

    def __init__(self, clock: VirtualClock) -> None:
        self._inner = selectors.DefaultSelector()
        self._clock = clock
        self.busy_threads = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        if self.busy_threads or timeout is None:
            # A worker thread is running (its result wakes us through the loop's self-pipe),
            # or nothing at all is scheduled: wait in real time, without moving the clock.
            return self._inner.select(None)
        self._clock.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose time is a :class:`VirtualClock`."""

    def __init__(self, clock: VirtualClock) -> None:
        self._virtual_selector = _VirtualSelector(clock)
        super().__init__(self._virtual_selector)
        self.clock = clock
        # Timers due within this much of "now" run now: absorbs float rounding when the
        # selector advances the clock by (when - now).
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self.clock.monotonic()

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._virtual_selector.busy_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self._virtual_selector.busy_threads -= 1


def run_virtual(
    main: Callable[[VirtualClock], Coroutine[Any, Any, T]] | Awaitable[T],
    *,
    clock: VirtualClock | None = None,
    limit: float = 24 * 3600.0,
) -> T:
    """Run ``main`` to completion on a fresh virtual-time event loop.

    Args:
        main: A coroutine, or a function taking the clock and returning one.
        clock: The clock to use; a new one starting at 0 by default.
        limit: Virtual seconds after which ``main`` is cancelled and ``TimeoutError`` raised
            (a test that waits forever would otherwise spin through virtual time).
    """
    clock = clock or VirtualClock()
    loop = clock.new_event_loop()

    async def bounded() -> T:
        awaitable = main(clock) if callable(main) else main
        async with asyncio.timeout(limit):
            return await awaitable

    try:
        return loop.run_until_complete(bounded())
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
