"""Space accounting for the block store: a running count of what it keeps, and its two limits.

How it works:

- ``SpaceAccount`` keeps ``(blocks, bytes)`` of the block files in the tree. The store scans the
  tree once when it opens and then reports every change (a block installed, deleted or moved
  aside), so reading the usage never walks the tree.
- Two limits guard a put. ``max_bytes`` (``node.max_storage``) bounds the bytes of blocks kept;
  ``reserve_bytes`` (``node.reserved_space``) is free disk the store never eats into, checked
  against ``statvfs`` of the file system (the bytes an unprivileged writer may still use).
- A put reserves its size before it writes anything, under one lock, so concurrent puts cannot
  together overshoot a limit: each one sees the bytes the others are still writing. The
  reservation is released in two steps: its disk part once the temporary file is durable
  (``statvfs`` counts it from then on), its byte part when the block is installed (it joins the
  running total) or abandoned.
- A refused put raises ``StorageFull`` with a one-line message that names no local path (the
  message may be sent to a peer). The first refusal of each kind is logged at WARNING, then
  again at most every ``log_interval`` seconds while puts keep being refused.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shoal import defaults
from shoal.errors import StorageError, StorageFull
from shoal.units import format_size

__all__ = [
    "LIMIT_LOG_INTERVAL",
    "RESERVE_FRACTION",
    "RESERVE_MAX",
    "Reservation",
    "SpaceAccount",
    "default_reserve",
]

log = logging.getLogger("shoal.store")

#: Default free-disk reserve: 5% of the file system, at most 1 GiB (as Tahoe's reserved_space).
RESERVE_FRACTION = defaults.RESERVE_FRACTION
RESERVE_MAX = defaults.RESERVE_MAX
#: Seconds between two log lines about the same limit while it stays hit.
LIMIT_LOG_INTERVAL = defaults.STORAGE_LIMIT_LOG_INTERVAL


def default_reserve(path: Path) -> int:
    """The default free-disk reserve for the file system holding ``path``.

    Raises:
        OSError: ``statvfs`` failed.
    """
    st = os.statvfs(path)
    return min(RESERVE_MAX, int(st.f_blocks * st.f_frsize * RESERVE_FRACTION))


class Reservation:
    """Room claimed for one put; see :meth:`SpaceAccount.reserve`. Not thread-safe itself:
    one put owns it."""

    __slots__ = ("_account", "_committed", "_disk", "_size")

    def __init__(self, account: SpaceAccount, size: int, disk: int) -> None:
        self._account = account
        self._size = size
        self._disk = disk
        self._committed = False

    def on_disk(self) -> None:
        """The bytes are written and fsynced: the file system's free space now counts them."""
        if self._disk:
            self._account._release(0, self._disk)
            self._disk = 0

    def commit(self) -> None:
        """The block is installed: count it in the usage. Call under the block's stripe."""
        if self._committed:
            return
        self._committed = True
        self._account._commit(self._size, self._disk)
        self._disk = 0

    def release(self) -> None:
        """Give back what was not committed (the put failed or the block was already there)."""
        if self._committed:
            return
        self._committed = True
        self._account._release(self._size, self._disk)
        self._disk = 0


class SpaceAccount:
    """Running usage of a block store and the limits on it. Thread-safe.

    Args:
        root: a directory on the file system the blocks live on (for ``statvfs``).
        blocks: number of block files found by the opening scan.
        used: their total size in bytes.
        max_bytes: most bytes of blocks to keep, or None for no limit but the reserve.
        reserve_bytes: free disk never to use; 0 turns the reserve off.
        clock: monotonic seconds, for spacing the log lines.
        log_interval: seconds between two log lines about the same limit.
    """

    def __init__(
        self,
        root: Path,
        *,
        blocks: int,
        used: int,
        max_bytes: int | None,
        reserve_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = LIMIT_LOG_INTERVAL,
    ) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must not be negative")
        self._root = root
        self._lock = threading.Lock()
        self._blocks = blocks
        self._used = used
        self._pending = 0  # bytes of puts in flight, not yet in _used
        self._pending_disk = 0  # disk those puts will take, not yet seen by statvfs
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self._clock = clock
        self._log_interval = log_interval
        self._last_logged: dict[str, float] = {}
        self._frsize = 4096
        if reserve_bytes:
            try:
                self._frsize = max(1, os.statvfs(root).f_frsize)
            except OSError:
                pass  # the first put reports the failure

    def usage(self) -> tuple[int, int]:
        """``(number of blocks, total bytes)`` kept, without walking the tree."""
        with self._lock:
            return self._blocks, self._used

    def free_bytes(self) -> int:
        """Bytes of the file system an unprivileged writer may still use.

        Raises:
            StorageError: ``statvfs`` failed.
        """
        try:
            st = os.statvfs(self._root)
        except OSError as exc:
            raise StorageError(
                f"cannot measure free space of the block store ({exc.strerror}): check the disk"
            ) from exc
        return st.f_bavail * st.f_frsize

    def reserve(self, size: int) -> Reservation:
        """Claim room for a block of ``size`` bytes, or refuse.

        Raises:
            StorageFull: the block would take the store past ``max_bytes`` or into the reserve.
            StorageError: the free space cannot be measured.
        """
        disk = -(-size // self._frsize) * self._frsize if self.reserve_bytes else 0
        with self._lock:
            if self.max_bytes is not None and self._used + self._pending + size > self.max_bytes:
                used = self._used
                error = StorageFull(
                    f"this node's storage limit is reached ({format_size(used)} of "
                    f"{format_size(self.max_bytes)} used): the block must go to another node; "
                    "the node's owner can raise node.max_storage or free space"
                )
                reason = "max"
            elif self.reserve_bytes:
                free = self.free_bytes() - self._pending_disk
                if free - disk >= self.reserve_bytes:
                    error = None
                else:
                    error = StorageFull(
                        f"this node's disk is nearly full ({format_size(max(free, 0))} free, "
                        f"{format_size(self.reserve_bytes)} reserved): the block must go to "
                        "another node; the node's owner can free disk space or lower "
                        "node.reserved_space"
                    )
                reason = "reserve"
            else:
                error = None
                reason = ""
            if error is None:
                self._pending += size
                self._pending_disk += disk
                return Reservation(self, size, disk)
        self.refused(reason, str(error))
        raise error

    def refused(self, reason: str, message: str) -> None:
        """Log a refusal of kind ``reason``: the first one, then at most one per interval."""
        now = self._clock()
        with self._lock:
            last = self._last_logged.get(reason)
            if last is not None and now - last < self._log_interval:
                return
            self._last_logged[reason] = now
        log.warning(
            "block store refuses new blocks: %s (said again every %d s while it lasts)",
            message,
            int(self._log_interval),
        )

    def removed(self, size: int) -> None:
        """A block file of ``size`` bytes left the tree (deleted or moved aside)."""
        with self._lock:
            self._blocks -= 1
            self._used -= size

    def _commit(self, size: int, disk: int) -> None:
        with self._lock:
            self._pending -= size
            self._pending_disk -= disk
            self._blocks += 1
            self._used += size

    def _release(self, size: int, disk: int) -> None:
        with self._lock:
            self._pending -= size
            self._pending_disk -= disk
