"""Check and repair one file without its read key: count live copies, copy what is missing.

How it works (``docs/repair.md``; why: ``docs/decisions/0010-repair.md``):

1. The file's tree is walked keylessly from its CID (:class:`~shoal.content.BlockWalk`: the
   verify parts list every child), each manifest fetched from wherever it is (local first).
   The root manifest says how the file is kept (``Redundancy``): R copies of each block.
2. Blocks go in batches of ``BATCH``. For each block, the nodes closest to its ID are found
   (``Routing.closest``: live nodes) and merged with the nodes this node knows but cannot
   reach now (with the time each was last heard from): the candidates, closest first. Each
   live candidate is asked about its blocks in one HAS_BLOCKS per batch (it answers yes only
   for a copy whose bytes it verified); this node looks in its own store. An unreachable
   candidate is ``ABSENT`` (presumed to hold what it held) until ``repair_delay`` after it was
   last heard from, then ``LOST``.
3. :func:`~shoal.node.repair_plan.plan_block` decides: live copies on the placement, presumed
   ones, nodes to copy to now (at once when a block is down to its last copy).
4. Copies: the bytes come from this node's store, else from a node that has them (hashed
   before use), and go to each target with PUT_BLOCK (hashed again by the receiver). Repair
   copies; it never deletes. A ``ByteBudget`` paces the bytes moved.

Erasure-coded files (``Redundancy.kind`` other than ``replicate``) are dispatched in one place,
:func:`_survey_children`, to ``node/erasure.py`` (``count_stripe``, or ``verify_stripe`` with
``--verify``, and ``repair_stripe``): their manifests are replicated blocks, their chunks
stripes of shares. Every block of every kind is checked: there is no "unchecked" count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.content import BlockWalk, NeedManifest
from shoal.content.manifest import Redundancy
from shoal.content.walk import BlockRef, OpenedManifest, Stripe
from shoal.errors import CorruptBlock, NotFound, ShoalError
from shoal.ids import encode_id, sha256, short_id
from shoal.node.blocks import fetch_block, put_on
from shoal.node.erasure import count_stripe, repair_stripe, shares_nearby, verify_stripe
from shoal.node.repair_plan import (
    BlockPlan,
    ByteBudget,
    Presence,
    plan_block,
    presence_of_unreachable,
    rank_by_distance,
)
from shoal.protocol import BlockData, GetBlock, HasBlocks, HaveBlocks
from shoal.transport.limits import LimitLog

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["FileReport", "RepairContext", "check_file", "known_nodes"]

log = logging.getLogger(__name__)

#: Blocks surveyed together (one HAS_BLOCKS per node per batch).
BATCH = 256
#: Live nodes beyond R asked for by ``closest`` (stand-ins for lost nodes).
SPARES = 4
#: Erasure-coded stripes checked (and rebuilt) at once, per batch: each holds at most N
#: shares in memory while it is rebuilt.
STRIPES_AT_ONCE = 8
#: Reasons kept per report for what could not be repaired.
MAX_REASONS = 20

HEALTHY, DEGRADED, LOST = "healthy", "degraded", "lost"


@dataclass
class FileReport:
    """What a check (and repair) of one file found and did.

    ``min_copies`` is the fewest live copies of any block on its placement before repair,
    ``min_copies_after`` after it (equal for a check). With ``verified`` every copy (and
    share) counted was downloaded and hashed first; ``verified_copies`` says how many passed.
    ``waiting``: blocks whose missing copies are presumed held by nodes unreachable for less
    than the repair delay; ``due`` is when the first of those delays runs out (Unix time).
    """

    cid: bytes
    wanted: int = 0
    blocks: int = 0
    min_copies: int | None = None
    min_copies_after: int | None = None
    waiting: int = 0
    lost_blocks: int = 0
    copied: int = 0
    bytes_moved: int = 0
    verified: bool = False
    verified_copies: int = 0  # with verify: copies and shares downloaded and found intact
    due: float | None = None
    error: str | None = None
    unrepaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.error is None and (self.min_copies_after or 0) >= self.wanted > 0

    @property
    def state(self) -> str:
        """``healthy``, ``degraded`` (fewer copies than wanted) or ``lost`` (a block, or the
        tree itself, could be found nowhere)."""
        if self.error is not None or self.lost_blocks:
            return LOST
        return HEALTHY if self.healthy else DEGRADED

    def note(self, reason: str) -> None:
        if len(self.unrepaired) < MAX_REASONS:
            self.unrepaired.append(reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "cid": encode_id(self.cid),
            "cap": f"shoal:v:{encode_id(self.cid)}",
            "healthy": self.healthy,
            "state": self.state,
            "blocks": self.blocks,
            "wanted": self.wanted,
            "min_copies": self.min_copies or 0,
            "min_copies_after": self.min_copies_after or 0,
            "waiting": self.waiting,
            "lost_blocks": self.lost_blocks,
            "copied": self.copied,
            "bytes_moved": self.bytes_moved,
            "verified": self.verified,
            "verified_copies": self.verified_copies,
            "due": self.due,
            "error": self.error,
            "unrepaired": list(self.unrepaired),
        }


@dataclass
class RepairContext:
    """How one check or repair runs.

    Attributes:
        repair: Copy what is missing (False: only count).
        verify: Also download and hash every copy counted.
        delay: The repair delay (seconds): how long an unreachable node still counts.
        wait_for_absent: Count absent nodes as holding (background). False: treat them as lost
            (a repair asked for now).
        budget: The bytes-per-second throttle (None: unthrottled).
        known: Nodes this node cannot reach now, with when each was last heard from.
        on_block: Called with each block surveyed (progress).
        on_absent: Called with each unreachable node and when it was last heard from.
        on_heard: Called with each node that answered.
        on_copied: Awaited after each batch with the file's root and the copies made
            (node -> block IDs): the leases that keep them go with them.
    """

    repair: bool = False
    verify: bool = False
    delay: float = 3600.0
    wait_for_absent: bool = True
    budget: ByteBudget | None = None
    known: dict[bytes, float] = field(default_factory=dict)
    on_block: Callable[[int], None] | None = None
    on_absent: Callable[[bytes, float], None] | None = None
    on_heard: Callable[[bytes], None] | None = None
    on_copied: Callable[[bytes, dict[bytes, list[bytes]]], Awaitable[None]] | None = None
    throttle_log: LimitLog | None = None


def known_nodes(rt: NodeRuntime, remembered: dict[bytes, float]) -> dict[bytes, float]:
    """Every node this node knows of, with the Unix time it was last heard from: the peer
    book (connected now: now), the routing table, and ``remembered`` (absences recorded by
    earlier passes, kept across restarts)."""
    clock = rt.options.clock
    now, mono = clock.time(), clock.monotonic()
    heard = dict(remembered)

    def saw(node_id: bytes, when: float) -> None:
        if node_id != rt.node_id and when > heard.get(node_id, float("-inf")):
            heard[node_id] = when

    for record in rt.manager.records():
        if record.up:
            saw(record.node_id, now)
        elif record.last_seen is not None:
            saw(record.node_id, record.last_seen)
    if rt.dht is not None:
        for contact in rt.dht.table.contacts():
            saw(contact.node_id, now - (mono - contact.last_seen))
    return heard


async def _walk(
    rt: NodeRuntime, cid: bytes, redundancy: list[Redundancy]
) -> AsyncGenerator[BlockRef | Stripe, None]:
    """Every block of the file (root first); ``redundancy`` gets the root's scheme."""
    walk = BlockWalk(cid)
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            opened: OpenedManifest = await fetch_block(rt, step.block_id, step.open)
            if not redundancy:
                redundancy.append(opened.manifest.redundancy)
            walk.feed(opened)
        else:
            yield step


