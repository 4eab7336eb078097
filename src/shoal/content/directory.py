"""Directories: immutable folder objects, their listing format, and the walk that restores one.

How it works: a directory is stored exactly like a file whose bytes are its *listing*, with the
root manifest's sealed kind ``"dir"`` instead of ``"file"`` (so holders, who cannot open the
sealed part, cannot even tell a directory from a file, and learn no names). The listing is one
canonical msgpack map::

    {"v": 1, "e": [entry, ...]}      entries sorted by the UTF-8 bytes of their names
    entry = {"n": name, "t": "file" | "dir", "z": size, "m": mtime_ns, "p": mode,
             "i": child cid (32 bytes), "k": child root key (32 bytes)}

``z`` is a file's size, or for a directory the total size of the files below it; ``m`` the
modification time in nanoseconds since the Unix epoch (signed); ``p`` the permission bits
(``0o777`` at most: set-id and sticky bits are never stored). The child is named by its read
cap, so a directory's cap reads the whole tree, and the same tree (names, bytes, times, modes)
stored by the same owner always gives the same cap: entries are sorted, and nothing depends on
the time of the put.

:func:`decode_listing` reads exactly the encoding :func:`encode_listing` writes (the strict,
bounded :class:`~shoal.content.codec.Reader` of manifests): names strictly increasing (so no
duplicates), each 1..255 bytes of UTF-8 with no ``/``, no NUL or other control character, and
neither ``.`` nor ``..``; at most :data:`MAX_ENTRIES` entries; a listing of at most
:data:`MAX_LISTING_SIZE` bytes. So a name read from a listing can be joined to a local folder
and never leaves it.

:class:`FolderWalk` is the sans-I/O restore plan of a whole tree: it asks for each directory's
listing (:class:`NeedListing`), then yields what to create in order (:class:`EnterDir`,
:class:`PutFile`, :class:`LeaveDir`: set a directory's mode and time after its contents are
written). It refuses a tree deeper than ``max_depth``, with more than ``max_entries`` entries
in all (a small tree that lists one big subtree many times would otherwise expand without
bound), or a directory that lists one of its own ancestors. Format: ``docs/content-format.md``.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shoal.content.caps import ReadCap
from shoal.content.codec import Malformed, Reader
from shoal.content.crypto import KEY_SIZE
from shoal.errors import ConfigError, IntegrityError
from shoal.ids import ID_SIZE

__all__ = [
    "LISTING_VERSION",
    "MAX_ENTRIES",
    "MAX_FOLDER_DEPTH",
    "MAX_FOLDER_ENTRIES",
    "MAX_LISTING_SIZE",
    "MAX_NAME_BYTES",
    "MAX_TREE_SIZE",
    "MODE_MASK",
    "DirEntry",
    "EnterDir",
    "EntryKind",
    "FolderWalk",
    "LeaveDir",
    "NeedListing",
    "PutFile",
    "decode_listing",
    "encode_listing",
    "entry_name_problem",
    "split_relative_path",
]

LISTING_VERSION = 1
MAX_NAME_BYTES = 255
"""Longest entry name in UTF-8 bytes (what common file systems allow for one name)."""
MAX_ENTRIES = 65_536
"""Most entries in one directory."""
MAX_LISTING_SIZE = 24 << 20
"""Largest encoded listing: :data:`MAX_ENTRIES` entries with the longest names fit."""
MAX_FOLDER_DEPTH = 64
"""Deepest tree a put or a restore accepts (the root is depth 0)."""
MAX_FOLDER_ENTRIES = 1_000_000
"""Most entries a whole tree may have, counted as a restore would create them."""
MAX_TREE_SIZE = (1 << 63) - 1
MODE_MASK = 0o777
"""Permission bits kept: read, write, execute for owner, group, others (no set-id, sticky)."""

_MIN_MTIME = -(1 << 63)
_MAX_MTIME = (1 << 63) - 1
_K = {name: msgpack.packb(name) for name in ("v", "e", "n", "t", "z", "m", "p", "i", "k")}
_MIN_ENTRY_SIZE = 88  # fixmap, 7 one-letter keys, 1-byte name, "dir", 3 small ints, 2 x bin32


class EntryKind(enum.Enum):
    """What a directory entry names."""

    FILE = "file"
    DIRECTORY = "dir"


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One entry of a directory listing.

    Attributes:
        name: The entry's name (one path component).
        kind: A file or a directory.
        size: A file's size in bytes; for a directory, the total of the files below it.
        mtime_ns: Modification time, nanoseconds since the Unix epoch.
        mode: Permission bits (at most ``0o777``).
        cap: The child's read cap (a file's, or a directory's).
    """

    name: str
    kind: EntryKind
    size: int
    mtime_ns: int
    mode: int
    cap: ReadCap = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of the HTTP API and ``shoal ls --json``."""
        return {
            "name": self.name,
            "type": self.kind.value,
            "size": self.size,
            "mtime": self.mtime_ns / 1e9,
            "mtime_ns": self.mtime_ns,
            "mode": self.mode,
            "cap": str(self.cap),
        }


def _refused_character(char: str) -> str | None:
    if char == "/":
        return "a slash"
    if unicodedata.category(char) == "Cc":  # C0 (NUL included), DEL, C1
        return "a control character"
    if char in "\u2028\u2029":
        return "a line separator"
    if "\u202a" <= char <= "\u202e" or "\u2066" <= char <= "\u2069":
        return "a bidirectional text control"
    if "\ud800" <= char <= "\udfff":
        return "bytes that are not UTF-8"
    return None


def entry_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a directory entry's name, or None if it can (never quotes it).

    A name is one path component: 1..255 bytes of UTF-8, not ``.`` or ``..``, with no ``/``,
    no control character (NUL included), line separator or bidirectional control.
    """
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r}"
    for position, char in enumerate(name):
        reason = _refused_character(char)
        if reason is not None:
            return f"{reason} (U+{ord(char):04X}) at position {position + 1}"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"a name longer than {MAX_NAME_BYTES} bytes"
    return None


