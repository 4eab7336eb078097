"""The node's catalog in SQLite: names → read caps, pinned CIDs, known peers.

How it works: one SQLite connection in WAL mode, shared by every thread behind a lock (SQLite
serializes writers anyway, and one connection keeps the page cache warm). The schema version
lives in ``PRAGMA user_version``; on open, every migration newer than it runs in one
transaction each, so a crash mid-migration leaves the previous version intact.

Schema (version 3; ``docs/storage.md`` has the tables column by column):

- ``files``: one row per name: cap, CID, size, media type, ``created`` (time of the put),
  ``mtime`` (the source file's, if known), ``replicas`` (copies placed: the fewest of any
  block) and ``replicas_wanted``. Both are NULL for files stored before version 2 (unknown).
  ``erasure`` (version 3): ``"K-of-N"`` for an erasure-coded file (then the two counts are
  shares), NULL for a replicated one.
- ``pins``: CIDs this node keeps. Pins follow names: each name pins the CID of its cap, and a
  CID stays pinned while any name refers to it. The CID is kept in its own indexed column of
  ``files`` so that check is cheap.
- ``peers``: node ID, addresses (JSON list), ``last_seen``, ``last_failure`` and ``failures``
  (consecutive failed attempts since last seen). At most ``max_peers`` rows: recording a new
  peer beyond that forgets the least recently seen ones.

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

from shoal import defaults
from shoal.errors import ConfigError, InvalidCapability, StorageError
from shoal.ids import decode_id

__all__ = ["MAX_PEERS", "Catalog", "CatalogEntry", "PeerRecord", "cid_of_cap"]

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
    (
        "ALTER TABLE files ADD COLUMN mtime REAL",
        "ALTER TABLE files ADD COLUMN replicas INTEGER",
        "ALTER TABLE files ADD COLUMN replicas_wanted INTEGER",
        "CREATE INDEX files_under_replicated ON files (name) WHERE replicas < replicas_wanted",
        "ALTER TABLE peers ADD COLUMN last_failure REAL",
        "ALTER TABLE peers ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX peers_last_seen ON peers (last_seen)",
    ),
    ("ALTER TABLE files ADD COLUMN erasure TEXT",),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Wait this long for a lock held by another connection (e.g. a CLI reading the same file).
_BUSY_TIMEOUT_S = 5.0
#: Peers kept in the catalog by default; beyond it, the least recently seen are forgotten.
MAX_PEERS = defaults.CATALOG_MAX_PEERS
#: Addresses kept per peer, and the longest address kept (longer ones are dropped).
MAX_PEER_ADDRESSES = 32
MAX_ADDRESS_LENGTH = 300

_FILE_COLUMNS = "name, cap, size, media_type, created, mtime, replicas, replicas_wanted, erasure"
_PEER_COLUMNS = "node_id, addresses, last_seen, last_failure, failures"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One name in the catalog: the read cap it maps to and what the user saw when storing.

    Attributes:
        name: the name.
        cap: the read cap (text form).
        size: the file's size in bytes.
        media_type: its media type.
        created: when it was stored (Unix time).
        mtime: the source file's modification time, if known.
        replicas: copies placed when it was stored (the fewest of any of its blocks); None
            if unknown (stored before catalog version 2).
        replicas_wanted: copies it should have; None if unknown.
        erasure: ``"K-of-N"`` for an erasure-coded file (the counts above are then shares
            out of N); None for a replicated one.
    """

    name: str
    cap: str
    size: int
    media_type: str
    created: float
    mtime: float | None = None
    replicas: int | None = None
    replicas_wanted: int | None = None
    erasure: str | None = None

    @property
    def under_replicated(self) -> bool:
        """Whether fewer copies were placed than wanted (False when unknown)."""
        return (
            self.replicas is not None
            and self.replicas_wanted is not None
            and self.replicas < self.replicas_wanted
        )


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """One remembered peer.

    Attributes:
        node_id: the node ID (text form).
        addresses: ``host:port`` addresses it was seen at, at most ``MAX_PEER_ADDRESSES``.
        last_seen: when it was last connected (Unix time).
        last_failure: when an attempt to reach it last failed, or None.
        failures: attempts failed since it was last seen.
    """

    node_id: str
    addresses: list[str]
    last_seen: float
    last_failure: float | None
    failures: int