async def check_file(rt: NodeRuntime, cid: bytes, ctx: RepairContext) -> FileReport:
    """Check one file (and with ``ctx.repair``, copy what is missing); never raises for what
    it finds: a tree that cannot be walked is the report's ``error``."""
    report = FileReport(cid=cid, verified=ctx.verify)
    redundancy: list[Redundancy] = []
    batch: list[BlockRef | Stripe] = []
    try:
        async for ref in _walk(rt, cid, redundancy):
            batch.append(ref)
            if len(batch) == BATCH:
                await _survey_children(rt, cid, redundancy[0], batch, ctx, report)
                batch = []
        if batch:
            await _survey_children(rt, cid, redundancy[0], batch, ctx, report)
    except ShoalError as exc:  # a manifest nobody has, or a tree that lies
        report.error = f"{type(exc).__name__}: {exc}"
        if redundancy:
            report.wanted = redundancy[0].replicas
        report.min_copies = report.min_copies_after = 0
    return report


async def _survey_children(
    rt: NodeRuntime,
    root: bytes,
    redundancy: Redundancy,
    refs: list[BlockRef | Stripe],
    ctx: RepairContext,
    report: FileReport,
) -> None:
    """Check (and repair) a batch of a file's blocks: the one place that dispatches on how
    the file is kept. Replicated blocks are handled here; erasure-coded stripes by
    ``node/erasure.py`` (``count_stripe`` / ``repair_stripe``), their manifests as replicated
    blocks with ``n - k + 1`` copies."""
    report.blocks += len(refs)
    copies: dict[bytes, list[bytes]] = {}
    if redundancy.kind == "replicate":
        report.wanted = redundancy.replicas
        blocks = [r for r in refs if isinstance(r, BlockRef)]
        copies = await _survey_replicated(rt, redundancy.replicas, blocks, ctx, report)
    else:
        report.wanted = redundancy.n
        manifests = [r for r in refs if isinstance(r, BlockRef)]
        if manifests:
            # A manifest with c copies survives as many losses as a stripe with c + k - 1
            # shares: counted that way, so `min_copies` compares with n.
            sub = FileReport(cid=root, verified=report.verified)
            copies = await _survey_replicated(rt, redundancy.replicas, manifests, ctx, sub)
            _merge_reports(report, sub, offset=redundancy.k - 1)
        await _survey_stripes(rt, [r for r in refs if isinstance(r, Stripe)], ctx, report, copies)
    if copies and ctx.on_copied is not None:
        await ctx.on_copied(root, copies)
    if ctx.on_block is not None:
        ctx.on_block(len(refs))


