"""Chunk encryption and block IDs: the ``shoal-v1`` profile.

How it works: a chunk's key is keyed BLAKE3 (key = the owner's 32-byte convergence secret) over a
context label followed by the chunk's plaintext, so equal chunks of one owner get equal keys and
dedupe, while anyone without the secret cannot confirm a guessed plaintext. The chunk is
encrypted with AES-256-GCM under that key with a fixed all-zero 12-byte nonce and no associated
data: a fixed nonce is safe because a key is only ever used for the one plaintext it was derived
from (re-encrypting it gives the same ciphertext, which is the point). The block ID is the SHA-256
of the stored ciphertext, so any node can check any block without keys.

Everything here is pure and thread-safe; ``blake3``, ``hashlib`` and ``cryptography``'s AEAD
release the GIL on large buffers, so callers run ``seal_chunk``/``open_chunk`` in worker threads.
See ``docs/content-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal import defaults
from shoal.errors import CorruptBlock, IntegrityError
from shoal.ids import ID_SIZE, encode_id, sha256

__all__ = [
    "CHUNK_KEY_LABEL",
    "CHUNK_SIZE",
    "KEY_SIZE",
    "MANIFEST_KEY_LABEL",
    "NONCE",
    "PROFILE",
    "TAG_SIZE",
    "AuthenticationFailed",
    "Buffer",
    "SealedChunk",
    "block_id",
    "chunk_key",
    "decrypt",
    "encrypt",
    "keyed_digest",
    "open_chunk",
    "seal_chunk",
]

PROFILE = "shoal-v1"
"""Name of the fixed set of algorithm choices below; a new choice means a new profile."""

CHUNK_SIZE = defaults.CHUNK_SIZE
"""Default plaintext chunk size (1 MiB)."""

KEY_SIZE = 32
"""Size of convergence secrets, chunk keys and manifest keys (AES-256)."""

TAG_SIZE = 16
"""AES-GCM authentication tag appended to every ciphertext."""

NONCE = bytes(12)
"""The fixed all-zero GCM nonce (safe: one key per plaintext)."""

# Distinct labels keep chunk keys and manifest keys in separate domains of the PRF. The NUL
# terminator makes each label prefix-free, so no label + data can collide with another label.
CHUNK_KEY_LABEL = b"shoal-v1 chunk key\x00"
MANIFEST_KEY_LABEL = b"shoal-v1 manifest key\x00"

Buffer = bytes | bytearray | memoryview
"""Byte buffers accepted without copying."""


class AuthenticationFailed(IntegrityError):
    """A ciphertext's tag does not verify under the key given.

    Once the bytes are known to match their block ID, this means the key is wrong: the cap's
    (at the root) or the parent manifest's (below it). The block itself is intact.
    """


def _check_key(what: str, key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes | bytearray | memoryview) else type(key).__name__
        raise ValueError(f"{what} must be {KEY_SIZE} bytes, got {size}")


def keyed_digest(secret: bytes, label: bytes, data: Buffer) -> bytes:
    """Keyed BLAKE3 of ``label`` then ``data`` under ``secret``: the profile's PRF.

    Args:
        secret: The 32-byte convergence secret.
        label: A context label that separates uses of the PRF.
        data: The input; hashed in place, never copied.

    Returns:
        The 32-byte digest.
    """
    _check_key("convergence secret", secret)
    hasher = blake3.blake3(key=secret)
    hasher.update(label)
    hasher.update(data)
    digest: bytes = hasher.digest()
    return digest


def chunk_key(secret: bytes, plaintext: Buffer) -> bytes:
    """Derive the convergent key of one chunk.

    Args:
        secret: The owner's 32-byte convergence secret.
        plaintext: The chunk's plaintext.

    Returns:
        The 32-byte AES-256 key of that chunk.
    """
    return keyed_digest(secret, CHUNK_KEY_LABEL, plaintext)


def encrypt(key: bytes, plaintext: Buffer) -> bytes:
    """AES-256-GCM encrypt with the fixed nonce and no associated data.

    Args:
        key: A 32-byte key used for this one plaintext only.
        plaintext: The bytes to encrypt.

    Returns:
        Ciphertext followed by the 16-byte tag (``len(plaintext) + TAG_SIZE`` bytes).
    """
    _check_key("key", key)
    return AESGCM(key).encrypt(NONCE, plaintext, None)


def decrypt(key: bytes, ciphertext: Buffer) -> bytes:
    """Reverse :func:`encrypt`.

    Args:
        key: The 32-byte key.
        ciphertext: Ciphertext followed by its tag.

    Returns:
        The plaintext.

    Raises:
        AuthenticationFailed: The tag does not verify (wrong key or altered bytes).
    """
    _check_key("key", key)
    if memoryview(ciphertext).nbytes < TAG_SIZE:
        raise AuthenticationFailed("ciphertext is shorter than its authentication tag")
    try:
        return AESGCM(key).decrypt(NONCE, ciphertext, None)
    except InvalidTag as exc:
        raise AuthenticationFailed(
            "authentication failed: wrong key or altered ciphertext"
        ) from exc


def block_id(data: Buffer) -> bytes:
    """Return the ID of a stored block: SHA-256 of its bytes."""
    return sha256(data)


@dataclass(frozen=True, slots=True)
class SealedChunk:
    """One encrypted chunk, ready to store.

    Attributes:
        block_id: SHA-256 of ``data``.
        data: The stored bytes (ciphertext + tag).
        key: The chunk key (goes into the sealed part of the manifest).
        plaintext_size: Length of the plaintext.
    """

    block_id: bytes
    data: bytes = field(repr=False)
    key: bytes = field(repr=False)
    plaintext_size: int


def seal_chunk(secret: bytes, plaintext: Buffer) -> SealedChunk:
    """Derive the key, encrypt and hash one chunk in a single call.

    Args:
        secret: The owner's 32-byte convergence secret.
        plaintext: The chunk; read in place (a ``memoryview`` of a reused buffer is fine).

    Returns:
        The sealed chunk.
    """
    key = chunk_key(secret, plaintext)
    data = encrypt(key, plaintext)
    return SealedChunk(
        block_id=sha256(data),
        data=data,
        key=key,
        plaintext_size=memoryview(plaintext).nbytes,
    )


def open_chunk(
    key: bytes,
    block_id: bytes,
    data: Buffer,
    *,
    plaintext_size: int | None = None,
    stored_size: int | None = None,
) -> bytes:
    """Check a stored chunk against its ID, then decrypt it.

    The bytes are hashed exactly once, first: callers (and the store) need not hash again.

    Args:
        key: The chunk key from the manifest.
        block_id: The ID the manifest gives for this chunk.
        data: The stored bytes as fetched.
        plaintext_size: If given, the plaintext length the manifest promises.
        stored_size: If given, the stored length the manifest promises.

    Returns:
        The plaintext.

    Raises:
        CorruptBlock: The bytes do not hash to ``block_id`` (checked first: only this failure
            says anything about the bytes held).
        IntegrityError: The (intact) block fails authentication under ``key``, or has the
            wrong length: the manifest that gave ``key`` is wrong. The message names the block.
    """
    if len(block_id) != ID_SIZE:
        raise ValueError(f"block id must be {ID_SIZE} bytes, got {len(block_id)}")
    name = encode_id(block_id)
    if sha256(data) != block_id:
        raise CorruptBlock(f"block {name} does not match its hash; fetch it from another peer")
    size = memoryview(data).nbytes
    if stored_size is not None and size != stored_size:
        # The block is intact (its hash matched): the manifest that lists it lies.
        raise IntegrityError(f"block {name} is {size} bytes, its manifest says {stored_size}")
    try:
        plaintext = decrypt(key, data)
    except AuthenticationFailed as exc:
        raise IntegrityError(
            f"block {name} is intact but its manifest's key does not open it"
        ) from exc
    if plaintext_size is not None and len(plaintext) != plaintext_size:
        raise IntegrityError(
            f"block {name} holds {len(plaintext)} plaintext bytes, manifest says {plaintext_size}"
        )
    return plaintext
