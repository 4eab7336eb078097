"""Blocks on disk, one file per block, named by its ID.

How it works:

- A block with ID ``i`` (32 bytes) lives at ``<root>/<t[0:2]>/<t[2:4]>/<t>``, where ``t`` is
  ``encode_id(i)`` (52 lowercase base32 characters). Two fan-out levels of 1,024 directories
  each keep directories small for millions of blocks.
- A put first reserves room (see ``space.py``: ``max_bytes`` and the free-disk reserve; a
  refusal is ``StorageFull``), writes a unique temporary file in ``<root>/tmp/`` (same file
  system, so the rename is atomic), stamps its mtime (below), fsyncs it, renames it into place
  with ``os.replace`` and fsyncs the target directory, so a crash leaves either the whole block
  or none. Leftover temporary files from a crash are removed when the store opens.
- A put of a block whose file already exists compares the file with the new (verified) bytes:
  equal means "already stored"; a file that fails its own hash is moved aside and the new bytes
  are stored. So the store never acknowledges a block it does not have intact.
- Every get hashes what it read. A file is only ever moved aside (to ``<root>/corrupt/``, see
  ``quarantine.py``) after the store itself has seen its bytes fail its ID.
- The mtime stamp: each block file gets an mtime whose nanosecond part is derived from its ID
  (and never 0). Any write to the file through the file system (an edit, a truncation, a copy
  of another block's file) sets a new mtime, which almost surely loses the stamp. So
  ``has(block_id, verify=True)`` trusts a stamped file after one ``stat`` and hashes only
  unstamped files (written before stamps existed, changed since, or on a file system without
  nanosecond times), stamping them when intact. What a stamp cannot see is a change below the
  file system (bit rot); reads catch that, since they always hash.
- Usage (block count and bytes) is a running counter: one scan when the store opens, then
  updated by every put, delete and quarantine, so ``usage()`` never walks the tree.

The class is synchronous and thread-safe: the node layer calls it from worker threads. Work on
one block ID (install, delete, quarantine, the existing-file check) serializes on one of 64 lock
stripes; different blocks rarely share one. Only one ``BlockStore`` may own a root at a time
(opening one clears ``tmp/``; the data dir lock guarantees it for a node).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shoal.errors import CorruptBlock, NotFound, StorageError, StorageFull
from shoal.ids import ID_SIZE, ID_TEXT_LENGTH, decode_id, encode_id, short_id
from shoal.store.files import fsync_dir
from shoal.store.quarantine import CORRUPT_MAX_BYTES, CORRUPT_MAX_FILES, Quarantine
from shoal.store.space import LIMIT_LOG_INTERVAL, Reservation, SpaceAccount, default_reserve

__all__ = ["BlockStore"]

log = logging.getLogger("shoal.store")

_TMP_DIR = "tmp"
_CORRUPT_DIR = "corrupt"
_BASE32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
# Directories we know exist: skipping mkdir/stat for them keeps a burst of puts cheap. The
# cache is cleared when full; the worst case is a few redundant mkdir calls.
_DIR_CACHE_MAX = 4096
# Concurrent puts of one block serialize on a stripe so exactly one of them reports "new";
# puts of different blocks rarely share a stripe, so they still run in parallel.
_STRIPES = 64
_NS = 1_000_000_000
_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})

Buffer = bytes | bytearray | memoryview


def _stamp_ns(block_id: bytes) -> int:
    """The nanosecond part of a block file's mtime stamp: from the ID, never 0."""
    return int.from_bytes(block_id[:4], "big") % (_NS - 1) + 1


