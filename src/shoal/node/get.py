"""The get pipeline: a read cap in, verified plaintext out, in order.

The walk is the content layer's sans-I/O :class:`~shoal.content.FileWalk`; this module only
moves bytes for it. The root manifest is fetched and opened first (it gives the size). Then the
walk names manifests to fetch (each opened on the CPU pool, hash first) and data blocks in file
order, which are fetched ``window`` at a time in parallel: each from the local store if present,
else from the holders closest to its ID, each checked (SHA-256 once, then the AEAD tag) before
it is used, failing over to the next holder only on a hash mismatch. Chunks are handed out
strictly in file order. A tree that lies about its shape or sizes fails at the first lie, so the
work of a get is bounded by the size its root reports.

A ranged get (``start``, ``end``) fetches only the data blocks that hold bytes of the range
(the manifests above the skipped ones are still read: one per ``fanout`` chunks) and trims
the first and last chunk.

An erasure-coded chunk (a :class:`~shoal.content.StripeRef`) is fetched as its ``k`` fastest
shares and decoded and decrypted on the CPU pool (:func:`shoal.node.erasure.fetch_stripe`);
everything else (window, order, ranges) is the same.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from shoal.content import BlockWalk, DataRef, FileWalk, NeedManifest, ReadCap, Stripe, StripeRef
from shoal.content.manifest import KIND_FILE
from shoal.errors import IntegrityError, OutOfRange
from shoal.ids import short_id
from shoal.node.blocks import fetch_block
from shoal.node.erasure import fetch_stripe
from shoal.node.runtime import NodeRuntime
from shoal.node.window import OrderedWindow

Leaf = DataRef | StripeRef


async def fetch_chunk(rt: NodeRuntime, ref: Leaf) -> bytes:
    """One data block (or stripe), verified and decrypted (CPU work on the pool)."""
    if isinstance(ref, StripeRef):
        return await fetch_stripe(rt, ref)
    return await fetch_block(rt, ref.block_id, ref.open)


async def walk_leaves(rt: NodeRuntime, walk: FileWalk) -> AsyncGenerator[Leaf, None]:
    """Drive ``walk``: fetch the manifests it needs, yield its data blocks in file order."""
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(await fetch_block(rt, step.block_id, step.open))
        else:
            yield step


async def walk_block_ids(rt: NodeRuntime, cid: bytes) -> AsyncGenerator[bytes, None]:
    """Every block ID of a file (manifests and data, root first), from its CID alone.

    Streams in bounded memory: each distinct manifest is fetched and decoded once, and a
    manifest's ID is yielded only after its bytes were read (so deleting it is safe). An
    erasure-coded chunk yields its ``n`` share IDs.
    """
    async for block_id, _placement_id, _stripe_n in walk_placements(rt, cid):
        yield block_id


async def walk_placements(
    rt: NodeRuntime, cid: bytes
) -> AsyncGenerator[tuple[bytes, bytes, int | None], None]:
    """Every block of a file with where placement puts it: ``(block_id, placement_id,
    stripe_n)``.

    A replicated block (and every manifest) lives on the nodes closest to its own ID
    (``stripe_n`` None); an erasure-coded share on the ``n`` nodes closest to its stripe's ID.
    Leases, renewals and releases go there. Same order and memory bound as
    :func:`walk_block_ids`.
    """
    walk = BlockWalk(cid)
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(await fetch_block(rt, step.block_id, step.open))
        elif isinstance(step, Stripe):
            stripe_id = step.stripe_id
            for share_id in step.ids:
                yield share_id, stripe_id, step.n
        else:
            yield step.block_id, step.block_id, None


async def _fetch_range(rt: NodeRuntime, ref: Leaf, start: int, end: int) -> bytes:
    """The bytes of ``ref``'s chunk that lie in ``[start, end)`` of the file."""
    chunk = await fetch_chunk(rt, ref)
    if ref.offset >= start and ref.offset + len(chunk) <= end:
        return chunk
    return chunk[max(start - ref.offset, 0) : end - ref.offset]


@dataclass
class FileStream:
    """Chunks of one file (or of the range ``[start, end)`` of it), fetched ahead in parallel
    and handed out in order.

    Owns its fetch tasks: ``aclose()`` cancels and awaits them.
    """

    rt: NodeRuntime
    cid: bytes
    size: int
    leaves: AsyncGenerator[Leaf, None]
    start: int = 0
    end: int | None = None  # None: the end of the file

    def __post_init__(self) -> None:
        self._window = OrderedWindow[bytes](self.rt.options.window)
        self.delivered = 0
        self._end = self.size if self.end is None else self.end
        self._whole = self.start == 0 and self._end == self.size
        # An empty range needs no block (a whole file is walked to its end all the same).
        self._exhausted = not self._whole and self.start >= self._end
        self._started = False

    def limit(self, start: int, end: int) -> None:
        """Hand out only bytes ``start`` (inclusive) to ``end`` (exclusive) of the file.

        Call before the first chunk; data blocks wholly outside the range are not fetched.
        """
        if self._started:
            raise ValueError("limit() must come before the first chunk")
        if not 0 <= start <= end <= self.size:
            raise ValueError("the range must lie within the file")
        self.start, self.end = start, end
        self.__post_init__()

    async def _fill(self) -> None:
        while not self._exhausted and not self._window.full:
            try:
                ref = await anext(self.leaves)
            except StopAsyncIteration:
                self._exhausted = True
                return
            if ref.offset + ref.plaintext_size <= self.start:
                continue  # wholly before the range: never fetched
            if ref.offset >= self._end:
                self._exhausted = True  # wholly after it, and so is everything further
                return
            if self._whole:
                self._window.start(fetch_chunk(self.rt, ref))
            else:
                self._window.start(_fetch_range(self.rt, ref, self.start, self._end))

    async def next_chunk(self) -> bytes | None:
        """The next chunk of plaintext, or None at the end of the file (or range)."""
        self._started = True
        await self._fill()
        if not self._window:
            wanted = self._end - self.start
            if self.delivered != wanted:  # the walk's arithmetic makes this unreachable
                raise IntegrityError(
                    f"file {short_id(self.cid)}: its root promises {wanted} bytes, "
                    f"its blocks hold {self.delivered}"
                )
            return None
        chunk = await self._window.next()
        self.delivered += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._window.aclose()
        await self.leaves.aclose()


async def open_file(
    rt: NodeRuntime,
    cap: ReadCap,
    *,
    offset: int = 0,
    length: int | None = None,
    kind: str = KIND_FILE,
) -> FileStream:
    """Fetch and open the root manifest of ``cap``; return a stream over its chunks.

    Args:
        rt: The node's runtime.
        cap: The file to read.
        offset: The first byte to read: 0 to the file's size (at the size: nothing to read).
        length: How many bytes at most; None: to the end (a range past the end stops there).
        kind: The object kind the root must be (``"dir"`` reads a directory's listing).

    Raises:
        OutOfRange: ``offset`` is past the end of the file.
        ValueError: ``offset`` or ``length`` is negative (a caller's mistake).
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError("offset and length must not be negative")
    walk = FileWalk(cap, kind=kind)
    root = walk.next()
    assert isinstance(root, NeedManifest)  # a walk starts with its root
    walk.feed(await fetch_block(rt, root.block_id, root.open))
    assert walk.info is not None
    size = walk.info.size
    if offset > size:
        raise OutOfRange(
            f"offset {offset} is past the end of file {short_id(cap.cid)} ({size} bytes)"
        )
    end = size if length is None else min(size, offset + length)
    return FileStream(rt, cap.cid, size, walk_leaves(rt, walk), start=offset, end=end)
