"""Walking a file's manifest tree without I/O: the one walker every reader drives.

How it works: a walk is a small state machine. ``next()`` returns what the caller must do next:

- a :class:`NeedManifest`: fetch that block, call its ``open(data)`` (pure and thread-safe, so
  the node runs it on its CPU pool; it checks the hash *first* and raises ``CorruptBlock`` only
  for a hash mismatch), and hand the result to ``feed()``;
- a :class:`DataRef` (:class:`FileWalk`) or :class:`BlockRef` (:class:`BlockWalk`): a block
  found by the walk, in order; for an erasure-coded file's data chunks, a :class:`StripeRef`
  (:class:`FileWalk`: the shares, key and place of a chunk) or a :class:`Stripe`
  (:class:`BlockWalk`: the shares only);
- ``None``: the walk is complete.

:class:`FileWalk` walks a read cap's tree in file order and yields each data block with its key,
plaintext size and file offset. It checks the tree's arithmetic as it goes, so a tree that lies
fails at the first lie with ``IntegrityError``: the root's sealed part gives the file size
(at most :data:`MAX_FILE_SIZE`); a node of depth d that covers B bytes must list exactly
``ceil(B / (chunk_size * fanout**d))`` children, every child but the last covering
``chunk_size * fanout**d`` bytes and the last the rest (so children's sizes always add up, and
no child is empty except in an empty file, which has no children); every child is one level
less deep and has the root's chunk size, fanout and redundancy; the root is as shallow as its
size allows (a root of depth > 0 has at least two children). The work and the bytes of a walk
are thus bounded by the size the root reports. Memory is bounded too: a stack of at most
``MAX_DEPTH + 1`` opened manifests, plus a small cache so that a child listed many times
(equal chunks dedupe, so this is legal) is fetched and decoded once.

:class:`BlockWalk` needs only the CID (what a verify cap allows: repair, dropping a local copy).
It opens no sealed part; it yields every manifest once (a subtree already walked is not walked
again, so a tree that lists one child 32,768 times at each level costs one visit per distinct
block) and the data blocks of each distinct depth-0 manifest, without repeats within that
manifest. Without the size it checks the shape instead: depths, chunk size and fanout as above,
and every child but the last of any node *full* (``fanout`` children, down to full chunks).
Memory: the stack, one ID set of at most ``fanout`` data blocks, and one small entry per
distinct manifest walked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shoal.content.caps import ReadCap
from shoal.content.crypto import TAG_SIZE, AuthenticationFailed, Buffer, decrypt, open_chunk
from shoal.content.erasure import ShareHeader, check_share, decode_shares, rebuild_shares
from shoal.content.erasure import stripe_id as _stripe_id
from shoal.content.manifest import (
    KIND_FILE,
    MAX_FILE_SIZE,
    Manifest,
    Redundancy,
    SealedPart,
    decode_named,
    open_sealed,
)
from shoal.errors import CorruptBlock, IntegrityError, InvalidCapability
from shoal.ids import ID_SIZE, encode_id, sha256

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "BlockRef",
    "BlockWalk",
    "DataRef",
    "FileInfo",
    "FileWalk",
    "NeedManifest",
    "OpenedManifest",
    "Stripe",
    "StripeRef",
]

DEFAULT_CACHE_SIZE = 4
"""Opened manifests a :class:`FileWalk` keeps for children listed more than once."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a file's root says about the file: its size in bytes (0..:data:`MAX_FILE_SIZE`)."""

    size: int


