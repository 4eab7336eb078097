"""Block operations the put and get pipelines are made of: place a block, fetch a block.

Placement: a block belongs on the R nodes closest to its ID (``Routing.closest``). A holder
that fails is replaced by the next closest; when none is left the block keeps the copies that
could be placed (the caller reports that the file is under-replicated), and only a block that
could be placed nowhere fails the put.

Fetching: local store first, then holders closest first (the 8 closest, then up to the 20
closest: nodes that joined since the block was placed hold it only after the next handoff).
Only one kind of failure moves on to another source: the bytes do not hash to the block ID
(``CorruptBlock``). A bad local copy is then moved aside (the store logs it). Any other
failure to open a block whose hash is right (a wrong key in a cap, a manifest that lies) is
final: every holder has the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, TypeVar

from shoal.errors import (
    CorruptBlock,
    NotFound,
    QuorumNotMet,
    ShoalError,
    StorageError,
    StorageFull,
)
from shoal.ids import encode_id, short_id
from shoal.protocol import BlockData, GetBlock, HasBlocks, HaveBlocks, PutBlock

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["PresenceHints", "fetch_block", "place_block", "put_on"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Holders asked for a block first (the default replicas: the closest-set cache proves so
#: few without a lookup), and then, if none of them had it (a file of more replicas, or nodes
#: joined since it was placed and the handoff has not run yet), how many of the closest in all.
FETCH_CANDIDATES = 3
FETCH_WIDER = 20
#: Nodes beyond the R closest that may replace failed holders of one block (at least R).
SPARE_HOLDERS = 8


class PresenceHints:
    """Whether to ask a holder if it has a block before sending it (one per put).

    Asking (HAS_BLOCKS) costs a round trip and saves a block's bytes when the answer is yes: a
    second put of the same bytes sends no data at all. While a holder keeps answering yes we keep
    asking; after ``MISSES_BEFORE_SENDING`` noes in a row (a new file) we send directly and only
    ask every ``PROBE_EVERY``-th block, to notice when the file starts matching again.
    """

    MISSES_BEFORE_SENDING = 2
    PROBE_EVERY = 8

    def __init__(self) -> None:
        self._misses: dict[bytes, int] = {}
        self._skipped: dict[bytes, int] = {}

    def should_ask(self, node_id: bytes) -> bool:
        if self._misses.get(node_id, 0) < self.MISSES_BEFORE_SENDING:
            return True
        skipped = self._skipped.get(node_id, 0) + 1
        self._skipped[node_id] = skipped % self.PROBE_EVERY
        return skipped >= self.PROBE_EVERY

    def answer(self, node_id: bytes, *, present: bool) -> None:
        self._misses[node_id] = 0 if present else self._misses.get(node_id, 0) + 1


async def put_on(
    rt: NodeRuntime,
    node_id: bytes,
    block_id: bytes,
    data: bytes,
    hints: PresenceHints | None = None,
    *,
    lease: bool = False,
    share: bool = False,
) -> None:
    """Store one block on one node (this one or a peer); returns once it is durably there.

    With ``hints``, a peer may first be asked whether it already holds the block (it answers
    yes only for an intact copy), and then nothing is sent. With ``lease`` (a put), the node
    gives this one a short pending lease on the block (``docs/leases.md``). With ``share``,
    the block is an erasure share: the node that writes it marks it so, and its handoff
    leaves it to stripe repair (``docs/decisions/0012-erasure-share-marks.md``).
    """
    if node_id == rt.node_id:
        if lease:
            from shoal.node.leases import grant_pending

            await grant_pending(rt, rt.node_id, [block_id])
        # An intact copy is found by one stat (the store's stamp); only a missing or damaged
        # one is written. We computed block_id from these bytes: no need to hash them again.
        if not await rt.io(rt.blocks.has, block_id, verify=True) and await rt.io(
            rt.blocks.put, block_id, data, verify=False
        ):
            await rt.io(rt.leases.mark_written, block_id, share=share)
        return
    conn = await rt.routing.connect(node_id)
    timeout = rt.options.request_timeout
    if hints is not None and hints.should_ask(node_id):
        answer = await conn.request(
            HasBlocks(block_ids=(block_id,), lease=lease or None), timeout=timeout
        )
        assert isinstance(answer, HaveBlocks)
        present = len(answer.present) == 1 and answer.present[0]
        hints.answer(node_id, present=present)
        if present:
            return
    await conn.request(
        PutBlock(block_id=block_id, data=data, lease=lease or None, share=share or None),
        timeout=timeout,
    )


async def place_block(
    rt: NodeRuntime,
    block_id: bytes,
    data: bytes,
    replicas: int,
    hints: PresenceHints | None = None,
    *,
    lease: bool = False,
) -> list[bytes]:
    """Store a block on up to ``replicas`` nodes, the closest to its ID first.

    A node that fails is replaced by the next closest. Returns the nodes that acknowledged
    (after fsync), at most ``replicas`` and at least one. ``lease``: a put's block (each
    holder gives this node a pending lease on it).

    Raises:
        StorageFull: No node could store the block because every one asked is full.
        QuorumNotMet: No node at all could store the block for another reason; the message
            says why.
    """
    # The R closest first, the spares only once a holder failed: the closest-set cache
    # proves the R closest of most IDs without a lookup, the R + spares of fewer.
    candidates = await rt.routing.closest(block_id, replicas)
    widened = False
    acked: list[bytes] = []
    failures: list[str] = []
    all_full = True  # every failure so far was a full store
    next_index = 0
    while len(acked) < replicas:
        batch = candidates[next_index : next_index + replicas - len(acked)]
        if not batch and not widened:
            widened = True
            wider = await rt.routing.closest(block_id, replicas + max(replicas, SPARE_HOLDERS))
            candidates += [n for n in wider if n not in candidates]
            continue
        next_index += len(batch)
        if not batch:
            break
        results = await asyncio.gather(
            *(put_on(rt, n, block_id, data, hints, lease=lease) for n in batch),
            return_exceptions=True,
        )
        for node_id, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, ShoalError):
                    raise result
                failures.append(f"{short_id(node_id)}: {result}")
                all_full = all_full and isinstance(result, StorageFull)
            else:
                acked.append(node_id)
    if not acked and failures and all_full:
        # Not a missed quorum but a full network: free space or add room, not wait for peers.
        raise StorageFull(
            f"block {short_id(block_id)} could not be stored: every node that could take it "
            f"is full ({'; '.join(failures[:4])}). Free space or raise their storage limits "
            "(--max-storage), or add nodes, and retry."
        )
    if not acked:
        raise QuorumNotMet(
            f"block {short_id(block_id)} could not be stored on any node; "
            f"failed: {'; '.join(failures[:4]) or 'no node is up'}. "
            "Check that peers are up (`shoal peers`) and retry.",
            placed={encode_id(block_id): []},
        )
    if failures:
        log.info("block %s placed on %d node(s); failed: %s", short_id(block_id), len(acked),
                 "; ".join(failures[:4]))  # fmt: skip
    return acked


async def fetch_block(rt: NodeRuntime, block_id: bytes, open_block: Callable[[bytes], T]) -> T:
    """Get a block from the local store or from its holders, and open it.

    ``open_block`` runs on the CPU pool over the bytes. It must check the hash first and raise
    ``CorruptBlock`` when the bytes do not match ``block_id``; it returns what the caller wants
    (plaintext, an opened manifest). Any other error it raises is final and propagates.

    Raises:
        NotFound: No source had intact bytes for the block.
    """
    errors: list[str] = []
    try:
        data = await rt.io(rt.blocks.get, block_id, verify=False)
    except NotFound:
        pass
    except StorageError as exc:
        errors.append(f"local: {exc}")
    else:
        try:
            return await rt.cpu(open_block, data)
        except CorruptBlock as exc:
            errors.append(f"local: {exc}")
            # Its own bytes fail its own hash: the one reason to move a stored block aside.
            try:
                await rt.io(rt.blocks.quarantine, block_id)
            except ShoalError as quarantine_error:
                log.warning("could not move corrupt block aside: %s", quarantine_error)
    holders = [n for n in await rt.routing.closest(block_id, FETCH_CANDIDATES) if n != rt.node_id]
    tried: set[bytes] = set()
    async with contextlib.aclosing(_widening(rt, block_id, holders, tried)) as sources:
        async for node_id in sources:
            tried.add(node_id)
            try:
                conn = await rt.routing.connect(node_id)
                answer = await conn.request(
                    GetBlock(block_id=block_id), timeout=rt.options.request_timeout
                )
            except ShoalError as exc:  # whatever a holder answers or fails with: its failure
                errors.append(f"{short_id(node_id)}: {exc}")
                continue
            assert isinstance(answer, BlockData)
            try:
                return await rt.cpu(open_block, answer.data)
            except CorruptBlock as exc:
                errors.append(f"{short_id(node_id)}: {exc}")
    raise NotFound(
        f"block {short_id(block_id)} is not available: not stored here and "
        f"{len(tried)} peer(s) could not supply it"
        + (f" ({'; '.join(errors[:4])})" if errors else "")
    )


async def _widening(
    rt: NodeRuntime, block_id: bytes, first: list[bytes], tried: set[bytes]
) -> AsyncGenerator[bytes, None]:
    """The ``first`` holders, then more of the closest nodes (up to ``FETCH_WIDER``)."""
    for node_id in first:
        yield node_id
    for node_id in await rt.routing.closest(block_id, FETCH_WIDER):
        if node_id != rt.node_id and node_id not in tried:
            yield node_id
