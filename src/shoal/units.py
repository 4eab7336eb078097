"""Sizes as people write them: ``50GiB`` in, ``1.5 MiB`` out. Binary units throughout.

One module so that flags, config files, progress bars and summaries agree: ``MiB`` everywhere,
never ``MB`` in one place and ``MiB`` in another.
"""

from __future__ import annotations

import re
from typing import Final

from shoal.errors import ConfigError

__all__ = ["format_size", "parse_size"]

_UNITS: Final = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
    "p": 1 << 50,
    "pib": 1 << 50,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_MAX_TEXT: Final = 64


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse ``123``, ``50GiB``, ``1.5 TiB`` or ``512m`` (binary units, case-insensitive).

    Decimal names (``GB``) are refused rather than guessed: storage limits must not be off by
    7%.

    Raises:
        ConfigError: Not a size; the message says what is accepted.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{what} must not be negative")
        return text
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a number of bytes or a size such as 50GiB")
    match = _SIZE.fullmatch(text[:_MAX_TEXT])
    unit = match.group(2).lower() if match else ""
    if len(text) > _MAX_TEXT or match is None or unit not in _UNITS:
        shown = text[:20] + ("..." if len(text) > 20 else "")
        raise ConfigError(
            f"invalid {what} {shown!r}: expected bytes or a number with a binary unit "
            "(KiB, MiB, GiB, TiB), e.g. 50GiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int | float | None) -> str:
    """``1536`` → ``"1.5 KiB"``; None → ``"?"``."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