def _merge_reports(report: FileReport, sub: FileReport, *, offset: int) -> None:
    """Add ``sub`` (some blocks of the same file) to ``report``, its copies counted plus
    ``offset``."""
    if sub.min_copies is not None:
        _count_copies(report, sub.min_copies + offset, (sub.min_copies_after or 0) + offset)
    report.waiting += sub.waiting
    report.lost_blocks += sub.lost_blocks
    report.copied += sub.copied
    report.bytes_moved += sub.bytes_moved
    report.verified_copies += sub.verified_copies
    if sub.due is not None:
        report.due = sub.due if report.due is None else min(report.due, sub.due)
    report.unrepaired.extend(sub.unrepaired)


def _count_copies(report: FileReport, before: int, after: int) -> None:
    report.min_copies = before if report.min_copies is None else min(report.min_copies, before)
    report.min_copies_after = (
        after if report.min_copies_after is None else min(report.min_copies_after, after)
    )


async def _survey_stripes(
    rt: NodeRuntime,
    stripes: list[Stripe],
    ctx: RepairContext,
    report: FileReport,
    copies: dict[bytes, list[bytes]],
) -> None:
    """:func:`_survey_stripe` for each of ``stripes``, ``STRIPES_AT_ONCE`` at a time: one at a
    time, each stripe's round trips (N holders asked, K shares read, N - K written) made
    erasure-coded repair about 7 times slower than replicated repair, which goes in batches.
    The first error, if any, is raised once the others have finished."""
    gate = asyncio.Semaphore(STRIPES_AT_ONCE)
    errors: list[Exception] = []

    async def survey(stripe: Stripe) -> None:
        async with gate:
            if errors:
                return
            try:
                await _survey_stripe(rt, stripe, ctx, report, copies)
            except Exception as exc:  # raised below, after the others
                errors.append(exc)

    async with asyncio.TaskGroup() as group:
        for stripe in stripes:
            group.create_task(survey(stripe), name=f"stripe {short_id(stripe.stripe_id)}")
    if errors:
        raise errors[0]