def split_relative_path(text: str) -> tuple[str, ...]:
    """Split a relative path ``a/b/c`` (an upload's file name) into checked components.

    Raises:
        ConfigError: An absolute path, an empty component (``a//b``, a trailing ``/`` is
            allowed and ignored), ``.`` or ``..``, a bad name, or a path deeper than
            :data:`MAX_FOLDER_DEPTH`.
    """
    if text.startswith("/"):
        raise ConfigError("a path in a folder must be relative (it starts with '/')")
    parts = tuple(text[:-1].split("/") if text.endswith("/") else text.split("/"))
    if len(parts) > MAX_FOLDER_DEPTH:
        raise ConfigError(f"a path in a folder may have at most {MAX_FOLDER_DEPTH} parts")
    for index, part in enumerate(parts):
        problem = entry_name_problem(part)
        if problem is not None:
            raise ConfigError(f"part {index + 1} of a path in the folder has {problem}")
    return parts


def _sort_key(entry: DirEntry) -> bytes:
    return entry.name.encode("utf-8")


def encode_listing(entries: Iterable[DirEntry]) -> bytes:
    """The canonical listing bytes of ``entries`` (sorted here by their names' UTF-8 bytes).

    Raises:
        ValueError: Two entries share a name, a name or value is out of range, or there are
            more than :data:`MAX_ENTRIES` (callers check names first, with their own error).
    """
    ordered = sorted(entries, key=_sort_key)
    if len(ordered) > MAX_ENTRIES:
        raise ValueError(f"a directory holds at most {MAX_ENTRIES} entries")
    items = []
    previous = b""
    for entry in ordered:
        raw = _sort_key(entry)
        if raw == previous:
            raise ValueError("two entries of one directory have the same name")
        previous = raw
        if entry_name_problem(entry.name) is not None:
            raise ValueError("a directory entry has an invalid name")
        if not 0 <= entry.size <= MAX_TREE_SIZE or not _MIN_MTIME <= entry.mtime_ns <= _MAX_MTIME:
            raise ValueError("a directory entry's size or time is out of range")
        if entry.mode & ~MODE_MASK:
            raise ValueError(f"a directory entry's mode has bits outside {MODE_MASK:#o}")
        items.append(
            {
                "n": entry.name,
                "t": entry.kind.value,
                "z": entry.size,
                "m": entry.mtime_ns,
                "p": entry.mode,
                "i": entry.cap.cid,
                "k": entry.cap.key,
            }
        )
    packed: bytes = msgpack.packb({"v": LISTING_VERSION, "e": items}, use_bin_type=True)
    if len(packed) > MAX_LISTING_SIZE:
        raise ValueError(f"a directory listing holds at most {MAX_LISTING_SIZE} bytes")
    return packed


