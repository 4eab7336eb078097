"""Manifest trees: building one as chunks are sealed, and synchronous readers over the walks.

How it works: data block entries fill a depth-0 node; when a node holds ``fanout`` entries and
one more arrives at its level, the node is sealed into a manifest block and its reference (and
key) becomes an entry one level up, and so on. ``finish`` seals the partial nodes bottom up; the
top one is the root, whose sealed part also holds the file size, and whose block ID is the
file's CID. The result is the one tree the readers accept for that size (every node but the
last of each level full, the shallowest root): see :mod:`shoal.content.walk`.

:class:`TreeReader`, :func:`iter_tree` and :func:`walk_blocks` drive the sans-I/O walks with a
synchronous ``fetch`` (tests, tools); the node drives the same walks asynchronously.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shoal.content.caps import ReadCap
from shoal.content.crypto import CHUNK_SIZE, KEY_SIZE, encrypt
from shoal.content.manifest import (
    DEFAULT_FANOUT,
    KIND_FILE,
    MAX_CHILDREN,
    MAX_CHUNK_SIZE,
    MAX_DEPTH,
    MAX_FILE_SIZE,
    ChildRef,
    Manifest,
    Redundancy,
    encode_sealed,
    manifest_key,
)
from shoal.content.walk import (
    BlockRef,
    BlockWalk,
    DataRef,
    FileInfo,
    FileWalk,
    NeedManifest,
    Stripe,
    StripeRef,
)
from shoal.ids import ID_SIZE, sha256

__all__ = [
    "ManifestBuilder",
    "TreeReader",
    "iter_tree",
    "walk_blocks",
]

Fetch = Callable[[bytes], bytes]
"""Returns the stored bytes of a block ID (raises ``NotFound`` if absent)."""


@dataclass(slots=True)
class _Node:
    refs: list[ChildRef] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass but never a valid size


class ManifestBuilder:
    """Build a file's manifest tree as its chunks are sealed, in bounded memory.

    Feed the sealed chunks in file order with :meth:`add`, store every block it returns, then
    call :meth:`finish`. Memory: one partial node per level. The same chunks with the same
    secret, chunk size, fanout and redundancy always give the same blocks and the same cap.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        chunk_size: int = CHUNK_SIZE,
        fanout: int = DEFAULT_FANOUT,
        redundancy: Redundancy | None = None,
        kind: str = KIND_FILE,
    ) -> None:
        """Create a builder.

        Args:
            secret: The owner's 32-byte convergence secret (derives the manifest keys).
            chunk_size: Plaintext bytes of every chunk but the last, 1..:data:`MAX_CHUNK_SIZE`.
            fanout: Children per manifest, 2..:data:`MAX_CHILDREN`.
            redundancy: Recorded in every manifest; default: replicate, 3 copies. With
                erasure coding, data chunks are added with :meth:`add_stripe`, and a fanout
                above ``redundancy.max_fanout`` is lowered to it (so a full manifest of
                stripes still fits in a block).
            kind: The object kind sealed in the root: ``"file"``, or ``"dir"`` for the
                listing of a directory (:mod:`shoal.content.directory`).
        """
        if not isinstance(secret, bytes) or len(secret) != KEY_SIZE:
            raise ValueError(f"convergence secret must be {KEY_SIZE} bytes")
        if not _is_int(chunk_size) or not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size!r}")
        if not _is_int(fanout) or not 2 <= fanout <= MAX_CHILDREN:
            raise ValueError(f"fanout must be 2..{MAX_CHILDREN}, got {fanout!r}")
        self._secret = secret
        self._chunk_size = chunk_size
        self._redundancy = redundancy if redundancy is not None else Redundancy()
        self._fanout = min(fanout, self._redundancy.max_fanout)
        self._kind = kind
        self._levels: list[_Node] = [_Node()]
        self._size = 0
        self._short_chunk_seen = False
        self._finished = False

    @property
    def size(self) -> int:
        """Plaintext bytes added so far."""
        return self._size

    def add(
        self, block_id: bytes, stored_size: int, key: bytes, plaintext_size: int
    ) -> list[tuple[bytes, bytes]]:
        """Append the next data block of the file.

        Args:
            block_id: The sealed chunk's block ID.
            stored_size: Length of its stored bytes (plaintext + 16-byte tag).
            key: Its chunk key.
            plaintext_size: Length of its plaintext: the chunk size, except for the last chunk,
                which may be shorter (never empty).

        Returns:
            Manifest blocks completed by this entry, as ``(block_id, block_bytes)`` (often none).
        """
        if self._redundancy.is_erasure:
            raise ValueError("an erasure-coded file's chunks are added with add_stripe()")
        if len(block_id) != ID_SIZE:
            raise ValueError("block id must be 32 bytes")
        return self._add(block_id, stored_size, key, plaintext_size)

    def add_stripe(
        self, share_ids: bytes, share_size: int, key: bytes, plaintext_size: int
    ) -> list[tuple[bytes, bytes]]:
        """Append the next data chunk of an erasure-coded file, as its ``n`` shares.

        Args:
            share_ids: The shares' IDs joined, in share order (``32 * n`` bytes).
            share_size: Length of each share (``erasure.share_size(plaintext + 16, k)``).
            key: The chunk key.
            plaintext_size: As in :meth:`add`.

        Returns:
            Manifest blocks completed by this entry (often none).
        """
        if not self._redundancy.is_erasure:
            raise ValueError("add_stripe() is for erasure-coded files")
        if len(share_ids) != ID_SIZE * self._redundancy.n:
            raise ValueError(f"a stripe has {self._redundancy.n} share ids of 32 bytes")
        return self._add(share_ids, share_size, key, plaintext_size)

    def _add(
        self, block_id: bytes, stored_size: int, key: bytes, plaintext_size: int
    ) -> list[tuple[bytes, bytes]]:
        if self._finished:
            raise ValueError("add() after finish()")
        if len(key) != KEY_SIZE:
            raise ValueError("key must be 32 bytes")
        if not _is_int(plaintext_size) or not 1 <= plaintext_size <= self._chunk_size:
            raise ValueError(f"a chunk holds 1..{self._chunk_size} bytes, got {plaintext_size}")
        if self._short_chunk_seen:
            raise ValueError("only the last chunk of a file may be shorter than the chunk size")
        if stored_size != self._redundancy.data_size(plaintext_size):
            raise ValueError(
                "a data entry's stored size is plaintext + 16-byte tag (replicated) or each "
                "share's size (erasure-coded)"
            )
        if self._size + plaintext_size > MAX_FILE_SIZE:
            raise ValueError(f"a file holds at most {MAX_FILE_SIZE} bytes")
        self._short_chunk_seen = plaintext_size < self._chunk_size
        self._size += plaintext_size
        out: list[tuple[bytes, bytes]] = []
        self._push(0, ChildRef(block_id, stored_size), key, out)
        return out

    def finish(self) -> tuple[list[tuple[bytes, bytes]], ReadCap]:
        """Seal the partial nodes bottom-up.

        Returns:
            The remaining blocks with the root last, and the read cap of the root.
        """
        if self._finished:
            raise ValueError("finish() called twice")
        self._finished = True
        out: list[tuple[bytes, bytes]] = []
        level = 0
        while level < len(self._levels) - 1:
            # Lower levels are never empty here: each got an entry right after being sealed.
            ref, key = self._seal(level, None, out)
            self._push(level + 1, ref, key, out)
            level += 1
        ref, key = self._seal(len(self._levels) - 1, self._size, out)
        return out, ReadCap(ref.block_id, key)

    def _push(self, level: int, ref: ChildRef, key: bytes, out: list[tuple[bytes, bytes]]) -> None:
        node = self._levels[level]
        if len(node.refs) == self._fanout:
            # This full node is not the root after all: seal it and hand it to the parent.
            if level + 1 == len(self._levels):
                if level + 1 > MAX_DEPTH:
                    raise ValueError(
                        f"file needs a tree deeper than {MAX_DEPTH}; raise the fanout or chunk size"
                    )
                self._levels.append(_Node())
            parent_ref, parent_key = self._seal(level, None, out)
            self._push(level + 1, parent_ref, parent_key, out)
            node = self._levels[level]
        node.refs.append(ref)
        node.keys.append(key)

    def _seal(
        self, level: int, size: int | None, out: list[tuple[bytes, bytes]]
    ) -> tuple[ChildRef, bytes]:
        node = self._levels[level]
        self._levels[level] = _Node()
        plaintext = encode_sealed(node.keys, size, self._kind)
        key = manifest_key(self._secret, plaintext)
        manifest = Manifest.build(
            level,
            self._chunk_size,
            self._fanout,
            self._redundancy,
            node.refs,
            encrypt(key, plaintext),
        )
        data = manifest.encode()
        block_id = sha256(data)
        out.append((block_id, data))
        return ChildRef(block_id, len(data)), key