async def _survey_stripe(
    rt: NodeRuntime,
    stripe: Stripe,
    ctx: RepairContext,
    report: FileReport,
    copies: dict[bytes, list[bytes]],
) -> None:
    """Count one erasure-coded chunk's shares on its placement and, when repairing, rebuild
    the missing ones there (``copies`` gets node -> share IDs stored).

    Hysteresis as for copies: in the background, a stripe that still has more than ``k``
    shares waits while some node is unreachable for less than the repair delay (it may hold
    a share: counting shares asks only the reachable nodes); at ``k`` it is rebuilt at once.
    Below ``k`` on its placement a stripe may still have ``k`` shares on nodes just outside
    it (nodes joined closer to it): those are looked for before it counts as lost, and repair
    rebuilds from them (this is how shares rebalance: the handoff leaves them alone).

    With ``ctx.verify`` every share counted is downloaded and hashed (one at a time), and one
    that fails does not count; ``report.verified_copies`` counts those that passed.
    """
    if ctx.verify:
        count = await verify_stripe(rt, stripe)
        report.verified_copies += count
    else:
        count = await count_stripe(rt, stripe.share_ids, k=stripe.k, n=stripe.n)
    after = count
    findable = count >= stripe.k or await shares_nearby(rt, stripe) >= stripe.k
    if count < stripe.n:
        now = rt.options.clock.time()
        recent = [t for t in ctx.known.values() if now - t < ctx.delay]
        if ctx.wait_for_absent and count > stripe.k and recent:
            report.waiting += 1
            due = min(recent) + ctx.delay
            report.due = due if report.due is None else min(report.due, due)
        elif ctx.repair and findable:
            await _pace(rt, ctx, stripe.share_size * stripe.k)
            try:
                stored, moved = await repair_stripe(
                    rt, stripe.share_ids, stripe.share_size, stripe.k, stripe.n, stored_on=copies
                )
            except ShoalError as exc:
                report.note(f"stripe {short_id(stripe.stripe_id)}: {exc}")
            else:
                after += stored
                report.copied += stored
                report.bytes_moved += moved
    if after < stripe.k and not findable:
        report.lost_blocks += 1
        report.note(
            f"stripe {short_id(stripe.stripe_id)}: {after} share(s) left, {stripe.k} needed"
        )
    _count_copies(report, count, after)


async def _candidates(
    rt: NodeRuntime, block_id: bytes, replicas: int, ctx: RepairContext
) -> tuple[list[bytes], set[bytes]]:
    """The nodes to consider for ``block_id``, closest first, and which of them are live.

    Live nodes (R + ``SPARES``, stand-ins for nodes that fail) come from the routing; a known
    node that is not among them but closer than the farthest of them (or any, in a network
    smaller than asked for) is unreachable now.
    """
    asked = replicas + SPARES
    live = await rt.routing.closest(block_id, asked)
    live_set = set(live)
    if live and len(live) >= asked:
        key = int.from_bytes(block_id, "big")
        horizon = int.from_bytes(live[-1], "big") ^ key
        others = [n for n in ctx.known if (int.from_bytes(n, "big") ^ key) < horizon]
    else:
        others = list(ctx.known)
    ranked = rank_by_distance(block_id, [*live, *(n for n in others if n not in live_set)])
    return ranked, live_set


