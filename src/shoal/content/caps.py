"""Capability strings: what a user copies to share or check a file.

How it works: a read cap ``shoal:r:<cid>:<key>`` names the root manifest block (its CID) and
holds the key that opens its sealed part, which in turn holds every other key; a verify cap
``shoal:v:<cid>`` only names the root, which is enough to fetch, hash-check and repair every
block of the file without reading it. Both fields are 32 bytes in the text form of
:mod:`shoal.ids` (52 lowercase base32 characters). Parsing tolerates surrounding whitespace and
any letter case (base32 is case-insensitive); everything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.errors import InvalidCapability
from shoal.ids import ID_SIZE, ID_TEXT_LENGTH, decode_id, encode_id

__all__ = [
    "CAP_PREFIX",
    "READ_PREFIX",
    "VERIFY_PREFIX",
    "ReadCap",
    "VerifyCap",
    "looks_like_cap",
    "parse_cap",
]

CAP_PREFIX = "shoal:"
READ_PREFIX = "shoal:r:"
VERIFY_PREFIX = "shoal:v:"

_EXPECTED = "expected 'shoal:r:<cid>:<key>' or 'shoal:v:<cid>' with 52-character base32 fields"

# Error messages never echo the input: a malformed read cap may hold a real key anywhere (in
# the key field, or shifted into the CID field by a missing or extra colon). They show at most
# the recognised prefix and the first few characters of the CID field, fewer than any useful
# part of a key, replaced by '?' unless printable ASCII (no control characters in logs).
_SHOWN_CID = 6
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _shown(prefix: str, cid_field: str) -> str:
    start = "".join(c if " " < c < "\x7f" else "?" for c in cid_field[:_SHOWN_CID])
    more = "..." if len(cid_field) > _SHOWN_CID else ""
    return f"'{prefix}{start}{more}'"


def _field_problem(value: str) -> str:
    """Why ``value`` is not the text of a 32-byte ID, described without quoting it."""
    if len(value) != ID_TEXT_LENGTH:
        return f"expected {ID_TEXT_LENGTH} base32 characters, got {len(value)}"
    if not set(value.lower()) <= _BASE32:
        return "not base32 (letters a-z and digits 2-7 only)"
    return "not the canonical base32 text of 32 bytes (check the last character)"


def _check_field(what: str, raw: bytes) -> None:
    if not isinstance(raw, bytes) or len(raw) != ID_SIZE:
        raise ValueError(f"{what} must be {ID_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class VerifyCap:
    """Lets its holder fetch, check and repair a file's blocks, but not read them.

    Attributes:
        cid: The content ID: block ID of the file's root manifest.
    """

    cid: bytes

    def __post_init__(self) -> None:
        _check_field("cid", self.cid)

    def __str__(self) -> str:
        return f"{VERIFY_PREFIX}{encode_id(self.cid)}"

    @classmethod
    def parse(cls, text: str) -> VerifyCap:
        """Parse a verify cap; a read cap is accepted and reduced to its verify cap.

        Raises:
            InvalidCapability: ``text`` is not a capability.
        """
        cap = parse_cap(text)
        return cap.verify_cap if isinstance(cap, ReadCap) else cap


@dataclass(frozen=True, slots=True)
class ReadCap:
    """Lets its holder read a file.

    Attributes:
        cid: The content ID: block ID of the file's root manifest.
        key: The key of the root manifest's sealed part (hidden from ``repr``).
    """

    cid: bytes
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_field("cid", self.cid)
        _check_field("key", self.key)

    def __str__(self) -> str:
        return f"{READ_PREFIX}{encode_id(self.cid)}:{encode_id(self.key)}"

    @property
    def verify_cap(self) -> VerifyCap:
        """The verify cap of the same file (drops the key)."""
        return VerifyCap(self.cid)

    @classmethod
    def parse(cls, text: str) -> ReadCap:
        """Parse a read cap.

        Raises:
            InvalidCapability: ``text`` is not a capability, or is a verify cap (which cannot
                read).
        """
        cap = parse_cap(text)
        if not isinstance(cap, ReadCap):
            # Shown short: a key pasted as 'shoal:v:<key>' parses as a verify cap.
            raise InvalidCapability(
                f"{_shown(VERIFY_PREFIX, encode_id(cap.cid))} is a verify cap, which can check "
                "a file but not read it; a read cap 'shoal:r:<cid>:<key>' is needed"
            )
        return cap


def _decode(what: str, value: str, prefix: str, cid_field: str) -> bytes:
    try:
        return decode_id(value)
    except ValueError:
        # decode_id's message quotes the field, which may be a key: describe it instead.
        raise InvalidCapability(
            f"bad {what} in capability {_shown(prefix, cid_field)}: {_field_problem(value)}; "
            f"{_EXPECTED}"
        ) from None


def parse_cap(text: str) -> ReadCap | VerifyCap:
    """Parse a capability string.

    Args:
        text: ``shoal:r:<cid>:<key>`` or ``shoal:v:<cid>``; surrounding whitespace and letter
            case are ignored.

    Returns:
        The :class:`ReadCap` or :class:`VerifyCap`.

    Raises:
        InvalidCapability: Anything else; the message says what was expected, and shows at most
            the prefix and the first characters of the CID field (never a key).
    """
    if not isinstance(text, str):
        raise InvalidCapability(f"a capability must be a string, got {type(text).__name__}")
    parts = text.strip().split(":")
    kind = parts[1].lower() if len(parts) > 1 else ""
    if parts[0].lower() != "shoal" or kind not in ("r", "v"):
        raise InvalidCapability(f"not a capability; {_EXPECTED}")
    prefix = READ_PREFIX if kind == "r" else VERIFY_PREFIX
    fields = parts[2:]
    if kind == "r":
        if len(fields) != 2:
            raise InvalidCapability(
                f"a read cap has the form 'shoal:r:<cid>:<key>' (two fields after "
                f"'shoal:r:'), got {len(fields)} field(s)"
            )
        cid_field, key_field = fields
        return ReadCap(
            _decode("cid", cid_field, prefix, cid_field),
            _decode("key", key_field, prefix, cid_field),
        )
    if len(fields) != 1:
        raise InvalidCapability(
            f"a verify cap has the form 'shoal:v:<cid>' (one field after 'shoal:v:'), "
            f"got {len(fields)} field(s)"
        )
    return VerifyCap(_decode("cid", fields[0], prefix, fields[0]))


def looks_like_cap(text: str) -> bool:
    """Tell a capability from a file name: True when ``text`` starts with ``shoal:``.

    It does not validate the rest; :func:`parse_cap` does.
    """
    return text.strip().lower().startswith(CAP_PREFIX)
