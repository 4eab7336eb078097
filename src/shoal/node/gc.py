"""Garbage collection: free local blocks that no live lease holds (``docs/leases.md``).

How it works: a pass lists the local blocks and asks the lease table which of them are due
(``LeaseTable.gc_candidates``: no live lease, and the last lease ended, or the block was
first seen unleased, at least ``gc_grace`` seconds ago). It then keeps every block that a file
in this node's own catalog needs (its objects are walked keylessly; if one cannot be walked
the pass deletes nothing: a block of it might be among the candidates). Each remaining
candidate is checked again and deleted under the lease table's guard for that block, so a
lease or put arriving meanwhile wins. At most ``gc_max_deletes`` blocks go per pass; lease rows
that expired longer than the grace period ago are pruned.

Nothing else deletes a block but quarantine (its bytes fail its hash): never a peer's message,
a missing lookup result or a reader's typo. A RELEASE only drops the sender's own leases.

Background: ``Collector`` runs a pass every ``gc_interval`` seconds (hourly), the first one
``gc_interval`` after start; ``shoal gc`` runs one now. Resource handling: the loop is a task of
the collector's ``TaskSet``; passes never overlap (one lock).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.content import ReadCap
from shoal.errors import ShoalError
from shoal.transport.tasks import TaskSet

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["Collector", "GcResult", "collect_garbage", "needed_by_catalog"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GcResult:
    """What one GC pass did.

    Attributes:
        blocks: blocks deleted.
        bytes: bytes they took.
        candidates: blocks that were due (before the catalog check and the per-pass bound).
        kept_for_catalog: due blocks kept because a file of this node's catalog needs them.
        skipped: why the pass deleted nothing although blocks were due, or None.
    """

    blocks: int = 0
    bytes: int = 0
    candidates: int = 0
    kept_for_catalog: int = 0
    skipped: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "blocks": self.blocks,
            "bytes": self.bytes,
            "candidates": self.candidates,
            "kept_for_catalog": self.kept_for_catalog,
            "skipped": self.skipped,
        }


async def needed_by_catalog(rt: NodeRuntime, among: set[bytes]) -> set[bytes]:
    """Those of ``among`` that an object of this node's catalog needs (a keyless walk of each
    object; folders are walked for their files).

    Raises:
        ShoalError: An object could not be walked (its blocks are unknown).
    """
    from shoal.node.get import walk_block_ids
    from shoal.node.leases import entry_roots

    needed: set[bytes] = set()
    for entry in await rt.io(rt.catalog.list_files):
        async for root in entry_roots(rt, ReadCap.parse(entry.cap), entry.media_type):
            async for block_id in walk_block_ids(rt, root):
                if block_id in among:
                    needed.add(block_id)
    return needed


def _delete_if_due(rt: NodeRuntime, block_ids: list[bytes], now: float) -> tuple[int, int]:
    """Delete those of ``block_ids`` still without a live lease; return (blocks, bytes)."""
    deleted: list[bytes] = []
    freed = 0
    for block_id in block_ids:
        with rt.leases.guard(block_id):
            if rt.leases.is_live(block_id, now):
                continue
            try:
                size = os.stat(rt.blocks.path_for(block_id)).st_size
            except OSError:
                size = 0
            if rt.blocks.delete(block_id):
                deleted.append(block_id)
                freed += size
    rt.leases.forget(deleted)
    return len(deleted), freed


async def collect_garbage(rt: NodeRuntime, *, max_deletes: int | None = None) -> GcResult:
    """One GC pass now (see the module docstring)."""
    opts = rt.options
    limit = opts.gc_max_deletes if max_deletes is None else max_deletes
    now = opts.clock.time()

    def due() -> list[bytes]:
        ids = list(rt.blocks.ids())
        rt.leases.forget_unleased_except(set(ids))
        return rt.leases.gc_candidates(ids, now, opts.gc_grace)

    candidates = await rt.io(due)
    result = GcResult(candidates=len(candidates))
    if candidates:
        try:
            needed = await needed_by_catalog(rt, set(candidates))
        except ShoalError as exc:
            reason = f"a file of this node's catalog cannot be walked ({exc})"
            log.warning("GC deleted nothing: %s; bring its holders back or rm it", reason)
            return GcResult(candidates=len(candidates), skipped=reason)
        chosen = [b for b in candidates if b not in needed][:limit]
        blocks, freed = await rt.io(_delete_if_due, rt, chosen, now)
        result = GcResult(blocks, freed, len(candidates), len(needed))
    await rt.io(rt.leases.prune, now, opts.gc_grace)
    if result.blocks:
        log.info("GC freed %d block(s), %d bytes", result.blocks, result.bytes)
    return result


class Collector:
    """The background GC of one node: a pass every ``interval`` seconds."""

    def __init__(self, rt: NodeRuntime, *, interval: float) -> None:
        self._rt = rt
        self.interval = interval
        self.passes = 0
        self.last: GcResult | None = None
        self._lock = asyncio.Lock()
        self._tasks = TaskSet("gc")

    def start(self) -> None:
        self._tasks.spawn(self._loop(), name="gc")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    async def run_pass(self) -> GcResult:
        """One pass now (waits for a running one to finish first)."""
        async with self._lock:
            result = await collect_garbage(self._rt)
            self.passes += 1
            self.last = result
            return result

    async def _loop(self) -> None:
        clock = self._rt.options.clock
        while True:
            await clock.sleep(self.interval)
            try:
                await self.run_pass()
            except ShoalError as exc:  # a disk or database error: try again next time
                log.warning("GC pass failed: %s", exc)