def decode_listing(data: bytes | bytearray | memoryview) -> tuple[DirEntry, ...]:
    """Parse listing bytes strictly (see the module docstring); never echoes a value.

    Raises:
        IntegrityError: The bytes are not a canonical version-1 listing.
    """
    raw = bytes(data)
    if len(raw) > MAX_LISTING_SIZE:
        raise IntegrityError(f"directory listing larger than {MAX_LISTING_SIZE} bytes")
    try:
        return _decode(Reader(raw))
    except Malformed as exc:
        raise IntegrityError(f"malformed directory listing: {exc}") from None


_KINDS = {kind.value: kind for kind in EntryKind}


def _decode(reader: Reader) -> tuple[DirEntry, ...]:
    what = "directory listing"
    if reader.map_header(what) != 2:
        raise Malformed(f"{what}: expected 2 fields")
    reader.key(_K["v"], "v", what)
    version = reader.uint("listing version", 0, (1 << 64) - 1)
    if version != LISTING_VERSION:
        raise Malformed(
            f"listing version {version} is not {LISTING_VERSION}; a newer Shoal may be needed"
        )
    reader.key(_K["e"], "e", what)
    count = reader.array_header("entries", MAX_ENTRIES, _MIN_ENTRY_SIZE)
    entries = []
    previous = b""
    for index in range(count):
        where = f"entry {index}"
        if reader.map_header(where) != 7:
            raise Malformed(f"{where}: expected 7 fields")
        reader.key(_K["n"], "n", where)
        raw_name = reader.text(f"{where} name", MAX_NAME_BYTES)
        if index and raw_name <= previous:
            raise Malformed(f"{where}: names are not in strictly increasing order")
        previous = raw_name
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{where}: the name is not UTF-8") from None
        problem = entry_name_problem(name)
        if problem is not None:
            raise Malformed(f"{where}: the name has {problem}")
        reader.key(_K["t"], "t", where)
        kind = _KINDS.get(reader.short_str(f"{where} type"))
        if kind is None:
            raise Malformed(f"{where}: unknown entry type; a newer Shoal may be needed")
        reader.key(_K["z"], "z", where)
        size = reader.uint(f"{where} size", 0, MAX_TREE_SIZE)
        reader.key(_K["m"], "m", where)
        mtime = reader.int_(f"{where} time", _MIN_MTIME, _MAX_MTIME)
        reader.key(_K["p"], "p", where)
        mode = reader.uint(f"{where} mode", 0, MODE_MASK)
        reader.key(_K["i"], "i", where)
        cid = reader.bin(f"{where} cid", ID_SIZE, ID_SIZE)
        reader.key(_K["k"], "k", where)
        key = reader.bin(f"{where} key", KEY_SIZE, KEY_SIZE)
        entries.append(DirEntry(name, kind, size, mtime, mode, ReadCap(cid, key)))
    reader.expect_end(what)
    return tuple(entries)


