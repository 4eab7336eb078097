"""Background repair: every node checks the files it keeps and the files it holds for others.

How it works (``docs/repair.md``):

- *Which files*: the roots of this node's catalog (owner repair) and the roots it holds under a
  live lease (``held_roots(now)``: the lease table's ``roots_held``), so a file survives its
  owner going away.
- *Passes*: a full pass checks every root, in ID order from the persistent cursor (the last
  root finished), with :func:`~shoal.node.repair.check_file` (repairing, waiting for absent
  nodes, throttled by one ``ByteBudget`` of ``rate`` bytes/s). It runs every ``interval``
  seconds, ``settle`` seconds after start when an earlier pass was cut short, and ``settle``
  seconds after a node newly went away (a block may be down to its last copy: those are copied
  at once; the others wait).
- *Timers*: a file whose missing copies are presumed held by unreachable nodes is *due* when
  the first of their repair delays runs out; it is checked again then (``due`` in the state).
  A node this node saw go away is probed when its delay runs out and, still unreachable, a
  full pass finds what it held. Both wake the loop at that time, not at the next periodic pass.
- *Watching*: every ``watch`` seconds the loop looks at the peer book: a peer whose connection
  went away (not closed by us as idle) is recorded absent, with when it was last heard from.
- *State*: cursor, absences, due roots and the catalog files' health live in ``repair.json``
  (:mod:`shoal.node.repair_state`), saved at most every ``SAVE_EVERY`` seconds during a pass,
  at its end and on close.

Resource handling: the loop is a task of this object's ``TaskSet`` (``aclose`` cancels and
awaits it, then saves the state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.content import parse_cap
from shoal.errors import InvalidCapability, ShoalError
from shoal.ids import encode_id, short_id
from shoal.node.leases import catalog_roots as leases_catalog_roots
from shoal.node.repair import DEGRADED, HEALTHY, LOST, FileReport, RepairContext, check_file
from shoal.node.repair import known_nodes as _known_nodes
from shoal.node.repair_leases import carry_leases
from shoal.node.repair_plan import ByteBudget, roots_in_cursor_order
from shoal.node.repair_state import STATE_FILE, FileHealth, RepairState
from shoal.transport.limits import LimitLog
from shoal.transport.tasks import TaskSet

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["PassReport", "RepairStats", "Repairer"]

log = logging.getLogger(__name__)

#: Seconds between two saves of the state during a pass.
SAVE_EVERY = 5.0
#: Seconds an absence is remembered after its repair delay ran out (and its loss was handled).
FORGET_ABSENT_AFTER = 24 * 3600.0
#: Seconds added to a due time, so the delay has surely run out when the file is checked.
DUE_SLACK = 0.5

HeldRoots = Callable[[float], Iterable[bytes]]


@dataclass
class RepairStats:
    """Counters since start (``shoal status``)."""

    passes: int = 0
    files_checked: int = 0
    copied: int = 0
    bytes_moved: int = 0
    throttled: int = 0  # times the budget held work back


@dataclass
class PassReport:
    """What one pass over several files did."""

    files: list[FileReport]

    def to_json(self) -> dict[str, Any]:
        unrepaired = [f"{encode_id(f.cid)[:12]}: {r}" for f in self.files for r in f.unrepaired]
        return {
            "files": len(self.files),
            "healthy": sum(1 for f in self.files if f.state == HEALTHY),
            "degraded": sum(1 for f in self.files if f.state == DEGRADED),
            "lost": sum(1 for f in self.files if f.state == LOST),
            "copied": sum(f.copied for f in self.files),
            "bytes_moved": sum(f.bytes_moved for f in self.files),
            "unrepaired": unrepaired[:100],
            "reports": [f.to_json() for f in self.files],
        }


class Repairer:
    """The repair loop of one node (see the module docstring).

    Args:
        rt: The node.
        delay: The repair delay: seconds a node must be unreachable before its copies count as
            lost.
        interval: Seconds between full passes.
        rate: Bytes per second background repair may move (None: no limit).
        settle: Seconds after a change (a node went away, a restart mid-pass) before a pass.
        watch: Seconds between two looks at the peer book.
        held_roots: The roots held here under a live lease, given the Unix time (None: none).
        background: Repair by itself (False: only the passes asked for, ``shoal repair``).
    """

    def __init__(
        self,
        rt: NodeRuntime,
        *,
        delay: float,
        interval: float,
        rate: float | None,
        settle: float,
        watch: float = 5.0,
        held_roots: HeldRoots | None = None,
        background: bool = True,
    ) -> None:
        self._rt = rt
        self.background = background
        self.delay = delay
        self.interval = interval
        self.settle = settle
        self.watch = watch
        self.held_roots = held_roots
        self.budget = ByteBudget(rate)
        self.stats = RepairStats()
        self.state = RepairState()
        self._path = rt.data.path / STATE_FILE
        self._queue: set[bytes] = set()  # roots of the pass running now, not yet checked
        self._wake = asyncio.Event()
        self._early_pass_at: float | None = None
        self._handled_losses: set[bytes] = set()
        self._last_save = float("-inf")
        self._throttle_log = LimitLog(log, clock=rt.options.clock)
        self._tasks = TaskSet("repair")
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.state = await self._rt.io(RepairState.load, self._path)
        self._started = True
        now = self._rt.options.clock.time()
        if self.state.cursor is not None or self.state.last_pass is None:
            self._early_pass_at = now + self.settle  # resume, or a first look soon
        if not self.background:
            log.info("background repair is off; `shoal repair` runs a pass when asked")
            return
        self._tasks.spawn(self._loop(), name="repair")

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if not self._started:
            return  # never loaded: do not overwrite the saved state with an empty one
        with contextlib.suppress(OSError):
            await self._rt.io(RepairState.write, self._path, self.state.encode())

    def node_left(self) -> None:
        """A node left the routing table: a pass runs ``settle`` seconds later."""
        self._schedule_early()

    @property
    def queue_length(self) -> int:
        """Files waiting to be checked: the rest of the running pass, and the due ones."""
        return len(self._queue | set(self.state.due))

    def health_counts(self, catalog_roots: Iterable[bytes]) -> dict[str, int]:
        """The catalog files by their last known state (``unchecked``: none yet)."""
        counts = {HEALTHY: 0, DEGRADED: 0, LOST: 0, "unchecked": 0}
        for root in catalog_roots:
            health = self.state.health.get(root)
            counts[health.state if health is not None else "unchecked"] += 1
        return counts

    # -- passes --------------------------------------------------------------------------------

    def context(self, *, repair: bool, background: bool, verify: bool = False) -> RepairContext:
        """A context for one check or repair, with what this node knows of absent nodes."""
        state = self.state

        def absent(node_id: bytes, last_heard: float) -> None:
            state.absent.setdefault(node_id, last_heard)

        def heard(node_id: bytes) -> None:
            state.absent.pop(node_id, None)
            self._handled_losses.discard(node_id)

        async def copied(root: bytes, copies: dict[bytes, list[bytes]]) -> None:
            own = root in await self.catalog_roots()
            await carry_leases(self._rt, root, copies, own=own)

        return RepairContext(
            repair=repair,
            on_copied=copied,
            verify=verify,
            delay=self.delay,
            wait_for_absent=background,
            budget=self.budget if background else None,
            known=self._unreachable_known(),
            on_absent=absent,
            on_heard=heard,
            throttle_log=self._throttle_log,
        )

    def _unreachable_known(self) -> dict[bytes, float]:
        heard = _known_nodes(self._rt, self.state.absent)
        live = set(self._rt.manager.live_ids())
        return {n: t for n, t in heard.items() if n not in live}

    async def catalog_roots(self) -> list[bytes]:
        rt = self._rt
        roots = []
        for entry in await rt.io(rt.catalog.list_files):
            try:
                roots.append(parse_cap(entry.cap).cid)
            except InvalidCapability:
                continue
        return roots

    async def all_roots(self) -> tuple[list[bytes], set[bytes]]:
        """Every root to check (a catalog folder's files too), and which of them are catalog
        entries."""
        rt = self._rt
        entries = await rt.io(rt.catalog.list_files)
        catalog = sorted(await leases_catalog_roots(rt, entries))
        held: list[bytes] = []
        if self.held_roots is not None:
            now = self._rt.options.clock.time()
            try:
                held = list(await self._rt.io(self.held_roots, now))
            except ShoalError as exc:
                log.warning("repair: cannot list the files held here: %s", exc)
        return [*catalog, *held], set(await self.catalog_roots())

    async def run_pass(
        self,
        roots: Iterable[bytes] | None = None,
        *,
        background: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> PassReport:
        """One pass over ``roots`` (None: every root this node keeps or holds, from the
        cursor). ``background`` False: a pass asked for now (absent nodes count as lost, no
        throttle, the cursor untouched)."""
        full = roots is None
        catalog = set(await self.catalog_roots())
        if roots is None:
            every, catalog = await self.all_roots()
            ordered = roots_in_cursor_order(every, self.state.cursor if background else None)
        else:
            ordered = list(dict.fromkeys(roots))
        reports = []
        clock = self._rt.options.clock
        if background:
            self._queue = set(ordered)
        try:
            for root in ordered:
                ctx = self.context(repair=True, background=background)
                ctx.on_block = progress
                report = await check_file(self._rt, root, ctx)
                reports.append(report)
                self._record(root, report, catalog)
                if background:
                    self._queue.discard(root)
                    if full:
                        self.state.cursor = root
                    await self._save_soon()
        finally:
            self._queue = set()
        if full and background:
            self.state.cursor = None
            self.state.passes += 1
            self.state.last_pass = clock.time()
            self.stats.passes += 1
            await self._save_soon(force=True)
        return PassReport(reports)

    async def check(
        self, root: bytes, *, verify: bool = False, progress: Callable[[int], None] | None = None
    ) -> FileReport:
        """Count the copies of one file's blocks (with ``verify``, download and hash them)."""
        ctx = self.context(repair=False, background=True, verify=verify)
        ctx.on_block = progress
        report = await check_file(self._rt, root, ctx)
        if root in set(await self.catalog_roots()):
            self._record_health(root, report)
        return report

    def _record(self, root: bytes, report: FileReport, catalog: set[bytes]) -> None:
        self.stats.files_checked += 1
        self.stats.copied += report.copied
        self.stats.bytes_moved += report.bytes_moved
        if report.copied:
            log.info("repair: file %s: %d block(s) copied, %d bytes moved", short_id(root),
                     report.copied, report.bytes_moved)  # fmt: skip
        if report.due is not None and report.waiting:
            self.state.due[root] = report.due + DUE_SLACK
        else:
            self.state.due.pop(root, None)
        if root in catalog:
            self._record_health(root, report)

    def _record_health(self, root: bytes, report: FileReport) -> None:
        self.state.health[root] = FileHealth(
            state=report.state,
            min_copies=report.min_copies_after or 0,
            wanted=report.wanted,
            checked=self._rt.options.clock.time(),
        )

    async def _save_soon(self, *, force: bool = False) -> None:
        now = self._rt.options.clock.monotonic()
        if not force and now - self._last_save < SAVE_EVERY:
            return
        self._last_save = now
        try:
            await self._rt.io(RepairState.write, self._path, self.state.encode())
        except OSError as exc:
            log.warning("repair: cannot save %s: %s", STATE_FILE, exc.strerror or exc)

    # -- the loop ------------------------------------------------------------------------------

    def _schedule_early(self) -> None:
        at = self._rt.options.clock.time() + self.settle
        if self._early_pass_at is None or at < self._early_pass_at:
            self._early_pass_at = at
        self._wake.set()

    def _watch_peers(self) -> None:
        """Record peers whose connection went away (not closed idle by us) as absent; forget
        absences long past their delay (such a node is lost whether remembered or not)."""
        now = self._rt.options.clock.time()
        keep_for = self.delay + FORGET_ABSENT_AFTER
        for node_id, last in list(self.state.absent.items()):
            if now - last > keep_for and node_id in self._handled_losses:
                del self.state.absent[node_id]
        for record in self._rt.manager.records():
            if record.up:
                if self.state.absent.pop(record.node_id, None) is not None:
                    self._handled_losses.discard(record.node_id)
            elif (
                record.last_seen is not None
                and record.verified
                and not record.closed_idle
                and record.node_id not in self.state.absent
            ):
                self.state.absent[record.node_id] = record.last_seen
                log.info("repair: node %s went away; its copies count as held for %.0f s",
                         short_id(record.node_id), self.delay)  # fmt: skip
                self._schedule_early()

    def _next_wake(self, now: float) -> float:
        times = [(self.state.last_pass or now) + self.interval, now + self.watch]
        if self._early_pass_at is not None:
            times.append(self._early_pass_at)
        times.extend(self.state.due.values())
        times.extend(
            t + self.delay
            for n, t in self.state.absent.items()
            if n not in self._handled_losses and t + self.delay > now - self.watch
        )
        return min(times)

    async def _loop(self) -> None:
        clock = self._rt.options.clock
        while True:
            now = clock.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._next_wake(now) - now)):
                    await self._wake.wait()
            self._wake.clear()
            self._watch_peers()
            try:
                await self._tick()
            except ShoalError as exc:  # the catalog or the store failed: try again later
                log.warning("repair pass stopped: %s", exc)

    async def _tick(self) -> None:
        clock = self._rt.options.clock
        now = clock.time()
        full = (
            (self._early_pass_at is not None and now >= self._early_pass_at)
            or now >= (self.state.last_pass or now) + self.interval
            or await self._newly_lost(now)
        )
        if full:
            self._early_pass_at = None
            await self.run_pass()
            return
        due = [root for root, at in self.state.due.items() if at <= now]
        if due:
            await self.run_pass(due)

    async def _newly_lost(self, now: float) -> bool:
        """Whether an absent node's delay ran out and it is still unreachable (probed)."""
        lost = [
            n
            for n, t in self.state.absent.items()
            if n not in self._handled_losses and t + self.delay <= now
        ]
        found = False
        for node_id in lost:
            self._handled_losses.add(node_id)
            try:
                await self._rt.routing.connect(node_id)
            except ShoalError:
                log.info("repair: node %s counts as lost; repairing what it held",
                         short_id(node_id))  # fmt: skip
                found = True
            else:
                self.state.absent.pop(node_id, None)
        return found
