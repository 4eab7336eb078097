"""Manifest trees: building one as chunks are sealed, and opening one node by node.

How it works: data block entries fill a depth-0 node; a full node is sealed into a manifest
block and its reference (and key) becomes an entry one level up, and so on. ``finish`` seals the
partial nodes bottom up; the last block is the root, whose ID is the file's CID. Readers open
the root with the cap's key and each child with the key its parent holds, checking at every
node the hash, the depth, the stored size and that the plaintext sizes add up.
``open_root``/``open_child`` are the pure checks; ``TreeReader`` (synchronous) and the node's
async walker both use them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shoal.content.caps import ReadCap
from shoal.content.crypto import KEY_SIZE, TAG_SIZE, AuthenticationFailed, encrypt
from shoal.content.manifest import (
    DEFAULT_FANOUT,
    MANIFEST_VERSION,
    MAX_BLOCK_SIZE,
    MAX_CHILDREN,
    MAX_DEPTH,
    MAX_SIZE,
    ChildKey,
    ChildRef,
    FileInfo,
    Manifest,
    Redundancy,
    SealedPart,
    _encode_sealed,
    _is_int,
    load_manifest,
    manifest_key,
    open_manifest,
)
from shoal.errors import IntegrityError, InvalidCapability
from shoal.ids import ID_SIZE, encode_id, sha256

__all__ = [
    "ManifestBuilder",
    "TreeReader",
    "iter_tree",
    "open_child",
    "open_root",
    "walk_blocks",
]


def _check_sizes(part: SealedPart, expected_size: int) -> None:
    if sum(k.plaintext_size for k in part.keys) != expected_size:
        raise IntegrityError("manifest sizes do not add up to the size its parent gives")


def open_root(cap: ReadCap, data: bytes) -> tuple[Manifest, SealedPart, FileInfo]:
    """Check and open a file's root manifest block (hash, format, key, sizes)."""
    root = load_manifest(cap.cid, data)
    try:
        part = open_manifest(root, cap.key)
    except AuthenticationFailed:
        # The root is intact (its hash matched): the cap's key is not this file's key.
        raise InvalidCapability(
            "this cap's key does not open this file: check that the cap was copied whole"
        ) from None
    if part.info is None:
        raise IntegrityError("root manifest carries no file info: not a file's read cap")
    _check_sizes(part, part.info.size)
    return root, part, part.info


def open_child(
    parent: Manifest, ref: ChildRef, key: ChildKey, data: bytes
) -> tuple[Manifest, SealedPart]:
    """Check and open the child manifest ``ref`` of ``parent`` (depth > 0) from its bytes."""
    child = load_manifest(ref.block_id, data)
    if len(data) != ref.stored_size:
        raise IntegrityError(f"manifest block {encode_id(ref.block_id)} has wrong size")
    if child.depth != parent.depth - 1:
        raise IntegrityError(f"manifest block {encode_id(ref.block_id)} has wrong depth")
    part = open_manifest(child, key.key)
    if part.info is not None:
        raise IntegrityError(f"inner manifest {encode_id(ref.block_id)} carries file info")
    _check_sizes(part, key.plaintext_size)
    return child, part


@dataclass(slots=True)
class _Node:
    refs: list[ChildRef] = field(default_factory=list)
    keys: list[ChildKey] = field(default_factory=list)
    total: int = 0  # plaintext bytes below this node


