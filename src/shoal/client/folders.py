"""Folder transfers of the blocking ``shoal.Client``: the multipart upload and the restore.

Upload: the local folder is scanned first (:func:`shoal.node.folders.scan_folder`: every name and
limit checked, symbolic links skipped), then sent as one ``multipart/form-data`` body generated
piece by piece (files read 1 MiB at a time, never whole). Restore: the same plan as the node's
(:class:`~shoal.content.directory.FolderWalk`, :class:`~shoal.node.folders.Staging`), with each
listing from ``GET /v1/folders/{cap}`` (names checked again here: the client trusts no name) and
each file fetched atomically by its cap.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from shoal.content.caps import ReadCap
from shoal.content.directory import (
    MAX_TREE_SIZE,
    MODE_MASK,
    DirEntry,
    EnterDir,
    EntryKind,
    FolderWalk,
    LeaveDir,
    NeedListing,
    PutFile,
    entry_name_problem,
)
from shoal.errors import IntegrityError, ShoalError, StorageError
from shoal.node.folder_disk import ScanItem, Staging

__all__ = ["entries_from_json", "multipart_body", "restore"]

PIECE: Final = 1024 * 1024

Progress = Callable[[int, int | None], None]


def _disposition(name: str, filename: str | None = None) -> bytes:
    value = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value.encode("ascii")


def multipart_body(
    items: list[ScanItem], boundary: str, progress: Progress | None
) -> Iterator[bytes]:
    """The ``multipart/form-data`` upload of a scanned folder (see ``docs/http-api.md``)."""
    total = sum(item.size for item in items)
    dash = f"--{boundary}".encode("ascii")

    def field(name: str, value: str) -> bytes:
        return dash + b"\r\n" + _disposition(name) + b"\r\n\r\n" + value.encode() + b"\r\n"

    for item in items:
        relative = "/".join(item.parts)
        yield field("mtime_ns", str(item.mtime_ns))
        yield field("mode", f"{item.mode:o}")
        if item.is_dir:
            yield field("dir", relative)
            continue
        yield (
            dash
            + b"\r\n"
            + _disposition("file", relative)
            + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        sent = 0
        try:
            with item.path.open("rb") as source:
                while piece := source.read(PIECE):
                    sent += len(piece)
                    yield piece
                    if progress is not None:
                        progress(len(piece), total)
        except OSError as exc:
            raise StorageError(f"cannot read {relative}: {exc.strerror or exc}") from exc
        if sent != item.size:
            raise StorageError(f"{relative} changed size while it was being uploaded")
        yield b"\r\n"
    yield dash + b"--\r\n"


def new_boundary() -> str:
    """A multipart boundary that no file's bytes are likely to hold."""
    return "shoal-" + secrets.token_hex(16)


def entries_from_json(raw: Any) -> list[DirEntry]:
    """Listing entries from the API's JSON, each checked as the listing decoder would.

    Raises:
        IntegrityError: An entry is malformed or has a name that is not one path component.
    """
    try:
        entries = []
        for item in raw:
            name = item["name"]
            problem = entry_name_problem(name) if isinstance(name, str) else "no text"
            if problem is not None:
                raise IntegrityError(f"the node sent a folder entry whose name has {problem}")
            size, mtime, mode = int(item["size"]), int(item["mtime_ns"]), int(item["mode"])
            if not 0 <= size <= MAX_TREE_SIZE or mode & ~MODE_MASK:
                raise IntegrityError("the node sent a folder entry with a bad size or mode")
            entries.append(
                DirEntry(
                    name, EntryKind(item["type"]), size, mtime, mode, ReadCap.parse(item["cap"])
                )
            )
    except (KeyError, TypeError, ValueError, ShoalError) as exc:
        if isinstance(exc, IntegrityError):
            raise
        raise IntegrityError("the node sent a malformed folder listing") from None
    return entries


def restore(
    cap: ReadCap,
    out: Path,
    *,
    listing: Callable[[ReadCap], list[DirEntry]],
    get_file: Callable[[ReadCap, Path, Callable[[int, int | None], None] | None], int],
    overwrite: bool,
    progress: Progress | None,
) -> dict[str, Any]:
    """Restore folder ``cap`` as ``out``; nothing is left at ``out`` on failure."""
    walk = FolderWalk(cap)
    staging = Staging(out, overwrite=overwrite)
    files = directories = size = 0

    def step_progress(done: int, _total: int | None) -> None:
        if progress is not None:
            progress(done, walk.total_size)

    try:
        while (step := walk.next()) is not None:
            if isinstance(step, NeedListing):
                walk.feed(step, listing(step.cap))
            elif isinstance(step, EnterDir):
                staging.make_dir(step.path)
                directories += 1
            elif isinstance(step, PutFile):
                size += get_file(step.entry.cap, staging.path(step.path), step_progress)
                staging.set_meta(step.path, step.entry)
                files += 1
            elif isinstance(step, LeaveDir):
                staging.set_meta(step.path, step.entry)
        staging.commit()
    except BaseException as exc:
        staging.discard()
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write the folder {out}: {exc.strerror or exc}") from exc
        raise
    return {"path": os.fspath(out), "files": files, "directories": directories, "size": size}
