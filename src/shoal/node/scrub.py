"""Scrub: every local block re-hashed about once a month; a corrupt one fetched again.

Why (``docs/scrub.md``, ``docs/decisions/0011-scrub-and-rebalancing.md``): the store's mtime
stamp makes presence checks cheap, but it cannot see a change below the file system (bit
rot). Reads catch it, but a block nobody reads could rot on every holder before anyone
notices. So each node reads all its blocks back from time to time.

How it works:

- A pass walks the block files in the order of their names (``ids_after``: one fan-out
  directory at a time, so memory stays bounded), reads each through ``BlockStore.get`` (which
  hashes it on the I/O pool and, when the bytes fail the ID, moves the file to ``corrupt/``
  and logs it: the one reason to move a block), and fetches a corrupt block again from its
  holders (``fetch_block``: the closest nodes, the bytes hashed before they are stored). Blocks
  moved aside earlier by a read (``BlockStore.quarantined``) and not stored again are fetched
  at the start of each pass too.
- Reads are throttled by a ``ByteBudget`` (``rate`` bytes per second, default about 10% of a
  hard disk's bandwidth: ``defaults.SCRUB_RATE``).
- The state (the cursor: the name of the last block checked, the counts of the pass under
  way, the last finished pass, when the next is due) lives in ``<data dir>/scrub.json``,
  written atomically every ``save_every`` blocks or ``save_seconds`` and when the node stops:
  a restart resumes the pass where it stopped.
- Passes are due ``interval`` times U(0.75, 1.25) after the last one ended; a new node's
  first one after ``interval`` times U(0, 1). So the nodes of a network do not scrub in step.
  ``request_pass()`` (``shoal scrub``) starts a whole pass now; a pass under way starts over.

Resource handling: the loop is a task of this object's ``TaskSet`` (``aclose`` cancels and
awaits it, saving the cursor first); disk and hashing run on the runtime's pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from shoal.errors import CorruptBlock, NotFound, ShoalError, StorageError
from shoal.ids import ID_TEXT_LENGTH, decode_id, encode_id, short_id
from shoal.node.blocks import fetch_block
from shoal.node.budget import ByteBudget
from shoal.node.types import ScrubReport, ScrubStatus
from shoal.store.files import write_file_atomic
from shoal.transport.tasks import TaskSet

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["STATE_FILE", "Scrub", "ids_after"]

log = logging.getLogger(__name__)

STATE_FILE: Final = "scrub.json"
_STATE_VERSION: Final = 1
#: Block IDs listed per trip to the I/O pool.
BATCH: Final = 256
#: Seconds before a pass the disk stopped (the walk failed) is tried again.
RETRY_AFTER: Final = 3600.0
#: Blocks found corrupt that no holder could supply yet, remembered for the next pass.
MAX_PENDING: Final = 1024
_BASE32: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _fanout(path: Path) -> list[str]:
    """The fan-out directory names under ``path`` (two base32 characters), sorted."""
    try:
        with os.scandir(path) as entries:
            return sorted(
                e.name
                for e in entries
                if len(e.name) == 2 and set(e.name) <= _BASE32 and e.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []


def ids_after(root: Path, after: str | None, limit: int) -> list[bytes]:
    """Up to ``limit`` block IDs stored under ``root``, in name order, after name ``after``.

    Follows ``BlockStore``'s layout (``<root>/<t[0:2]>/<t[2:4]>/<t>``); skips ``tmp/``,
    ``corrupt/`` and any name that is not a block ID in its place. Reads one fan-out directory
    at a time. Synchronous: run it on the I/O pool.
    """
    found: list[bytes] = []
    for first in _fanout(root):
        if after is not None and first < after[:2]:
            continue
        for second in _fanout(root / first):
            prefix = first + second
            if after is not None and prefix < after[:4]:
                continue
            try:
                with os.scandir(root / first / second) as entries:
                    names = sorted(
                        e.name
                        for e in entries
                        if len(e.name) == ID_TEXT_LENGTH
                        and e.name.startswith(prefix)
                        and (after is None or e.name > after)
                    )
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    found.append(decode_id(name))
                except ValueError:
                    continue
                if len(found) >= limit:
                    return found
    return found


@dataclass
class _State:
    """What ``scrub.json`` holds (see the module docstring)."""

    pass_number: int = 0
    #: The pass under way: when it began, the last name checked ("" before the first).
    started: float | None = None
    cursor: str | None = None
    checked: int = 0
    bytes: int = 0
    corrupt: int = 0
    replaced: int = 0
    unreplaced: int = 0
    blocks: int = 0
    next_pass: float | None = None
    last: dict[str, Any] | None = None
    pending: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.started is not None

    def report(self) -> ScrubReport | None:
        if self.last is None:
            return None
        try:
            return ScrubReport(**self.last)
        except TypeError:
            return None


def _load_state(path: Path) -> _State:
    """The saved state, or a fresh one if there is none or it is unreadable (logged)."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _State()
    except (OSError, ValueError) as exc:
        log.warning("scrub state %s unreadable (%s): starting afresh", path, exc)
        return _State()
    if not isinstance(raw, dict) or raw.get("version") != _STATE_VERSION:
        log.warning("scrub state %s has an unknown format: starting afresh", path)
        return _State()
    raw.pop("version")
    try:
        state = _State(**raw)
    except TypeError:
        log.warning("scrub state %s has unknown fields: starting afresh", path)
        return _State()
    if state.cursor is not None and (
        len(state.cursor) not in (0, ID_TEXT_LENGTH) or not set(state.cursor) <= _BASE32
    ):
        state.cursor = ""  # a damaged cursor: the pass starts over, nothing is skipped
    return state


