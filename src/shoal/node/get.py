"""The get pipeline: a read cap in, verified plaintext out, in order.

The root manifest is fetched and opened first (it gives the name, size and media type). Then
the manifest tree is walked depth first, and data blocks are fetched ``window`` at a time in
parallel: each from the local store if present, else from the live peers closest to its ID,
each one checked (SHA-256, then the AEAD tag) before it is used, failing over to the next
holder on a bad or missing block. Chunks are handed out strictly in file order.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from shoal.content import (
    ChildKey,
    ChildRef,
    FileInfo,
    Manifest,
    ReadCap,
    SealedPart,
    open_child,
    open_chunk,
    open_root,
)
from shoal.errors import IntegrityError
from shoal.ids import short_id
from shoal.node.blocks import fetch_block
from shoal.node.runtime import NodeRuntime
from shoal.node.window import OrderedWindow


def _open_data(ref: ChildRef, key: ChildKey, data: bytes) -> bytes:
    plaintext = open_chunk(key.key, ref.block_id, data, plaintext_size=key.plaintext_size)
    if len(data) != ref.stored_size:  # the block is intact (its hash matched): the manifest lies
        raise IntegrityError(
            f"block {short_id(ref.block_id)} is {len(data)} bytes, manifest says {ref.stored_size}"
        )
    return plaintext


async def fetch_chunk(rt: NodeRuntime, ref: ChildRef, key: ChildKey) -> bytes:
    """One data block, verified and decrypted (CPU work on the pool)."""
    return await fetch_block(rt, ref.block_id, functools.partial(_open_data, ref, key))


async def fetch_root(rt: NodeRuntime, cap: ReadCap) -> tuple[Manifest, SealedPart, FileInfo]:
    """The root manifest of ``cap``, checked and opened."""
    return await fetch_block(rt, cap.cid, functools.partial(open_root, cap))


async def fetch_child(
    rt: NodeRuntime, parent: Manifest, ref: ChildRef, key: ChildKey
) -> tuple[Manifest, SealedPart]:
    """An inner manifest of a tree, checked against its parent and opened."""
    return await fetch_block(rt, ref.block_id, functools.partial(open_child, parent, ref, key))


async def walk_leaves(
    rt: NodeRuntime, manifest: Manifest, part: SealedPart
) -> AsyncGenerator[tuple[ChildRef, ChildKey], None]:
    """Yield every data block of the tree under ``manifest`` in file order."""
    for ref, key in zip(manifest.children, part.keys, strict=True):
        if manifest.depth == 0:
            yield ref, key
            continue
        child, child_part = await fetch_child(rt, manifest, ref, key)
        async for leaf in walk_leaves(rt, child, child_part):
            yield leaf


async def walk_block_ids(rt: NodeRuntime, cap: ReadCap) -> list[bytes]:
    """Every block ID of a file (manifests and data), root first."""
    root, part, _ = await fetch_root(rt, cap)
    ids = [cap.cid]
    stack = [(root, part)]
    while stack:
        manifest, manifest_part = stack.pop()
        for ref, key in zip(manifest.children, manifest_part.keys, strict=True):
            ids.append(ref.block_id)
            if manifest.depth > 0:
                stack.append(await fetch_child(rt, manifest, ref, key))
    return ids


@dataclass
class FileStream:
    """Chunks of one file, fetched ahead in parallel and handed out in order.

    Owns its fetch tasks: ``aclose()`` cancels and awaits them.
    """

    rt: NodeRuntime
    info: FileInfo
    leaves: AsyncGenerator[tuple[ChildRef, ChildKey], None]

    def __post_init__(self) -> None:
        self._window = OrderedWindow[bytes](self.rt.options.window)
        self._exhausted = False
        self.delivered = 0

    async def _fill(self) -> None:
        while not self._exhausted and not self._window.full:
            try:
                ref, key = await anext(self.leaves)
            except StopAsyncIteration:
                self._exhausted = True
                return
            self._window.start(fetch_chunk(self.rt, ref, key))

    async def next_chunk(self) -> bytes | None:
        """The next chunk of plaintext, or None at the end of the file."""
        await self._fill()
        if not self._window:
            if self.delivered != self.info.size:
                raise IntegrityError(
                    f"{self.info.name}: manifest promises {self.info.size} bytes, "
                    f"its blocks hold {self.delivered}"
                )
            return None
        chunk = await self._window.next()
        self.delivered += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._window.aclose()
        await self.leaves.aclose()


async def open_file(rt: NodeRuntime, cap: ReadCap) -> FileStream:
    """Fetch and open the root manifest of ``cap``; return a stream over its chunks."""
    root, part, info = await fetch_root(rt, cap)
    return FileStream(rt, info, walk_leaves(rt, root, part))
