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
from shoal.ids import ID_SIZE, decode_id, encode_id

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

# A read cap is 8 + 52 + 1 + 52 characters. Echoing at most the first 60 characters of bad input
# shows the prefix and the CID but never the key, so error messages are safe to log.
_SHOWN = 60


def _shown(text: str) -> str:
    return repr(text[:_SHOWN] + ("..." if len(text) > _SHOWN else ""))


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
            raise InvalidCapability(
                f"{_shown(text.strip())} is a verify cap, which can check a file but not read "
                "it; a read cap 'shoal:r:<cid>:<key>' is needed"
            )
        return cap


def _decode(what: str, value: str, text: str) -> bytes:
    try:
        return decode_id(value)
    except ValueError as exc:
        # decode_id's message quotes the field; never quote a (possibly real) key.
        detail = f": {exc}" if what == "cid" else ""
        raise InvalidCapability(
            f"bad {what} in capability {_shown(text)}{detail}; {_EXPECTED}"
        ) from exc


def parse_cap(text: str) -> ReadCap | VerifyCap:
    """Parse a capability string.

    Args:
        text: ``shoal:r:<cid>:<key>`` or ``shoal:v:<cid>``; surrounding whitespace and letter
            case are ignored.

    Returns:
        The :class:`ReadCap` or :class:`VerifyCap`.

    Raises:
        InvalidCapability: Anything else; the message says what was expected.
    """
    if not isinstance(text, str):
        raise InvalidCapability(f"a capability must be a string, got {type(text).__name__}")
    stripped = text.strip()
    parts = stripped.split(":")
    kind = parts[1].lower() if len(parts) > 1 else ""
    if parts[0].lower() != "shoal" or kind not in ("r", "v"):
        raise InvalidCapability(f"not a capability: {_shown(stripped)}; {_EXPECTED}")
    if kind == "r":
        if len(parts) != 4:
            raise InvalidCapability(
                f"a read cap has the form 'shoal:r:<cid>:<key>', got {_shown(stripped)}"
            )
        return ReadCap(_decode("cid", parts[2], stripped), _decode("key", parts[3], stripped))
    if len(parts) != 3:
        raise InvalidCapability(
            f"a verify cap has the form 'shoal:v:<cid>', got {_shown(stripped)}"
        )
    return VerifyCap(_decode("cid", parts[2], stripped))


def looks_like_cap(text: str) -> bool:
    """Tell a capability from a file name: True when ``text`` starts with ``shoal:``.

    It does not validate the rest; :func:`parse_cap` does.
    """
    return text.strip().lower().startswith(CAP_PREFIX)
