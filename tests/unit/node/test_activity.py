"""The activity feed: bounded history, throttled progress, slow subscribers dropped."""

from __future__ import annotations

import asyncio

import pytest

from shoal.errors import NotFound
from shoal.node.activity import ActivityFeed, TransferKind, TransferState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keeps_only_the_last_finished_transfers() -> None:
    feed = ActivityFeed(keep_finished=20)
    for i in range(25):
        transfer = feed.begin(TransferKind.UPLOAD, f"f{i}", 10)
        feed.finish(transfer)
    finished = feed.snapshot()["finished"]
    assert [t["name"] for t in finished] == [f"f{i}" for i in range(24, 4, -1)]
    assert feed.snapshot()["running"] == []


def test_track_records_done_and_failed_in_plain_words() -> None:
    feed = ActivityFeed()
    with feed.track(TransferKind.UPLOAD, "a.txt") as transfer:
        feed.progress(transfer, 5)
    with (
        pytest.raises(NotFound),
        feed.track(TransferKind.DOWNLOAD, "b.txt", 9),
    ):
        raise NotFound("no file named 'b.txt'\n in this node's catalog")
    with pytest.raises(KeyError), feed.track(TransferKind.DOWNLOAD, "c.txt", 9):
        raise KeyError("/home/someone/secret/path")
    done, failed_shoal, failed_other = reversed(feed.snapshot()["finished"])
    assert done["state"] == "done"
    assert done["size"] == 5  # a put of unknown size learns it at the end
    assert failed_shoal["state"] == "failed"
    assert failed_shoal["error"] == "no file named 'b.txt' in this node's catalog"
    # An internal error shows its kind only: its text may hold a local path.
    assert failed_other["error"].startswith("internal error (KeyError)")
    assert "secret" not in failed_other["error"]


def test_a_cancelled_transfer_is_cancelled_not_failed() -> None:
    feed = ActivityFeed()

    def cancelled_midway() -> None:
        with feed.track(TransferKind.UPLOAD, "x") as t:
            feed.progress(t, 3)
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        cancelled_midway()
    (entry,) = feed.snapshot()["finished"]
    assert entry["state"] == TransferState.CANCELLED.value
    assert entry["done"] == 3
    assert "stopped before the end" in entry["error"]


async def test_progress_events_are_spaced_but_the_count_is_exact() -> None:
    clock = FakeClock()
    feed = ActivityFeed(progress_interval=0.25, monotonic=clock)
    with feed.subscribe() as subscription:
        transfer = feed.begin(TransferKind.UPLOAD, "big", 100)
        for _ in range(10):
            feed.progress(transfer, 1)  # no time passes: no event
        clock.now += 0.3
        feed.progress(transfer, 1)
        feed.finish(transfer)
        events = [await subscription.next() for _ in range(3)]
    assert [e["transfer"]["state"] for e in events if e] == ["running", "running", "done"]
    assert [e["transfer"]["done"] for e in events if e] == [0, 11, 11]


async def test_a_subscriber_that_does_not_read_is_dropped_and_others_go_on() -> None:
    feed = ActivityFeed(queue_size=4)
    with feed.subscribe() as slow, feed.subscribe() as fast:
        seen = []
        for i in range(10):
            feed.finish(feed.begin(TransferKind.UPLOAD, f"f{i}", 1))
            seen += [await fast.next(), await fast.next()]  # this one keeps up
        assert slow.dropped
        assert await slow.next() is None  # its queued events were freed; it has ended
        assert await slow.next() is None
        assert feed.subscribers == 1
        assert not fast.dropped
        assert [e["transfer"]["state"] for e in seen if e] == ["running", "done"] * 10
    assert feed.subscribers == 0


async def test_closing_a_subscription_wakes_its_reader() -> None:
    feed = ActivityFeed()
    with feed.subscribe() as subscription:
        reader = asyncio.create_task(subscription.next())
        await asyncio.sleep(0)
        subscription.close()
        assert await asyncio.wait_for(reader, 5) is None
        feed.finish(feed.begin(TransferKind.UPLOAD, "after", 1))
        assert await subscription.next() is None
