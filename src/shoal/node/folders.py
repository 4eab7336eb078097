"""Folders: store a directory tree as directory objects, list one, restore one.

Put: the files of a tree are stored one by one (each through the file put pipeline, without a
catalog entry), their caps collected by :class:`FolderBuilder`; then each directory's listing is
stored as an object of kind ``"dir"``, deepest first, so that a parent names its children's caps;
the root's cap goes to the catalog (media type ``inode/directory``). A failed put catalogs
nothing. The order and content of every listing depend only on the tree, so the same tree gives
the same cap.

Restore: :class:`~shoal.content.directory.FolderWalk` plans it; everything is written into a
fresh staging folder next to the output (each file atomically: temporary file, fsync, rename),
given its mode and time, and the staging folder is renamed to the output only when the whole
tree is there. A failed restore leaves nothing at the output; an existing output is only
replaced when the caller says so. Names come from listings whose decoder refuses ``/``, ``.``,
``..`` and control characters, so nothing is ever written outside the staging folder.

The synchronous filesystem helpers (:func:`scan_folder`, :class:`Staging`) are shared with the
blocking ``shoal.Client``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.content import ReadCap
from shoal.content.directory import (
    MAX_ENTRIES,
    MAX_FOLDER_DEPTH,
    MAX_FOLDER_ENTRIES,
    MAX_LISTING_SIZE,
    MODE_MASK,
    DirEntry,
    EnterDir,
    EntryKind,
    FolderWalk,
    LeaveDir,
    NeedListing,
    PutFile,
    decode_listing,
    encode_listing,
    entry_name_problem,
    split_relative_path,
)
from shoal.content.manifest import KIND_DIRECTORY
from shoal.errors import ConfigError, IntegrityError, StorageError
from shoal.names import printable
from shoal.node.folder_disk import ScanItem, Staging, scan_folder
from shoal.node.get import open_file
from shoal.node.put import PlacedObject, catalog_object, object_redundancy, place_object
from shoal.node.runtime import NodeRuntime
from shoal.node.window import OrderedWindow

__all__ = [
    "FOLDER_MEDIA_TYPE",
    "FolderBuilder",
    "FolderItem",
    "FolderResult",
    "RestoreResult",
    "ScanItem",
    "Staging",
    "folder_steps",
    "put_items",
    "put_scanned",
    "read_listing",
    "restore_folder",
    "scan_folder",
    "store_folder",
]

FILE_WINDOW = 16
"""Small files of a folder stored (or restored) at once."""

FOLDER_MEDIA_TYPE = "inode/directory"
"""Media type of a folder's catalog entry (the shared MIME database's name for a directory)."""


@dataclass(frozen=True, slots=True)
class FolderResult:
    """What a folder put produced.

    Attributes:
        name: Catalog name.
        cap: The root directory's read cap.
        size: Total bytes of its files.
        files: Files stored.
        directories: Directories stored, the root included.
        blocks: Blocks written (data and manifests of every object).
        replicas: Fewest copies placed of any block.
        replicas_wanted: The node's replication factor.
        skipped: Relative paths left out (symbolic links, devices, sockets, FIFOs).
    """

    name: str
    cap: str
    size: int
    files: int
    directories: int
    blocks: int
    replicas: int
    replicas_wanted: int
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON answer of ``PUT /v1/folders/{name}``."""
        return {
            "name": self.name,
            "cap": self.cap,
            "size": self.size,
            "files": self.files,
            "directories": self.directories,
            "blocks": self.blocks,
            "replicas": self.replicas,
            "replicas_wanted": self.replicas_wanted,
            "skipped": self.skipped,
        }


# -- the tree being put ----------------------------------------------------------------------


@dataclass(slots=True)
class _Dir:
    mtime_ns: int
    mode: int
    children: dict[str, DirEntry | _Dir] = field(default_factory=dict)


def _shown(parts: tuple[str, ...]) -> str:
    return printable("/".join(parts))


