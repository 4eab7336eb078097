"""The put pipeline: plaintext chunks in, a read cap out.

Chunks are sealed (convergent key, AES-256-GCM, SHA-256) on the CPU pool and placed on their
holders concurrently, at most ``window`` chunks at a time, so memory stays bounded whatever the
file size. Manifest entries are added in file order as chunks complete; the root manifest goes
last, so that no root is ever stored without everything below it. The catalog entry is written
only after every block is stored: a failed put leaves no name behind.

Each block goes to the R nodes closest to its ID; when fewer could take it (peers down or
full, none left to replace them), the put still succeeds with the copies it placed, says so in
``StoreResult.replicas`` (the fewest copies of any block) and logs a warning. It fails only
when some block could be placed nowhere.

Erasure-coded files (``Redundancy.erasure(k, n)``): each sealed chunk is cut into ``n`` shares
on the CPU pool and the shares go to ``n`` distinct nodes (:func:`shoal.node.erasure.
place_stripe`), driven by the same window; manifests are replicated with ``n - k + 1`` copies.
The put fails only when fewer than ``k`` shares of some chunk could be placed. For these files
``StoreResult.replicas`` is the fewest shares of any chunk out of ``n`` (a manifest's ``c``
copies count as ``c + k - 1``: both measure the losses a file survives, plus ``k``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from shoal.content import ManifestBuilder, ReadCap, Redundancy, seal_chunk
from shoal.content.manifest import KIND_FILE
from shoal.errors import ShoalError
from shoal.ids import encode_id
from shoal.node.blocks import PresenceHints, place_block
from shoal.node.erasure import place_stripe, seal_and_encode
from shoal.node.leases import entry_roots, lease_roots
from shoal.node.runtime import NodeRuntime
from shoal.node.types import StoreResult
from shoal.node.window import OrderedWindow
from shoal.store import CatalogEntry

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class _Placed:
    block_id: bytes
    stored_size: int
    key: bytes
    plaintext_size: int
    copies: int


async def _seal_and_place(
    rt: NodeRuntime, chunk: Buffer, replicas: int, hints: PresenceHints
) -> _Placed:
    sealed = await rt.cpu(seal_chunk, rt.data.convergence_secret, chunk)
    holders = await place_block(rt, sealed.block_id, sealed.data, replicas, hints, lease=True)
    return _Placed(
        sealed.block_id, len(sealed.data), sealed.key, sealed.plaintext_size, len(holders)
    )


async def _seal_and_place_stripe(
    rt: NodeRuntime, chunk: Buffer, redundancy: Redundancy, hints: PresenceHints
) -> _Placed:
    sealed = await rt.cpu(
        seal_and_encode, rt.data.convergence_secret, chunk, redundancy.k, redundancy.n
    )
    stripe = sealed.stripe
    holders = await place_stripe(rt, stripe, sealed.shares, hints)
    placed = sum(holder is not None for holder in holders)
    return _Placed(stripe.share_ids, stripe.share_size, sealed.key, sealed.plaintext_size, placed)


def object_redundancy(
    rt: NodeRuntime, replicas: int | None = None, redundancy: Redundancy | None = None
) -> Redundancy:
    """The redundancy of a new object: ``redundancy``, else ``replicas`` copies, else the
    node's default (``node.erasure`` if set, else ``node.replicas``)."""
    if redundancy is not None:
        return redundancy
    if replicas is not None:
        return Redundancy.replicate(replicas)
    if rt.options.erasure is not None:
        return Redundancy.erasure(*rt.options.erasure)
    return Redundancy.replicate(rt.options.replicas)


@dataclass(frozen=True, slots=True)
class PlacedObject:
    """A file or directory object whose blocks are all placed (nothing cataloged)."""

    cap: ReadCap
    size: int
    blocks: int
    copies: int  # the fewest copies of any block (erasure: shares, see the module docstring)
    wanted: int
    redundancy: Redundancy | None = None  # None: replicated, ``wanted`` copies


