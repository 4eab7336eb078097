"""An exclusive lock on a data dir, held for the life of a running node.

How it works: ``<data dir>/node.lock`` is opened (created if missing) and locked with
``flock(LOCK_EX | LOCK_NB)``; the holder writes its pid into it for the error message of the
next one. The kernel drops the lock when the holder closes the file or dies, however it dies,
so a stale lock never needs cleaning up. The file itself is never deleted: deleting it while
another process has it open would let two processes lock two different files of the same name.
``flock`` locks belong to the open file, so a second lock in the same process fails too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from shoal.errors import ConfigError

__all__ = ["LOCK_FILE", "DataDirLock"]

LOCK_FILE = "node.lock"
_MAX_PID_TEXT = 32


class DataDirLock:
    """The exclusive lock on one data dir.

    Use ``with DataDirLock(path):`` or call :meth:`acquire` and :meth:`release`.

    Args:
        data_dir: the data dir (must exist).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or fail at once.

        Raises:
            ConfigError: another running node (or another ``DataDirLock``) holds it; or the
                lock file cannot be opened.
        """
        if self._fd is not None:
            raise ConfigError(f"data dir {self.data_dir} is already locked by this node")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot open {self.path} ({exc.strerror}): check that the data dir exists "
                "and is writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = f"pid {holder}" if holder is not None else "pid unknown"
                raise ConfigError(
                    f"data dir {self.data_dir} is in use by another running node ({pid}); "
                    "stop it first"
                ) from exc
            raise ConfigError(
                f"cannot lock {self.path} ({exc.strerror}): put the data dir on a local disk"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock is what matters; the pid only improves the next error message
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the pid is cleared first). Releasing twice is fine."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote, if readable."""
    try:
        text = os.pread(fd, _MAX_PID_TEXT, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