class FolderBuilder:
    """Collects a tree's stored files, then stores its directories bottom up.

    Memory: one small record per entry (at most :data:`MAX_FOLDER_ENTRIES`).
    """

    def __init__(self, rt: NodeRuntime, *, default_mtime_ns: int, default_mode: int) -> None:
        self._rt = rt
        self._default = (default_mtime_ns, default_mode)
        self._root = _Dir(default_mtime_ns, default_mode)
        self._entries = 0
        self.files = 0
        self.directories = 1
        self.blocks = 0
        self.copies = object_redundancy(rt).wanted

    def _dir(self, parts: tuple[str, ...]) -> _Dir:
        """The directory at ``parts``, made (with default metadata) if needed."""
        if len(parts) > MAX_FOLDER_DEPTH:
            raise ConfigError(f"a folder may be at most {MAX_FOLDER_DEPTH} levels deep")
        node = self._root
        for depth, name in enumerate(parts):
            child = node.children.get(name)
            if child is None:
                child = _Dir(*self._default)
                self._add(node, name, child, parts[: depth + 1])
                self.directories += 1
            elif not isinstance(child, _Dir):
                raise ConfigError(f"{_shown(parts[: depth + 1])} is both a file and a folder")
            node = child
        return node

    def _add(self, parent: _Dir, name: str, child: DirEntry | _Dir, parts: tuple[str, ...]) -> None:
        problem = entry_name_problem(name)
        if problem is not None:
            raise ConfigError(f"cannot store {_shown(parts)}: its name has {problem}")
        if len(parent.children) >= MAX_ENTRIES:
            raise ConfigError(f"a folder may hold at most {MAX_ENTRIES} entries in one directory")
        self._entries += 1
        if self._entries > MAX_FOLDER_ENTRIES:
            raise ConfigError(f"a folder may hold at most {MAX_FOLDER_ENTRIES} entries in all")
        parent.children[name] = child

    def add_directory(self, parts: tuple[str, ...], *, mtime_ns: int, mode: int) -> None:
        """Declare directory ``parts`` (it may be empty) with its time and mode."""
        node = self._dir(parts)
        node.mtime_ns, node.mode = mtime_ns, mode & MODE_MASK

    def add_file(
        self, parts: tuple[str, ...], placed: PlacedObject, *, mtime_ns: int, mode: int
    ) -> None:
        """Record stored file ``parts``."""
        if not parts:
            raise ConfigError("a file in a folder needs a name")
        parent = self._dir(parts[:-1])
        if parts[-1] in parent.children:
            raise ConfigError(f"{_shown(parts)} appears twice in the folder")
        entry = DirEntry(
            parts[-1], EntryKind.FILE, placed.size, mtime_ns, mode & MODE_MASK, placed.cap
        )
        self._add(parent, parts[-1], entry, parts)
        self.count(placed)
        self.files += 1

    def count(self, placed: PlacedObject) -> None:
        """Add a placed object's blocks and copies to the totals."""
        self.blocks += placed.blocks
        self.copies = min(self.copies, placed.copies)

    async def finish(self) -> tuple[ReadCap, int]:
        """Store every directory listing, deepest first; return the root's cap and size."""
        cap, size = await self._store(self._root)
        return cap, size

    async def _store(self, node: _Dir) -> tuple[ReadCap, int]:
        entries: list[DirEntry] = []
        total = 0
        for name, child in node.children.items():
            if isinstance(child, _Dir):
                cap, size = await self._store(child)
                entries.append(
                    DirEntry(name, EntryKind.DIRECTORY, size, child.mtime_ns, child.mode, cap)
                )
            else:
                entries.append(child)
                size = child.size
            total += size
        node.children.clear()  # what is stored is no longer needed
        listing = await self._rt.cpu(encode_listing, entries)
        placed = await place_object(self._rt, _pieces(listing, self._rt), kind=KIND_DIRECTORY)
        self.count(placed)
        return placed.cap, total


async def _pieces(data: bytes, rt: NodeRuntime) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    size = rt.options.chunk_size
    for start in range(0, len(view), size):
        yield view[start : start + size]


