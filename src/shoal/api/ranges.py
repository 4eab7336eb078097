"""HTTP conditional and range requests on downloads (RFC 9110 sections 13 and 14). Pure.

A download's ETag is its CID (a strong validator: the same CID is the same bytes, forever).
Only a single byte range is served; a request for several ranges, or a ``Range`` header that
does not parse, is answered with the whole file (200), which RFC 9110 allows. A range that
starts at or after the end of the file is unsatisfiable (416).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["Unsatisfiable", "etag_matches", "parse_range", "strong_etag"]

_SINGLE: Final = re.compile(r"bytes[ \t]*=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*")
_MAX_DIGITS: Final = 19  # beyond any file size: longer numbers are refused, never parsed


class Unsatisfiable(ValueError):
    """The requested range lies wholly outside the file."""


def strong_etag(cid_text: str) -> str:
    """The ETag header value of a file: its CID, quoted."""
    return f'"{cid_text}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks)."""
    value = if_none_match.strip()
    if value == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in value.split(","))


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The byte range ``[start, end)`` a ``Range`` header asks of a ``size``-byte file.

    Returns:
        The range clipped to the file, or None to serve the whole file (no range, several
        ranges, a header that does not parse, or a range that covers everything).

    Raises:
        Unsatisfiable: The range starts at or after the end of the file, or asks for the last
            0 bytes.
    """
    match = _SINGLE.fullmatch(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS or not (first or last):
        return None
    if not first:  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable("a range of the last 0 bytes is empty")
        start, end = max(0, size - suffix), size
    else:
        start = int(first)
        end = size if not last else int(last) + 1
        if last and end <= start:
            return None  # last < first: invalid, so ignored
        if start >= size:
            raise Unsatisfiable(f"the range starts at byte {start} of a {size}-byte file")
        end = min(end, size)
    if (start, end) == (0, size):
        return None
    return start, end
