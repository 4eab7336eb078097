"""Manifests: the blocks that describe a file, in a tree when the file is large.

How it works: a manifest is a msgpack map with a plaintext *verify part* (format version, depth,
redundancy, and for each child its block ID and stored size) and a *sealed part*: the AES-256-GCM
ciphertext of another msgpack map holding, for each child, its key and plaintext size and, at the
root only, the file's name, size, media type and times. Any node can check and repair a file from
the verify parts alone; only a holder of the root key can read it. The sealed part is encrypted
like a chunk, under a convergent key derived from its own plaintext (a separate PRF label).

A manifest of depth 0 lists data blocks; one of depth d > 0 lists manifests of depth d - 1. The
builder fills one node per level; a full node is sealed only when one more entry arrives at its
level, so a file of at most ``fanout`` chunks has a single depth-0 root, and any root of depth > 0
has at least two children. For a child manifest, ``plaintext_size`` is the number of file bytes
below it, which lets readers check every subtree's size. The byte-exact format is in
``docs/content-format.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shoal import defaults
from shoal.content.crypto import (
    KEY_SIZE,
    MANIFEST_KEY_LABEL,
    TAG_SIZE,
    Buffer,
    decrypt,
    keyed_digest,
)
from shoal.errors import CorruptBlock, IntegrityError
from shoal.ids import ID_SIZE, encode_id, sha256

__all__ = [
    "DEFAULT_FANOUT",
    "MANIFEST_VERSION",
    "MAX_CHILDREN",
    "MAX_DEPTH",
    "MAX_MANIFEST_SIZE",
    "ChildKey",
    "ChildRef",
    "FileInfo",
    "Manifest",
    "Redundancy",
    "SealedPart",
    "load_manifest",
    "manifest_key",
    "open_manifest",
]

MANIFEST_VERSION = 1
MAX_DEPTH = 8
DEFAULT_FANOUT = defaults.MANIFEST_FANOUT
# 32768 children take about 2.6 MB (verify + sealed parts), well under the 4 MiB frame limit.
MAX_CHILDREN = 32768
MAX_MANIFEST_SIZE = 4 << 20
MAX_SIZE = (1 << 63) - 1  # file and subtree sizes: msgpack int64 range
MAX_BLOCK_SIZE = (1 << 32) - 1  # stored block sizes: frames carry u32 lengths
MAX_REPLICAS = 255
MAX_NAME_BYTES = 4096
MAX_MEDIA_TYPE_BYTES = 255

_TOP_KEYS = frozenset({"v", "d", "r", "c", "s"})
_SEALED_KEYS = frozenset({"k", "f"})
_INFO_KEYS = frozenset({"n", "z", "m", "t", "c"})
_REDUNDANCY_KINDS = {"replicate": frozenset({"t", "r"})}


@dataclass(frozen=True, slots=True)
class Redundancy:
    """How a file's blocks are kept: ``kind="replicate"`` with ``replicas`` copies of each.

    Encoded as a map so that erasure coding (``kind="zfec"`` with ``k`` and ``n``) can be added.
    """

    kind: str = "replicate"
    replicas: int = defaults.REPLICAS

    def __post_init__(self) -> None:
        if self.kind not in _REDUNDANCY_KINDS:
            raise ValueError(f"unsupported redundancy kind {self.kind!r}")
        if not _is_int(self.replicas) or not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, got {self.replicas!r}")

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map form."""
        return {"t": self.kind, "r": self.replicas}


@dataclass(frozen=True, slots=True)
class ChildRef:
    """Verify-part entry: a child block's ID and the size of its stored bytes."""

    block_id: bytes
    stored_size: int