def _save_state(path: Path, state: _State) -> None:
    data = json.dumps({"version": _STATE_VERSION, **asdict(state)}, sort_keys=True).encode()
    write_file_atomic(path, data, mode=0o644)


def _checked_bytes(block_id: bytes, data: bytes) -> bytes:
    """``data`` if it hashes to ``block_id`` (for ``fetch_block``), else ``CorruptBlock``."""
    if hashlib.sha256(data).digest() != block_id:
        raise CorruptBlock(f"block {short_id(block_id)}: the bytes do not hash to its ID")
    return data


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


class Scrub:
    """The scrub loop of one node (see the module docstring).

    Args:
        rt: The node.
        interval: Mean seconds between passes (randomized per pass, see above).
        rate: Bytes per second a pass may read.
        rng: Randomness for the schedule.
        save_every: Blocks checked between two saves of the cursor.
        save_seconds: Seconds between two saves of the cursor, at most.
    """

    def __init__(
        self,
        rt: NodeRuntime,
        *,
        interval: float,
        rate: float,
        rng: random.Random | None = None,
        save_every: int = 256,
        save_seconds: float = 60.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("the scrub interval must be positive")
        self._rt = rt
        self.interval = interval
        self.budget = ByteBudget(rate, clock=rt.options.clock)
        self._rng = rng or random.Random()
        self._save_every = save_every
        self._save_seconds = save_seconds
        self._retry = min(interval, RETRY_AFTER)
        self._path = rt.data.path / STATE_FILE
        self._state = _State()
        self._wake = asyncio.Event()
        self._restart = False
        self._finished = asyncio.Condition()
        self._tasks = TaskSet("scrub")
        #: Blocks checked by this process (a restart resumes: it does not count them again).
        self.checked_here = 0

    async def start(self) -> None:
        """Load the saved state and start the loop."""
        self._state = await self._rt.io(_load_state, self._path)
        self._tasks.spawn(self._loop(), name="scrub")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    # -- what others see ---------------------------------------------------------------------

    def status(self) -> ScrubStatus:
        s = self._state
        return ScrubStatus(
            running=s.running,
            pass_number=s.pass_number,
            started=s.started,
            checked=s.checked,
            bytes=s.bytes,
            corrupt=s.corrupt,
            replaced=s.replaced,
            blocks=s.blocks,
            next_pass=None if s.running else s.next_pass,
            rate=int(self.budget.rate),
            last=s.report(),
        )

    def request_pass(self) -> int:
        """Start a whole pass now (one under way starts over); return its number.

        The pass is done when ``status().last.pass_number`` reaches the number returned.
        """
        # Under way: it starts over as the next number; idle: the loop wakes and begins it.
        self._restart = self._state.running
        self._wake.set()
        return self._state.pass_number + 1

    async def run_pass(self) -> ScrubReport:
        """Run a whole pass now and return it (``request_pass`` and wait)."""
        number = self.request_pass()
        async with self._finished:
            await self._finished.wait_for(
                lambda: (r := self._state.report()) is not None and r.pass_number >= number
            )
        report = self._state.report()
        assert report is not None
        return report

    # -- the loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        clock = self._rt.options.clock
        state = self._state
        if not state.running and state.next_pass is None:
            state.next_pass = clock.time() + self.interval * self._rng.random()
            await self._save()
        while True:
            if not self._state.running:
                due = self._state.next_pass or clock.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - clock.time())):
                        await self._wake.wait()
                self._wake.clear()
                self._begin()
            elif self._restart:  # asked for while resuming or waiting to retry
                self._begin()
            self._restart = False
            try:
                await self._pass()
            except asyncio.CancelledError:
                await self._save()  # the cursor: a restart resumes the pass here
                raise
            except (OSError, ShoalError) as exc:
                # The disk failed under the walk (not one block: those are counted): keep the
                # cursor, try again later rather than give up scrubbing for good.
                log.warning("scrub pass stopped (%s); retrying in %g s", exc, self._retry)
                await self._save()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._retry):
                        await self._wake.wait()  # or at once, on request
                self._wake.clear()

    def _begin(self) -> None:
        clock = self._rt.options.clock
        s = self._state
        s.pass_number += 1
        s.started = clock.time()
        s.cursor = ""
        s.checked = s.bytes = s.corrupt = s.replaced = s.unreplaced = 0
        s.blocks = self._rt.blocks.usage()[0]
        log.info("scrub pass %d: checking %d block(s)", s.pass_number, s.blocks)

    async def _pass(self) -> None:
        """Run (or resume) the pass in ``self._state`` to its end."""
        rt = self._rt
        clock = rt.options.clock
        s = self._state
        if s.cursor == "":
            await self._replace_missing()
        last_save = clock.monotonic()
        unsaved = 0
        while True:
            batch = await rt.io(ids_after, rt.blocks.root, s.cursor or None, BATCH)
            if not batch:
                break
            for block_id in batch:
                if self._restart:
                    self._begin()
                    self._restart = False
                    await self._replace_missing()
                    break
                await self._check(block_id)
                s.cursor = encode_id(block_id)
                unsaved += 1
                if unsaved >= self._save_every or clock.monotonic() - last_save >= (
                    self._save_seconds
                ):
                    await self._save()
                    unsaved, last_save = 0, clock.monotonic()
        report = ScrubReport(
            pass_number=s.pass_number,
            started=s.started if s.started is not None else clock.time(),
            finished=clock.time(),
            checked=s.checked,
            bytes=s.bytes,
            corrupt=s.corrupt,
            replaced=s.replaced,
            unreplaced=s.unreplaced,
        )
        s.last = asdict(report)
        s.started = s.cursor = None
        s.next_pass = clock.time() + self.interval * self._rng.uniform(0.75, 1.25)
        await self._save()
        log.info(
            "scrub pass %d done: %d block(s) checked, %d corrupt, %d replaced, %d not yet",
            report.pass_number,
            report.checked,
            report.corrupt,
            report.replaced,
            report.unreplaced,
        )
        async with self._finished:
            self._finished.notify_all()

    async def _check(self, block_id: bytes) -> None:
        """Read and hash one block within the budget; fetch it again if it is corrupt."""
        rt = self._rt
        s = self._state
        size = await rt.io(_size, rt.blocks.path_for(block_id))
        if size is None:
            return  # removed meanwhile
        await self.budget.take(size)
        try:
            # Hashes on the I/O pool; a mismatch moves the file to corrupt/ (and logs it).
            await rt.io(rt.blocks.get, block_id)
        except NotFound:
            return
        except CorruptBlock:
            s.corrupt += 1
            await self._replace(block_id)
        except StorageError as exc:
            log.warning("scrub could not read block %s: %s", short_id(block_id), exc)
        s.checked += 1
        s.bytes += size
        self.checked_here += 1

    async def _replace_missing(self) -> None:
        """Fetch again the blocks moved aside (by reads, or earlier passes) and not back yet."""
        rt = self._rt
        s = self._state
        try:
            quarantined = await rt.io(rt.blocks.quarantined)
        except StorageError as exc:
            log.warning("scrub could not list corrupt/: %s", exc)
            quarantined = []
        pending = [decode_id(t) for t in s.pending]
        s.pending = []
        for block_id in dict.fromkeys([*pending, *quarantined]):
            if not await rt.io(rt.blocks.has, block_id):
                await self._replace(block_id)

    async def _replace(self, block_id: bytes) -> None:
        """Fetch ``block_id`` from a holder and store it; remember it if none could."""
        rt = self._rt
        s = self._state

        def check(data: bytes) -> bytes:
            return _checked_bytes(block_id, data)

        try:
            data = await fetch_block(rt, block_id, check)
            await rt.io(rt.blocks.put, block_id, data, verify=False)  # hashed by check
        except ShoalError as exc:
            s.unreplaced += 1
            if len(s.pending) < MAX_PENDING:
                s.pending.append(encode_id(block_id))
            log.warning(
                "scrub: block %s is corrupt here and could not be fetched again yet "
                "(retried at the next pass): %s",
                encode_id(block_id),
                exc,
            )
            return
        s.replaced += 1
        log.warning("scrub: block %s was corrupt here; fetched it again", encode_id(block_id))

    async def _save(self) -> None:
        try:
            await self._rt.io(_save_state, self._path, self._state)
        except OSError as exc:
            log.warning("could not save the scrub state (%s): a restart starts the pass over", exc)