# -- the restore plan -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedListing:
    """Fetch and decode the listing of directory ``cap`` (at ``path``), then ``feed`` it."""

    cap: ReadCap = field(repr=False)
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EnterDir:
    """Create directory ``path`` (``()`` is the output folder itself); entry None at the root."""

    path: tuple[str, ...]
    entry: DirEntry | None


@dataclass(frozen=True, slots=True)
class PutFile:
    """Write file ``path`` from ``entry.cap``, then give it ``entry``'s mode and time."""

    path: tuple[str, ...]
    entry: DirEntry


@dataclass(frozen=True, slots=True)
class LeaveDir:
    """Directory ``path`` is complete: give it ``entry``'s mode and time (None at the root)."""

    path: tuple[str, ...]
    entry: DirEntry | None


Step = NeedListing | EnterDir | PutFile | LeaveDir


@dataclass(slots=True)
class _Frame:
    path: tuple[str, ...]
    cid: bytes
    entry: DirEntry | None
    entries: Sequence[DirEntry]
    index: int = 0


class FolderWalk:
    """The restore plan of a directory tree, depth first, entries in listing order.

    ``next()`` returns a :class:`NeedListing` (answer with :meth:`feed`), an :class:`EnterDir`,
    a :class:`PutFile`, a :class:`LeaveDir`, or None when the tree is done. Every directory is
    entered before anything in it and left after everything in it.
    """

    def __init__(
        self,
        root: ReadCap,
        *,
        max_depth: int = MAX_FOLDER_DEPTH,
        max_entries: int = MAX_FOLDER_ENTRIES,
    ) -> None:
        """Start at directory ``root``; the first step asks for its listing."""
        self._max_depth = max_depth
        self._max_entries = max_entries
        self._entries_seen = 0
        self._stack: list[_Frame] = []
        self._pending: tuple[NeedListing, DirEntry | None] | None = (NeedListing(root, ()), None)
        self._ready: Step | None = None
        self.total_size: int | None = None
        """Total bytes of the tree's files, known once the root listing is fed."""

    @property
    def depth(self) -> int:
        """Directories open on the way down (the root counts as 1)."""
        return len(self._stack)

    def next(self) -> Step | None:
        """The next step (the same :class:`NeedListing` until it is fed)."""
        if self._pending is not None:
            return self._pending[0]
        if self._ready is not None:
            ready, self._ready = self._ready, None
            return ready
        if not self._stack:
            return None
        frame = self._stack[-1]
        if frame.index == len(frame.entries):
            self._stack.pop()
            return LeaveDir(frame.path, frame.entry)
        entry = frame.entries[frame.index]
        frame.index += 1
        path = (*frame.path, entry.name)
        if entry.kind is EntryKind.FILE:
            return PutFile(path, entry)
        if len(path) > self._max_depth:
            raise IntegrityError(
                f"the folder is deeper than {self._max_depth} levels; a restore stops there"
            )
        if any(f.cid == entry.cap.cid for f in self._stack):
            raise IntegrityError(
                f"a directory at depth {len(path)} lists one of its own parent directories"
            )
        need = NeedListing(entry.cap, path)
        self._pending = (need, entry)
        return need

    def feed(self, need: NeedListing, entries: Sequence[DirEntry]) -> None:
        """Give the decoded listing that :class:`NeedListing` ``need`` asked for."""
        if self._pending is None or self._pending[0] is not need:
            raise ValueError("feed() answers the pending NeedListing")
        entry = self._pending[1]
        self._pending = None
        self._entries_seen += len(entries)
        if self._entries_seen > self._max_entries:
            raise IntegrityError(
                f"the folder has more than {self._max_entries} entries in all; a restore "
                "stops there"
            )
        if entry is None:
            self.total_size = sum(e.size for e in entries)
        self._stack.append(_Frame(need.path, need.cap.cid, entry, entries))
        self._ready = EnterDir(need.path, entry)