@dataclass(frozen=True, slots=True)
class DataRef:
    """A data block of a file, as a :class:`FileWalk` found it.

    Attributes:
        block_id: The block's ID.
        stored_size: Length of its stored bytes.
        key: Its chunk key (hidden from ``repr``).
        plaintext_size: Length of its plaintext.
        offset: Where its plaintext starts in the file.
    """

    block_id: bytes
    stored_size: int
    key: bytes = field(repr=False)
    plaintext_size: int
    offset: int

    def open(self, data: Buffer) -> bytes:
        """Check the block's bytes and decrypt them (pure; for a CPU pool).

        Raises:
            CorruptBlock: The bytes do not hash to ``block_id`` (checked first, hashed once).
            IntegrityError: The block is intact but its size or key is not what the manifest
                says.
        """
        return open_chunk(
            self.key,
            self.block_id,
            data,
            plaintext_size=self.plaintext_size,
            stored_size=self.stored_size,
        )


@dataclass(frozen=True, slots=True)
class Stripe:
    """An erasure-coded data chunk as its manifest lists it: ``n`` shares, any ``k`` rebuild it.

    Needs no key: what a keyless walk yields, and all that checking, counting and rebuilding
    shares takes (:mod:`shoal.content.erasure`).

    Attributes:
        share_ids: The ``n`` share IDs joined, in share order (``32 * n`` bytes).
        share_size: Length of each share's stored bytes.
        k: Shares needed to rebuild the chunk.
        n: Shares made.
    """

    share_ids: bytes
    share_size: int
    k: int
    n: int

    def share_id(self, index: int) -> bytes:
        """The ID of share ``index``."""
        return self.share_ids[index * ID_SIZE : (index + 1) * ID_SIZE]

    @property
    def ids(self) -> list[bytes]:
        """The share IDs, in share order."""
        return [self.share_id(i) for i in range(self.n)]

    @property
    def stripe_id(self) -> bytes:
        """The ID placement uses: share ``i`` goes to the ``i``-th closest node to it."""
        return _stripe_id(self.share_ids)

    def check_share(self, index: int, data: Buffer) -> ShareHeader:
        """Check fetched bytes of share ``index`` (pure; for a CPU pool): hash first.

        Raises:
            CorruptBlock: The bytes do not hash to the share's ID.
            IntegrityError: The share is intact but not what the manifest says.
        """
        return check_share(
            self.share_id(index), data, k=self.k, n=self.n, index=index, size=self.share_size
        )

    def rebuild(self, shares: Mapping[int, Buffer], wanted: Iterable[int]) -> dict[int, bytes]:
        """Rebuild shares ``wanted`` from ``k`` checked shares; each is checked against its ID.

        Raises:
            NotFound: Fewer than ``k`` shares given.
            IntegrityError: The shares do not rebuild the ones the manifest lists (the stripe
                was made wrong: every holder has the same bytes).
        """
        rebuilt = rebuild_shares(shares, self.k, self.n, wanted)
        for index, data in rebuilt.items():
            if sha256(data) != self.share_id(index):
                raise IntegrityError(
                    f"share {index} of stripe {encode_id(self.stripe_id)} rebuilt from the "
                    "others does not match its ID: the stripe's shares do not belong together"
                )
        return rebuilt