async def _ask(
    rt: NodeRuntime, node_id: bytes, block_ids: list[bytes], ctx: RepairContext
) -> list[bool] | None:
    """Which of ``block_ids`` ``node_id`` holds (verified), or None if it cannot be asked."""
    if node_id == rt.node_id:
        blocks = rt.blocks
        return await rt.io(lambda: [blocks.has(b, verify=True) for b in block_ids])
    try:
        conn = await rt.routing.connect(node_id)
        answer = await conn.request(
            HasBlocks(block_ids=tuple(block_ids)), timeout=rt.options.request_timeout
        )
    except ShoalError as exc:
        log.debug("repair: %s could not be asked: %s", short_id(node_id), exc)
        return None
    assert isinstance(answer, HaveBlocks)
    if ctx.on_heard is not None:
        ctx.on_heard(node_id)
    present = list(answer.present[: len(block_ids)])
    return present + [False] * (len(block_ids) - len(present))


async def _read_copy(rt: NodeRuntime, node_id: bytes, block_id: bytes) -> bytes | None:
    """The bytes ``node_id`` holds for ``block_id`` if they hash to it; else None."""
    if node_id == rt.node_id:
        try:
            return await rt.io(rt.blocks.get, block_id, verify=True)
        except (NotFound, CorruptBlock):
            return None  # a corrupt local copy was moved aside by the store
        except ShoalError as exc:
            log.warning("repair: cannot read block %s here: %s", short_id(block_id), exc)
            return None
    try:
        conn = await rt.routing.connect(node_id)
        answer = await conn.request(GetBlock(block_id=block_id), timeout=rt.options.request_timeout)
    except ShoalError:
        return None
    assert isinstance(answer, BlockData)
    if await rt.cpu(sha256, answer.data) != block_id:
        log.warning("repair: %s sent bytes that fail block %s's hash", short_id(node_id),
                    short_id(block_id))  # fmt: skip
        return None
    return answer.data


async def _survey_replicated(
    rt: NodeRuntime, replicas: int, refs: list[BlockRef], ctx: RepairContext, report: FileReport
) -> dict[bytes, list[bytes]]:
    """Check and repair a batch of replicated blocks; returns the copies made (node ->
    block IDs)."""
    now = rt.options.clock.time()
    block_ids = list(dict.fromkeys(r.block_id for r in refs))
    chosen: dict[bytes, list[bytes]] = {}
    to_ask: dict[bytes, list[bytes]] = {}
    for block_id in block_ids:
        nodes, live = await _candidates(rt, block_id, replicas, ctx)
        chosen[block_id] = nodes
        for node_id in nodes:
            if node_id in live:
                to_ask.setdefault(node_id, []).append(block_id)
    answers: dict[bytes, dict[bytes, bool] | None] = {}
    copies: dict[bytes, list[bytes]] = {}

    async def ask(node_id: bytes, ids: list[bytes]) -> None:
        present = await _ask(rt, node_id, ids, ctx)
        answers[node_id] = None if present is None else dict(zip(ids, present, strict=True))

    await asyncio.gather(*(ask(n, ids) for n, ids in to_ask.items()))
    for block_id in block_ids:
        ranked: list[tuple[bytes, Presence]] = []
        for node_id in chosen[block_id]:
            answer = answers.get(node_id)
            if node_id in answers and answer is not None:
                ranked.append((node_id, Presence.HOLDS if answer[block_id] else Presence.LACKS))
                continue
            last = ctx.known.get(node_id, now)
            ranked.append((node_id, presence_of_unreachable(last, now, ctx.delay)))
            if ctx.on_absent is not None:
                ctx.on_absent(node_id, last)
        if ctx.verify:
            ranked = await _verified(rt, block_id, ranked)
            report.verified_copies += sum(p is Presence.HOLDS for _, p in ranked)
        plan = plan_block(ranked, replicas, wait_for_absent=ctx.wait_for_absent)
        for target in await _apply(rt, block_id, ranked, plan, ctx, report, now):
            copies.setdefault(target, []).append(block_id)
    return copies


