"""Atomic file writes: the one helper every layer uses to replace a file as a whole.

How it works: the bytes go to a unique temporary file in the target's directory (same file
system, so the final rename is atomic), which is flushed and fsynced, then renamed over the
target with ``os.replace``, and the directory is fsynced so the new name survives a power cut.
On any failure the temporary file is removed and the target is left as it was: readers see the
old file or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["AtomicFile", "fsync_dir", "write_file_atomic"]

_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (new names, renames)."""
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file that appears at ``path`` only when complete.

    Use as a context manager: write to it, and on a normal exit it is committed (fsync, rename,
    directory fsync); on an exception it is discarded. Or call :meth:`commit` / :meth:`discard`
    yourself. The methods block: async callers run them in a worker thread.

    Args:
        path: The target.
        mode: Permission bits of the new file; None gives what a plain ``open()`` would
            (0o666 minus the umask). Secrets use 0o600.

    Raises:
        OSError: The temporary file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], *, mode: int | None = None) -> None:
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        self._tmp = Path(tmp)
        self._mode = (0o666 & ~_umask()) if mode is None else mode
        try:
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self._tmp.unlink(missing_ok=True)
            raise
        self._done = False

    @property
    def temp_path(self) -> Path:
        """Where the bytes are while being written."""
        return self._tmp

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; return how many bytes were written."""
        return self.file.write(data)

    def commit(self, *, overwrite: bool = True) -> None:
        """Flush, fsync, rename into place and fsync the directory.

        Args:
            overwrite: Replace an existing target (the default). If False, an existing target
                is kept and ``FileExistsError`` raised, with no window in which it could be
                replaced (the new file is hard-linked into place, which fails if the name
                exists).

        Raises:
            OSError: Any step failed; the temporary file is removed, the target unchanged.
        """
        if self._done:
            raise ValueError("AtomicFile already committed or discarded")
        try:
            self.file.flush()
            os.fchmod(self.file.fileno(), self._mode)
            os.fsync(self.file.fileno())
            self.file.close()
            if overwrite:
                os.replace(self._tmp, self.path)
            else:
                _link_no_clobber(self._tmp, self.path)
            self._done = True
            fsync_dir(self.path.parent)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop what was written; the target is untouched. Safe to call twice."""
        if self._done and not self._tmp.exists():
            return
        self._done = True
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _link_no_clobber(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` unless ``target`` exists (``FileExistsError``)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # A file system without hard links (FAT, some FUSE): check, then rename. Only a file
        # created in between, by someone else, could still be replaced.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(source, target)
        return
    source.unlink()


def write_file_atomic(
    path: str | os.PathLike[str], data: bytes | bytearray | memoryview, *, mode: int = 0o600
) -> None:
    """Replace ``path`` with ``data`` atomically and durably (private, 0600, by default).

    Raises:
        OSError: The write failed; ``path`` is unchanged and no temporary file is left.
    """
    with AtomicFile(path, mode=mode) as out:
        out.write(data)
