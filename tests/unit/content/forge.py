"""Hand-made manifests for tests: any shape, every block hashing right and sealed with its key.

With these a test builds trees that lie (about sizes, depths, fanout, keys) while passing every
hash and key check, so it exercises the walk's arithmetic rather than the hash check.
"""

from __future__ import annotations

from shoal.content import ChildRef, Manifest, ReadCap, Redundancy, encrypt, manifest_key
from shoal.content import seal_chunk as _seal_chunk
from shoal.content.manifest import encode_sealed
from shoal.ids import sha256

from .helpers import SECRET

Ref = tuple[bytes, int, bytes]  # (block id, stored size, key)


def forge(
    store: dict[bytes, bytes],
    depth: int,
    chunk_size: int,
    fanout: int,
    children: list[Ref],
    size: int | None = None,
    *,
    sealed_plain: bytes | None = None,
) -> Ref:
    """Seal one manifest over ``children`` into ``store``; ``size`` makes it a root.

    ``sealed_plain`` replaces the sealed plaintext (for malformed sealed parts).
    """
    if sealed_plain is None:
        sealed_plain = encode_sealed([key for _, _, key in children], size)
    key = manifest_key(SECRET, sealed_plain)
    block = Manifest.build(
        depth,
        chunk_size,
        fanout,
        Redundancy(),
        [ChildRef(bid, stored) for bid, stored, _ in children],
        encrypt(key, sealed_plain),
    ).encode()
    bid = sha256(block)
    store[bid] = block
    return bid, len(block), key


def chunk(store: dict[bytes, bytes], plaintext: bytes) -> Ref:
    """Seal a real chunk into ``store``."""
    sealed = _seal_chunk(SECRET, plaintext)
    store[sealed.block_id] = sealed.data
    return sealed.block_id, len(sealed.data), sealed.key


def cap_of(ref: Ref) -> ReadCap:
    return ReadCap(ref[0], ref[2])