async def place_object(
    rt: NodeRuntime,
    chunks: AsyncIterator[Buffer],
    *,
    kind: str = KIND_FILE,
    progress: Callable[[int], None] | None = None,
    replicas: int | None = None,
    redundancy: Redundancy | None = None,
) -> PlacedObject:
    """Encrypt and place one object's chunks and manifests (the root last); catalog nothing.

    ``chunks`` yields pieces of exactly ``rt.options.chunk_size`` bytes in order, the last one
    possibly shorter. ``kind`` is sealed in the root: ``"file"``, or ``"dir"`` for a listing.
    ``replicas`` or ``redundancy`` overrides the node's setting for this object.
    """
    scheme = object_redundancy(rt, replicas, redundancy)
    wanted = scheme.wanted
    # A manifest's copies, on the scale of a stripe's shares (see the module docstring).
    manifest_slack = scheme.k - 1 if scheme.is_erasure else 0
    builder = ManifestBuilder(
        rt.data.convergence_secret,
        chunk_size=rt.options.chunk_size,
        fanout=rt.options.manifest_fanout,
        redundancy=scheme,
        kind=kind,
    )
    add_entry = builder.add_stripe if scheme.is_erasure else builder.add
    blocks_per_chunk = scheme.n if scheme.is_erasure else 1  # a stripe is n blocks (shares)
    size = 0
    blocks = 0
    copies = wanted  # the fewest copies of any block so far
    hints = PresenceHints()

    async def place(block_id: bytes, data: bytes) -> None:
        nonlocal blocks, copies
        acked = await place_block(rt, block_id, data, scheme.replicas, hints, lease=True)
        copies = min(copies, len(acked) + manifest_slack)
        blocks += 1

    def start(window: OrderedWindow[_Placed], chunk: Buffer) -> None:
        if scheme.is_erasure:
            window.start(_seal_and_place_stripe(rt, chunk, scheme, hints))
        else:
            window.start(_seal_and_place(rt, chunk, scheme.replicas, hints))

    async def finish_oldest(window: OrderedWindow[_Placed]) -> None:
        nonlocal blocks, copies
        placed = await window.next()
        copies = min(copies, placed.copies)
        blocks += blocks_per_chunk
        for block_id, data in add_entry(
            placed.block_id, placed.stored_size, placed.key, placed.plaintext_size
        ):
            await place(block_id, data)
        if progress is not None:
            progress(placed.plaintext_size)

    # The window owns the chunk tasks: on failure or cancellation none outlives this put.
    async with OrderedWindow[_Placed](rt.options.window) as window:
        async for chunk in chunks:
            if window.full:
                await finish_oldest(window)
            size += len(chunk)
            start(window, chunk)
        while window:
            await finish_oldest(window)

    manifest_blocks, cap = builder.finish()
    for block_id, data in manifest_blocks:  # the root is last
        await place(block_id, data)
    return PlacedObject(cap, size, blocks, copies, wanted, scheme if scheme.is_erasure else None)


async def store_file(
    rt: NodeRuntime,
    name: str,
    chunks: AsyncIterator[Buffer],
    *,
    media_type: str,
    mtime: float | None = None,
    progress: Callable[[int], None] | None = None,
    replicas: int | None = None,
    redundancy: Redundancy | None = None,
) -> StoreResult:
    """Encrypt, place and catalog one file.

    ``chunks`` yields pieces of exactly ``rt.options.chunk_size`` bytes in order, the last one
    possibly shorter. The cap depends only on the bytes, the owner's secret and the chunk size,
    fanout and redundancy: ``name``, ``media_type`` and ``mtime`` go to the catalog only.
    ``replicas`` or ``redundancy`` overrides the node's setting for this file.
    """
    placed = await place_object(
        rt, chunks, progress=progress, replicas=replicas, redundancy=redundancy
    )
    return await catalog_object(rt, name, placed, media_type=media_type, mtime=mtime)


async def catalog_object(
    rt: NodeRuntime, name: str, placed: PlacedObject, *, media_type: str, mtime: float | None
) -> StoreResult:
    """Write the catalog entry of a placed object (after every block is placed)."""
    cap, size, blocks, copies, wanted = (
        placed.cap,
        placed.size,
        placed.blocks,
        placed.copies,
        placed.wanted,
    )
    now = time.time()
    cap_text = str(cap)
    if copies < wanted:
        log.warning(
            "stored %s with only %d of %d %s of some blocks: it does not yet survive the "
            "loss of the nodes that hold them",
            name,
            copies,
            wanted,
            "shares" if placed.redundancy is not None else "copies",
        )
    entry = CatalogEntry(
        name=name,
        cap=cap_text,
        size=size,
        media_type=media_type,
        created=now,
        mtime=mtime,
        replicas=copies,
        replicas_wanted=wanted,
        erasure=None if placed.redundancy is None else str(placed.redundancy),
    )
    await rt.io(rt.catalog.put_file, entry)
    # The put succeeded: its pending leases become long ones on the nodes that hold its
    # blocks (docs/leases.md).
    # A failure here is logged, not raised: the blocks are stored and cataloged, and the
    # next renewal (soon after every start, then weekly) leases them.
    roots: list[bytes] = []
    try:
        async for root in entry_roots(rt, cap, media_type):
            roots.append(root)
    except ShoalError as exc:
        log.warning("could not list every object of %s to lease it: %s", name, exc)
    await lease_roots(rt, roots, replicas=wanted)
    log.info("stored %s (%d bytes, %d blocks, cid %s)", name, size, blocks, encode_id(cap.cid))
    scheme = placed.redundancy or Redundancy.replicate(wanted)
    return StoreResult(
        name=name,
        cap=cap_text,
        size=size,
        blocks=blocks,
        replicas=copies,
        replicas_wanted=wanted,
        redundancy=scheme.to_json(),
    )