@dataclass(frozen=True, slots=True)
class StripeRef:
    """An erasure-coded data block of a file, as a :class:`FileWalk` found it.

    Attributes:
        stripe: Its shares.
        key: Its chunk key (hidden from ``repr``).
        plaintext_size: Length of its plaintext.
        offset: Where its plaintext starts in the file.
    """

    stripe: Stripe
    key: bytes = field(repr=False)
    plaintext_size: int
    offset: int

    def open(self, shares: Mapping[int, Buffer]) -> bytes:
        """Decode ``k`` checked shares and decrypt the chunk (pure; for a CPU pool).

        Raises:
            NotFound: Fewer than ``k`` shares given.
            IntegrityError: The shares do not decode to a chunk of the size the manifest says
                that the key opens.
        """
        stripe = self.stripe
        data = decode_shares(shares, stripe.k, stripe.n)
        name = encode_id(stripe.stripe_id)
        if len(data) != self.plaintext_size + TAG_SIZE:
            raise IntegrityError(
                f"stripe {name} decodes to {len(data)} bytes, its manifest says "
                f"{self.plaintext_size + TAG_SIZE}"
            )
        try:
            return decrypt(self.key, data)
        except AuthenticationFailed:
            raise IntegrityError(
                f"stripe {name} is intact but the key its manifest gives does not open it"
            ) from None


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block of a file, as a :class:`BlockWalk` found it (``manifest``: is it one)."""

    block_id: bytes
    stored_size: int
    manifest: bool


@dataclass(frozen=True, slots=True)
class _Expect:
    """What the parent (or the cap) says a manifest must be."""

    root: bool
    key: bytes | None = field(default=None, repr=False)  # None: a keyless walk
    depth: int = 0
    chunk_size: int = 0
    redundancy: Redundancy | None = None  # below the root: the parent's (every manifest alike)
    fanout: int = 0
    stored_size: int | None = None  # None at the root: nothing lists it
    size: int = 0  # keyed walks, below the root: the bytes it covers
    offset: int = 0  # keyed walks: the file offset of its first byte
    kind: str = KIND_FILE  # at the root of a keyed walk: the object kind it must be
    must_be_full: bool = False  # keyless walks: a non-last child, or below one
    is_last: bool = False  # keyless walks: the last child of its parent


@dataclass(frozen=True, slots=True)
class OpenedManifest:
    """What :meth:`NeedManifest.open` returns, to be fed back to the walk that asked."""

    need: NeedManifest
    manifest: Manifest
    part: SealedPart | None  # None in a keyless walk
    stored_size: int


@dataclass(frozen=True, eq=False, slots=True)
class NeedManifest:
    """The walk needs manifest block ``block_id``: fetch it, ``open`` it, ``feed`` the result."""

    block_id: bytes
    expect: _Expect = field(repr=False)

    def open(self, data: Buffer) -> OpenedManifest:
        """Check and open the manifest's bytes (pure and thread-safe; for a CPU pool).

        Raises:
            CorruptBlock: The bytes do not hash to ``block_id`` (checked first: the only error
                that says anything about the bytes held, so the only one worth another holder).
            InvalidCapability: The root is intact but the cap's key does not open it.
            IntegrityError: The block is intact but is not what its parent (or the cap) says:
                malformed, wrong size, depth or shape, or a key that does not open it.
        """
        if sha256(data) != self.block_id:
            raise CorruptBlock(
                f"manifest block {encode_id(self.block_id)} does not match its hash; "
                "fetch it from another peer"
            )
        size = memoryview(data).nbytes
        expect = self.expect
        if expect.stored_size is not None and size != expect.stored_size:
            raise IntegrityError(
                f"manifest block {encode_id(self.block_id)} is {size} bytes, "
                f"its parent says {expect.stored_size}"
            )
        manifest = decode_named(self.block_id, data)
        if expect.key is None:
            _check_unkeyed(self.block_id, manifest, expect)
            return OpenedManifest(self, manifest, None, size)
        if not expect.root:
            # The parent's claims are checked before any decryption: the first lie fails first.
            _check_fit(self.block_id, manifest, expect)
        try:
            part = open_sealed(manifest, expect.key, root=expect.root, kind=expect.kind)
        except AuthenticationFailed:
            if expect.root:
                # The root is intact (its hash matched): the cap's key is not this file's key.
                raise InvalidCapability(
                    "this cap's key does not open this file: check that the cap was copied whole"
                ) from None
            raise IntegrityError(
                f"manifest block {encode_id(self.block_id)} is intact but the key its parent "
                "gives does not open it"
            ) from None
        except IntegrityError as exc:
            raise IntegrityError(f"manifest block {encode_id(self.block_id)}: {exc}") from None
        if expect.root:
            assert part.size is not None  # open_sealed(root=True) always gives the size
            _check_shape(self.block_id, manifest, part.size)
            _check_root_depth(self.block_id, manifest)
        return OpenedManifest(self, manifest, part, size)


def _child_span(manifest: Manifest) -> int:
    """Bytes covered by each child but the last of ``manifest``."""
    span: int = manifest.chunk_size * manifest.fanout**manifest.depth
    return span


def _check_shape(block_id: bytes, manifest: Manifest, size: int) -> None:
    """``manifest`` must list exactly the children that ``size`` bytes below it need."""
    span = _child_span(manifest)
    needed = -(-size // span)
    count = manifest.child_count
    if count != needed:
        raise IntegrityError(
            f"manifest block {encode_id(block_id)} lists {count} children where the "
            f"{size} bytes below it need {needed}"
        )
    if manifest.depth == 0 and count:
        last = manifest.redundancy.data_size(size - (count - 1) * span)
        if manifest.stored_sizes[-1] != last:
            raise IntegrityError(
                f"manifest block {encode_id(block_id)}: its last data block is "
                f"{manifest.stored_sizes[-1]} bytes where the file's size needs {last}"
            )


def _check_root_depth(block_id: bytes, manifest: Manifest) -> None:
    if manifest.depth > 0 and manifest.child_count < 2:
        raise IntegrityError(
            f"manifest block {encode_id(block_id)} is a root of depth {manifest.depth} with one "
            "child: a file's tree is never deeper than its size needs"
        )


def _check_level(block_id: bytes, manifest: Manifest, expect: _Expect) -> None:
    if expect.redundancy is not None and manifest.redundancy != expect.redundancy:
        raise IntegrityError(
            f"manifest block {encode_id(block_id)} does not fit its parent: redundancy "
            f"{manifest.redundancy}, expected {expect.redundancy}"
        )
    if (manifest.depth, manifest.chunk_size, manifest.fanout) != (
        expect.depth,
        expect.chunk_size,
        expect.fanout,
    ):
        raise IntegrityError(
            f"manifest block {encode_id(block_id)} does not fit its parent: depth "
            f"{manifest.depth}, chunk size {manifest.chunk_size}, fanout {manifest.fanout}; "
            f"expected {expect.depth}, {expect.chunk_size}, {expect.fanout}"
        )


def _check_fit(block_id: bytes, manifest: Manifest, expect: _Expect) -> None:
    """A keyed walk's checks of a child manifest against what its parent says (O(1))."""
    _check_level(block_id, manifest, expect)
    _check_shape(block_id, manifest, expect.size)


