"""Erasure-coded stripes on the network: place shares, fetch the fastest k, count, repair.

Placement (``docs/erasure.md``): a stripe's placement ID is its stripe ID
(:func:`shoal.content.erasure.stripe_id`: SHA-256 of its share IDs joined), and its holders
are the ``n`` nodes closest to it (``Routing.closest``). A put sends share ``i`` to the
``i``-th of them; a holder that fails is replaced by the next closest node that holds no share
of the stripe yet, so the shares always sit on distinct nodes. The put of a chunk fails only
when fewer than ``k`` of its shares could be placed (``QuorumNotMet``); fewer than ``n`` is
reported as under-replicated, as for replicated blocks.

Counting and repair treat the ``n`` closest nodes as a *set* that should hold the ``n`` shares,
one each: when a holder leaves, the node that becomes the ``n``-th closest gets the lost share
rebuilt, and no other share moves. Repair fetches ``k`` shares, rebuilds the missing ones
byte for byte (each checked against its ID in the manifest), and sends them to the placement
nodes that hold none. It needs no read key, and it copies, never deletes.

Fetching: local shares first; then share ``i`` from the ``i``-th closest node, ``k`` requests
at once (primary shares first: decoding them is a plain join), one more whenever one fails,
and one more whenever none has answered for ``HEDGE_AFTER`` seconds (a slow holder). Shares
still missing are then looked for among more of the closest nodes (HAS_BLOCKS, then
GET_BLOCK). Each share is hash-checked on the CPU pool as it arrives; only a hash mismatch
(``CorruptBlock``) moves on to another source, as for any block.

Resource handling: every task is owned by the call that started it and cancelled and awaited
before that call returns, whether it succeeded, failed or was cancelled.

Share marks: every share a put or a repair sends goes with ``share`` set (PUT_BLOCK), so the
node that writes it records it as a share and its handoff, which places blocks by their own
ID, leaves it alone (``docs/decisions/0012-erasure-share-marks.md``): stripes move only
through repair, to where stripe placement says.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shoal.content.crypto import Buffer, chunk_key, encrypt
from shoal.content.erasure import encode_shares, share_size
from shoal.content.walk import Stripe, StripeRef
from shoal.errors import (
    CorruptBlock,
    IntegrityError,
    NotFound,
    QuorumNotMet,
    ShoalError,
    StorageFull,
)
from shoal.ids import ID_SIZE, encode_id, sha256, short_id
from shoal.node.blocks import SPARE_HOLDERS, PresenceHints, put_on
from shoal.protocol import BlockData, GetBlock, HasBlocks, HaveBlocks

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = [
    "HEDGE_AFTER",
    "SealedStripe",
    "count_stripe",
    "fetch_shares",
    "fetch_stripe",
    "place_stripe",
    "repair_stripe",
    "seal_and_encode",
    "shares_nearby",
    "verify_stripe",
]

log = logging.getLogger(__name__)

#: Seconds without any share arriving before one more share is asked for (a slow holder).
HEDGE_AFTER = 1.0
#: How many of the closest nodes are asked for shares not found on their placement nodes.
FETCH_WIDER = 20


def _make_stripe(share_ids: Sequence[bytes] | bytes, share_size: int, k: int, n: int) -> Stripe:
    joined = share_ids if isinstance(share_ids, bytes) else b"".join(share_ids)
    if len(joined) != ID_SIZE * n:
        raise ValueError(f"a {k}-of-{n} stripe has {n} share ids of {ID_SIZE} bytes")
    return Stripe(joined, share_size, k, n)


# -- put ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SealedStripe:
    """A chunk sealed and cut into shares: what the manifest lists, and the shares to place."""

    stripe: Stripe
    key: bytes = dataclasses.field(repr=False)
    plaintext_size: int
    shares: list[bytes] = dataclasses.field(repr=False)


def seal_and_encode(secret: bytes, chunk: Buffer, k: int, n: int) -> SealedStripe:
    """Seal a chunk (as :func:`~shoal.content.crypto.seal_chunk`) and cut it into ``n`` shares.

    Pure CPU work, for the CPU pool. The sealed chunk itself is not hashed (nothing lists it);
    each share is.
    """
    key = chunk_key(secret, chunk)
    data = encrypt(key, chunk)
    shares = encode_shares(data, k, n)
    ids = b"".join(sha256(share) for share in shares)
    stripe = Stripe(ids, share_size(len(data), k), k, n)
    return SealedStripe(stripe, key, memoryview(chunk).nbytes, shares)


async def place_stripe(
    rt: NodeRuntime,
    stripe: Stripe,
    shares: Sequence[bytes],
    hints: PresenceHints | None = None,
) -> list[bytes | None]:
    """Store share ``i`` of ``stripe`` on the ``i``-th closest node to its stripe ID.

    A failed holder is replaced by the next closest node that holds no share of the stripe.

    Returns:
        The holder of each share (None: it could not be placed), at least ``k`` placed.

    Raises:
        StorageFull: Fewer than ``k`` shares could be placed and every failure was a full store.
        QuorumNotMet: Fewer than ``k`` shares could be placed; the message says why.
    """
    n = stripe.n
    if len(shares) != n:
        raise ValueError(f"a {stripe.k}-of-{n} stripe has {n} shares")
    candidates = await rt.routing.closest(stripe.stripe_id, n + max(n, SPARE_HOLDERS))
    holders: list[bytes | None] = [None] * n
    pending = dict(enumerate(candidates[:n]))
    spare = iter(candidates[n:])
    failures: list[str] = []
    all_full = True
    while pending:
        results = await asyncio.gather(
            *(
                put_on(rt, node, stripe.share_id(i), shares[i], hints, lease=True, share=True)
                for i, node in pending.items()
            ),
            return_exceptions=True,
        )
        retry: dict[int, bytes] = {}
        for (index, node), result in zip(pending.items(), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, ShoalError):
                    raise result
                failures.append(f"share {index} on {short_id(node)}: {result}")
                all_full = all_full and isinstance(result, StorageFull)
                replacement = next(spare, None)
                if replacement is not None:
                    retry[index] = replacement
            else:
                holders[index] = node
        pending = retry
    placed = sum(h is not None for h in holders)
    if placed < stripe.k:
        why = "; ".join(failures[:4]) or f"only {len(candidates)} node(s) are up"
        message = (
            f"only {placed} of the {n} shares of stripe {short_id(stripe.stripe_id)} could be "
            f"placed on distinct nodes, {stripe.k} are needed to read it ({why})."
        )
        if failures and all_full and len(candidates) >= stripe.k:
            raise StorageFull(
                message + " Free space or raise the nodes' storage limits, or add nodes."
            )
        raise QuorumNotMet(
            message + " Check that peers are up (`shoal peers`) and retry, or use fewer shares.",
            placed={
                encode_id(stripe.share_id(i)): [encode_id(h)]
                for i, h in enumerate(holders)
                if h is not None
            },
        )
    if failures:
        log.info(
            "stripe %s: %d of %d shares placed; failed: %s",
            short_id(stripe.stripe_id),
            placed,
            n,
            "; ".join(failures[:4]),
        )
    return holders


# -- get ---------------------------------------------------------------------------------------


async def _open_share(rt: NodeRuntime, stripe: Stripe, index: int, data: bytes) -> bytes:
    await rt.cpu(stripe.check_share, index, data)
    return data


async def _share_from(rt: NodeRuntime, stripe: Stripe, index: int, node_id: bytes) -> bytes:
    """Share ``index`` from one node, checked (``CorruptBlock``: that copy is bad)."""
    conn = await rt.routing.connect(node_id)
    answer = await conn.request(
        GetBlock(block_id=stripe.share_id(index)), timeout=rt.options.request_timeout
    )
    assert isinstance(answer, BlockData)
    return await _open_share(rt, stripe, index, answer.data)


def _local_shares(rt: NodeRuntime, stripe: Stripe) -> list[int]:
    return [i for i in range(stripe.n) if rt.blocks.has(stripe.share_id(i))]


async def _read_local(rt: NodeRuntime, stripe: Stripe, shares: dict[int, bytes]) -> None:
    for index in await rt.io(_local_shares, rt, stripe):
        if len(shares) >= stripe.k:
            return
        share_id = stripe.share_id(index)
        try:
            data = await rt.io(rt.blocks.get, share_id, verify=False)
            shares[index] = await _open_share(rt, stripe, index, data)
        except NotFound:
            continue  # removed meanwhile
        except CorruptBlock:
            # Its own bytes fail its own hash: the one reason to move a stored block aside.
            with contextlib.suppress(ShoalError):
                await rt.io(rt.blocks.quarantine, share_id)
        except IntegrityError:
            raise
        except ShoalError as exc:
            log.debug("local share %s unreadable: %s", short_id(share_id), exc)


async def fetch_shares(
    rt: NodeRuntime, stripe: Stripe, *, hedge_after: float = HEDGE_AFTER
) -> dict[int, bytes]:
    """Get ``k`` checked shares of ``stripe``: local ones first, then the fastest holders.

    Raises:
        NotFound: Fewer than ``k`` intact shares could be found; the message says how many.
        IntegrityError: An intact share is not what the manifest says (final).
    """
    k = stripe.k
    shares: dict[int, bytes] = {}
    await _read_local(rt, stripe, shares)
    if len(shares) >= k:
        return shares
    errors: list[str] = []
    asked: set[tuple[int, bytes]] = set()
    placement = await rt.routing.closest(stripe.stripe_id, stripe.n)
    queue = [
        (i, node) for i, node in enumerate(placement) if i not in shares and node != rt.node_id
    ]
    await _fetch_queue(rt, stripe, queue, shares, asked, errors, hedge_after)
    if len(shares) < k:
        await _fetch_wider(rt, stripe, shares, asked, errors, hedge_after)
    if len(shares) < k:
        raise NotFound(
            f"stripe {short_id(stripe.stripe_id)}: only {len(shares)} of the {k} shares needed "
            f"could be found ({stripe.n} were made)"
            + (f"; {'; '.join(errors[:4])}" if errors else "")
        )
    return shares


async def _fetch_queue(
    rt: NodeRuntime,
    stripe: Stripe,
    queue: list[tuple[int, bytes]],
    shares: dict[int, bytes],
    asked: set[tuple[int, bytes]],
    errors: list[str],
    hedge_after: float,
) -> None:
    """Fetch from ``(share index, node)`` in order until ``k`` shares are in ``shares``.

    At most as many requests run as shares are still needed, plus one more after each
    ``hedge_after`` seconds with no answer.
    """
    k = stripe.k
    tasks: dict[asyncio.Task[bytes], tuple[int, bytes]] = {}
    queue = list(queue)
    loop = asyncio.get_running_loop()

    def start_next() -> None:
        while queue:
            index, node = queue.pop(0)
            if index in shares or any(i == index for i, _ in tasks.values()):
                continue
            asked.add((index, node))
            tasks[loop.create_task(_share_from(rt, stripe, index, node))] = (index, node)
            return

    try:
        while len(shares) < k:
            while queue and len(tasks) < k - len(shares):
                before = len(tasks)
                start_next()
                if len(tasks) == before:
                    break
            if not tasks:
                return
            done, _ = await asyncio.wait(
                tasks, timeout=hedge_after, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                start_next()  # nobody answered for a while: ask one more holder
                continue
            for task in done:
                index, node = tasks.pop(task)
                try:
                    data = task.result()
                except IntegrityError as exc:
                    if not isinstance(exc, CorruptBlock):
                        raise
                    errors.append(f"share {index} on {short_id(node)}: {exc}")
                except ShoalError as exc:
                    errors.append(f"share {index} on {short_id(node)}: {exc}")
                else:
                    shares.setdefault(index, data)
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _has(rt: NodeRuntime, node_id: bytes, ids: Sequence[bytes]) -> list[bool] | None:
    """Which of ``ids`` a node holds intact (HAS_BLOCKS); None if it cannot be asked."""
    if node_id == rt.node_id:
        return await rt.io(lambda: [rt.blocks.has(b, verify=True) for b in ids])
    try:
        conn = await rt.routing.connect(node_id)
        answer = await conn.request(
            HasBlocks(block_ids=tuple(ids)), timeout=rt.options.request_timeout
        )
    except ShoalError:
        return None
    assert isinstance(answer, HaveBlocks)
    present = list(answer.present)[: len(ids)]
    return present + [False] * (len(ids) - len(present))


async def _fetch_wider(
    rt: NodeRuntime,
    stripe: Stripe,
    shares: dict[int, bytes],
    asked: set[tuple[int, bytes]],
    errors: list[str],
    hedge_after: float,
) -> None:
    """Look for the missing shares on more of the closest nodes (moved or replaced holders)."""
    nodes = [n for n in await rt.routing.closest(stripe.stripe_id, FETCH_WIDER) if n != rt.node_id]
    missing = [i for i in range(stripe.n) if i not in shares]
    ids = [stripe.share_id(i) for i in missing]
    answers = await asyncio.gather(*(_has(rt, node, ids) for node in nodes))
    queue = [
        (index, node)
        for node, present in zip(nodes, answers, strict=True)
        for index, has in zip(missing, present or [False] * len(ids), strict=True)
        if has and (index, node) not in asked
    ]
    queue.sort(key=lambda item: item[0])
    await _fetch_queue(rt, stripe, queue, shares, asked, errors, hedge_after)


async def fetch_stripe(rt: NodeRuntime, ref: StripeRef) -> bytes:
    """One erasure-coded chunk: ``k`` shares fetched, decoded and decrypted (on the CPU pool).

    Raises:
        NotFound: Fewer than ``k`` intact shares could be found.
        IntegrityError: The shares do not decode to what the manifest says.
    """
    shares = await fetch_shares(rt, ref.stripe)
    return await rt.cpu(ref.open, shares)


# -- repair ------------------------------------------------------------------------------------


async def _holdings(rt: NodeRuntime, stripe: Stripe) -> tuple[list[bytes], list[list[bool]]]:
    """The placement nodes and, for each, which of the stripe's shares it holds.

    Placement is the ``n`` closest nodes that answer: one that cannot be asked (down, or not
    yet known to be down by the routing) is skipped for the next closest. Whether a node has
    been away long enough for its shares to count as lost is the caller's decision (the
    repair delay): call :func:`repair_stripe` only once it is.
    """
    n = stripe.n
    candidates = await rt.routing.closest(stripe.stripe_id, n + max(n, SPARE_HOLDERS))
    placement: list[bytes] = []
    answers: list[list[bool]] = []
    start = 0
    while len(placement) < n and start < len(candidates):
        batch = candidates[start : start + n - len(placement)]
        start += len(batch)
        results = await asyncio.gather(*(_has(rt, node, stripe.ids) for node in batch))
        for node, present in zip(batch, results, strict=True):
            if present is not None:
                placement.append(node)
                answers.append(present)
    return placement, answers


def _match(answers: Sequence[Sequence[bool]]) -> dict[int, int]:
    """Assign shares to the nodes holding them, one share per node: {node position: share}.

    A node keeps its own-rank share when it holds it; otherwise the lowest share it holds that
    no other node was given. (Greedy: good enough when, as placement makes it, most nodes hold
    exactly one share.)
    """
    given: dict[int, int] = {}
    taken: set[int] = set()
    for position, present in enumerate(answers):
        if position < len(present) and present[position]:
            given[position] = position
            taken.add(position)
    for position, present in enumerate(answers):
        if position in given:
            continue
        for share, has in enumerate(present):
            if has and share not in taken:
                given[position] = share
                taken.add(share)
                break
    return given


async def count_stripe(
    rt: NodeRuntime,
    share_ids: Sequence[bytes] | bytes,
    *,
    k: int | None = None,
    n: int | None = None,
) -> int:
    """How many distinct shares of a stripe are live on its placement nodes (one per node).

    Args:
        rt: The node.
        share_ids: The stripe's ``n`` share IDs in share order (a list, or joined as a
            manifest lists them).
        k: Unused beyond a sanity check (kept so callers can pass a manifest's parameters).
        n: The stripe's share count; default: ``len(share_ids)``.

    Returns:
        0 ..= n: shares held (intact, verified presence) by distinct nodes among the ``n``
        closest to the stripe ID. The stripe is readable while this is at least ``k``.
    """
    ids = _split(share_ids)
    count = n if n is not None else len(ids)
    stripe = _make_stripe(ids, 1, k if k is not None else 1, count)
    _placement, answers = await _holdings(rt, stripe)
    return len(_match(answers))


async def _intact_on(rt: NodeRuntime, stripe: Stripe, index: int, node_id: bytes) -> bool:
    """Whether ``node_id``'s copy of share ``index``, downloaded and hashed, is intact.

    A local copy that fails its hash is moved aside by the store (as any read does); a peer
    does the same with its own copy before it would send it.
    """
    share_id = stripe.share_id(index)
    try:
        if node_id == rt.node_id:
            data = await rt.io(rt.blocks.get, share_id, verify=False)
            await _open_share(rt, stripe, index, data)
            return True
        await _share_from(rt, stripe, index, node_id)
    except CorruptBlock:
        if node_id == rt.node_id:
            with contextlib.suppress(ShoalError):
                await rt.io(rt.blocks.quarantine, share_id)
        log.warning(
            "share %s on %s fails its hash: not counted", short_id(share_id), short_id(node_id)
        )
        return False
    except ShoalError as exc:
        log.info("share %s on %s not counted: %s", short_id(share_id), short_id(node_id), exc)
        return False
    return True


async def verify_stripe(rt: NodeRuntime, stripe: Stripe) -> int:
    """:func:`count_stripe`, with every share counted downloaded and hashed first.

    A share that cannot be downloaded or fails its hash does not count, and the holders are
    matched to shares again without it (a holder of two shares may still count once). Shares
    are downloaded one at a time: memory holds one share, never the stripe.

    Returns:
        0 ..= n: shares verified intact on distinct placement nodes (all of them downloaded
        and hashed by this call).
    """
    placement, answers = await _holdings(rt, stripe)
    answers = [list(present) for present in answers]
    checked: set[tuple[int, int]] = set()
    while True:
        given = _match(answers)
        todo = [(pos, index) for pos, index in given.items() if (pos, index) not in checked]
        if not todo:
            return len(given)
        for position, index in todo:
            checked.add((position, index))
            if not await _intact_on(rt, stripe, index, placement[position]):
                answers[position][index] = False


async def shares_nearby(rt: NodeRuntime, stripe: Stripe) -> int:
    """How many distinct shares of ``stripe`` are held (verified presence) by any of the
    ``FETCH_WIDER`` nodes closest to it, placement or not: whether the stripe can still be
    read and rebuilt (at least ``k``) when its placement holds fewer (nodes joined, so its
    holders are no longer the closest)."""
    nodes = await rt.routing.closest(stripe.stripe_id, FETCH_WIDER)
    if rt.node_id not in nodes:
        nodes.append(rt.node_id)
    answers = await asyncio.gather(*(_has(rt, node, stripe.ids) for node in nodes))
    held: set[int] = set()
    for present in answers:
        held.update(i for i, yes in enumerate(present or []) if yes)
    return len(held)


def _split(share_ids: Sequence[bytes] | bytes) -> list[bytes]:
    if isinstance(share_ids, bytes):
        return [share_ids[i : i + ID_SIZE] for i in range(0, len(share_ids), ID_SIZE)]
    return list(share_ids)


async def repair_stripe(
    rt: NodeRuntime,
    share_ids: Sequence[bytes] | bytes,
    share_sizes: Sequence[int] | int,
    k: int,
    n: int,
    *,
    hints: PresenceHints | None = None,
    stored_on: dict[bytes, list[bytes]] | None = None,
) -> tuple[int, int]:
    """Rebuild the shares missing from a stripe's placement nodes and store them there.

    The ``n`` nodes closest to the stripe ID should hold one share each. Shares held by none
    of them are rebuilt from ``k`` others (fetched from anywhere, each hash-checked; the
    rebuilt ones are checked against their IDs) and sent to the placement nodes that hold no
    share of the stripe. Copies only: nothing is deleted anywhere. No read key is needed.

    Args:
        rt: The node.
        share_ids: The ``n`` share IDs in share order (a list, or joined).
        share_sizes: The shares' stored sizes (one per share, all equal, or one int).
        k: Shares needed to rebuild.
        n: Shares made.
        hints: Optional presence hints shared across calls.
        stored_on: Filled with the shares stored (node -> share IDs), for the caller to send
            the leases that keep them.

    Returns:
        ``(shares rebuilt and stored, bytes moved)``: bytes moved counts the shares fetched
        from peers and the shares sent.

    Raises:
        NotFound: Fewer than ``k`` shares are left anywhere: the stripe cannot be rebuilt.
        IntegrityError: The shares do not rebuild the ones the manifest lists.
    """
    sizes = [share_sizes] * n if isinstance(share_sizes, int) else list(share_sizes)
    if len(sizes) != n or len(set(sizes)) != 1:
        raise ValueError("a stripe's shares all have one size")
    stripe = _make_stripe(_split(share_ids), sizes[0], k, n)
    placement, answers = await _holdings(rt, stripe)
    given = _match(answers)
    held = set(given.values())
    missing = [i for i in range(n) if i not in held]
    free_nodes = [node for position, node in enumerate(placement) if position not in given]
    # Rank order first: share i on the i-th node when that node is free.
    targets: list[tuple[int, bytes]] = []
    for index in list(missing):
        if index < len(placement) and placement[index] in free_nodes:
            targets.append((index, placement[index]))
            free_nodes.remove(placement[index])
            missing.remove(index)
    targets.extend(zip(missing, free_nodes, strict=False))
    if not targets:
        return 0, 0
    local_before = set(await rt.io(_local_shares, rt, stripe))
    shares = await fetch_shares(rt, stripe)
    moved = sum(len(data) for index, data in shares.items() if index not in local_before)
    rebuilt = await rt.cpu(stripe.rebuild, shares, [index for index, _ in targets])
    results = await asyncio.gather(
        *(
            put_on(rt, node, stripe.share_id(i), rebuilt[i], hints, share=True)
            for i, node in targets
        ),
        return_exceptions=True,
    )
    stored = 0
    for (index, node), result in zip(targets, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, ShoalError):
                raise result
            log.info(
                "repair: share %d of stripe %s not stored on %s: %s",
                index,
                short_id(stripe.stripe_id),
                short_id(node),
                result,
            )
            continue
        stored += 1
        if stored_on is not None:
            stored_on.setdefault(node, []).append(stripe.share_id(index))
        if node != rt.node_id:
            moved += len(rebuilt[index])
    if stored:
        log.info("repair: rebuilt %d share(s) of stripe %s", stored, short_id(stripe.stripe_id))
    return stored, moved