# -- reading and restoring -------------------------------------------------------------------


async def read_listing(rt: NodeRuntime, cap: ReadCap) -> tuple[DirEntry, ...]:
    """Fetch, check and decode one directory's listing.

    Raises:
        IntegrityError: ``cap`` names a file, or the listing is too large or malformed.
    """
    stream = await open_file(rt, cap, kind=KIND_DIRECTORY)
    try:
        if stream.size > MAX_LISTING_SIZE:
            raise IntegrityError(
                f"a directory listing of {stream.size} bytes is larger than {MAX_LISTING_SIZE}"
            )
        data = bytearray()
        while (chunk := await stream.next_chunk()) is not None:
            data += chunk
    finally:
        await stream.aclose()
    return await rt.cpu(decode_listing, bytes(data))


async def folder_steps(
    rt: NodeRuntime, walk: FolderWalk
) -> AsyncIterator[Any]:  # EnterDir | PutFile | LeaveDir
    """Drive ``walk``: fetch the listings it asks for, yield every other step in order."""
    while (step := walk.next()) is not None:
        if isinstance(step, NeedListing):
            walk.feed(step, await read_listing(rt, step.cap))
        else:
            yield step


ProgressFn = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class FolderItem:
    """One file or directory of a folder put from a stream (the HTTP API's upload).

    Attributes:
        path: Relative path, ``/``-separated (a directory may end with ``/``).
        data: The file's bytes in order; None for a directory.
        mtime_ns: Modification time; None: the time of the put.
        mode: Permission bits; None: 0o644 for a file, 0o755 for a directory.
    """

    path: str
    data: AsyncIterator[Any] | None
    mtime_ns: int | None = None
    mode: int | None = None


async def put_items(
    rt: NodeRuntime,
    builder: FolderBuilder,
    items: AsyncIterator[FolderItem],
    chunks_of: Callable[[AsyncIterator[Any]], AsyncIterator[Any]],
    *,
    now_ns: int,
    progress: ProgressFn | None = None,
) -> None:
    """Store every item of a streamed folder into ``builder`` (paths checked as they come)."""
    async for item in items:
        parts = split_relative_path(item.path)
        mtime = now_ns if item.mtime_ns is None else item.mtime_ns
        if item.data is None:
            mode = 0o755 if item.mode is None else item.mode
            builder.add_directory(parts, mtime_ns=mtime, mode=mode)
            continue
        if item.path.endswith("/"):
            raise ConfigError("a path that ends with '/' names a folder, not a file")
        placed = await place_object(rt, chunks_of(item.data), progress=progress)
        mode = 0o644 if item.mode is None else item.mode
        builder.add_file(parts, placed, mtime_ns=mtime, mode=mode)


