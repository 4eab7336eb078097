"""What a file name in the catalog, and a media type, may be. Pure functions, no I/O.

Names are shown in tables (``shoal ls``), written into HTTP paths and headers, and turned into
local file names by ``shoal get``. So a name is checked once, where it enters (the CLI, the HTTP
API, the node service), before any work is done:

- it is a ``str`` of 1 to :data:`MAX_NAME_BYTES` bytes in UTF-8 (a lone surrogate, which has
  no UTF-8 form, is refused);
- it has a visible character (not only spaces);
- it has no control character: C0 (including NUL, tab and newline), DEL and C1. A newline in
  a name would fake a row in ``shoal ls``, and an escape sequence would drive the terminal;
- it has no line or paragraph separator (U+2028, U+2029: ``str.splitlines`` breaks on them)
  and no bidirectional embedding, override or isolate (U+202A..U+202E, U+2066..U+2069), which
  would make a row read differently from what it holds.

Anything else is allowed, ``/`` included (names may look like paths; ``shoal get`` only uses the
last part as a local file name, see :func:`local_file_name`).

Messages never show the refused name itself (it is what cannot be printed safely), only what
is wrong with it and where.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from shoal.errors import ConfigError

__all__ = [
    "MAX_MEDIA_TYPE_BYTES",
    "MAX_NAME_BYTES",
    "check_media_type",
    "check_name",
    "local_file_name",
    "printable",
]

MAX_NAME_BYTES: Final = 1024
"""Longest name, in bytes of its UTF-8 form."""

MAX_MEDIA_TYPE_BYTES: Final = 255
"""Longest media type (``Content-Type``) accepted, parameters included (RFC 6838 limits the
type and subtype to 127 characters each)."""

_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATORS: Final = frozenset("\u2028\u2029")


def _refused_character(char: str) -> str | None:
    """Why ``char`` may not be in a name, or None if it may."""
    if unicodedata.category(char) == "Cc":  # C0, DEL and C1
        return "a control character"
    if char in _SEPARATORS:
        return "a line separator"
    if char in _BIDI_CONTROLS:
        return "a bidirectional text control"
    if "\ud800" <= char <= "\udfff":
        return "a lone surrogate (not valid Unicode)"
    return None


def check_name(name: object, *, what: str = "file name") -> str:
    """Return ``name`` if it may be a name in the catalog; raise ``ConfigError`` if not.

    Args:
        name: The candidate name.
        what: What the name is, for the message (``"file name"``, ``"--name"``).

    Raises:
        ConfigError: ``name`` is not a ``str``, is empty or only spaces, is longer than
            :data:`MAX_NAME_BYTES` in UTF-8, or holds a character listed in the module
            docstring. The message says which rule and where, never the name itself.
    """
    if not isinstance(name, str):
        raise ConfigError(f"a {what} must be text")
    if not name:
        raise ConfigError(f"a {what} must not be empty")
    for position, char in enumerate(name):
        reason = _refused_character(char)
        if reason is not None:
            raise ConfigError(
                f"a {what} must not contain {reason}: U+{ord(char):04X} at position {position + 1}"
            )
    size = len(name.encode("utf-8"))  # cannot fail: lone surrogates were refused above
    if size > MAX_NAME_BYTES:
        raise ConfigError(
            f"a {what} must be at most {MAX_NAME_BYTES} bytes in UTF-8 (this one has {size})"
        )
    if name.isspace():
        raise ConfigError(f"a {what} must have a visible character, not only spaces")
    return name


def local_file_name(name: str) -> str:
    """The file name ``shoal get NAME`` writes to in a directory: the last part of ``name``.

    ``a/b/c.txt`` gives ``c.txt``, ``../x`` gives ``x`` and ``/etc/passwd`` gives ``passwd``:
    the result never contains ``/`` and is never ``.`` or ``..``, so joined to a directory it
    stays inside that directory.

    Raises:
        ConfigError: Nothing usable is left (``..``, ``a/``), or the name is not a valid name
            (see :func:`check_name`); the message suggests ``-o``.
    """
    base = name.rsplit("/", 1)[-1]
    if base in ("", ".", ".."):
        raise ConfigError("this name does not end in a usable file name: give one with -o FILE")
    try:
        return check_name(base)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; give a file name with -o FILE") from None


def printable(text: str) -> str:
    """``text`` with every character :func:`check_name` refuses written as an escape.

    For showing names that came from elsewhere (an older catalog, a peer) in a terminal:
    ``"a\\nb"`` is shown as ``a\\x0ab``, one line, whatever it holds.
    """
    if not any(_refused_character(c) for c in text):
        return text
    out = []
    for char in text:
        if _refused_character(char) is None:
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


# RFC 9110 section 8.3.1: media-type = type "/" subtype parameters, where type, subtype and
# parameter names are tokens and values tokens or quoted strings. ASCII only.
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE: Final = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*[ \t]*;?"
)


def check_media_type(value: object) -> str:
    """Return ``value`` stripped if it is a sane media type (``type/subtype; param=value``).

    Raises:
        ConfigError: Not text, longer than :data:`MAX_MEDIA_TYPE_BYTES` bytes, or not of
            the form ``type/subtype`` with optional ``; name=value`` parameters (ASCII).
    """
    if not isinstance(value, str):
        raise ConfigError("a media type must be text such as text/plain")
    limit = MAX_MEDIA_TYPE_BYTES
    # Length first: nothing longer is ever parsed (aiohttp allows 8 KiB per header).
    if len(value) > MAX_MEDIA_TYPE_BYTES or len(value.encode("utf-8", "replace")) > limit:
        raise ConfigError(f"a media type must be at most {MAX_MEDIA_TYPE_BYTES} bytes")
    stripped = value.strip(" \t")
    if not _MEDIA_TYPE.fullmatch(stripped):
        raise ConfigError(
            "a media type must look like type/subtype, e.g. image/png or text/plain; charset=utf-8"
        )
    return stripped
