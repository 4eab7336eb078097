"""Blocks on disk, one file per block, named by its ID.

How it works:

- A block with ID ``i`` (32 bytes) lives at ``<root>/<t[0:2]>/<t[2:4]>/<t>``, where ``t`` is
  ``encode_id(i)`` (52 lowercase base32 characters). Two fan-out levels of 1,024 directories
  each keep directories small for millions of blocks.
- A put writes a unique temporary file in ``<root>/tmp/`` (same file system, so the rename is
  atomic), fsyncs it, renames it into place with ``os.replace`` and fsyncs the target
  directory, so a crash leaves either the whole block or none. Leftover temporary files from a
  crash are removed when the store opens.
- Every get hashes what it read; a file that no longer matches its ID is moved to
  ``<root>/corrupt/`` (kept for inspection, never served) and reported as ``IntegrityError``.

The class is synchronous and thread-safe: the node layer calls it from worker threads. Only one
``BlockStore`` may own a root at a time (opening one clears ``tmp/``).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from shoal.errors import IntegrityError, NotFound, StorageError
from shoal.ids import ID_SIZE, decode_id, encode_id, short_id
from shoal.store.files import fsync_dir

__all__ = ["BlockStore"]

_TMP_DIR = "tmp"
_CORRUPT_DIR = "corrupt"
_BASE32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
# Directories we know exist: skipping mkdir/stat for them keeps a burst of puts cheap. The
# cache is cleared when full; the worst case is a few redundant mkdir calls.
_DIR_CACHE_MAX = 4096
# Concurrent puts of one block serialize on a stripe so exactly one of them reports "new";
# puts of different blocks rarely share a stripe, so they still run in parallel.
_STRIPES = 64


def _storage_error(action: str, where: Path, exc: OSError) -> StorageError:
    """Build a ``StorageError`` that says what failed, where, and what to do."""
    code = exc.errno
    if code == errno.ENOSPC:
        hint = "disk full"
        advice = "free space and retry"
    elif code == getattr(errno, "EDQUOT", -1):
        hint = "disk quota exceeded"
        advice = "raise the quota or free space and retry"
    elif code == errno.EROFS:
        hint = "read-only file system"
        advice = "remount the data dir read-write"
    elif code in (errno.EACCES, errno.EPERM):
        hint = "permission denied"
        advice = "check the owner and mode of the data dir"
    else:
        hint = exc.strerror or type(exc).__name__
        advice = "check the disk and the data dir"
    return StorageError(f"{hint} while {action} {where}: {advice}")


class BlockStore:
    """Content-addressed blocks under one directory.

    Args:
        root: the blocks directory (``<data dir>/blocks``); created if missing.

    Raises:
        StorageError: the directory cannot be created or cleaned.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._tmp = self._root / _TMP_DIR
        self._corrupt = self._root / _CORRUPT_DIR
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self._stripes = tuple(threading.Lock() for _ in range(_STRIPES))
        # Unique temp names within this process; the random prefix separates processes.
        self._tmp_prefix = secrets.token_hex(4)
        self._tmp_counter = itertools.count()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
            self._corrupt.mkdir(exist_ok=True)
            self._clean_tmp()
        except OSError as exc:
            raise _storage_error("opening block store", self._root, exc) from exc

    @property
    def root(self) -> Path:
        """The directory this store owns."""
        return self._root

    def _clean_tmp(self) -> None:
        """Remove temporary files a crashed process left behind: they are never blocks."""
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def path_for(self, block_id: bytes) -> Path:
        """Return where block ``block_id`` lives (whether or not it exists).

        Raises:
            ValueError: ``block_id`` is not 32 bytes (a caller bug: IDs are validated on entry).
        """
        if len(block_id) != ID_SIZE:
            raise ValueError(f"block ID must be {ID_SIZE} bytes, got {len(block_id)}")
        text = encode_id(block_id)
        return self._root / text[0:2] / text[2:4] / text

    # -- writing --------------------------------------------------------------------------

    def put(
        self, block_id: bytes, data: bytes | bytearray | memoryview, *, verify: bool = True
    ) -> bool:
        """Store ``data`` as block ``block_id``, durably and atomically.

        Args:
            block_id: the SHA-256 of ``data``.
            data: the block bytes; not copied.
            verify: check that ``data`` hashes to ``block_id`` first (skip only when the
                caller has just computed the hash itself).

        Returns:
            True if the block was written, False if it was already stored.

        Raises:
            IntegrityError: ``verify`` is set and ``data`` does not match ``block_id``;
                nothing is written.
            StorageError: the disk failed (full, read-only, ...); no temporary or partial
                file is left.
        """
        final = self.path_for(block_id)
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        if verify and hashlib.sha256(view).digest() != block_id:
            raise IntegrityError(
                f"block {short_id(block_id)} rejected: its data does not hash to its ID"
            )
        if os.path.exists(final):
            return False
        tmp = self._write_temp(block_id, view)
        installed = False
        try:
            installed = self._install(block_id, tmp, final)
        finally:
            # Installed: the temp name is gone. Already stored or failed: it must go.
            if not installed:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass  # best effort: the next open clears tmp/ anyway
        return installed

    def _write_temp(self, block_id: bytes, view: memoryview) -> Path:
        """Write ``view`` to a new fsynced temporary file and return its path."""
        tmp = self._tmp / f"{self._tmp_prefix}-{next(self._tmp_counter)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                written = 0
                size = len(view)
                while written < size:
                    n = os.write(fd, view[written:])
                    if n <= 0:  # never for regular files, but never loop forever either
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    written += n
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _storage_error(
                f"writing block {encode_id(block_id)} to", self.path_for(block_id).parent, exc
            ) from exc
        return tmp

    def _install(self, block_id: bytes, tmp: Path, final: Path) -> bool:
        """Rename ``tmp`` to ``final`` unless the block appeared meanwhile; fsync the dir."""
        stripe = self._stripes[block_id[0] % _STRIPES]
        try:
            with stripe:
                if os.path.exists(final):
                    return False
                self._ensure_dir(final.parent)
                try:
                    os.replace(tmp, final)
                except FileNotFoundError:
                    # The cached fan-out dir was removed behind our back: recreate and retry.
                    self._forget_dir(final.parent)
                    self._ensure_dir(final.parent)
                    os.replace(tmp, final)
                # Held under the stripe so a concurrent put of the same block cannot answer
                # "already stored" before the new name is durable.
                fsync_dir(final.parent)
                return True
        except OSError as exc:
            raise _storage_error(
                f"storing block {encode_id(block_id)} in", final.parent, exc
            ) from exc

    def _ensure_dir(self, leaf: Path) -> None:
        """Create the two fan-out levels above a block if needed, durably."""
        with self._dirs_lock:
            if leaf in self._known_dirs:
                return
        for directory in (leaf.parent, leaf):
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            # A new directory's own name must reach the disk too, or the block under it may
            # vanish after a power cut even though its file and directory were fsynced.
            fsync_dir(directory.parent)
        with self._dirs_lock:
            if len(self._known_dirs) >= _DIR_CACHE_MAX:
                self._known_dirs.clear()
            self._known_dirs.add(leaf)

    def _forget_dir(self, leaf: Path) -> None:
        with self._dirs_lock:
            self._known_dirs.discard(leaf)

    # -- reading --------------------------------------------------------------------------

    def get(self, block_id: bytes, *, verify: bool = True) -> bytes:
        """Return block ``block_id``, checked against its ID.

        ``verify=False`` skips the hash for callers that check the bytes themselves anyway
        (the get pipeline hashes and decrypts in one pass); they call ``quarantine`` on a
        mismatch.

        Raises:
            NotFound: the block is not stored here.
            IntegrityError: the stored file no longer matches its ID; it was moved to
                ``corrupt/`` and the block is now missing here (fetch it again from a peer).
            StorageError: the disk failed while reading.
        """
        path = self.path_for(block_id)
        try:
            # Unbuffered: readall() sizes one buffer from fstat and fills it, no extra copies.
            with open(path, "rb", buffering=0) as f:
                data = f.readall()
        except FileNotFoundError as exc:
            raise NotFound(f"block {encode_id(block_id)} is not stored here") from exc
        except OSError as exc:
            raise _storage_error(f"reading block {encode_id(block_id)} from", path, exc) from exc
        if verify and hashlib.sha256(data).digest() != block_id:
            moved = self._quarantine(block_id, path)
            raise IntegrityError(
                f"block {encode_id(block_id)} on disk is corrupt (hash mismatch); moved it to "
                f"{moved}: fetch it again from a peer"
            )
        return data

    def quarantine(self, block_id: bytes) -> Path:
        """Move block ``block_id`` aside as corrupt (found bad by a caller that verified it)."""
        return self._quarantine(block_id, self.path_for(block_id))

    def _quarantine(self, block_id: bytes, path: Path) -> Path:
        """Move a corrupt block file out of the tree so it is never served again."""
        target = self._corrupt / f"{encode_id(block_id)}.{secrets.token_hex(4)}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            pass  # another reader moved it first, or it was deleted
        except OSError as exc:
            raise _storage_error(
                f"moving corrupt block {encode_id(block_id)} to", self._corrupt, exc
            ) from exc
        return target

    def has(self, block_id: bytes) -> bool:
        """Return whether block ``block_id`` is stored here (not verified)."""
        return os.path.exists(self.path_for(block_id))

    def delete(self, block_id: bytes) -> bool:
        """Remove block ``block_id``; return False if it was not stored.

        The directory is not fsynced: a delete undone by a power cut only leaves a block that
        garbage collection removes again.

        Raises:
            StorageError: the disk refused the removal.
        """
        path = self.path_for(block_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(f"deleting block {encode_id(block_id)} from", path, exc) from exc
        return True

    # -- listing --------------------------------------------------------------------------

    def _walk(self) -> Iterator[tuple[bytes, os.DirEntry[str]]]:
        """Yield ``(block_id, entry)`` for every well-formed block file in the tree."""
        for first in _subdirs(self._root):
            for second in _subdirs(Path(first.path)):
                try:
                    with os.scandir(second.path) as entries:
                        files = list(entries)
                except FileNotFoundError:
                    continue
                prefix = first.name + second.name
                for entry in files:
                    name = entry.name
                    if len(name) != 52 or not name.startswith(prefix):
                        continue
                    try:
                        block_id = decode_id(name)
                    except ValueError:
                        continue
                    yield block_id, entry

    def ids(self) -> Iterator[bytes]:
        """Yield the ID of every stored block, in no particular order.

        Skips ``tmp/``, ``corrupt/`` and any file whose name is not a block ID in its right
        place. Blocks added or removed during the walk may or may not be seen.

        Raises:
            StorageError: the tree cannot be read.
        """
        try:
            for block_id, _entry in self._walk():
                yield block_id
        except OSError as exc:
            raise _storage_error("listing blocks in", self._root, exc) from exc

    def usage(self) -> tuple[int, int]:
        """Return ``(number of blocks, total bytes)`` stored here (walks the tree).

        Raises:
            StorageError: the tree cannot be read.
        """
        count = 0
        total = 0
        try:
            for _block_id, entry in self._walk():
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # deleted during the walk
                count += 1
                total += size
        except OSError as exc:
            raise _storage_error("measuring blocks in", self._root, exc) from exc
        return count, total


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    """Fan-out directories of ``path``: two base32 characters (so never tmp/ or corrupt/)."""
    try:
        with os.scandir(path) as entries:
            return [
                e
                for e in entries
                if len(e.name) == 2
                and set(e.name) <= _BASE32_CHARS
                and e.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return []