class ManifestBuilder:
    """Build a file's manifest tree as its chunks are sealed, in bounded memory.

    Feed the sealed chunks in file order with :meth:`add`, store every block it returns, then call
    :meth:`finish`. Memory: one partial node per level. The same inputs always give the same
    blocks and the same cap.
    """

    def __init__(
        self, secret: bytes, *, redundancy: Redundancy | None = None, fanout: int = DEFAULT_FANOUT
    ) -> None:
        """Create a builder.

        Args:
            secret: The owner's 32-byte convergence secret (derives the manifest keys).
            redundancy: Recorded in every manifest; default: replicate, 3 copies.
            fanout: Children per manifest, 2..:data:`MAX_CHILDREN`.
        """
        if not isinstance(secret, bytes) or len(secret) != KEY_SIZE:
            raise ValueError(f"convergence secret must be {KEY_SIZE} bytes")
        if not _is_int(fanout) or not 2 <= fanout <= MAX_CHILDREN:
            raise ValueError(f"fanout must be 2..{MAX_CHILDREN}, got {fanout!r}")
        self._secret = secret
        self._redundancy = redundancy if redundancy is not None else Redundancy()
        self._fanout = fanout
        self._levels: list[_Node] = [_Node()]
        self._finished = False

    def add(
        self, block_id: bytes, stored_size: int, key: bytes, plaintext_size: int
    ) -> list[tuple[bytes, bytes]]:
        """Append the next data block of the file.

        Args:
            block_id: The sealed chunk's block ID.
            stored_size: Length of its stored bytes.
            key: Its chunk key.
            plaintext_size: Length of its plaintext.

        Returns:
            Manifest blocks completed by this entry, as ``(block_id, block_bytes)`` (often none).
        """
        if self._finished:
            raise ValueError("add() after finish()")
        if len(block_id) != ID_SIZE or len(key) != KEY_SIZE:
            raise ValueError("block id and key must be 32 bytes")
        if not 0 <= stored_size <= MAX_BLOCK_SIZE or not 0 <= plaintext_size <= MAX_SIZE:
            raise ValueError("sizes out of range")
        if self._redundancy.kind == "replicate" and stored_size != plaintext_size + TAG_SIZE:
            raise ValueError("a replicated data block stores plaintext + 16-byte tag")
        out: list[tuple[bytes, bytes]] = []
        self._push(0, ChildRef(block_id, stored_size), ChildKey(key, plaintext_size), out)
        return out

    def finish(self, info: FileInfo) -> tuple[list[tuple[bytes, bytes]], ReadCap]:
        """Seal the partial nodes bottom-up.

        Args:
            info: The file info, stored in the root only. ``info.size`` must equal the sum of the
                plaintext sizes added.

        Returns:
            The remaining blocks with the root last, and the read cap of the root.
        """
        if self._finished:
            raise ValueError("finish() called twice")
        if info.size != self._levels[0].total + sum(n.total for n in self._levels[1:]):
            raise ValueError("info.size differs from the sum of the chunk plaintext sizes")
        self._finished = True
        out: list[tuple[bytes, bytes]] = []
        level = 0
        while level < len(self._levels) - 1:
            # Lower levels are never empty here: each got an entry right after being sealed.
            ref, key = self._seal(level, None, out)
            self._push(level + 1, ref, key, out)
            level += 1
        top = len(self._levels) - 1
        ref, key = self._seal(top, info, out)
        return out, ReadCap(ref.block_id, key.key)

    def _push(
        self, level: int, ref: ChildRef, key: ChildKey, out: list[tuple[bytes, bytes]]
    ) -> None:
        node = self._levels[level]
        if len(node.refs) == self._fanout:
            # This full node is not the root after all: seal it and hand it to the parent.
            if level + 1 == len(self._levels):
                if level + 1 > MAX_DEPTH:
                    raise ValueError(f"file needs a tree deeper than {MAX_DEPTH}; raise the fanout")
                self._levels.append(_Node())
            parent_ref, parent_key = self._seal(level, None, out)
            self._push(level + 1, parent_ref, parent_key, out)
            node = self._levels[level]
        node.refs.append(ref)
        node.keys.append(key)
        node.total += key.plaintext_size

    def _seal(
        self, level: int, info: FileInfo | None, out: list[tuple[bytes, bytes]]
    ) -> tuple[ChildRef, ChildKey]:
        node = self._levels[level]
        self._levels[level] = _Node()
        plaintext = _encode_sealed(node.keys, info)
        key = manifest_key(self._secret, plaintext)
        manifest = Manifest(
            MANIFEST_VERSION, level, self._redundancy, tuple(node.refs), encrypt(key, plaintext)
        )
        data = manifest.encode()
        block_id = sha256(data)
        out.append((block_id, data))
        return ChildRef(block_id, len(data)), ChildKey(key, node.total)


class TreeReader:
    """Walk a file's manifest tree synchronously (tests, tools; the node walks asynchronously).

    Constructing it fetches, checks and opens the root; iterating yields every data block's
    ``(ChildRef, ChildKey)`` in file order, checking each manifest's hash, depth, sealed part
    and subtree size on the way.

    Attributes:
        info: The file info from the root.
        root: The decoded root manifest.
    """

    def __init__(self, root_cap: ReadCap, fetch: Callable[[bytes], bytes]) -> None:
        """Fetch and open the root.

        Args:
            root_cap: The file's read cap.
            fetch: Returns the stored bytes of a block ID (raise ``NotFound`` if absent).

        Raises:
            IntegrityError: The root is altered, malformed, or carries no file info.
        """
        self._fetch = fetch
        self.root, self._root_part, self.info = open_root(root_cap, fetch(root_cap.cid))

    def __iter__(self) -> Iterator[tuple[ChildRef, ChildKey]]:
        return self._walk(self.root, self._root_part)

    def _walk(self, manifest: Manifest, part: SealedPart) -> Iterator[tuple[ChildRef, ChildKey]]:
        for ref, key in zip(manifest.children, part.keys, strict=True):
            if manifest.depth == 0:
                yield ref, key
                continue
            child, child_part = open_child(manifest, ref, key, self._fetch(ref.block_id))
            yield from self._walk(child, child_part)


def iter_tree(
    root_cap: ReadCap, fetch: Callable[[bytes], bytes]
) -> Iterator[tuple[ChildRef, ChildKey]]:
    """Yield a file's data blocks in order; shorthand for ``iter(TreeReader(root_cap, fetch))``."""
    return iter(TreeReader(root_cap, fetch))


def walk_blocks(cid: bytes, fetch: Callable[[bytes], bytes]) -> Iterator[ChildRef]:
    """Yield every block of a file (manifests and data, root first) from its CID alone.

    This is what a verify cap allows: each manifest is hash-checked and decoded, nothing is
    decrypted. Data blocks are yielded but not fetched.
    """
    data = fetch(cid)
    yield ChildRef(cid, len(data))
    yield from _walk_plain(load_manifest(cid, data), fetch)


def _walk_plain(manifest: Manifest, fetch: Callable[[bytes], bytes]) -> Iterator[ChildRef]:
    for ref in manifest.children:
        yield ref
        if manifest.depth > 0:
            child = load_manifest(ref.block_id, fetch(ref.block_id))
            if child.depth != manifest.depth - 1:
                raise IntegrityError(f"manifest block {encode_id(ref.block_id)} has wrong depth")
            yield from _walk_plain(child, fetch)
