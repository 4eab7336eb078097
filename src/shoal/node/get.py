"""The get pipeline: a read cap in, verified plaintext out, in order.

The root manifest is fetched and opened first (it gives the name, size and media type). Then
the manifest tree is walked depth first, and data blocks are fetched ``window`` at a time in
parallel: each from the local store if present, else from the live peers closest to its ID,
each one checked (SHA-256, then the AEAD tag) before it is used, failing over to the next
holder on a bad or missing block. Chunks are handed out strictly in file order.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shoal.content import ChildKey, ChildRef, FileInfo, Manifest, ReadCap, open_chunk, open_manifest
from shoal.errors import IntegrityError
from shoal.ids import sha256, short_id
from shoal.node.runtime import NodeRuntime, cancel_and_wait

MAX_DEPTH = 8


def _decode_manifest(block_id: bytes, data: bytes) -> Manifest:
    if sha256(data) != block_id:
        raise IntegrityError(f"manifest block {short_id(block_id)} does not match its ID")
    return Manifest.decode(data)


async def fetch_manifest(rt: NodeRuntime, block_id: bytes) -> Manifest:
    _, manifest = await rt.fetch_block(block_id, functools.partial(_decode_manifest, block_id))
    assert manifest is not None
    return manifest


def _open_data(ref: ChildRef, key: ChildKey, data: bytes) -> bytes:
    if len(data) != ref.stored_size:
        raise IntegrityError(
            f"block {short_id(ref.block_id)} is {len(data)} bytes, manifest says {ref.stored_size}"
        )
    plaintext = open_chunk(key.key, ref.block_id, data)
    if len(plaintext) != key.plaintext_size:
        raise IntegrityError(f"block {short_id(ref.block_id)} has the wrong plaintext size")
    return plaintext


async def fetch_chunk(rt: NodeRuntime, ref: ChildRef, key: ChildKey) -> bytes:
    _, plaintext = await rt.fetch_block(ref.block_id, functools.partial(_open_data, ref, key))
    assert plaintext is not None
    return plaintext


async def walk_leaves(
    rt: NodeRuntime, manifest: Manifest, keys: tuple[ChildKey, ...]
) -> AsyncIterator[tuple[ChildRef, ChildKey]]:
    """Yield every data block of the tree under ``manifest`` in file order."""
    if manifest.depth == 0:
        for pair in zip(manifest.children, keys, strict=True):
            yield pair
        return
    for ref, key in zip(manifest.children, keys, strict=True):
        child = await fetch_manifest(rt, ref.block_id)
        if child.depth != manifest.depth - 1:
            raise IntegrityError(f"manifest {short_id(ref.block_id)} has an inconsistent depth")
        part = await rt.cpu(open_manifest, child, key.key)
        async for leaf in walk_leaves(rt, child, part.keys):
            yield leaf


async def walk_block_ids(rt: NodeRuntime, cid: bytes, key: bytes) -> list[bytes]:
    """Every block ID of a file (manifests and data), root first."""
    root = await fetch_manifest(rt, cid)
    part = await rt.cpu(open_manifest, root, key)
    ids = [cid]
    stack = [(root, part.keys)]
    while stack:
        manifest, keys = stack.pop()
        for ref, child_key in zip(manifest.children, keys, strict=True):
            ids.append(ref.block_id)
            if manifest.depth > 0:
                child = await fetch_manifest(rt, ref.block_id)
                child_part = await rt.cpu(open_manifest, child, child_key.key)
                stack.append((child, child_part.keys))
    return ids


@dataclass
class FileStream:
    """Chunks of one file, fetched ahead in parallel and handed out in order.

    Owns its fetch tasks: ``aclose()`` cancels and awaits them.
    """

    rt: NodeRuntime
    info: FileInfo
    leaves: AsyncIterator[tuple[ChildRef, ChildKey]]

    def __post_init__(self) -> None:
        self._pending: deque[asyncio.Task[bytes]] = deque()
        self._exhausted = False
        self.delivered = 0

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._exhausted and len(self._pending) < self.rt.options.window:
            try:
                ref, key = await anext(self.leaves)
            except StopAsyncIteration:
                self._exhausted = True
                return
            self._pending.append(loop.create_task(fetch_chunk(self.rt, ref, key)))

    async def next_chunk(self) -> bytes | None:
        """The next chunk of plaintext, or None at the end of the file."""
        await self._fill()
        if not self._pending:
            if self.delivered != self.info.size:
                raise IntegrityError(
                    f"{self.info.name}: manifest promises {self.info.size} bytes, "
                    f"its blocks hold {self.delivered}"
                )
            return None
        chunk = await self._pending.popleft()
        self.delivered += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await cancel_and_wait(self._pending)
        self._pending.clear()


async def open_file(rt: NodeRuntime, cap: ReadCap) -> FileStream:
    """Fetch and open the root manifest of ``cap``; return a stream over its chunks."""
    root = await fetch_manifest(rt, cap.cid)
    part = await rt.cpu(open_manifest, root, cap.key)
    if part.info is None:
        raise IntegrityError(f"{short_id(cap.cid)} is not the root of a file")
    if root.depth > MAX_DEPTH:
        raise IntegrityError(f"manifest tree of {short_id(cap.cid)} is too deep")
    return FileStream(rt, part.info, walk_leaves(rt, root, part.keys))