def _is_full(manifest: Manifest) -> bool:
    """Whether a depth-0 manifest is full: ``fanout`` full chunks."""
    count = manifest.child_count
    return count == manifest.fanout and manifest.stored_sizes[-1] == (
        manifest.redundancy.data_size(manifest.chunk_size)
    )


def _check_unkeyed(block_id: bytes, manifest: Manifest, expect: _Expect) -> None:
    """A keyless walk's checks of a manifest: level, fullness, and the root's size bound."""
    if expect.root:
        _check_root_depth(block_id, manifest)
        if manifest.child_count:
            # The file holds at least one byte more than all children but the last cover.
            smallest = (manifest.child_count - 1) * _child_span(manifest) + 1
            if smallest > MAX_FILE_SIZE:
                raise IntegrityError(
                    f"manifest block {encode_id(block_id)} describes a file larger than "
                    f"{MAX_FILE_SIZE} bytes"
                )
        return
    _check_level(block_id, manifest, expect)
    if expect.must_be_full and manifest.child_count != manifest.fanout:
        raise IntegrityError(_not_full(block_id))
    if expect.must_be_full and manifest.depth == 0 and not _is_full(manifest):
        raise IntegrityError(_not_full(block_id))


def _not_full(block_id: bytes) -> str:
    return (
        f"manifest block {encode_id(block_id)} is not full although a later part of the file "
        "follows it"
    )


@dataclass(slots=True)
class _FileFrame:
    manifest: Manifest
    part: SealedPart
    size: int
    offset: int
    span: int
    index: int = 0


