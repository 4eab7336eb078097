"""Erasure coding of encrypted chunks with zfec: N shares, any K of which rebuild the chunk.

How it works: a stored chunk (ciphertext + tag, ``L`` bytes) gets ``pad = k * s - L`` zero bytes
appended and is cut into ``k`` pieces of ``s = ceil(L / k)`` bytes; zfec's
systematic Reed-Solomon code (Vandermonde matrix over GF(2^8)) turns the ``k`` pieces into
``n`` blocks of ``s`` bytes: blocks ``0 .. k-1`` are the pieces themselves, blocks ``k .. n-1``
are parity. Each block becomes one **share**, a stored block of its own (its ID is the SHA-256
of its bytes, like any block)::

    offset  size  field
    0       1     k       shares needed to rebuild (1 ..= n - 1)
    1       1     n       shares made (2 ..= MAX_SHARES)
    2       1     index   which zfec block this is (0 ..= n - 1)
    3       1     pad     zero bytes appended to the chunk before cutting (0 ..= k - 1)
    4       s     the zfec block ``index``

The header makes a share self-describing (a repairer learns ``pad`` from any share it holds,
and rebuilt shares come out byte for byte equal to the originals, so their hashes can be
checked against the manifest) and makes the shares of one stripe distinct blocks even when
their payloads are equal (with ``k = 1`` every zfec block is the chunk itself).

Any ``k`` distinct shares decode to the ``k`` pieces; the chunk is their concatenation minus
the last ``pad`` bytes. Fewer than ``k`` shares cannot rebuild anything: that is refused with
``NotFound`` before any decoding. A share whose header disagrees with its stripe (or with where
the manifest lists it) is an ``IntegrityError``: its hash was right, so the manifest that lists
it is wrong, and every holder has the same bytes.

The **stripe ID** of a chunk is ``SHA-256(share_id_0 || ... || share_id_{n-1})``: placement puts
share ``i`` on the ``i``-th of the ``n`` nodes closest to it. Any node computes it from the
manifest entry alone, without keys.

Pure: no I/O; zfec releases the GIL on large buffers, so callers run these on a CPU pool.
The format is in ``docs/content-format.md`` (section 3.3 and "Erasure-coded data").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import zfec

from shoal.content.crypto import Buffer
from shoal.errors import CorruptBlock, IntegrityError, NotFound
from shoal.ids import ID_SIZE, encode_id, sha256

__all__ = [
    "MAX_SHARES",
    "SHARE_HEADER_SIZE",
    "ShareHeader",
    "check_params",
    "check_share",
    "decode_shares",
    "encode_shares",
    "rebuild_shares",
    "share_size",
    "stripe_id",
]

MAX_SHARES = 32
"""Largest ``n``: shares of one chunk, each on its own node."""

SHARE_HEADER_SIZE = 4
"""Bytes before the zfec block in every share: ``k``, ``n``, ``index``, ``pad``."""


def check_params(k: int, n: int) -> None:
    """Raise ``ValueError`` unless ``1 <= k < n <= MAX_SHARES`` (plain ints)."""
    if type(k) is not int or type(n) is not int or not 1 <= k < n <= MAX_SHARES:
        raise ValueError(f"erasure coding needs 1 <= k < n <= {MAX_SHARES}, got {k}-of-{n}")


def share_size(stored_size: int, k: int) -> int:
    """Length of each share of a stored chunk of ``stored_size`` bytes: header + ceil(L / k)."""
    return SHARE_HEADER_SIZE + -(-stored_size // k)


def stripe_id(share_ids: bytes) -> bytes:
    """The ID placement uses for a stripe: SHA-256 of its share IDs joined, in share order."""
    if not share_ids or len(share_ids) % ID_SIZE:
        raise ValueError("share ids must be a non-empty concatenation of 32-byte IDs")
    return sha256(share_ids)


@dataclass(frozen=True, slots=True)
class ShareHeader:
    """The first :data:`SHARE_HEADER_SIZE` bytes of a share."""

    k: int
    n: int
    index: int
    pad: int

    @classmethod
    def parse(cls, share: Buffer) -> ShareHeader:
        """Read and check a share's header (no hash check).

        Raises:
            IntegrityError: The share is too short or its header is out of range.
        """
        view = memoryview(share)
        if view.nbytes <= SHARE_HEADER_SIZE:
            raise IntegrityError(f"a share of {view.nbytes} bytes holds no data")
        k, n, index, pad = view[:SHARE_HEADER_SIZE].tobytes()
        if not 1 <= k < n <= MAX_SHARES or index >= n or pad >= k:
            raise IntegrityError("share header out of range (k, n, index or pad)")
        return cls(k, n, index, pad)

    def encode(self) -> bytes:
        """The 4 header bytes."""
        return bytes((self.k, self.n, self.index, self.pad))


def encode_shares(data: Buffer, k: int, n: int) -> list[bytes]:
    """Cut a stored chunk into ``n`` shares, any ``k`` of which rebuild it.

    Args:
        data: The stored chunk (ciphertext + tag), at least 1 byte.
        k: Shares needed to rebuild.
        n: Shares made.

    Returns:
        The ``n`` shares, in index order, header included.
    """
    check_params(k, n)
    view = memoryview(data)
    size = view.nbytes
    if size == 0:
        raise ValueError("an empty chunk has no shares")
    piece = -(-size // k)
    pad = piece * k - size
    # Whole pieces are sliced without copying; only the padded tail is copied.
    whole = size // piece
    pieces: list[Buffer] = [view[i * piece : (i + 1) * piece] for i in range(whole)]
    if whole < k:
        tail = bytes(view[whole * piece :]) + bytes(pad)
        pieces.extend(tail[i * piece : (i + 1) * piece] for i in range(k - whole))
    blocks = zfec.Encoder(k, n).encode(tuple(pieces))
    return [
        b"".join((ShareHeader(k, n, index, pad).encode(), block))
        for index, block in enumerate(blocks)
    ]


def check_share(
    share_id: bytes, data: Buffer, *, k: int, n: int, index: int, size: int
) -> ShareHeader:
    """Check a fetched share against what the manifest says about it (hash first).

    Raises:
        CorruptBlock: The bytes do not hash to ``share_id`` (another holder may have it intact).
        IntegrityError: The share is intact but is not share ``index`` of a ``k``-of-``n``
            stripe of ``size``-byte shares: the manifest that lists it is wrong.
    """
    if sha256(data) != share_id:
        raise CorruptBlock(
            f"share {encode_id(share_id)} does not match its hash; fetch it from another peer"
        )
    length = memoryview(data).nbytes
    if length != size:
        raise IntegrityError(
            f"share {encode_id(share_id)} is {length} bytes, its manifest says {size}"
        )
    header = ShareHeader.parse(data)
    if (header.k, header.n, header.index) != (k, n, index):
        raise IntegrityError(
            f"share {encode_id(share_id)} is share {header.index} of {header.k}-of-{header.n}, "
            f"its manifest lists it as share {index} of {k}-of-{n}"
        )
    return header


def _pick(shares: Mapping[int, Buffer], k: int, n: int) -> tuple[list[int], list[memoryview], int]:
    """``k`` of the shares (primary blocks first), checked to agree; their payloads and pad."""
    if len(shares) < k:
        raise NotFound(
            f"only {len(shares)} of the {k} shares needed to rebuild this chunk are available"
        )
    indices = sorted(shares)[:k]
    headers = [ShareHeader.parse(shares[i]) for i in indices]
    sizes = {memoryview(shares[i]).nbytes for i in indices}
    pads = {h.pad for h in headers}
    if len(sizes) != 1 or len(pads) != 1:
        raise IntegrityError("the shares of one stripe differ in size or padding")
    for index, header in zip(indices, headers, strict=True):
        if (header.k, header.n, header.index) != (k, n, index):
            raise IntegrityError(f"share {index} does not belong to this {k}-of-{n} stripe")
    payloads = [memoryview(shares[i])[SHARE_HEADER_SIZE:] for i in indices]
    return indices, payloads, pads.pop()


def decode_shares(shares: Mapping[int, Buffer], k: int, n: int) -> bytes:
    """Rebuild a stored chunk from any ``k`` of its shares (more are ignored).

    Args:
        shares: Share bytes (header included) by share index.
        k: Shares needed.
        n: Shares made.

    Raises:
        NotFound: Fewer than ``k`` shares were given.
        IntegrityError: The shares do not belong together (headers, sizes or padding differ).
    """
    check_params(k, n)
    indices, payloads, pad = _pick(shares, k, n)
    pieces = zfec.Decoder(k, n).decode(tuple(payloads), tuple(indices))
    joined = b"".join(pieces)
    return joined[: len(joined) - pad] if pad else joined


def rebuild_shares(
    shares: Mapping[int, Buffer], k: int, n: int, wanted: Iterable[int]
) -> dict[int, bytes]:
    """Make the shares ``wanted`` again from any ``k`` others, byte for byte as first made.

    No key is needed: the pieces are re-encoded as they are (padding included).

    Raises:
        NotFound: Fewer than ``k`` shares were given.
        IntegrityError: The shares do not belong together.
        ValueError: A wanted index is not ``0 .. n-1``.
    """
    check_params(k, n)
    wanted = sorted(set(wanted))
    if any(not 0 <= index < n for index in wanted):
        raise ValueError(f"share indices are 0..{n - 1}")
    indices, payloads, pad = _pick(shares, k, n)
    pieces = zfec.Decoder(k, n).decode(tuple(payloads), tuple(indices))
    blocks = zfec.Encoder(k, n).encode(tuple(pieces), tuple(wanted))
    return {
        index: b"".join((ShareHeader(k, n, index, pad).encode(), block))
        for index, block in zip(wanted, blocks, strict=True)
    }
