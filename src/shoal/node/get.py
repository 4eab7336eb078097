"""The get pipeline: a read cap in, verified plaintext out, in order.

The walk is the content layer's sans-I/O :class:`~shoal.content.FileWalk`; this module only
moves bytes for it. The root manifest is fetched and opened first (it gives the size). Then the
walk names manifests to fetch (each opened on the CPU pool, hash first) and data blocks in file
order, which are fetched ``window`` at a time in parallel: each from the local store if present,
else from the holders closest to its ID, each checked (SHA-256 once, then the AEAD tag) before
it is used, failing over to the next holder only on a hash mismatch. Chunks are handed out
strictly in file order. A tree that lies about its shape or sizes fails at the first lie, so the
work of a get is bounded by the size its root reports.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from shoal.content import BlockWalk, DataRef, FileWalk, NeedManifest, ReadCap
from shoal.content.manifest import KIND_FILE
from shoal.errors import IntegrityError
from shoal.ids import short_id
from shoal.node.blocks import fetch_block
from shoal.node.runtime import NodeRuntime
from shoal.node.window import OrderedWindow


async def fetch_chunk(rt: NodeRuntime, ref: DataRef) -> bytes:
    """One data block, verified and decrypted (CPU work on the pool)."""
    return await fetch_block(rt, ref.block_id, ref.open)


async def walk_leaves(rt: NodeRuntime, walk: FileWalk) -> AsyncGenerator[DataRef, None]:
    """Drive ``walk``: fetch the manifests it needs, yield its data blocks in file order."""
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(await fetch_block(rt, step.block_id, step.open))
        else:
            yield step


async def walk_block_ids(rt: NodeRuntime, cid: bytes) -> AsyncGenerator[bytes, None]:
    """Every block ID of a file (manifests and data, root first), from its CID alone.

    Streams in bounded memory: each distinct manifest is fetched and decoded once, and a
    manifest's ID is yielded only after its bytes were read (so deleting it is safe).
    """
    walk = BlockWalk(cid)
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(await fetch_block(rt, step.block_id, step.open))
        else:
            yield step.block_id


@dataclass
class FileStream:
    """Chunks of one file, fetched ahead in parallel and handed out in order.

    Owns its fetch tasks: ``aclose()`` cancels and awaits them. :meth:`limit` (before the first
    chunk) restricts it to a byte range: data blocks wholly outside the range are not fetched.
    """

    rt: NodeRuntime
    cid: bytes
    size: int
    leaves: AsyncGenerator[DataRef, None]

    def __post_init__(self) -> None:
        self._window = OrderedWindow[bytes](self.rt.options.window)
        self._exhausted = False
        self._started = False
        self.start = 0
        self.end = self.size
        self.delivered = 0

    def limit(self, start: int, end: int) -> None:
        """Hand out only bytes ``start`` (inclusive) to ``end`` (exclusive) of the file."""
        if self._started:
            raise ValueError("limit() must come before the first chunk")
        if not 0 <= start <= end <= self.size:
            raise ValueError("the range must lie within the file")
        self.start, self.end = start, end

    async def _fetch(self, ref: DataRef) -> bytes:
        chunk = await fetch_chunk(self.rt, ref)
        low = max(0, self.start - ref.offset)
        high = min(len(chunk), self.end - ref.offset)
        return chunk if (low, high) == (0, len(chunk)) else chunk[low:high]

    async def _fill(self) -> None:
        while not self._exhausted and not self._window.full:
            try:
                ref = await anext(self.leaves)
            except StopAsyncIteration:
                self._exhausted = True
                return
            if ref.offset >= self.end:
                self._exhausted = True
                return
            if ref.offset + ref.plaintext_size <= self.start:
                continue  # before the range: never fetched
            self._window.start(self._fetch(ref))

    async def next_chunk(self) -> bytes | None:
        """The next chunk of plaintext, or None at the end of the file (or of the range)."""
        self._started = True
        await self._fill()
        if not self._window:
            if self.delivered != self.end - self.start:  # the walk's arithmetic: unreachable
                raise IntegrityError(
                    f"file {short_id(self.cid)}: its root promises {self.size} bytes, "
                    f"its blocks hold {self.delivered}"
                )
            return None
        chunk = await self._window.next()
        self.delivered += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._window.aclose()
        await self.leaves.aclose()


async def open_file(rt: NodeRuntime, cap: ReadCap, *, kind: str = KIND_FILE) -> FileStream:
    """Fetch and open the root manifest of ``cap``; return a stream over its chunks.

    ``kind`` is the object kind the root must be (``"dir"`` reads a directory's listing).
    """
    walk = FileWalk(cap, kind=kind)
    root = walk.next()
    assert isinstance(root, NeedManifest)  # a walk starts with its root
    walk.feed(await fetch_block(rt, root.block_id, root.open))
    assert walk.info is not None
    return FileStream(rt, cap.cid, walk.info.size, walk_leaves(rt, walk))