def _stamped_mtime(block_id: bytes) -> int:
    """An mtime (ns) carrying the stamp of ``block_id``, within 2 s before now."""
    return (time.time_ns() // _NS - 1) * _NS + _stamp_ns(block_id)


def _storage_error(action: str, where: Path, exc: OSError) -> StorageError:
    """Build the error for a failed disk operation: what failed, where, and what to do.

    A full disk (or quota) is ``StorageFull``, whose message names no path: it may be sent to
    the peer whose block did not fit (the path goes to the log instead).
    """
    code = exc.errno
    if code in _FULL_ERRNOS:
        hint = "disk quota exceeded" if code != errno.ENOSPC else "disk full"
        log.warning("%s while %s %s", hint, action, where)
        return StorageFull(f"{hint} while {action} this node's block store: free space and retry")
    if code == errno.EROFS:
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
    """Content-addressed blocks under one directory, within storage limits.

    Args:
        root: the blocks directory (``<data dir>/blocks``); created if missing.
        max_bytes: most bytes of blocks to keep (``node.max_storage``); None: no limit but
            the reserve.
        reserve_bytes: free disk never to use (``node.reserved_space``); None: 5% of the file
            system, at most 1 GiB; 0: no reserve.
        corrupt_max_files: most files kept in ``corrupt/`` (oldest dropped first).
        corrupt_max_bytes: most bytes kept in ``corrupt/``.
        clock: monotonic seconds, for spacing log lines about a limit.
        limit_log_interval: seconds between two log lines about a limit that stays hit.

    Raises:
        StorageError: the directory cannot be created, cleaned or scanned.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int | None = None,
        reserve_bytes: int | None = None,
        corrupt_max_files: int = CORRUPT_MAX_FILES,
        corrupt_max_bytes: int = CORRUPT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        limit_log_interval: float = LIMIT_LOG_INTERVAL,
    ) -> None:
        self._root = Path(root)
        self._tmp = self._root / _TMP_DIR
        self._known_dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self._stripes = tuple(threading.Lock() for _ in range(_STRIPES))
        # Unique temp names within this process; the random prefix separates processes.
        self._tmp_prefix = secrets.token_hex(4)
        self._tmp_counter = itertools.count()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
            (self._root / _CORRUPT_DIR).mkdir(exist_ok=True)
            self._clean_tmp()
            if reserve_bytes is None:
                reserve_bytes = default_reserve(self._root)
            blocks, used = self._scan()
        except OSError as exc:
            raise _storage_error("opening", self._root, exc) from exc
        self._quarantine = Quarantine(
            self._root / _CORRUPT_DIR, max_files=corrupt_max_files, max_bytes=corrupt_max_bytes
        )
        self._space = SpaceAccount(
            self._root,
            blocks=blocks,
            used=used,
            max_bytes=max_bytes,
            reserve_bytes=reserve_bytes,
            clock=clock,
            log_interval=limit_log_interval,
        )

    @property
    def root(self) -> Path:
        """The directory this store owns."""
        return self._root

    @property
    def max_bytes(self) -> int | None:
        """Most bytes of blocks this store keeps, or None (no limit but the reserve)."""
        return self._space.max_bytes

    @property
    def reserve_bytes(self) -> int:
        """Free disk this store never uses (0: none)."""
        return self._space.reserve_bytes

    def free_bytes(self) -> int:
        """Free bytes on the file system of the store (``statvfs``, unprivileged).

        Raises:
            StorageError: the file system cannot be measured.
        """
        return self._space.free_bytes()

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

    def _scan(self) -> tuple[int, int]:
        """Count the block files and their bytes (once, at open)."""
        count = 0
        total = 0
        for _block_id, entry in self._walk():
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            count += 1
            total += size
        return count, total

    def path_for(self, block_id: bytes) -> Path:
        """Return where block ``block_id`` lives (whether or not it exists).

        Raises:
            ValueError: ``block_id`` is not 32 bytes (a caller bug: IDs are validated on entry).
        """
        if len(block_id) != ID_SIZE:
            raise ValueError(f"block ID must be {ID_SIZE} bytes, got {len(block_id)}")
        text = encode_id(block_id)
        return self._root / text[0:2] / text[2:4] / text

    def _stripe(self, block_id: bytes) -> threading.Lock:
        return self._stripes[block_id[0] % _STRIPES]

    # -- writing --------------------------------------------------------------------------

    def put(self, block_id: bytes, data: Buffer, *, verify: bool = True) -> bool:
        """Store ``data`` as block ``block_id``, durably and atomically, within the limits.

        Args:
            block_id: the SHA-256 of ``data``.
            data: the block bytes; not copied.
            verify: check that ``data`` hashes to ``block_id`` first (skip only when the
                caller has just computed the hash itself).

        Returns:
            True if the block was written, False if an intact copy was already stored (a
            stored copy that fails its hash is moved aside and replaced).

        Raises:
            CorruptBlock: ``verify`` is set and ``data`` does not match ``block_id``;
                nothing is written.
            StorageFull: the block does not fit (``max_bytes``, the reserve, or a full disk);
                nothing is left behind, and the message names no local path.
            StorageError: the disk failed otherwise; no temporary or partial file is left.
        """
        final = self.path_for(block_id)
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        if verify and hashlib.sha256(view).digest() != block_id:
            raise CorruptBlock(
                f"block {short_id(block_id)} rejected: its data does not hash to its ID"
            )
        with self._stripe(block_id):
            if self._holds_intact(block_id, final, view):
                return False
        reservation = self._space.reserve(len(view))
        tmp: Path | None = None
        installed = False
        try:
            tmp = self._write_temp(block_id, view)
            reservation.on_disk()
            installed = self._install(block_id, tmp, final, view, reservation)
        finally:
            reservation.release()  # a no-op once committed
            # Installed: the temp name is gone. Already stored or failed: it must go.
            if tmp is not None and not installed:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass  # best effort: the next open clears tmp/ anyway
        return installed

    def _holds_intact(self, block_id: bytes, final: Path, view: memoryview) -> bool:
        """Whether ``final`` holds ``view`` (the block's verified bytes); call under its stripe.

        A file with other bytes is hashed: if it fails its ID it is moved aside (and this
        returns False, so the caller stores the good bytes); if it matches, the caller's bytes
        were wrong (only possible with ``verify=False``) and the intact file stays.
        """
        try:
            with open(final, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                stored = f.readall() if size == len(view) else None
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(f"reading block {encode_id(block_id)} from", final, exc) from exc
        if stored is not None and stored == view:
            return True
        if stored is None:
            try:
                stored = self._read(block_id, final)
            except FileNotFoundError:
                return False
        if hashlib.sha256(stored).digest() == block_id:
            log.error(
                "put of block %s with bytes that do not match its ID was ignored "
                "(verify=False); the stored copy is intact",
                encode_id(block_id),
            )
            return True
        self._move_aside(block_id, final)
        return False

    def _write_temp(self, block_id: bytes, view: memoryview) -> Path:
        """Write ``view`` to a new stamped, fsynced temporary file and return its path."""
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
                mtime = _stamped_mtime(block_id)
                os.utime(fd, ns=(mtime, mtime))
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

    def _install(
        self,
        block_id: bytes,
        tmp: Path,
        final: Path,
        view: memoryview,
        reservation: Reservation,
    ) -> bool:
        """Rename ``tmp`` to ``final`` unless an intact copy appeared meanwhile; fsync the dir."""
        try:
            with self._stripe(block_id):
                if self._holds_intact(block_id, final, view):
                    return False
                self._ensure_dir(final.parent)
                try:
                    os.replace(tmp, final)
                except FileNotFoundError:
                    # The cached fan-out dir was removed behind our back: recreate and retry.
                    self._forget_dir(final.parent)
                    self._ensure_dir(final.parent)
                    os.replace(tmp, final)
                reservation.commit()
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

    def _read(self, block_id: bytes, path: Path) -> bytes:
        """The bytes of ``path`` (``FileNotFoundError`` passes through)."""
        try:
            # Unbuffered: readall() sizes one buffer from fstat and fills it, no extra copies.
            with open(path, "rb", buffering=0) as f:
                return f.readall()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _storage_error(f"reading block {encode_id(block_id)} from", path, exc) from exc

    def get(self, block_id: bytes, *, verify: bool = True) -> bytes:
        """Return block ``block_id``, checked against its ID.

        ``verify=False`` skips the hash for callers that check the bytes themselves anyway
        (the get pipeline hashes and decrypts in one pass); they call ``quarantine`` on a
        mismatch.

        Raises:
            NotFound: the block is not stored here.
            CorruptBlock: the stored file no longer matches its ID; it was moved to
                ``corrupt/`` (and logged) and the block is now missing here: fetch it again
                from a peer. The message names no local path.
            StorageError: the disk failed while reading.
        """
        path = self.path_for(block_id)
        try:
            data = self._read(block_id, path)
        except FileNotFoundError as exc:
            raise NotFound(f"block {encode_id(block_id)} is not stored here") from exc
        if verify and hashlib.sha256(data).digest() != block_id:
            self.quarantine(block_id)
            raise CorruptBlock(
                f"block {encode_id(block_id)} on disk is corrupt (hash mismatch); moved it "
                "aside: fetch it again from a peer"
            )
        return data

    def quarantine(self, block_id: bytes) -> Path | None:
        """Move block ``block_id`` aside if its stored bytes fail its ID.

        For callers that read with ``verify=False`` and found the bytes bad. The store hashes
        the file again itself before moving it: a block is only ever moved because its own
        bytes fail its own hash (a concurrent put may have replaced the bad file meanwhile).

        Returns:
            Where the file went, or None if there was no file or it is intact.

        Raises:
            StorageError: the disk failed.
        """
        path = self.path_for(block_id)
        with self._stripe(block_id):
            try:
                data = self._read(block_id, path)
            except FileNotFoundError:
                return None
            if hashlib.sha256(data).digest() == block_id:
                log.info("block %s was reported corrupt but is intact: kept", encode_id(block_id))
                return None
            return self._move_aside(block_id, path)

    def _move_aside(self, block_id: bytes, path: Path) -> Path | None:
        """Move a file that failed its hash into corrupt/; call under the block's stripe."""
        try:
            size = os.stat(path).st_size
            target = self._quarantine.move(block_id, path)
        except FileNotFoundError:
            return None  # deleted meanwhile
        except OSError as exc:
            raise _storage_error(
                f"moving corrupt block {encode_id(block_id)} to", self._quarantine.directory, exc
            ) from exc
        self._space.removed(size)
        return target

    def quarantined(self) -> list[bytes]:
        """IDs of blocks moved aside as corrupt and still in ``corrupt/``, newest first.

        ``corrupt/`` is bounded, so old ones drop off; a block listed here may have been
        stored again intact since (check with ``has``).

        Raises:
            StorageError: ``corrupt/`` cannot be read.
        """
        try:
            return self._quarantine.ids()
        except OSError as exc:
            raise _storage_error("listing", self._quarantine.directory, exc) from exc

    def has(self, block_id: bytes, *, verify: bool = False) -> bool:
        """Return whether block ``block_id`` is stored here.

        Args:
            block_id: the block.
            verify: answer True only for an intact copy. A file whose mtime carries the
                store's stamp (see the module docstring) costs one ``stat``; any other file is
                read and hashed (then stamped if intact, moved aside if not). Without
                ``verify``: one ``stat``, nothing checked.

        Raises:
            StorageError: the disk failed.
        """
        path = self.path_for(block_id)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(f"checking block {encode_id(block_id)} in", path, exc) from exc
        if not verify or st.st_mtime_ns % _NS == _stamp_ns(block_id):
            return True
        with self._stripe(block_id):
            try:
                data = self._read(block_id, path)
            except FileNotFoundError:
                return False
            if hashlib.sha256(data).digest() != block_id:
                self._move_aside(block_id, path)
                return False
            mtime = _stamped_mtime(block_id)
            try:
                os.utime(path, ns=(mtime, mtime))
            except OSError as exc:  # the answer stands; the next check hashes again
                log.debug("could not stamp block %s: %s", short_id(block_id), exc.strerror)
            return True

    def delete(self, block_id: bytes) -> bool:
        """Remove block ``block_id``; return False if it was not stored.

        The directory is not fsynced: a delete undone by a power cut only leaves a block that
        garbage collection removes again.

        Raises:
            StorageError: the disk refused the removal.
        """
        path = self.path_for(block_id)
        with self._stripe(block_id):
            try:
                size = os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _storage_error(
                    f"deleting block {encode_id(block_id)} from", path, exc
                ) from exc
            self._space.removed(size)
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
                    if len(name) != ID_TEXT_LENGTH or not name.startswith(prefix):
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
        """Return ``(number of blocks, total bytes)`` stored here.

        A running count (one scan at open, then kept by every put, delete and quarantine):
        O(1), no disk access. Files changed behind the store's back are counted again at the
        next open.
        """
        return self._space.usage()


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
