"""The put pipeline: plaintext chunks in, a read cap out.

Chunks are sealed (convergent key, AES-256-GCM, SHA-256) on the CPU pool and placed on their
holders concurrently, at most ``window`` chunks at a time, so memory stays bounded whatever the
file size. Manifest entries are added in file order as chunks complete. The catalog entry is
written only after every block, manifests included, has met its write quorum: a failed put
leaves no name behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from shoal.content import FileInfo, ManifestBuilder, Redundancy, seal_chunk
from shoal.ids import encode_id
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


async def _seal_and_place(rt: NodeRuntime, chunk: Buffer, replicas: int) -> _Placed:
    sealed = await rt.cpu(seal_chunk, rt.data.convergence_secret, chunk)
    await rt.place_block(sealed.block_id, sealed.data, replicas)
    return _Placed(sealed.block_id, len(sealed.data), sealed.key, sealed.plaintext_size)


async def store_file(
    rt: NodeRuntime,
    name: str,
    chunks: AsyncIterator[Buffer],
    *,
    media_type: str,
    mtime: float | None,
    progress: Callable[[int], None] | None = None,
) -> StoreResult:
    """Encrypt, place and catalog one file. ``chunks`` yields chunk-size pieces in order."""
    wanted = rt.options.replicas
    live = len(rt.live_nodes())
    replicas = min(wanted, live)
    if replicas < wanted:
        log.warning(
            "only %d node(s) up: storing %s with %d copies instead of %d",
            live,
            name,
            replicas,
            wanted,
        )
    builder = ManifestBuilder(
        rt.data.convergence_secret,
        redundancy=Redundancy(replicas=replicas),
        fanout=rt.options.manifest_fanout,
    )
    size = 0
    blocks = 0

    async def finish_oldest(window: OrderedWindow[_Placed]) -> None:
        nonlocal blocks
        placed = await window.next()
        for block_id, data in builder.add(
            placed.block_id, placed.stored_size, placed.key, placed.plaintext_size
        ):
            await rt.place_block(block_id, data, replicas)
            blocks += 1
        blocks += 1
        if progress is not None:
            progress(placed.plaintext_size)

    # The window owns the chunk tasks: on failure or cancellation none outlives this put.
    async with OrderedWindow[_Placed](rt.options.window) as window:
        async for chunk in chunks:
            if window.full:
                await finish_oldest(window)
            size += len(chunk)
            window.start(_seal_and_place(rt, chunk, replicas))
        while window:
            await finish_oldest(window)

    now = time.time()
    info = FileInfo(name=name, size=size, media_type=media_type, mtime=mtime, created=now)
    manifest_blocks, cap = builder.finish(info)
    # The root goes last so that no root is ever stored without everything below it.
    *inner, root = manifest_blocks
    for block_id, data in inner:  # only files over ~16 GiB have inner manifests
        await rt.place_block(block_id, data, replicas)
    await rt.place_block(root[0], root[1], replicas)
    blocks += len(manifest_blocks)
    cap_text = str(cap)
    entry = CatalogEntry(name=name, cap=cap_text, size=size, media_type=media_type, created=now)
    await rt.io(rt.catalog.put_file, entry)
    log.info("stored %s (%d bytes, %d blocks, cid %s)", name, size, blocks, encode_id(cap.cid))
    return StoreResult(
        name=name,
        cap=cap_text,
        size=size,
        blocks=blocks,
        replicas=replicas,
        replicas_wanted=wanted,
    )