async def _verified(
    rt: NodeRuntime, block_id: bytes, ranked: list[tuple[bytes, Presence]]
) -> list[tuple[bytes, Presence]]:
    """``ranked`` with every claimed copy downloaded and hashed; a bad one does not count."""
    out = []
    for node_id, presence in ranked:
        if presence is Presence.HOLDS and await _read_copy(rt, node_id, block_id) is None:
            presence = Presence.LACKS
        out.append((node_id, presence))
    return out


async def _apply(
    rt: NodeRuntime,
    block_id: bytes,
    ranked: list[tuple[bytes, Presence]],
    plan: BlockPlan,
    ctx: RepairContext,
    report: FileReport,
    now: float,
) -> list[bytes]:
    """Count the block in ``report`` and, when repairing, make the copies ``plan`` names;
    returns the nodes that took a copy."""
    copies_after = plan.copies
    done: list[bytes] = []
    holders = [n for n, p in ranked if p is Presence.HOLDS]
    if plan.waiting and not plan.last_copy:
        report.waiting += 1
        absent = [ctx.known.get(n, now) for n, p in ranked if p is Presence.ABSENT]
        due = min(absent) + ctx.delay if absent else None
        if due is not None:
            report.due = due if report.due is None else min(report.due, due)
    if ctx.repair and plan.targets:
        data = await _source(rt, block_id, holders, ctx)
        if data is None:
            report.note(f"block {short_id(block_id)}: no reachable node has an intact copy")
        else:
            for target in plan.targets:
                await _pace(rt, ctx, len(data))
                try:
                    await put_on(rt, target, block_id, data)
                except ShoalError as exc:
                    report.note(f"block {short_id(block_id)} to {short_id(target)}: {exc}")
                    continue
                copies_after += 1
                done.append(target)
                report.copied += 1
                if target != rt.node_id:
                    report.bytes_moved += len(data)
    if not holders and copies_after == 0 and not plan.presumed:
        report.lost_blocks += 1
    _count_copies(report, plan.copies, copies_after)
    return done


async def _source(
    rt: NodeRuntime, block_id: bytes, holders: list[bytes], ctx: RepairContext
) -> bytes | None:
    """Intact bytes of ``block_id``: this node's copy, a holder's, or any node's that has it."""
    ordered = sorted(holders, key=lambda n: n != rt.node_id)  # local first: no network
    if rt.node_id not in ordered:
        ordered.insert(0, rt.node_id)
    for node_id in ordered:
        data = await _read_copy(rt, node_id, block_id)
        if data is not None:
            if node_id != rt.node_id:  # bytes that crossed the network count in the budget
                await _pace(rt, ctx, len(data))
            return data

    def check(data: bytes) -> bytes:
        if sha256(data) != block_id:
            raise CorruptBlock(f"block {short_id(block_id)} does not match its hash")
        return data

    try:  # nodes beyond the placement (an older holder not yet handed over)
        return await fetch_block(rt, block_id, check)
    except ShoalError:
        return None


async def _pace(rt: NodeRuntime, ctx: RepairContext, nbytes: int) -> None:
    """Wait until the budget allows ``nbytes`` more (logged when it holds work back)."""
    if ctx.budget is None or nbytes == 0:
        return
    clock = rt.options.clock
    wait = ctx.budget.take(nbytes, clock.monotonic())
    if wait > 0:
        if ctx.throttle_log is not None:
            ctx.throttle_log.hit(
                "repair_rate",
                "repair waits %.1f s for its budget of %d bytes/s (--repair-rate)",
                wait,
                int(ctx.budget.rate or 0),
            )
        await clock.sleep(wait)