def cid_of_cap(cap: str) -> str:
    """Return the CID text of a cap string (``shoal:r:<cid>:<key>`` or ``shoal:v:<cid>``).

    Raises:
        InvalidCapability: ``cap`` is not a Shoal cap with a well-formed CID.
    """
    parts = cap.split(":")
    if len(parts) < 3 or parts[0] != "shoal":
        # Never echo the cap: it may hold a key.
        raise InvalidCapability("not a shoal cap (expected shoal:r:<cid>:<key> or shoal:v:<cid>)")
    try:
        decode_id(parts[2])
    except ValueError:
        # Not the decoder's message: it quotes the text, which may be a misplaced key.
        raise InvalidCapability("cap has a malformed CID (expected 52 base32 characters)") from None
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
        max_peers: most peers to remember (at least 1); the least recently seen go first.

    Raises:
        StorageError: the file cannot be opened or migrated.
        ConfigError: the file has a newer schema than this version of Shoal knows.
    """

    def __init__(self, path: Path, *, max_peers: int = MAX_PEERS) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        self._path = Path(path)
        self._max_peers = max_peers
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
            # A lower max_peers than last time applies at once.
            if conn.execute("SELECT count(*) FROM peers").fetchone()[0] > max_peers:
                conn.execute("BEGIN IMMEDIATE")
                self._trim_peers(conn)
                conn.execute("COMMIT")
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
            ValueError: ``replicas`` or ``replicas_wanted`` is negative, or only one is given.
            StorageError: the database failed.
        """
        cid = cid_of_cap(entry.cap)
        if (entry.replicas is None) != (entry.replicas_wanted is None):
            raise ValueError("replicas and replicas_wanted are given together or not at all")
        if (entry.replicas or 0) < 0 or (entry.replicas_wanted or 0) < 0:
            raise ValueError("replica counts must not be negative")
        with self._cursor(f"storing name {entry.name!r}", write=True) as conn:
            row = conn.execute("SELECT cid FROM files WHERE name = ?", (entry.name,)).fetchone()
            conn.execute(
                f"INSERT OR REPLACE INTO files ({_FILE_COLUMNS}, cid) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.name,
                    entry.cap,
                    entry.size,
                    entry.media_type,
                    entry.created,
                    entry.mtime,
                    entry.replicas,
                    entry.replicas_wanted,
                    entry.erasure,
                    cid,
                ),
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
                f"SELECT {_FILE_COLUMNS} FROM files WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else _entry(row)

    def list_files(self) -> list[CatalogEntry]:
        """Return every entry, sorted by name (code point order).

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("listing names") as conn:
            rows = conn.execute(f"SELECT {_FILE_COLUMNS} FROM files ORDER BY name").fetchall()
        return [_entry(row) for row in rows]

    def under_replicated(self) -> list[CatalogEntry]:
        """Return the entries stored with fewer copies than wanted, sorted by name.

        Files whose counts are unknown (stored before catalog version 2) are not included.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("listing under-replicated files") as conn:
            rows = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE replicas < replicas_wanted ORDER BY name"
            ).fetchall()
        return [_entry(row) for row in rows]

    def set_replicas(self, name: str, replicas: int) -> bool:
        """Record that ``name`` now has ``replicas`` copies (after a repair).

        Returns:
            False if there is no such name.

        Raises:
            ValueError: ``replicas`` is negative.
            StorageError: the database failed.
        """
        if replicas < 0:
            raise ValueError("replica counts must not be negative")
        with self._cursor(f"updating name {name!r}", write=True) as conn:
            cursor = conn.execute(
                "UPDATE files SET replicas = ?, "
                "replicas_wanted = coalesce(replicas_wanted, ?) WHERE name = ?",
                (replicas, replicas, name),
            )
        return cursor.rowcount > 0

    def remove_file(self, name: str) -> CatalogEntry | None:
        """Remove ``name``; unpin its CID unless another name uses it. One transaction.

        Returns:
            The removed entry, or None if there was no such name.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor(f"removing name {name!r}", write=True) as conn:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS}, cid FROM files WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM files WHERE name = ?", (name,))
            self._unpin_if_unused(conn, row[-1])
        return _entry(row[:-1])

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

        Seeing a peer clears its failure count. At most ``MAX_PEER_ADDRESSES`` addresses of
        at most ``MAX_ADDRESS_LENGTH`` characters are kept (longer ones are dropped). When
        this makes more than ``max_peers`` rows, the least recently seen peers are forgotten.

        Raises:
            StorageError: the database failed.
        """
        kept = [a for a in addresses if len(a) <= MAX_ADDRESS_LENGTH][:MAX_PEER_ADDRESSES]
        encoded = json.dumps(kept)
        with self._cursor(f"storing peer {node_id_text[:12]}", write=True) as conn:
            conn.execute(
                "INSERT INTO peers (node_id, addresses, last_seen, last_failure, failures) "
                "VALUES (?, ?, ?, NULL, 0) "
                "ON CONFLICT (node_id) DO UPDATE SET addresses = excluded.addresses, "
                "last_seen = excluded.last_seen, failures = 0",
                (node_id_text, encoded, last_seen),
            )
            self._trim_peers(conn)

    def _trim_peers(self, conn: sqlite3.Connection) -> None:
        """Forget the least recently seen peers beyond ``max_peers`` (in the caller's
        transaction)."""
        (count,) = conn.execute("SELECT count(*) FROM peers").fetchone()
        if count <= self._max_peers:
            return
        conn.execute(
            "DELETE FROM peers WHERE node_id IN "
            "(SELECT node_id FROM peers ORDER BY last_seen ASC, node_id ASC LIMIT ?)",
            (count - self._max_peers,),
        )

    def record_peer_failure(self, node_id_text: str, when: float) -> int:
        """Count one failed attempt to reach a remembered peer.

        Returns:
            The peer's failures since it was last seen (0 if it is not remembered: nothing is
            recorded for unknown peers).

        Raises:
            StorageError: the database failed.
        """
        with self._cursor(f"updating peer {node_id_text[:12]}", write=True) as conn:
            conn.execute(
                "UPDATE peers SET last_failure = ?, failures = failures + 1 WHERE node_id = ?",
                (when, node_id_text),
            )
            row = conn.execute(
                "SELECT failures FROM peers WHERE node_id = ?", (node_id_text,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def forget_peer(self, node_id_text: str) -> bool:
        """Remove a peer; return False if it was not remembered.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor(f"forgetting peer {node_id_text[:12]}", write=True) as conn:
            cursor = conn.execute("DELETE FROM peers WHERE node_id = ?", (node_id_text,))
        return cursor.rowcount > 0

    def prune_peers(self, *, seen_before: float, min_failures: int = 0) -> int:
        """Forget the peers last seen before ``seen_before`` (and, if ``min_failures`` is
        given, that failed at least that many times since).

        Returns:
            How many peers were forgotten.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("pruning peers", write=True) as conn:
            cursor = conn.execute(
                "DELETE FROM peers WHERE last_seen < ? AND failures >= ?",
                (seen_before, min_failures),
            )
        return cursor.rowcount

    def peers(self) -> list[tuple[str, list[str], float]]:
        """Return ``(node id text, addresses, last seen)`` for every known peer, by node ID.

        Raises:
            StorageError: the database failed.
        """
        return [(r.node_id, r.addresses, r.last_seen) for r in self.peer_records()]

    def peer_records(self) -> list[PeerRecord]:
        """Return every known peer with its failure record, by node ID.

        Raises:
            StorageError: the database failed.
        """
        with self._cursor("listing peers") as conn:
            rows = conn.execute(f"SELECT {_PEER_COLUMNS} FROM peers ORDER BY node_id").fetchall()
        return [
            PeerRecord(
                node_id=str(node_id),
                addresses=_addresses(raw),
                last_seen=float(seen),
                last_failure=None if failed is None else float(failed),
                failures=int(failures),
            )
            for node_id, raw, seen, failed, failures in rows
        ]

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
    name, cap, size, media_type, created, mtime, replicas, wanted, erasure = row
    return CatalogEntry(
        name=str(name),
        cap=str(cap),
        size=int(size),
        media_type=str(media_type),
        created=float(created),
        mtime=None if mtime is None else float(mtime),
        replicas=None if replicas is None else int(replicas),
        replicas_wanted=None if wanted is None else int(wanted),
        erasure=None if erasure is None else str(erasure),
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