@dataclass(frozen=True, slots=True)
class ChildKey:
    """Sealed-part entry: a child's key and plaintext size (for a manifest: bytes below it)."""

    key: bytes = field(repr=False)
    plaintext_size: int


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the root manifest's sealed part says about the file.

    Attributes:
        name: The file name given at put time.
        size: Total plaintext size in bytes.
        media_type: MIME type, e.g. ``application/octet-stream``.
        mtime: Modification time of the source (Unix seconds), if known.
        created: When it was stored (Unix seconds).
    """

    name: str
    size: int
    media_type: str
    mtime: float | None
    created: float

    def __post_init__(self) -> None:
        problem = _info_problem(self.name, self.size, self.media_type, self.mtime, self.created)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True, slots=True)
class SealedPart:
    """The opened sealed part of a manifest: one key per child, file info at the root."""

    keys: tuple[ChildKey, ...]
    info: FileInfo | None


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass but never a valid size


def _is_time(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _utf8_len(text: object) -> int:
    """Length of ``text`` in UTF-8, or -1 if it is not an encodable string (lone surrogates)."""
    if not isinstance(text, str):
        return -1
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return -1


def _info_problem(name: Any, size: Any, media_type: Any, mtime: Any, created: Any) -> str | None:
    if not 0 <= _utf8_len(name) <= MAX_NAME_BYTES:
        return f"file name must be a Unicode string of at most {MAX_NAME_BYTES} UTF-8 bytes"
    if not _is_int(size) or not 0 <= size <= MAX_SIZE:
        return f"file size must be an integer 0..2**63-1, got {size!r}"
    if not 0 <= _utf8_len(media_type) <= MAX_MEDIA_TYPE_BYTES:
        return f"media type must be a string of at most {MAX_MEDIA_TYPE_BYTES} UTF-8 bytes"
    if mtime is not None and not _is_time(mtime):
        return f"mtime must be a finite number or None, got {mtime!r}"
    if not _is_time(created):
        return f"created must be a finite number, got {created!r}"
    return None


class _DuplicateKey(ValueError):
    pass


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # msgpack keeps the last of duplicate keys; refuse them so one block has one meaning.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey("duplicate key in map")
    return result


def _unpack(data: Buffer, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_pairs_to_dict,
            max_array_len=MAX_CHILDREN,
            max_map_len=16,
            max_str_len=MAX_MANIFEST_SIZE,
            max_bin_len=MAX_MANIFEST_SIZE,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise IntegrityError(f"malformed {what}: not valid msgpack ({exc})") from exc
    if not isinstance(obj, dict):
        raise IntegrityError(f"malformed {what}: expected a map, got {type(obj).__name__}")
    return obj


def _check_keys(
    obj: dict[str, Any], allowed: frozenset[str], required: frozenset[str], what: str
) -> None:
    if not obj.keys() <= allowed:
        extra = sorted(map(str, obj.keys() - allowed))
        raise IntegrityError(f"malformed {what}: unknown field(s) {extra}")
    if not required <= obj.keys():
        raise IntegrityError(f"malformed {what}: missing field(s) {sorted(required - obj.keys())}")


def _pairs(value: Any, what: str, item_size: int, max_second: int) -> list[tuple[bytes, int]]:
    """Validate an array of ``[bin(item_size), uint]`` pairs."""
    if not isinstance(value, list):
        raise IntegrityError(f"malformed {what}: expected an array")
    out: list[tuple[bytes, int]] = []
    for index, item in enumerate(value):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or len(item[0]) != item_size
            or not _is_int(item[1])
            or not 0 <= item[1] <= max_second
        ):
            raise IntegrityError(
                f"malformed {what}: entry {index} is not "
                f"[{item_size}-byte bin, integer 0..{max_second}]"
            )
        out.append((item[0], item[1]))
    return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """One manifest block: the plaintext verify part plus the sealed blob.

    Attributes:
        version: Format version (:data:`MANIFEST_VERSION`).
        depth: 0 if the children are data blocks, else the children are manifests of depth - 1.
        redundancy: How the children are kept.
        children: Block ID and stored size of each child, in file order.
        sealed: AES-256-GCM ciphertext of the sealed part.
    """

    version: int
    depth: int
    redundancy: Redundancy
    children: tuple[ChildRef, ...]
    sealed: bytes = field(repr=False)

    def encode(self) -> bytes:
        """The block bytes: a msgpack map with keys ``v d r c s`` in that order."""
        packed: bytes = msgpack.packb(
            {
                "v": self.version,
                "d": self.depth,
                "r": self.redundancy.to_wire(),
                "c": [[child.block_id, child.stored_size] for child in self.children],
                "s": self.sealed,
            },
            use_bin_type=True,
        )
        return packed

    @classmethod
    def decode(cls, data: Buffer) -> Manifest:
        """Parse and validate a manifest block (no hash check: :func:`load_manifest` does that).

        Raises:
            IntegrityError: The bytes are not a valid version-1 manifest; the message says why.
        """
        if memoryview(data).nbytes > MAX_MANIFEST_SIZE:
            raise IntegrityError(f"manifest larger than {MAX_MANIFEST_SIZE} bytes")
        obj = _unpack(data, "manifest")
        _check_keys(obj, _TOP_KEYS, _TOP_KEYS, "manifest")
        version, depth = obj["v"], obj["d"]
        if not _is_int(version) or version != MANIFEST_VERSION:
            raise IntegrityError(
                f"unsupported manifest version {version!r} (this Shoal reads {MANIFEST_VERSION}); "
                "a newer Shoal may be needed"
            )
        if not _is_int(depth) or not 0 <= depth <= MAX_DEPTH:
            raise IntegrityError(f"malformed manifest: depth must be 0..{MAX_DEPTH}, got {depth!r}")
        redundancy = _decode_redundancy(obj["r"])
        children = tuple(
            ChildRef(block_id, size)
            for block_id, size in _pairs(obj["c"], "manifest children", ID_SIZE, MAX_BLOCK_SIZE)
        )
        if depth > 0 and not children:
            raise IntegrityError("malformed manifest: an inner manifest must have children")
        sealed = obj["s"]
        if not isinstance(sealed, bytes) or len(sealed) < TAG_SIZE:
            raise IntegrityError("malformed manifest: sealed part must be bin of at least 16 bytes")
        return cls(MANIFEST_VERSION, depth, redundancy, children, sealed)


def _decode_redundancy(value: Any) -> Redundancy:
    if not isinstance(value, dict):
        raise IntegrityError("malformed manifest: redundancy must be a map")
    kind = value.get("t")
    allowed = _REDUNDANCY_KINDS.get(kind) if isinstance(kind, str) else None
    if not isinstance(kind, str) or allowed is None:
        raise IntegrityError(f"unsupported redundancy kind {kind!r}; a newer Shoal may be needed")
    _check_keys(value, allowed, allowed, "redundancy")
    replicas = value["r"]
    if not _is_int(replicas) or not 1 <= replicas <= MAX_REPLICAS:
        raise IntegrityError(f"malformed manifest: replicas must be 1..{MAX_REPLICAS}")
    return Redundancy(kind, replicas)


def load_manifest(block_id: bytes, data: Buffer) -> Manifest:
    """Check a fetched manifest block against the ID that referenced it, then decode it.

    Raises:
        IntegrityError: Hash mismatch or malformed manifest.
    """
    if sha256(data) != block_id:
        raise CorruptBlock(
            f"manifest block {encode_id(block_id)} does not match its hash; "
            "fetch it from another peer"
        )
    try:
        return Manifest.decode(data)
    except IntegrityError as exc:
        raise IntegrityError(f"manifest block {encode_id(block_id)}: {exc}") from exc


def manifest_key(secret: bytes, sealed_plaintext: Buffer) -> bytes:
    """Convergent key of a manifest's sealed part (like chunk keys, another PRF label)."""
    return keyed_digest(secret, MANIFEST_KEY_LABEL, sealed_plaintext)


