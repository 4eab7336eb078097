"""Manifests: the blocks that describe a file's bytes, in a tree when the file is large.

How it works: a manifest is a msgpack map with a plaintext *verify part* (format version, depth,
the file's chunk size and fanout, redundancy, and for each child its block ID and stored size)
and a *sealed part*: the AES-256-GCM ciphertext of another msgpack map that holds each child's
key and, at the root only, the object kind (``"file"``) and the file's size. Nothing else: no
name, media type or time, so the same bytes of one owner (same chunk size, fanout and
redundancy) always give the same blocks and the same cap. Any node can walk, check and repair a
file from the verify parts alone; only a holder of the root key can read it. The sealed part is
encrypted like a chunk, under a convergent key derived from its own plaintext (another PRF
label).

A manifest of depth 0 lists data blocks; one of depth d > 0 lists manifests of depth d - 1.
Children's plaintext sizes are not stored: the tree's shape fixes them (every child but the last
of a depth-d node covers exactly ``chunk_size * fanout**d`` bytes), and readers check the shape
as they go (:mod:`shoal.content.walk`).

Decoding reads exactly the canonical encoding that :meth:`Manifest.encode` writes, with
:mod:`shoal.content.codec`: bounded, without recursion, never echoing a value. This module checks
what one manifest can say about itself; the walk checks how manifests fit together. The
byte-exact format is in ``docs/content-format.md``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shoal import defaults
from shoal.content.codec import Malformed, Reader
from shoal.content.crypto import (
    KEY_SIZE,
    MANIFEST_KEY_LABEL,
    TAG_SIZE,
    Buffer,
    decrypt,
    keyed_digest,
)
from shoal.content.erasure import MAX_SHARES, share_size
from shoal.errors import CorruptBlock, IntegrityError
from shoal.ids import ID_SIZE, encode_id, sha256

__all__ = [
    "DEFAULT_FANOUT",
    "KIND_DIRECTORY",
    "KIND_FILE",
    "MANIFEST_VERSION",
    "MAX_BLOCK_SIZE",
    "MAX_CHILDREN",
    "MAX_CHUNK_SIZE",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "MAX_MANIFEST_SIZE",
    "MAX_REPLICAS",
    "MAX_SHARES",
    "REDUNDANCY_REPLICATE",
    "REDUNDANCY_ZFEC",
    "ChildRef",
    "Manifest",
    "Redundancy",
    "SealedPart",
    "encode_sealed",
    "load_manifest",
    "manifest_key",
    "open_sealed",
]

MANIFEST_VERSION = 2
"""Format version of every manifest this code writes and the only one it reads."""

MAX_DEPTH = 8
"""Deepest root: with the default chunk size and fanout, depth 1 already covers 256 TiB."""

MAX_CHILDREN = 32768
"""Largest fanout: a full manifest is then about 2.4 MB, well under :data:`MAX_BLOCK_SIZE`."""

MAX_BLOCK_SIZE = 4 << 20
"""Largest stored block, data or manifest (a block travels in one frame)."""

MAX_MANIFEST_SIZE = MAX_BLOCK_SIZE

MAX_CHUNK_SIZE = MAX_BLOCK_SIZE - TAG_SIZE
"""Largest chunk size: its data block (plaintext + tag) must fit in a block."""

MAX_FILE_SIZE = 1 << 50
"""Largest file (1 PiB). Bounds what a root may claim, so a get's work is bounded too."""

MAX_REPLICAS = 255

DEFAULT_FANOUT = defaults.MANIFEST_FANOUT

KIND_FILE = "file"
"""Object kind of a file's root (the sealed ``"t"`` field)."""

KIND_DIRECTORY = "dir"
"""Object kind of a directory's root: its bytes are a listing (:mod:`shoal.content.directory`)."""

_KIND_WORDS = {KIND_FILE: "a file", KIND_DIRECTORY: "a directory (a folder)"}

