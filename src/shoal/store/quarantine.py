"""The ``corrupt/`` directory: block files that failed their own hash, kept as evidence.

How it works: a corrupt block file is renamed (same file system, atomic) to
``corrupt/<block id text>.<unix time in ns>.<4 hex digits>``, so it is never served again, and
the move is logged at WARNING with the block ID and the new path. The directory is bounded
(at most ``max_files`` files and ``max_bytes`` bytes): after each move the oldest files (by the
time in their names) are deleted. A corrupt file is evidence for a person, not data: the block
itself must be fetched again from a holder that has it intact (:meth:`Quarantine.ids` lists
what was moved aside).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path

from shoal import defaults
from shoal.ids import ID_TEXT_LENGTH, decode_id, encode_id

__all__ = ["CORRUPT_MAX_BYTES", "CORRUPT_MAX_FILES", "Quarantine"]

log = logging.getLogger("shoal.store")

#: Bounds of corrupt/: files kept, and their total size.
CORRUPT_MAX_FILES = defaults.CORRUPT_MAX_FILES
CORRUPT_MAX_BYTES = defaults.CORRUPT_MAX_BYTES


def _parse(name: str) -> tuple[bytes, int] | None:
    """``(block id, time in ns)`` of a file name in corrupt/, or None for a foreign file.

    Names from before the time part (``<id>.<hex>``) read as time 0: oldest first.
    """
    if len(name) < ID_TEXT_LENGTH or (len(name) > ID_TEXT_LENGTH and name[ID_TEXT_LENGTH] != "."):
        return None
    try:
        block_id = decode_id(name[:ID_TEXT_LENGTH])
    except ValueError:
        return None
    parts = name.split(".")
    moved_at = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
    return block_id, moved_at


class Quarantine:
    """Moves corrupt block files aside into one bounded directory. Thread-safe.

    Args:
        directory: ``<blocks>/corrupt``; must exist, on the same file system as the blocks.
        max_files: most files to keep (at least 1).
        max_bytes: most bytes to keep; the newest file is kept even if larger.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_files: int = CORRUPT_MAX_FILES,
        max_bytes: int = CORRUPT_MAX_BYTES,
    ) -> None:
        if max_files < 1 or max_bytes < 0:
            raise ValueError("corrupt/ bounds must be at least one file and 0 bytes")
        self.directory = directory
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def move(self, block_id: bytes, path: Path) -> Path:
        """Rename ``path`` (the corrupt file of ``block_id``) into corrupt/ and log it.

        Raises:
            FileNotFoundError: ``path`` is gone.
            OSError: the rename failed.
        """
        text = encode_id(block_id)
        target = self.directory / f"{text}.{time.time_ns()}.{secrets.token_hex(2)}"
        os.replace(path, target)
        log.warning(
            "block %s failed its hash check: moved the file to %s; it is never served again "
            "and must be fetched again from a holder",
            text,
            target,
        )
        try:
            self._trim(keep=target.name)
        except OSError as exc:
            log.warning("could not trim %s: %s", self.directory, exc.strerror)
        return target

    def _entries(self) -> list[tuple[int, str, int]]:
        """``(time in ns, name, size)`` of every block file in corrupt/, oldest first."""
        found: list[tuple[int, str, int]] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                parsed = _parse(entry.name)
                if parsed is None:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    size = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                found.append((parsed[1], entry.name, size))
        found.sort()
        return found

    def _trim(self, *, keep: str) -> None:
        with self._lock:
            entries = self._entries()
            total = sum(size for _, _, size in entries)
            count = len(entries)
            dropped = 0
            for _moved_at, name, size in entries:
                if count <= self._max_files and total <= self._max_bytes:
                    break
                if name == keep:
                    continue
                try:
                    os.unlink(self.directory / name)
                except FileNotFoundError:
                    pass
                count -= 1
                total -= size
                dropped += 1
        if dropped:
            log.info(
                "dropped the %d oldest file(s) from %s (it keeps at most %d files and %d bytes)",
                dropped,
                self.directory,
                self._max_files,
                self._max_bytes,
            )

    def ids(self) -> list[bytes]:
        """IDs of the blocks with a file in corrupt/, each once, most recently moved first.

        A block listed here may have been stored again intact since.

        Raises:
            OSError: the directory cannot be read.
        """
        seen: dict[bytes, None] = {}
        with self._lock:
            entries = self._entries()
        for _moved_at, name, _size in reversed(entries):
            parsed = _parse(name)
            if parsed is not None:
                seen.setdefault(parsed[0], None)
        return list(seen)
