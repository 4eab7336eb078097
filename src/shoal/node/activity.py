"""What the node is doing: transfers in progress, the last finished ones, and a live feed.

How it works: ``Node.store_with_result`` and ``Node.get`` report each transfer to the node's
:class:`ActivityFeed` (begin, bytes done, finish). The feed keeps the transfers in progress and
the last ``keep_finished`` finished ones (bounded memory whatever the traffic) and publishes
each change to its subscribers (the web UI's server-sent events). Progress is published at most
every ``progress_interval`` seconds per transfer, so a fast transfer does not flood anyone.

A subscriber never slows the node down: each has a bounded queue, and one whose queue is full
(it does not read fast enough) is dropped, its queued events discarded and its iterator ended.
It can subscribe again and start from a fresh :meth:`ActivityFeed.snapshot`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from shoal.errors import ShoalError

__all__ = ["ActivityFeed", "Subscription", "Transfer", "TransferKind", "TransferState"]

KEEP_FINISHED: Final = 20
SUBSCRIBER_QUEUE: Final = 256
PROGRESS_INTERVAL: Final = 0.25


class TransferKind(enum.Enum):
    """Which way the bytes go, seen from this node's user."""

    UPLOAD = "upload"  # a put: bytes come in to be stored
    DOWNLOAD = "download"  # a get: bytes go out


class TransferState(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class Transfer:
    """One put or get as the feed shows it.

    Attributes:
        id: Unique within this node's run.
        kind: Upload (put) or download (get).
        name: The catalog name, or the CID for a get by cap (never the cap: it is a secret).
        size: Total bytes, when known (a get knows it; a streamed put learns it at the end).
        done: Bytes transferred so far.
        started: Wall-clock time it began.
        finished: Wall-clock time it ended, or None while running.
        state: Running, done, failed or cancelled.
        error: Why it failed, in plain words (None unless failed or cancelled).
    """

    id: int
    kind: TransferKind
    name: str
    size: int | None
    done: int
    started: float
    finished: float | None = None
    state: TransferState = TransferState.RUNNING
    error: str | None = None
    _published: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "name": self.name,
            "size": self.size,
            "done": self.done,
            "started": self.started,
            "finished": self.finished,
            "state": self.state.value,
            "error": self.error,
        }


def plain_error(exc: BaseException) -> str:
    """Why a transfer failed, for people: a ``ShoalError``'s message says what to do; other
    exceptions are internal, and only their kind is shown (their text may hold local paths)."""
    if isinstance(exc, asyncio.CancelledError):
        return "stopped before the end (the client went away or the node is stopping)"
    if isinstance(exc, ShoalError):
        return " ".join(str(exc).split()) or type(exc).__name__
    return f"internal error ({type(exc).__name__}); the node's log has the details"


class Subscription:
    """A live view of the feed: ``async for event in subscription``; see ``ActivityFeed``."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(size)
        self._ended = False
        self.dropped = False

    def _offer(self, event: dict[str, Any]) -> bool:
        """Queue ``event``; False (and the subscription ends) if it has ended or is full."""
        if self._ended:
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._end(dropped=True)
            return False
        return True

    def _end(self, *, dropped: bool) -> None:
        if self._ended:
            return
        self._ended = True
        self.dropped = dropped
        while not self._queue.empty():  # free what it did not read; a fresh snapshot follows
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self) -> dict[str, Any] | None:
        """The next event, or None once the subscription has ended (safe to cancel)."""
        if self._ended and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        """End the subscription: :meth:`next` returns None from now on."""
        self._end(dropped=False)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        while (event := await self.next()) is not None:
            yield event


class ActivityFeed:
    """Transfers in progress and the last finished ones, with live subscribers.

    Args:
        keep_finished: How many finished transfers are kept (the oldest go first).
        queue_size: Events a subscriber may have unread before it is dropped.
        progress_interval: Least seconds between two progress events of one transfer.
        clock: Wall-clock time (for ``started`` and ``finished``).
        monotonic: Monotonic time (for spacing progress events).
    """

    def __init__(
        self,
        *,
        keep_finished: int = KEEP_FINISHED,
        queue_size: int = SUBSCRIBER_QUEUE,
        progress_interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._running: dict[int, Transfer] = {}
        self._finished: collections.deque[Transfer] = collections.deque(maxlen=keep_finished)
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)
        self._queue_size = queue_size
        self._interval = progress_interval
        self._clock = clock
        self._monotonic = monotonic

    # -- what the node reports ------------------------------------------------------------------

    def begin(self, kind: TransferKind, name: str, size: int | None = None) -> Transfer:
        """Record a new transfer in progress and publish it."""
        transfer = Transfer(
            id=next(self._ids), kind=kind, name=name, size=size, done=0, started=self._clock()
        )
        self._running[transfer.id] = transfer
        transfer._published = self._monotonic()
        self._publish(transfer)
        return transfer

    def progress(self, transfer: Transfer, nbytes: int) -> None:
        """Count ``nbytes`` more done; publish if the last event is old enough."""
        transfer.done += nbytes
        now = self._monotonic()
        if now - transfer._published >= self._interval:
            transfer._published = now
            self._publish(transfer)

    def finish(self, transfer: Transfer, error: BaseException | None = None) -> None:
        """Move ``transfer`` to the finished ones (done, or failed with ``error``)."""
        if self._running.pop(transfer.id, None) is None:
            return  # already finished
        transfer.finished = self._clock()
        if error is None:
            transfer.state = TransferState.DONE
            if transfer.size is None:
                transfer.size = transfer.done
        else:
            cancelled = isinstance(error, asyncio.CancelledError | GeneratorExit)
            transfer.state = TransferState.CANCELLED if cancelled else TransferState.FAILED
            transfer.error = plain_error(error)
        self._finished.append(transfer)
        self._publish(transfer)

    @contextlib.contextmanager
    def track(self, kind: TransferKind, name: str, size: int | None = None) -> Iterator[Transfer]:
        """Begin a transfer, and finish it when the block ends (failed if it raised)."""
        transfer = self.begin(kind, name, size)
        try:
            yield transfer
        except BaseException as exc:
            self.finish(transfer, exc)
            raise
        self.finish(transfer)

    # -- what the UI reads ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """``{"running": [...], "finished": [...]}``, newest first."""
        return {
            "running": [t.to_json() for t in reversed(self._running.values())],
            "finished": [t.to_json() for t in reversed(self._finished)],
        }

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription to every change from now on, removed when the block ends."""
        subscription = Subscription(self._queue_size)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are live (a dropped one no longer counts)."""
        return len(self._subscribers)

    def _publish(self, transfer: Transfer) -> None:
        if not self._subscribers:
            return
        event = {"type": "transfer", "transfer": transfer.to_json()}
        for subscription in list(self._subscribers):
            if not subscription._offer(event):
                self._subscribers.discard(subscription)