@dataclass(frozen=True, slots=True)
class _Cached:
    manifest: Manifest
    part: SealedPart
    stored_size: int


class FileWalk:
    """File-order walk of a read cap's tree; see the module docstring for the protocol.

    Attributes:
        info: The file's size, once the root has been fed (None before).
        root: The decoded root manifest, once fed.
    """

    def __init__(
        self, cap: ReadCap, *, cache_size: int = DEFAULT_CACHE_SIZE, kind: str = KIND_FILE
    ) -> None:
        """Start a walk at ``cap``'s root; the first step is a :class:`NeedManifest` for it.

        ``kind`` is the object kind the root must be: ``"file"``, or ``"dir"`` to read a
        directory's listing (its bytes are walked exactly like a file's).
        """
        self._pending: NeedManifest | None = NeedManifest(
            cap.cid, _Expect(root=True, key=cap.key, kind=kind)
        )
        self._stack: list[_FileFrame] = []
        self._cache: OrderedDict[tuple[bytes, bytes], _Cached] = OrderedDict()
        self._cache_size = cache_size
        self.info: FileInfo | None = None
        self.root: Manifest | None = None

    def next(self) -> NeedManifest | DataRef | StripeRef | None:
        """The next step: a manifest to fetch (until fed, the same one), a data block, or None."""
        if self._pending is not None:
            return self._pending
        stack = self._stack
        while stack:
            frame = stack[-1]
            manifest = frame.manifest
            index, count = frame.index, manifest.child_count
            if index == count:
                stack.pop()
                continue
            frame.index = index + 1
            span = frame.span
            size = span if index < count - 1 else frame.size - (count - 1) * span
            offset = frame.offset + index * span
            block_id = manifest.child_id(index)
            stored = manifest.stored_sizes[index]
            key = frame.part.key(index)
            if manifest.stripes:
                r = manifest.redundancy
                return StripeRef(Stripe(block_id, stored, r.k, r.n), key, size, offset)
            if manifest.depth == 0:
                return DataRef(block_id, stored, key, size, offset)
            expect = _Expect(
                root=False,
                key=key,
                depth=manifest.depth - 1,
                chunk_size=manifest.chunk_size,
                redundancy=manifest.redundancy,
                fanout=manifest.fanout,
                stored_size=stored,
                size=size,
                offset=offset,
            )
            cached = self._cache.get((block_id, key))
            if cached is None:
                self._pending = NeedManifest(block_id, expect)
                return self._pending
            self._cache.move_to_end((block_id, key))
            if cached.stored_size != stored:
                raise IntegrityError(
                    f"manifest block {encode_id(block_id)} is {cached.stored_size} bytes, "
                    f"its parent says {stored}"
                )
            _check_fit(block_id, cached.manifest, expect)
            self._push(cached.manifest, cached.part, expect)
        return None

    def feed(self, opened: OpenedManifest) -> None:
        """Take the opened manifest that the pending :class:`NeedManifest` asked for."""
        need = self._pending
        if need is None or opened.need is not need or opened.part is None:
            raise ValueError("feed() takes what open() of the pending NeedManifest returned")
        self._pending = None
        expect = need.expect
        if expect.root:
            assert opened.part.size is not None
            self.info = FileInfo(opened.part.size)
            self.root = opened.manifest
            expect = _Expect(root=True, size=opened.part.size)
        elif self._cache_size > 0:
            assert expect.key is not None  # a FileWalk's needs always carry the key
            self._cache[(need.block_id, expect.key)] = _Cached(
                opened.manifest, opened.part, opened.stored_size
            )
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._push(opened.manifest, opened.part, expect)

    def _push(self, manifest: Manifest, part: SealedPart, expect: _Expect) -> None:
        self._stack.append(
            _FileFrame(manifest, part, expect.size, expect.offset, _child_span(manifest))
        )


