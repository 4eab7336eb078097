"""The node's catalog in SQLite: names → read caps, pinned CIDs, known peers.

How it works: one SQLite connection in WAL mode, shared by every thread behind a lock (SQLite
serializes writers anyway, and one connection keeps the page cache warm). The schema version
lives in ``PRAGMA user_version``; on open, every migration newer than it runs in one
transaction each, so a crash mid-migration leaves the previous version intact.

Pins follow names: each name pins the CID of its cap, and a CID stays pinned while any name
refers to it. The CID is kept in its own indexed column of ``files`` so that check is cheap.
Callers pass every time in; nothing here reads the clock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from shoal.errors import ConfigError, InvalidCapability, StorageError
from shoal.ids import decode_id

__all__ = ["Catalog", "CatalogEntry", "cid_of_cap"]

# Each entry upgrades the schema from version i to i + 1 (list index i).
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE files (
            name TEXT PRIMARY KEY,
            cap TEXT NOT NULL,
            cid TEXT NOT NULL,
            size INTEGER NOT NULL,
            media_type TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE INDEX files_cid ON files (cid)",
        "CREATE TABLE pins (cid TEXT PRIMARY KEY, pinned_at REAL NOT NULL)",
        """CREATE TABLE peers (
            node_id TEXT PRIMARY KEY,
            addresses TEXT NOT NULL,
            last_seen REAL NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Wait this long for a lock held by another connection (e.g. a CLI reading the same file).
_BUSY_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One name in the catalog: the read cap it maps to and what the user saw when storing."""

    name: str
    cap: str
    size: int
    media_type: str
    created: float


def cid_of_cap(cap: str) -> str:
    """Return the CID text of a cap string (``shoal:r:<cid>:<key>`` or ``shoal:v:<cid>``).

    Raises:
        InvalidCapability: ``cap`` is not a Shoal cap with a well-formed CID.
    """
    parts = cap.split(":")
    if len(parts) < 3 or parts[0] != "shoal":
        raise InvalidCapability(f"not a shoal cap: {cap[:80]!r}")
    try:
        decode_id(parts[2])
    except ValueError as exc:
        raise InvalidCapability(f"cap has a malformed CID: {exc}") from exc
    return parts[2].lower()


def _hint(exc: sqlite3.Error) -> str:
    """Turn an SQLite error into advice for the user."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc).lower()
    if name == "SQLITE_FULL" or "disk is full" in text:
        return "disk full: free space and retry"
    if name.startswith("SQLITE_BUSY") or "locked" in text:
        return "the database is locked by another process: stop it or retry"
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return "the database is read-only: check the owner and mode of the data dir"
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text or "not a database" in text:
        return "the database is damaged: restore it from a backup or move it aside"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cannot open the file: check that the data dir exists and is writable"
    return "check the disk and the data dir"


class Catalog:
    """Names, pins and peers of one node, in a SQLite file.

    Synchronous and thread-safe: every call takes one lock around the shared connection.

    Args:
        path: the database file (``<data dir>/shoal.db``); created with its parent if missing.

    Raises:
        StorageError: the file cannot be opened or migrated.
        ConfigError: the file has a newer schema than this version of Shoal knows.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the directory of catalog {self._path}: {exc.strerror}"
            ) from exc
        try:
            # isolation_level=None: no implicit transactions; we BEGIN/COMMIT ourselves.
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error("opening", exc) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"catalog {self._path}: the file system does not support SQLite WAL mode "
                    f"(got {mode!r}): put the data dir on a local disk"
                )
            # WAL + synchronous=NORMAL: a commit is in the WAL file once it returns, so it
            # survives a crash of this process; the WAL is fsynced at checkpoints, so a power
            # cut may lose the last few commits but never leaves the database inconsistent.
            # FULL would add an fsync per commit for little gain: blocks are already durable
            # and a lost name can be stored again.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error("opening", exc) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _error(self, action: str, exc: sqlite3.Error) -> StorageError:
        return StorageError(f"catalog {self._path}: {action} failed ({exc}); {_hint(exc)}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"catalog {self._path} has schema version {version}, newer than this Shoal "
                f"supports ({SCHEMA_VERSION}): upgrade Shoal"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
                # user_version lives in the database header: it commits or rolls back with
                # the migration.
                conn.execute(f"PRAGMA user_version = {target:d}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _cursor(self, action: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """Hold the lock; for writes, run the body in one transaction. Map SQLite errors."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StorageError(f"catalog {self._path} is closed")
            try:
                if not write:
                    yield conn
                    return
                # IMMEDIATE takes the write lock up front, so a read-then-write body cannot
                # fail halfway on a lock upgrade.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._error(action, exc) from exc

    # -- files and pins -------------------------------------------------------------------

    def put_file(self, entry: CatalogEntry) -> None:
        """Map ``entry.name`` to ``entry.cap`` (replacing any entry) and pin its CID.

        Both happen in one transaction. If the name pointed at another CID that no other name
        uses, that CID is unpinned. ``entry.created`` is the pin time of a new pin.

        Raises:
            InvalidCapability: ``entry.cap`` is not a cap string.
            StorageError: the database failed.
        """
        cid = cid_of_cap(entry.cap)
        with self._cursor(f"storing name {entry.name!r}", write=True) as conn:
            row = conn.execute("SELECT cid FROM files WHERE name = ?", (entry.name,)).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO files (name, cap, cid, size, media_type, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (entry.name, entry.cap, cid, entry.size, entry.media_type, entry.created),
            )
            conn.execute(
                "INSERT OR IGNORE INTO pins (cid, pinned_at) VALUES (?, ?)", (cid, entry.created)
            )
            if row is not None and row[0] != cid:
                self._unpin_if_unused(conn, row[0])

    @staticmethod
    def _unpin_if_unused(conn: sqlite3.Connection, cid: str) -> None:
        conn.execute(
            "DELETE FROM pins WHERE cid = ? AND NOT EXISTS (SELECT 1 FROM files WHERE cid = ?)",
            (cid, cid),
        )

    def get_file(self, name: str) -> CatalogEntry | None:
        """Return the entry for ``name``, or None.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor(f"reading name {name!r}") as conn:
            row = conn.execute(
                "SELECT name, cap, size, media_type, created FROM files WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else _entry(row)

    def list_files(self) -> list[CatalogEntry]:
        """Return every entry, sorted by name (code point order).

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("listing names") as conn:
            rows = conn.execute(
                "SELECT name, cap, size, media_type, created FROM files ORDER BY name"
            ).fetchall()
        return [_entry(row) for row in rows]

    def remove_file(self, name: str) -> CatalogEntry | None:
        """Remove ``name``; unpin its CID unless another name uses it. One transaction.

        Returns:
            The removed entry, or None if there was no such name.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor(f"removing name {name!r}", write=True) as conn:
            row = conn.execute(
                "SELECT name, cap, size, media_type, created, cid FROM files WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM files WHERE name = ?", (name,))
            self._unpin_if_unused(conn, row[5])
        return _entry(row[:5])

    def pins(self) -> set[str]:
        """Return the CIDs (text form) this node keeps.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("listing pins") as conn:
            rows = conn.execute("SELECT cid FROM pins").fetchall()
        return {str(row[0]) for row in rows}

    def is_pinned(self, cid_text: str) -> bool:
        """Return whether CID ``cid_text`` is pinned.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("reading pins") as conn:
            row = conn.execute("SELECT 1 FROM pins WHERE cid = ?", (cid_text.lower(),)).fetchone()
        return row is not None

    # -- peers ----------------------------------------------------------------------------

    def upsert_peer(self, node_id_text: str, addresses: list[str], last_seen: float) -> None:
        """Record (or update) a peer's addresses and when it was last seen.

        Raises:
            StorageError: the database failed.
        """
        encoded = json.dumps(list(addresses))
        with self._cursor(f"storing peer {node_id_text[:12]}", write=True) as conn:
            conn.execute(
                "INSERT INTO peers (node_id, addresses, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET "
                "addresses = excluded.addresses, last_seen = excluded.last_seen",
                (node_id_text, encoded, last_seen),
            )

    def forget_peer(self, node_id_text: str) -> bool:
        """Remove a peer; whether it was there.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor(f"forgetting peer {node_id_text[:12]}", write=True) as conn:
            cursor = conn.execute("DELETE FROM peers WHERE node_id = ?", (node_id_text,))
        return cursor.rowcount > 0

    def peers(self) -> list[tuple[str, list[str], float]]:
        """Return ``(node id text, addresses, last seen)`` for every known peer, by node ID.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("listing peers") as conn:
            rows = conn.execute(
                "SELECT node_id, addresses, last_seen FROM peers ORDER BY node_id"
            ).fetchall()
        return [(str(node_id), _addresses(raw), float(seen)) for node_id, raw, seen in rows]

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; later calls raise ``StorageError``. Closing twice is fine."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise self._error("closing", exc) from exc

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _entry(row: Any) -> CatalogEntry:
    name, cap, size, media_type, created = row
    return CatalogEntry(
        name=str(name),
        cap=str(cap),
        size=int(size),
        media_type=str(media_type),
        created=float(created),
    )


def _addresses(raw: object) -> list[str]:
    """Decode the JSON address list; a damaged value reads as no addresses."""
    try:
        value = json.loads(str(raw))
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [a for a in value if isinstance(a, str)]