# Map keys in their fixstr encoding; the encoder writes them in exactly this order.
_K = {name: msgpack.packb(name) for name in ("v", "d", "z", "f", "r", "c", "s", "t", "k", "n")}
_MANIFEST_FIELDS = 7
_ROOT_FIELDS = 3
_INNER_FIELDS = 1
REDUNDANCY_REPLICATE = "replicate"
REDUNDANCY_ZFEC = "zfec"
_REDUNDANCY_KINDS = {REDUNDANCY_REPLICATE: 2, REDUNDANCY_ZFEC: 3}  # kind -> fields in its map
_MIN_CHILD_ENTRY = 36  # 0x92, 0xc4 0x20, 32-byte id, a 1-byte uint
_MIN_KEY_ENTRY = 34  # 0xc4 0x20, 32-byte key
# Bounds on one erasure-coded data child's bytes in a manifest: its entry
# (0x92, bin8/bin16 header, n IDs, uint32 share size) and its key in the sealed part, and on
# everything else a depth-0 manifest holds; so a full one fits in a block (max_fanout).
_STRIPE_ENTRY_OVERHEAD = 1 + 3 + 5 + _MIN_KEY_ENTRY
_MANIFEST_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class Redundancy:
    """How a manifest's children are kept.

    ``kind="replicate"``: every child block has ``replicas`` copies on distinct nodes.
    ``kind="zfec"``: every data chunk becomes ``n`` shares on ``n`` distinct nodes, any ``k`` of
    which rebuild it (:mod:`shoal.content.erasure`); manifests are replicated with
    ``replicas = n - k + 1`` copies, so they survive as many losses as a stripe. Make one with
    :meth:`replicate` or :meth:`erasure`.
    """

    kind: str = REDUNDANCY_REPLICATE
    replicas: int = defaults.REPLICAS
    k: int = 0
    n: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _REDUNDANCY_KINDS:
            raise ValueError(f"unsupported redundancy kind {self.kind!r}")
        if type(self.replicas) is not int or not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, got {self.replicas!r}")
        if self.kind == REDUNDANCY_ZFEC:
            if type(self.k) is not int or type(self.n) is not int:
                raise ValueError("k and n must be integers")
            if not 1 <= self.k < self.n <= MAX_SHARES:
                raise ValueError(
                    f"erasure coding needs 1 <= k < n <= {MAX_SHARES}, got {self.k}-of-{self.n}"
                )
            if self.replicas != self.n - self.k + 1:
                raise ValueError("a zfec file's manifests have n - k + 1 copies")
        elif (self.k, self.n) != (0, 0):
            raise ValueError("k and n are for kind 'zfec' only")

    @classmethod
    def replicate(cls, replicas: int = defaults.REPLICAS) -> Redundancy:
        """``replicas`` copies of every block."""
        return cls(REDUNDANCY_REPLICATE, replicas)

    @classmethod
    def erasure(cls, k: int, n: int) -> Redundancy:
        """``k``-of-``n`` zfec shares of every data chunk; manifests with n - k + 1 copies."""
        replicas = n - k + 1 if type(k) is int and type(n) is int and 1 <= k < n else 1
        return cls(REDUNDANCY_ZFEC, replicas, k, n)

    @classmethod
    def parse_erasure(cls, text: str) -> Redundancy:
        """Parse ``"K-of-N"`` (e.g. ``"3-of-5"``).

        Raises:
            ValueError: Not of that form, or out of range; the message says what is expected.
        """
        parts = text.strip().lower().split("-of-")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
            raise ValueError(
                f"erasure coding is written K-of-N, e.g. 3-of-5 (N at most {MAX_SHARES})"
            )
        return cls.erasure(int(parts[0]), int(parts[1]))

    @property
    def is_erasure(self) -> bool:
        """Whether data chunks are erasure-coded (else replicated)."""
        return self.kind == REDUNDANCY_ZFEC

    @property
    def wanted(self) -> int:
        """Copies (replicate) or shares (zfec) each data chunk should have: R or N."""
        return self.n if self.is_erasure else self.replicas

    @property
    def max_fanout(self) -> int:
        """Largest fanout whose full manifests fit in a block (only erasure lowers it)."""
        if not self.is_erasure:
            return MAX_CHILDREN
        per_child = _STRIPE_ENTRY_OVERHEAD + ID_SIZE * self.n
        return min(MAX_CHILDREN, (MAX_MANIFEST_SIZE - _MANIFEST_OVERHEAD) // per_child)

    def data_size(self, plaintext_size: int) -> int:
        """The stored size a data child of ``plaintext_size`` bytes has in a manifest entry:
        the block (plaintext + tag) when replicated, each share's when erasure-coded."""
        if self.is_erasure:
            return share_size(plaintext_size + TAG_SIZE, self.k)
        return plaintext_size + TAG_SIZE

    def __str__(self) -> str:
        if self.is_erasure:
            return f"{self.k}-of-{self.n}"
        return f"{self.replicas} replicas"

    def to_json(self) -> dict[str, Any]:
        """What the APIs show: ``{"kind": "replicate", "replicas": R}`` or
        ``{"kind": "erasure", "k": K, "n": N, "replicas": N - K + 1}``."""
        if self.is_erasure:
            return {"kind": "erasure", "k": self.k, "n": self.n, "replicas": self.replicas}
        return {"kind": REDUNDANCY_REPLICATE, "replicas": self.replicas}

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map form."""
        if self.is_erasure:
            return {"t": self.kind, "k": self.k, "n": self.n}
        return {"t": self.kind, "r": self.replicas}


@dataclass(frozen=True, slots=True)
class ChildRef:
    """Verify-part entry: a child block's ID and the size of its stored bytes."""

    block_id: bytes
    stored_size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """One manifest block: the plaintext verify part plus the sealed blob.

    Children are kept compactly (one ``bytes`` of IDs, one array of sizes), so a decoded
    32,768-child manifest takes about as much memory as its block.

    Attributes:
        depth: 0 if the children are data blocks, else they are manifests of depth - 1.
        chunk_size: Plaintext bytes of every chunk of the file but the last.
        fanout: Children of every full manifest of the file.
        redundancy: How the children are kept.
        child_ids: The children's block IDs, 32 bytes each, in file order; for the data
            children of an erasure-coded file (depth 0), ``n`` share IDs (``32 * n`` bytes,
            in share order) per child.
        stored_sizes: The children's stored sizes, same order (each share's size for the data
            children of an erasure-coded file).
        sealed: AES-256-GCM ciphertext of the sealed part.
    """

    depth: int
    chunk_size: int
    fanout: int
    redundancy: Redundancy
    child_ids: bytes = field(repr=False)
    stored_sizes: array[int] = field(repr=False)
    sealed: bytes = field(repr=False)

    @property
    def child_count(self) -> int:
        """Number of children."""
        return len(self.stored_sizes)

    @property
    def stripes(self) -> bool:
        """Whether the children are erasure-coded stripes (an erasure-coded file's depth 0)."""
        return self.depth == 0 and self.redundancy.is_erasure

    @property
    def id_width(self) -> int:
        """Bytes of IDs per child: 32, or ``32 * n`` for stripes (:attr:`stripes`)."""
        return ID_SIZE * self.redundancy.n if self.stripes else ID_SIZE

    def child_id(self, index: int) -> bytes:
        """Block ID of child ``index`` (for a stripe: its ``n`` share IDs joined)."""
        width = self.id_width
        return self.child_ids[index * width : (index + 1) * width]

    @property
    def children(self) -> tuple[ChildRef, ...]:
        """Every child as a :class:`ChildRef` (builds one object per child: for tools, tests)."""
        return tuple(ChildRef(self.child_id(i), s) for i, s in enumerate(self.stored_sizes))

    @classmethod
    def build(
        cls,
        depth: int,
        chunk_size: int,
        fanout: int,
        redundancy: Redundancy,
        children: list[ChildRef] | tuple[ChildRef, ...],
        sealed: bytes,
    ) -> Manifest:
        """Make a manifest from a list of children (no validation: :meth:`decode` does that)."""
        return cls(
            depth,
            chunk_size,
            fanout,
            redundancy,
            b"".join(c.block_id for c in children),
            array("L", (c.stored_size for c in children)),
            sealed,
        )

    def encode(self) -> bytes:
        """The block bytes: a msgpack map with keys ``v d z f r c s`` in that order."""
        ids, width = self.child_ids, self.id_width
        packed: bytes = msgpack.packb(
            {
                "v": MANIFEST_VERSION,
                "d": self.depth,
                "z": self.chunk_size,
                "f": self.fanout,
                "r": self.redundancy.to_wire(),
                "c": [
                    [ids[i * width : (i + 1) * width], size]
                    for i, size in enumerate(self.stored_sizes)
                ],
                "s": self.sealed,
            },
            use_bin_type=True,
        )
        return packed

    @classmethod
    def decode(cls, data: Buffer) -> Manifest:
        """Parse a manifest block and check what it says about itself (no hash check).

        Checked here: the canonical encoding, every field's type and range, at most ``fanout``
        children (and at least one in an inner manifest, depth > 0), and at depth 0 that every
        data block holds at least 1 byte and every one but the last a full chunk. How
        manifests fit together is the walk's job.

        Raises:
            IntegrityError: The bytes are not a valid version-2 manifest; the message says why.
        """
        raw = data if isinstance(data, bytes) else bytes(data)
        if len(raw) > MAX_MANIFEST_SIZE:
            raise IntegrityError(f"manifest larger than {MAX_MANIFEST_SIZE} bytes")
        try:
            return _decode(Reader(raw))
        except Malformed as exc:
            raise IntegrityError(f"malformed manifest: {exc}") from None


def _decode(reader: Reader) -> Manifest:
    what = "manifest"
    fields = reader.map_header(what)
    reader.key(_K["v"], "v", what)
    version = reader.uint("manifest version", 0, (1 << 64) - 1)
    if version != MANIFEST_VERSION:
        raise IntegrityError(_version_problem(version))
    if fields != _MANIFEST_FIELDS:
        raise Malformed(f"{what}: {fields} fields, expected {_MANIFEST_FIELDS}")
    reader.key(_K["d"], "d", what)
    depth = reader.uint("depth", 0, MAX_DEPTH)
    reader.key(_K["z"], "z", what)
    chunk_size = reader.uint("chunk size", 1, MAX_CHUNK_SIZE)
    reader.key(_K["f"], "f", what)
    fanout = reader.uint("fanout", 2, MAX_CHILDREN)
    reader.key(_K["r"], "r", what)
    redundancy = _decode_redundancy(reader)
    if fanout > redundancy.max_fanout:
        raise Malformed(
            f"fanout {fanout} is larger than {redundancy.max_fanout}, the most whose manifests "
            f"fit in a block with {redundancy.n} shares per chunk"
        )
    reader.key(_K["c"], "c", what)
    full = redundancy.data_size(chunk_size)
    if depth == 0 and redundancy.is_erasure:
        count = reader.array_header("children", fanout, ID_SIZE * redundancy.n + 4)
        child_ids, stored_sizes = _stripe_entries(reader, count, redundancy.n, full)
    else:
        count = reader.array_header("children", fanout, _MIN_CHILD_ENTRY)
        high = full if depth == 0 else MAX_MANIFEST_SIZE
        child_ids, stored_sizes = reader.id_size_pairs("children", count, high)
    reader.key(_K["s"], "s", what)
    sealed = reader.bin("sealed part", TAG_SIZE, MAX_MANIFEST_SIZE)
    reader.expect_end(what)
    if depth > 0 and count == 0:
        raise Malformed("an inner manifest (depth > 0) must have children")
    if depth == 0 and count:
        if min(stored_sizes) < redundancy.data_size(1):
            raise Malformed("a data block of 0 bytes: a file's chunks are never empty")
        if stored_sizes[:-1].count(full) != count - 1:
            raise Malformed("a data block other than the last is not a full chunk")
    return Manifest(depth, chunk_size, fanout, redundancy, child_ids, stored_sizes, sealed)


def _stripe_entries(reader: Reader, count: int, n: int, high: int) -> tuple[bytes, array[int]]:
    """``count`` entries ``[bin(32 * n): the share IDs, uint 1..high: each share's size]``."""
    width = ID_SIZE * n
    ids = bytearray()
    sizes: array[int] = array("L")
    for index in range(count):
        what = f"child {index}"
        if reader.array_header(what, 2, 1) != 2:
            raise Malformed(f"{what}: expected [share ids, share size]")
        ids += reader.bin(f"{what} share ids", width, width)
        sizes.append(reader.uint(f"{what} share size", 1, high))
    return bytes(ids), sizes


def _version_problem(version: int) -> str:
    if version == 1:
        return (
            "manifest format version 1 is a pre-release format that this Shoal no longer "
            "reads; store the file again to get a version-2 cap"
        )
    if version > MANIFEST_VERSION:
        return (
            f"manifest format version {version} is newer than this Shoal reads "
            f"({MANIFEST_VERSION}); a newer Shoal may be needed"
        )
    return f"unknown manifest format version {version}"


def _decode_redundancy(reader: Reader) -> Redundancy:
    what = "redundancy"
    fields = reader.map_header(what)
    reader.key(_K["t"], "t", what)
    kind = reader.short_str("redundancy kind")
    if kind not in _REDUNDANCY_KINDS:
        # Only a name from our own table is ever shown, never the untrusted string.
        raise Malformed("unsupported redundancy kind; a newer Shoal may be needed")
    if fields != _REDUNDANCY_KINDS[kind]:
        raise Malformed(f"{what}: {fields} fields, expected {_REDUNDANCY_KINDS[kind]}")
    if kind == REDUNDANCY_ZFEC:
        reader.key(_K["k"], "k", what)
        k = reader.uint("k", 1, MAX_SHARES - 1)
        reader.key(_K["n"], "n", what)
        n = reader.uint("n", k + 1, MAX_SHARES)
        return Redundancy.erasure(k, n)
    reader.key(_K["r"], "r", what)
    replicas = reader.uint("replicas", 1, MAX_REPLICAS)
    return Redundancy(kind, replicas)


def load_manifest(block_id: bytes, data: Buffer) -> Manifest:
    """Check a fetched manifest block against its ID (first), then decode it.

    Raises:
        CorruptBlock: The bytes do not hash to ``block_id``.
        IntegrityError: The (intact) block is not a valid manifest.
    """
    if sha256(data) != block_id:
        raise CorruptBlock(
            f"manifest block {encode_id(block_id)} does not match its hash; "
            "fetch it from another peer"
        )
    return decode_named(block_id, data)


def decode_named(block_id: bytes, data: Buffer) -> Manifest:
    """:meth:`Manifest.decode`, with the block's ID in any error message (no hash check)."""
    try:
        return Manifest.decode(data)
    except IntegrityError as exc:
        raise IntegrityError(f"manifest block {encode_id(block_id)}: {exc}") from None


def manifest_key(secret: bytes, sealed_plaintext: Buffer) -> bytes:
    """Convergent key of a manifest's sealed part (like chunk keys, another PRF label)."""
    return keyed_digest(secret, MANIFEST_KEY_LABEL, sealed_plaintext)


@dataclass(frozen=True, slots=True)
class SealedPart:
    """The opened sealed part of a manifest.

    Attributes:
        keys: One 32-byte key per child, joined, in the children's order.
        size: At a file's root, the file size in bytes; None in an inner manifest.
    """

    keys: bytes = field(repr=False)
    size: int | None

    def key(self, index: int) -> bytes:
        """Key of child ``index``."""
        return self.keys[index * KEY_SIZE : (index + 1) * KEY_SIZE]


def encode_sealed(keys: list[bytes], size: int | None, kind: str = KIND_FILE) -> bytes:
    """The sealed plaintext: ``{"t": kind, "z": size, "k": keys}`` at a root, else ``{"k"}``."""
    if kind not in _KIND_WORDS:
        raise ValueError("unknown object kind")
    sealed: dict[str, Any] = {} if size is None else {"t": kind, "z": size}
    sealed["k"] = keys
    packed: bytes = msgpack.packb(sealed, use_bin_type=True)
    return packed


def open_sealed(manifest: Manifest, key: bytes, *, root: bool, kind: str = KIND_FILE) -> SealedPart:
    """Decrypt and parse a manifest's sealed part.

    Args:
        manifest: A decoded manifest.
        key: Its key (from the read cap at the root, from the parent below).
        root: Whether this is a file's root (whose sealed part holds the kind and size).
        kind: The object kind the root must be: :data:`KIND_FILE` (a file's bytes) or
            :data:`KIND_DIRECTORY` (a directory's listing).

    Returns:
        The keys (exactly one per child) and, at the root, the file size.

    Raises:
        AuthenticationFailed: ``key`` does not open the sealed part (wrong key, altered bytes).
        IntegrityError: The sealed part is malformed, is not the kind expected, or does not hold
            one key per child.
    """
    plaintext = decrypt(key, manifest.sealed)
    try:
        return _decode_sealed(Reader(plaintext), manifest.child_count, root, kind)
    except Malformed as exc:
        raise IntegrityError(f"malformed sealed part: {exc}") from None


def _decode_sealed(reader: Reader, children: int, root: bool, expected: str) -> SealedPart:
    what = "sealed part"
    fields = reader.map_header(what)
    size: int | None = None
    if root:
        if fields == _INNER_FIELDS:
            raise IntegrityError("this is an inner manifest of a file, not a file's root")
        if fields != _ROOT_FIELDS:
            raise Malformed(f"{what}: {fields} fields, expected {_ROOT_FIELDS}")
        reader.key(_K["t"], "t", what)
        kind = reader.short_str("object kind")
        if kind not in _KIND_WORDS:
            raise IntegrityError("unsupported object kind; a newer Shoal may be needed")
        if kind != expected:
            # Only words from our own table are shown. "names a directory" is what a reader of
            # a file sees for a folder's cap, and the other way round.
            how = "get it with get -r or list it with ls" if kind == KIND_DIRECTORY else "get it"
            raise IntegrityError(
                f"this cap names {_KIND_WORDS[kind]}, not {_KIND_WORDS[expected]}: {how}"
            )
        reader.key(_K["z"], "z", what)
        size = reader.uint("file size", 0, MAX_FILE_SIZE)
    elif fields != _INNER_FIELDS:
        raise Malformed(f"{what}: {fields} fields, expected {_INNER_FIELDS} (an inner manifest)")
    reader.key(_K["k"], "k", what)
    count = reader.array_header("keys", MAX_CHILDREN, _MIN_KEY_ENTRY)
    if count != children:
        raise Malformed(f"{count} keys for {children} children")
    keys = reader.ids("keys", count)
    reader.expect_end(what)
    return SealedPart(keys, size)