@dataclass(slots=True)
class _BlockFrame:
    block_id: bytes
    manifest: Manifest
    must_be_full: bool
    is_last: bool  # the last child of its parent: its fullness decides the parent's
    data_seen: set[bytes] | None
    index: int = 0
    last_child_full: bool = False


_WALKING = -1  # a manifest on the stack (seen, not finished)


class BlockWalk:
    """Keyless walk from a CID: every manifest once, and the data blocks each lists.

    See the module docstring for the protocol and the checks.
    """

    def __init__(self, cid: bytes) -> None:
        """Start a walk at the root ``cid``; the first step is a :class:`NeedManifest` for it."""
        self._pending: NeedManifest | None = NeedManifest(cid, _Expect(root=True))
        self._ready: BlockRef | None = None
        self._stack: list[_BlockFrame] = []
        # Each distinct manifest walked: depth << 1 | full, or _WALKING.
        self._seen: dict[bytes, int] = {}

    def next(self) -> NeedManifest | BlockRef | Stripe | None:
        """The next step: a manifest to fetch (until fed, the same one), a block, or None."""
        if self._pending is not None:
            return self._pending
        if self._ready is not None:
            ready, self._ready = self._ready, None
            return ready
        stack = self._stack
        while stack:
            frame = stack[-1]
            manifest = frame.manifest
            index, count = frame.index, manifest.child_count
            if index == count:
                self._finish(stack.pop())
                continue
            frame.index = index + 1
            block_id = manifest.child_id(index)
            stored = manifest.stored_sizes[index]
            if frame.data_seen is not None:
                if block_id not in frame.data_seen:
                    frame.data_seen.add(block_id)
                    if manifest.stripes:
                        r = manifest.redundancy
                        return Stripe(block_id, stored, r.k, r.n)
                    return BlockRef(block_id, stored, manifest=False)
                continue
            is_last = index == count - 1
            must_be_full = frame.must_be_full or not is_last
            known = self._seen.get(block_id)
            if known is None:
                self._pending = NeedManifest(
                    block_id,
                    _Expect(
                        root=False,
                        depth=manifest.depth - 1,
                        chunk_size=manifest.chunk_size,
                        redundancy=manifest.redundancy,
                        fanout=manifest.fanout,
                        stored_size=stored,
                        must_be_full=must_be_full,
                        is_last=is_last,
                    ),
                )
                return self._pending
            # Walked before: check it fits here too, without walking it again.
            if known == _WALKING or known >> 1 != manifest.depth - 1:
                raise IntegrityError(
                    f"manifest block {encode_id(block_id)} appears at two depths of one tree"
                )
            full = bool(known & 1)
            if must_be_full and not full:
                raise IntegrityError(_not_full(block_id))
            if is_last:
                frame.last_child_full = full
        return None

    def _finish(self, frame: _BlockFrame) -> None:
        manifest = frame.manifest
        if manifest.depth == 0:
            full = _is_full(manifest)
        else:
            full = manifest.child_count == manifest.fanout and frame.last_child_full
        self._seen[frame.block_id] = manifest.depth << 1 | full
        if frame.must_be_full and not full:
            raise IntegrityError(_not_full(frame.block_id))
        if frame.is_last and self._stack:
            self._stack[-1].last_child_full = full

    def feed(self, opened: OpenedManifest) -> None:
        """Take the opened manifest that the pending :class:`NeedManifest` asked for."""
        need = self._pending
        if need is None or opened.need is not need:
            raise ValueError("feed() takes what open() of the pending NeedManifest returned")
        self._pending = None
        manifest = opened.manifest
        self._seen[need.block_id] = _WALKING
        self._stack.append(
            _BlockFrame(
                need.block_id,
                manifest,
                must_be_full=need.expect.must_be_full,
                is_last=need.expect.is_last,
                data_seen=set() if manifest.depth == 0 else None,
            )
        )
        self._ready = BlockRef(need.block_id, opened.stored_size, manifest=True)
