"""Text form of 32-byte identifiers (node IDs, block IDs, CIDs, keys).

Lowercase RFC 4648 base32 without padding: 52 characters for 32 bytes, safe in file names,
URLs and shells, and case-insensitive on input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

ID_SIZE = 32
ID_TEXT_LENGTH = 52


def encode_id(raw: bytes) -> str:
    """Return the text form of ``raw`` (any length; IDs are 32 bytes)."""
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_id(text: str, *, size: int = ID_SIZE) -> bytes:
    """Parse the text form back to bytes; raise ``ValueError`` if it is not ``size`` bytes."""
    if not text.isascii():
        raise ValueError("identifier is not ASCII base32")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base32: {text[:60]!r}") from exc
    if len(raw) != size:
        raise ValueError(f"identifier must be {size} bytes, got {len(raw)}")
    if encode_id(raw) != text.lower():
        raise ValueError("non-canonical base32 identifier")
    return raw


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 digest (block IDs, node IDs)."""
    return hashlib.sha256(data).digest()


def short_id(raw: bytes) -> str:
    """First 12 characters of the text form, for logs and tables."""
    return encode_id(raw)[:12]