async def put_scanned(
    rt: NodeRuntime,
    builder: FolderBuilder,
    scanned: list[ScanItem],
    chunks_of: Callable[[Any], AsyncIterator[Any]],
    *,
    progress: ProgressFn | None = None,
) -> None:
    """Store the files of a scanned local folder into ``builder``.

    Small files (one chunk at most) are stored up to :data:`FILE_WINDOW` at a time: each is
    a round trip or two, which would otherwise dominate a folder of many small files. A
    larger file is stored alone (its own pipeline already keeps a window of chunks busy).
    """

    async def place(item: ScanItem) -> tuple[ScanItem, PlacedObject]:
        try:
            opened = await rt.io(item.path.open, "rb")
        except OSError as exc:
            raise StorageError(f"cannot read {_shown(item.parts)}: {exc.strerror}") from exc
        try:
            return item, await place_object(rt, chunks_of(opened), progress=progress)
        finally:
            opened.close()

    def add(done: tuple[ScanItem, PlacedObject]) -> None:
        item, placed = done
        builder.add_file(item.parts, placed, mtime_ns=item.mtime_ns, mode=item.mode)

    async with OrderedWindow[tuple[ScanItem, PlacedObject]](FILE_WINDOW) as window:
        for item in scanned:
            if item.is_dir:
                builder.add_directory(item.parts, mtime_ns=item.mtime_ns, mode=item.mode)
            elif item.size > rt.options.chunk_size:
                while window:
                    add(await window.next())
                add(await place(item))
            else:
                if window.full:
                    add(await window.next())
                window.start(place(item))
        while window:
            add(await window.next())


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a folder restore wrote."""

    path: str
    files: int
    directories: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "files": self.files,
            "directories": self.directories,
            "size": self.size,
        }


async def restore_folder(
    rt: NodeRuntime,
    cap: ReadCap,
    out: Path,
    write_file: Callable[[ReadCap, Path], Any],
    *,
    overwrite: bool,
) -> RestoreResult:
    """Restore directory ``cap`` as folder ``out`` (see the module docstring).

    ``write_file(cap, path)`` is awaited to write one file atomically at ``path``.
    """
    walk = FolderWalk(cap)
    staging = await rt.io(Staging, out, overwrite=overwrite)
    files = directories = size = 0

    async def put(step: PutFile) -> None:
        await write_file(step.entry.cap, staging.path(step.path))
        await rt.io(staging.set_meta, step.path, step.entry)

    try:
        # Small files of a directory are written up to FILE_WINDOW at a time; a directory
        # gets its mode and time only once every file in it is written.
        async with OrderedWindow[None](FILE_WINDOW) as window:
            async for step in folder_steps(rt, walk):
                if isinstance(step, EnterDir):
                    await rt.io(staging.make_dir, step.path)
                    directories += 1
                elif isinstance(step, PutFile):
                    files += 1
                    size += step.entry.size
                    if step.entry.size > rt.options.chunk_size:
                        while window:
                            await window.next()
                        await put(step)
                    else:
                        if window.full:
                            await window.next()
                        window.start(put(step))
                elif isinstance(step, LeaveDir):
                    while window:
                        await window.next()
                    await rt.io(staging.set_meta, step.path, step.entry)
        await rt.io(staging.commit)
    except BaseException as exc:
        await asyncio.shield(rt.io(staging.discard))
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the folder {out}: {exc.strerror or exc}") from exc
        raise
    return RestoreResult(str(out), files, directories, size)


async def store_folder(
    rt: NodeRuntime,
    name: str,
    source: str | os.PathLike[str] | AsyncIterator[FolderItem],
    chunks_of: Callable[[Any], AsyncIterator[Any]],
    *,
    progress: ProgressFn | None = None,
) -> FolderResult:
    """Store a local folder or a stream of items as directory objects and catalog the root.

    ``chunks_of`` turns a binary file object or an async iterable of bytes into whole chunks
    (the node's chunker).
    """
    now_ns = time.time_ns()
    skipped: list[str] = []
    if isinstance(source, str | os.PathLike):
        scanned, skipped = await rt.io(scan_folder, Path(source))
        root_info = await rt.io(os.stat, Path(source))
        builder = FolderBuilder(rt, default_mtime_ns=root_info.st_mtime_ns, default_mode=0o755)
        await put_scanned(rt, builder, scanned, chunks_of, progress=progress)
        mtime: float | None = root_info.st_mtime
    else:
        builder = FolderBuilder(rt, default_mtime_ns=now_ns, default_mode=0o755)
        await put_items(rt, builder, source, chunks_of, now_ns=now_ns, progress=progress)
        mtime = None
    cap, size = await builder.finish()
    scheme = object_redundancy(rt)  # the node's default: R copies, or K-of-N shares
    placed = PlacedObject(
        cap,
        size,
        builder.blocks,
        builder.copies,
        scheme.wanted,
        scheme if scheme.is_erasure else None,
    )
    result = await catalog_object(rt, name, placed, media_type=FOLDER_MEDIA_TYPE, mtime=mtime)
    return FolderResult(
        name=name,
        cap=result.cap,
        size=size,
        files=builder.files,
        directories=builder.directories,
        blocks=result.blocks,
        replicas=result.replicas,
        replicas_wanted=result.replicas_wanted,
        skipped=skipped,
    )
