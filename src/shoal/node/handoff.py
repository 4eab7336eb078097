"""Handoff: every stored block is pushed to the nodes now closest to its ID that lack it.

Why (``docs/decisions/0007-handoff.md``): a block is placed on the R nodes closest to its ID.
When nodes join, other nodes become the closest and a lookup lands on them; when nodes leave,
fewer than R of the closest hold it. Each holder therefore checks, from time to time, that the
R nodes closest to each block it stores hold it too, and sends it to those that do not.

How it works: a pass lists the local blocks, asks the routing for the R closest nodes of each
(amortized by the lookup cache: one lookup covers many nearby IDs), asks each of those nodes in
batches which blocks it has (HAS_BLOCKS, verified presence) and sends the missing ones
(PUT_BLOCK, hashed by the receiver before it stores). Passes run every ``interval`` seconds,
and ``settle`` seconds after a node left the routing table (a copy may be lost: restore R
soon), at most one at a time. A join waits for the periodic pass: until then reads find the
old holders among the closest nodes they ask (``fetch_block`` widens its search).
The local copy is kept: deleting blocks is not this module's business, and an extra copy
only helps reads. Only blocks with a live lease are handed over, and each copy carries the
lease rows this node knows (``transfer_leases``), so a copy lives as long as its leases say
(an extra copy off the placement ages out when they do). This is also rebalancing: when joins and
leaves change the closest set of a block, the pass moves (copies) it there.

Erasure shares are not handed over: a share belongs on one of the N nodes closest to its
stripe's ID, not on the R closest to its own, and copying it R times would undo what erasure
coding saves. Blocks that a PUT_BLOCK with ``share`` wrote here are marked so in the lease
table (``LeaseTable.shares_among``); stripe repair (run by manifest holders and owners) moves
shares when the stripe's placement changes (``docs/decisions/0012-erasure-share-marks.md``).

Throttle: the bytes sent (PUT_BLOCK payloads) are paid from a ``ByteBudget`` of ``rate``
bytes per second, so a join that makes a node the new home of many blocks, or a pass after a
leave, never floods the disks and links of the senders (``docs/scrub.md``). HAS_BLOCKS
questions are small and not counted.

Resource handling: the loop is a task of this object's ``TaskSet`` (``aclose`` cancels and
awaits it); each request has the runtime's request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.errors import CorruptBlock, NotFound, ShoalError
from shoal.ids import short_id
from shoal.node.budget import ByteBudget
from shoal.node.leases import transfer_leases
from shoal.protocol import HasBlocks, HaveBlocks, PutBlock
from shoal.transport.tasks import TaskSet

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["Handoff", "HandoffStats"]

log = logging.getLogger(__name__)

#: Block IDs asked about in one HAS_BLOCKS.
BATCH = 1024


@dataclass
class HandoffStats:
    passes: int = 0  # passes finished
    checked: int = 0  # (block, node) pairs checked
    pushed: int = 0  # blocks sent to a node that lacked them
    failed: int = 0  # nodes that could not be asked or sent to during a pass
    bytes: int = 0  # bytes of the blocks pushed
    shares: int = 0  # erasure shares stored here at the last pass, left to stripe repair


class Handoff:
    """The handoff loop of one node (see the module docstring).

    Args:
        rt: The node.
        interval: Seconds between two passes.
        settle: Seconds after a node left the routing table before an early pass.
        rate: Bytes per second the pushes may send (one second's worth at once).
    """

    def __init__(self, rt: NodeRuntime, *, interval: float, settle: float, rate: float) -> None:
        self._rt = rt
        self.interval = interval
        self.settle = settle
        self.budget = ByteBudget(rate, clock=rt.options.clock)
        self.stats = HandoffStats()
        self._changed = asyncio.Event()
        self._tasks = TaskSet("handoff")

    def start(self) -> None:
        self._tasks.spawn(self._loop(), name="handoff")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    def node_left(self) -> None:
        """A node left the routing table: a pass runs ``settle`` seconds later."""
        self._changed.set()

    async def _loop(self) -> None:
        clock = self._rt.options.clock
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._changed.wait()
                # Changes come in bursts (several entries fail at once): one pass.
                await clock.sleep(self.settle)
            self._changed.clear()
            await self.run_pass()

    async def run_pass(self) -> HandoffStats:
        """One pass over every local block; returns the running totals."""
        rt = self._rt
        now = rt.options.clock.time()

        def leased_ids() -> tuple[list[bytes], int]:
            # Only blocks someone still leases move: a block on its way out (no live lease)
            # is not spread again, and the copies carry their leases (docs/leases.md).
            # Erasure shares do not move here: their placement is their stripe's, and stripe
            # repair moves them (docs/decisions/0012-erasure-share-marks.md).
            ids = list(rt.blocks.ids())
            live = rt.leases.live_among(ids, now)
            shares = rt.leases.shares_among(ids)
            return [b for b in ids if b in live and b not in shares], len(shares)

        try:
            block_ids, shares = await rt.io(leased_ids)
        except ShoalError as exc:
            log.warning("handoff skipped: cannot list the stored blocks: %s", exc)
            return self.stats
        self.stats.shares = shares
        wanted: dict[bytes, list[bytes]] = {}
        for block_id in block_ids:
            for node_id in await rt.routing.closest(block_id, rt.options.replicas):
                if node_id != rt.node_id:
                    wanted.setdefault(node_id, []).append(block_id)
        for node_id, blocks in wanted.items():
            for start in range(0, len(blocks), BATCH):
                if not await self._hand_over(node_id, blocks[start : start + BATCH]):
                    self.stats.failed += 1
                    break
        self.stats.passes += 1
        return self.stats

    async def _hand_over(self, node_id: bytes, block_ids: list[bytes]) -> bool:
        """Send ``node_id`` those of ``block_ids`` it lacks; whether it could be done."""
        rt = self._rt
        timeout = rt.options.request_timeout
        pushed: list[bytes] = []
        try:
            conn = await rt.routing.connect(node_id)
            answer = await conn.request(HasBlocks(block_ids=tuple(block_ids)), timeout=timeout)
            assert isinstance(answer, HaveBlocks)
            self.stats.checked += len(block_ids)
            missing = [
                b for b, present in zip(block_ids, answer.present, strict=False) if not present
            ]
            for block_id in missing:
                try:
                    data = await rt.io(rt.blocks.get, block_id)
                except NotFound:
                    continue  # removed meanwhile
                except CorruptBlock:
                    continue  # moved aside (logged); the scrub fetches it again
                await self.budget.take(len(data))
                conn = await rt.routing.connect(node_id)
                await conn.request(PutBlock(block_id=block_id, data=data), timeout=timeout)
                self.stats.pushed += 1
                pushed.append(block_id)
                self.stats.bytes += len(data)
        except ShoalError as exc:
            log.debug("handoff to %s stopped: %s", short_id(node_id), exc)
            await transfer_leases(rt, node_id, pushed)
            return False
        await transfer_leases(rt, node_id, pushed)
        if missing:
            log.info("handed %d block(s) over to %s", len(missing), short_id(node_id))
        return True
