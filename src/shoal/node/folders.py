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
import contextlib
import os
import shutil
import stat
import tempfile
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
from shoal.node.get import open_file
from shoal.node.put import PlacedObject, place_object
from shoal.node.runtime import NodeRuntime
from shoal.store.files import fsync_dir

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
]

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
        self.copies = rt.options.replicas

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


# -- scanning a local folder -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanItem:
    """A file or directory found in a local folder (``parts`` relative to it)."""

    parts: tuple[str, ...]
    path: Path
    is_dir: bool
    size: int
    mtime_ns: int
    mode: int


def scan_folder(root: Path) -> tuple[list[ScanItem], list[str]]:
    """Every file and directory under ``root``, parents first, in sorted order; and what was
    skipped (symbolic links and special files, as relative paths).

    Symbolic links are never followed. Every limit is checked here, before anything is stored.

    Raises:
        NotFound-like ConfigError: ``root`` is not a directory.
        ConfigError: A name cannot be stored (not UTF-8, control characters), the tree is
            deeper than :data:`MAX_FOLDER_DEPTH`, or has too many entries.
        StorageError: A directory cannot be read.
    """
    try:
        if not stat.S_ISDIR(root.stat().st_mode):
            raise ConfigError(f"{root} is not a folder")
    except FileNotFoundError:
        raise ConfigError(f"no such folder: {root}") from None
    except OSError as exc:
        raise StorageError(f"cannot read {root}: {exc.strerror or exc}") from exc
    items: list[ScanItem] = []
    skipped: list[str] = []
    pending: list[tuple[tuple[str, ...], Path]] = [((), root)]
    while pending:
        parts, directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                found = sorted(scan, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise StorageError(
                f"cannot read folder {_shown(parts) or '.'}: {exc.strerror or exc}"
            ) from exc
        if len(found) > MAX_ENTRIES:
            raise ConfigError(
                f"folder {_shown(parts) or '.'} has {len(found)} entries; at most {MAX_ENTRIES} "
                "are allowed in one directory"
            )
        subdirs = []
        for dirent in found:
            child = (*parts, dirent.name)
            info = dirent.stat(follow_symlinks=False)
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                skipped.append(_shown(child))
                continue
            problem = entry_name_problem(dirent.name)
            if problem is not None:
                raise ConfigError(f"cannot store {_shown(child)}: its name has {problem}")
            is_dir = stat.S_ISDIR(info.st_mode)
            if is_dir and len(child) >= MAX_FOLDER_DEPTH:
                raise ConfigError(f"the folder is deeper than {MAX_FOLDER_DEPTH} levels")
            items.append(
                ScanItem(
                    child,
                    Path(dirent.path),
                    is_dir,
                    0 if is_dir else info.st_size,
                    info.st_mtime_ns,
                    stat.S_IMODE(info.st_mode) & MODE_MASK,
                )
            )
            if len(items) > MAX_FOLDER_ENTRIES:
                raise ConfigError(f"a folder may hold at most {MAX_FOLDER_ENTRIES} entries")
            if is_dir:
                subdirs.append((child, Path(dirent.path)))
        pending.extend(reversed(subdirs))
    return items, skipped


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_writable(path: Path) -> None:
    """Give the owner rwx on every directory under ``path``, so it can be removed."""
    for directory, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)


class Staging:
    """A restore's working folder next to the output, renamed into place when complete.

    Blocking: async callers run its methods in a worker thread.
    """

    def __init__(self, out: Path, *, overwrite: bool) -> None:
        """Make the staging folder; refuse an existing ``out`` unless ``overwrite``.

        Raises:
            ConfigError: ``out`` exists and ``overwrite`` is False.
            StorageError: The staging folder cannot be made.
        """
        self.out = out
        self.overwrite = overwrite
        self._check_free()
        parent = out.parent
        try:
            self.root = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.", suffix=".tmp"))
        except OSError as exc:
            raise StorageError(f"cannot write into {parent}: {exc.strerror or exc}") from exc

    def _check_free(self) -> None:
        if not self.overwrite and os.path.lexists(self.out):
            raise ConfigError(f"{self.out} already exists: use --force to replace it")

    def path(self, parts: tuple[str, ...]) -> Path:
        """Where ``parts`` goes inside the staging folder."""
        return self.root.joinpath(*parts)

    def make_dir(self, parts: tuple[str, ...]) -> None:
        """Create directory ``parts`` (owner-only until :meth:`finish_dir`)."""
        if parts:
            os.mkdir(self.path(parts), 0o700)

    def set_meta(self, parts: tuple[str, ...], entry: DirEntry | None) -> None:
        """Give ``parts`` its entry's mode and time (the root: the umask's default mode)."""
        target = self.path(parts)
        if entry is None:
            os.chmod(target, 0o777 & ~_umask())
            return
        os.chmod(target, entry.mode)
        os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))

    def commit(self) -> None:
        """Rename the staging folder to the output (replacing an old one if allowed)."""
        self._check_free()
        trash: Path | None = None
        if os.path.lexists(self.out):
            trash = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.old."))
            os.rename(self.out, trash / "old")
        try:
            os.rename(self.root, self.out)
        except BaseException:
            if trash is not None:
                os.rename(trash / "old", self.out)
                trash.rmdir()
            raise
        fsync_dir(self.out.parent)
        if trash is not None:
            _make_writable(trash)
            shutil.rmtree(trash, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staging folder and everything in it."""
        _make_writable(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


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
    """Store the files of a scanned local folder into ``builder``."""
    for item in scanned:
        if item.is_dir:
            builder.add_directory(item.parts, mtime_ns=item.mtime_ns, mode=item.mode)
            continue
        try:
            opened = await rt.io(item.path.open, "rb")
        except OSError as exc:
            raise StorageError(f"cannot read {_shown(item.parts)}: {exc.strerror}") from exc
        try:
            placed = await place_object(rt, chunks_of(opened), progress=progress)
        finally:
            opened.close()
        builder.add_file(item.parts, placed, mtime_ns=item.mtime_ns, mode=item.mode)


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
    try:
        async for step in folder_steps(rt, walk):
            if isinstance(step, EnterDir):
                await rt.io(staging.make_dir, step.path)
                directories += 1
            elif isinstance(step, PutFile):
                target = staging.path(step.path)
                await write_file(step.entry.cap, target)
                await rt.io(staging.set_meta, step.path, step.entry)
                files += 1
                size += step.entry.size
            elif isinstance(step, LeaveDir):
                await rt.io(staging.set_meta, step.path, step.entry)
        await rt.io(staging.commit)
    except BaseException as exc:
        await asyncio.shield(rt.io(staging.discard))
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the folder {out}: {exc.strerror or exc}") from exc
        raise
    return RestoreResult(str(out), files, directories, size)