def _encode_sealed(keys: list[ChildKey], info: FileInfo | None) -> bytes:
    sealed: dict[str, Any] = {"k": [[k.key, k.plaintext_size] for k in keys]}
    if info is not None:
        sealed["f"] = {
            "n": info.name,
            "z": info.size,
            "m": info.media_type,
            "t": None if info.mtime is None else float(info.mtime),
            "c": float(info.created),
        }
    packed: bytes = msgpack.packb(sealed, use_bin_type=True)
    return packed


def _decode_info(value: Any) -> FileInfo:
    if not isinstance(value, dict):
        raise IntegrityError("malformed sealed part: file info must be a map")
    _check_keys(value, _INFO_KEYS, _INFO_KEYS, "file info")
    name, size, media, mtime, created = (value[k] for k in ("n", "z", "m", "t", "c"))
    # The wire stores times as float64 only.
    if not isinstance(created, float) or not (mtime is None or isinstance(mtime, float)):
        raise IntegrityError("malformed file info: times must be float64 (mtime may be nil)")
    problem = _info_problem(name, size, media, mtime, created)
    if problem:
        raise IntegrityError(f"malformed file info: {problem}")
    return FileInfo(name, size, media, mtime, created)


def open_manifest(manifest: Manifest, key: bytes) -> SealedPart:
    """Decrypt and validate a manifest's sealed part.

    Args:
        manifest: A decoded manifest.
        key: Its key (from the read cap at the root, from the parent below).

    Returns:
        One :class:`ChildKey` per child, and the file info if this manifest carries it.

    Raises:
        IntegrityError: Wrong key, altered bytes, malformed content, a key count that differs
            from the child count, or a data child whose sizes disagree.
    """
    plaintext = decrypt(key, manifest.sealed)
    obj = _unpack(plaintext, "sealed part")
    _check_keys(obj, _SEALED_KEYS, frozenset({"k"}), "sealed part")
    pairs = _pairs(obj["k"], "sealed keys", KEY_SIZE, MAX_SIZE)
    if len(pairs) != len(manifest.children):
        raise IntegrityError(
            f"manifest lists {len(manifest.children)} children but {len(pairs)} keys"
        )
    keys = tuple(ChildKey(k, size) for k, size in pairs)
    if manifest.depth == 0 and manifest.redundancy.kind == "replicate":
        # A replicated data block is exactly the GCM ciphertext: plaintext + tag.
        for index, (ref, child) in enumerate(zip(manifest.children, keys, strict=True)):
            if ref.stored_size != child.plaintext_size + TAG_SIZE:
                raise IntegrityError(
                    f"manifest entry {index}: stored size {ref.stored_size} does not fit "
                    f"plaintext size {child.plaintext_size}"
                )
    info = _decode_info(obj["f"]) if "f" in obj else None
    return SealedPart(keys, info)