def _drive(walk: FileWalk, fetch: Fetch) -> Iterator[DataRef | StripeRef]:
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(step.open(fetch(step.block_id)))
        else:
            yield step


class TreeReader:
    """Walk a file's manifest tree synchronously (tests, tools; the node walks asynchronously).

    Constructing it fetches, checks and opens the root; iterating (once) yields every data
    block as a :class:`DataRef` in file order, checking each manifest on the way (see
    :class:`~shoal.content.walk.FileWalk`). Open each block's bytes with ``ref.open(data)``.

    Attributes:
        info: The file's size, from the root.
        root: The decoded root manifest.
    """

    def __init__(self, root_cap: ReadCap, fetch: Fetch) -> None:
        """Fetch and open the root.

        Args:
            root_cap: The file's read cap.
            fetch: Returns the stored bytes of a block ID (raise ``NotFound`` if absent).

        Raises:
            CorruptBlock: The root does not match its CID.
            InvalidCapability: The cap's key does not open the (intact) root.
            IntegrityError: The root is malformed or not a file's root.
        """
        self._walk = FileWalk(root_cap)
        self._fetch = fetch
        need = self._walk.next()
        assert isinstance(need, NeedManifest)
        self._walk.feed(need.open(fetch(need.block_id)))
        assert self._walk.info is not None
        assert self._walk.root is not None
        self.info: FileInfo = self._walk.info
        self.root: Manifest = self._walk.root

    def __iter__(self) -> Iterator[DataRef | StripeRef]:
        return _drive(self._walk, self._fetch)


def iter_tree(root_cap: ReadCap, fetch: Fetch) -> Iterator[DataRef | StripeRef]:
    """Yield a file's data blocks in order; shorthand for ``iter(TreeReader(root_cap, fetch))``."""
    return iter(TreeReader(root_cap, fetch))


def walk_blocks(cid: bytes, fetch: Fetch) -> Iterator[BlockRef | Stripe]:
    """Yield every block of a file (manifests and data, root first) from its CID alone.

    This is what a verify cap allows: each manifest is fetched, hash-checked and decoded once,
    nothing is decrypted, and data blocks are yielded but not fetched (see
    :class:`~shoal.content.walk.BlockWalk`).
    """
    walk = BlockWalk(cid)
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(step.open(fetch(step.block_id)))
        else:
            yield step
