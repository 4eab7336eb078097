"""The local side of folders: scanning a folder to put, and the staging folder of a restore.

Blocking functions (async callers run them in a worker thread), shared by the node
(:mod:`shoal.node.folders`) and the blocking ``shoal.Client``.

Scanning never follows a symbolic link and checks every name and limit before anything is
stored. A restore writes into a fresh staging folder next to the output (created by
``mkdtemp``: nobody else writes there), which is renamed to the output only when the whole tree
is there; a failure removes it, leaving nothing at the output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shoal.content.directory import (
    MAX_ENTRIES,
    MAX_FOLDER_DEPTH,
    MAX_FOLDER_ENTRIES,
    MODE_MASK,
    DirEntry,
    entry_name_problem,
)
from shoal.errors import ConfigError, StorageError
from shoal.names import printable
from shoal.store.files import fsync_dir

__all__ = ["ScanItem", "Staging", "scan_folder"]


def _shown(parts: tuple[str, ...]) -> str:
    return printable("/".join(parts))


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
