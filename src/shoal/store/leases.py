"""Leases: which owners want each stored block kept, and until when (SQLite, in ``shoal.db``).

How it works: a lease is a row ``(block_id, owner, root, expires)``: the node ``owner`` wants
``block_id`` kept until ``expires`` (Unix time) as part of the file whose root manifest is
``root`` (``ZERO_ROOT`` when unknown: a put's pending lease, or the lease every block got at
the upgrade that introduced leases). Rows of one (block, owner, root) merge: a grant only ever
extends ``expires``; ``release(owner, root)`` drops exactly that owner's rows for that root,
so a block shared by two files or two owners stays leased while any other row lives.

Garbage collection asks :meth:`LeaseTable.gc_candidates` which local blocks may go: those with
no live lease whose last lease ended ``grace`` seconds ago or more; a block never leased counts
from when GC first saw it (table ``unleased``), so nothing new is ever deleted at once.

Bounds: every row is charged to the node that made us write it (``granted_by``: the owner
itself, or the node that transferred someone's lease to us); at most ``max_per_grantor`` rows
per such node and ``max_total`` rows in all. A grant past a bound records what fits and
reports the rest as refused, with one WARNING a minute at most.

Erasure shares: ``shares(block_id)`` marks the local blocks that were written here as an
erasure-coded share (PUT_BLOCK with ``share``; ``docs/decisions/0012-erasure-share-marks.md``).
A share's placement is its stripe's, not its own ID's, so the handoff skips marked blocks and
leaves shares to stripe repair. The mark is set or cleared each time a PUT writes the block
here (:meth:`LeaseTable.mark_written`), dropped with the block's other rows when GC deletes it
(:meth:`LeaseTable.forget`), and bounded by ``max_total`` rows (past it a share is simply not
marked: handled as a replicated block, which costs space, never data).

Tables (their own version in ``lease_meta``, migrated in one transaction each; the catalog's
``user_version`` is not ours):

- ``leases(block_id, owner, root, expires, granted_by)``, primary key (block, owner, root);
- ``unleased(block_id, since)``: blocks GC saw with no lease row, and since when;
- ``shares(block_id)``: blocks written here as erasure shares (schema 2);
- ``lease_meta(key, value)``: ``schema`` and ``adopted`` (the upgrade lease was given).

Synchronous and thread-safe (one lock around one connection, like the ``Catalog``); callers
pass every time in, nothing here reads the clock.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal import defaults
from shoal.errors import ConfigError, StorageError

__all__ = ["ZERO_ROOT", "GcState", "Lease", "LeaseTable", "gc_due"]

log = logging.getLogger(__name__)

#: The root of a lease whose file is unknown (pending leases, the upgrade lease).
ZERO_ROOT = bytes(32)

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS leases (
            block_id BLOB NOT NULL,
            owner BLOB NOT NULL,
            root BLOB NOT NULL,
            expires REAL NOT NULL,
            granted_by BLOB NOT NULL,
            PRIMARY KEY (block_id, owner, root)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS leases_owner_root ON leases (owner, root)",
        "CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires)",
        "CREATE INDEX IF NOT EXISTS leases_roots ON leases (root) WHERE block_id = root",
        """CREATE TABLE IF NOT EXISTS unleased (
            block_id BLOB PRIMARY KEY,
            since REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
    ("CREATE TABLE IF NOT EXISTS shares (block_id BLOB PRIMARY KEY) WITHOUT ROWID",),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_BUSY_TIMEOUT_S = 5.0
#: Seconds between two WARNINGs about a lease bound being hit.
_LIMIT_LOG_INTERVAL = 60.0
#: Host parameters per SQL statement (SQLite's default limit is 32766).
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Lease:
    """One lease row."""

    block_id: bytes
    owner: bytes
    root: bytes
    expires: float


@dataclass(frozen=True, slots=True)
class GcState:
    """What GC knows of one local block: its latest lease end, or when it was first seen
    with no lease (None: never seen)."""

    last_expiry: float | None
    unleased_since: float | None


def gc_due(state: GcState, now: float, grace: float) -> bool:
    """Whether a block may be deleted: no live lease, and its last lease ended (or, never
    leased, it was first seen unleased) at least ``grace`` seconds ago."""
    if state.last_expiry is not None:
        if state.last_expiry > now:
            return False
        return now - state.last_expiry >= grace
    if state.unleased_since is None:
        return False  # first seen now: the grace period starts
    return now - state.unleased_since >= grace


def _chunks(items: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class LeaseTable:
    """The lease rows of one node (see the module docstring).

    Args:
        path: the database file (``<data dir>/shoal.db``, shared with the catalog).
        max_per_grantor: most rows charged to one node.
        max_total: most rows in all.

    Raises:
        StorageError: the file cannot be opened or migrated.
        ConfigError: the tables have a newer version than this Shoal knows.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_per_grantor: int = defaults.MAX_LEASES_PER_OWNER,
        max_total: int = defaults.MAX_LEASES,
    ) -> None:
        if max_per_grantor < 1 or max_total < 1:
            raise ValueError("lease bounds must be at least 1")
        self._path = Path(path)
        self.max_per_grantor = max_per_grantor
        self.max_total = max_total
        self._lock = threading.Lock()
        self._stripes = tuple(threading.Lock() for _ in range(64))
        self._warned_at: float | None = None
        self.refused = 0  # rows refused at a bound since start
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"lease table {self._path}: cannot open it ({exc})") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
            self._recount(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"lease table {self._path}: opening failed ({exc})") from exc
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def _recount(self, conn: sqlite3.Connection) -> None:
        self._shares = int(conn.execute("SELECT count(*) FROM shares").fetchone()[0])
        self._per_grantor: dict[bytes, int] = {
            bytes(g): int(n)
            for g, n in conn.execute("SELECT granted_by, count(*) FROM leases GROUP BY granted_by")
        }
        self._total = sum(self._per_grantor.values())

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS lease_meta (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute("SELECT value FROM lease_meta WHERE key = 'schema'").fetchone()
        version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"lease table {self._path} has version {version}, newer than this Shoal "
                f"supports ({SCHEMA_VERSION}): upgrade Shoal"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO lease_meta (key, value) VALUES ('schema', ?)",
                    (str(target),),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def guard(self, block_id: bytes) -> Iterator[None]:
        """Hold ``block_id`` still: GC checks a block's leases and deletes it under this lock,
        and storing a block and leasing it happen under it too, so a block cannot be deleted
        between "stored, leased" and an answer saying so."""
        with self._stripes[block_id[0] % len(self._stripes)]:
            yield

    @contextmanager
    def guard_many(self, block_ids: Iterable[bytes]) -> Iterator[None]:
        """``guard`` for several blocks at once (locks taken in one order: no deadlock)."""
        with contextlib.ExitStack() as stack:
            for index in sorted({b[0] % len(self._stripes) for b in block_ids}):
                stack.enter_context(self._stripes[index])
            yield

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StorageError(f"lease table {self._path} is closed")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    # The row counts were changed with the rows: read them again.
                    self._recount(conn)
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"lease table {self._path}: {action} failed ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def total(self) -> int:
        """Rows in the table."""
        return self._total

    def rows_of(self, grantor: bytes) -> int:
        """Rows charged to ``grantor``."""
        return self._per_grantor.get(grantor, 0)

    # -- grants and releases -------------------------------------------------------------------

    def grant(
        self,
        owner: bytes,
        root: bytes,
        block_ids: Iterable[bytes],
        expires: float,
        *,
        now: float,
        granted_by: bytes | None = None,
    ) -> int:
        """Lease ``block_ids`` to ``owner`` for file ``root`` until at least ``expires``.

        An existing row is only ever extended. New rows are charged to ``granted_by``
        (default: ``owner``); past a bound they are refused.

        Returns:
            How many blocks were refused at a bound (0: all leased).
        """
        grantor = owner if granted_by is None else granted_by
        ids = list(dict.fromkeys(block_ids))
        refused = 0
        with self._transaction("granting leases") as conn:
            added = 0
            for block_id in ids:
                cursor = conn.execute(
                    "UPDATE leases SET expires = max(expires, ?) "
                    "WHERE block_id = ? AND owner = ? AND root = ?",
                    (expires, block_id, owner, root),
                )
                if cursor.rowcount:
                    continue
                if (
                    self._total + added >= self.max_total
                    or self._per_grantor.get(grantor, 0) + added >= self.max_per_grantor
                ):
                    refused += 1
                    continue
                conn.execute(
                    "INSERT INTO leases (block_id, owner, root, expires, granted_by) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (block_id, owner, root, expires, grantor),
                )
                added += 1
            for part in _chunks(ids):
                conn.execute(
                    f"DELETE FROM unleased WHERE block_id IN ({','.join('?' * len(part))})",
                    tuple(part),
                )
            # Under the lock, with the rows (recounted if the commit fails).
            self._per_grantor[grantor] = self._per_grantor.get(grantor, 0) + added
            self._total += added
        if refused:
            self.refused += refused
            if self._warned_at is None or now - self._warned_at >= _LIMIT_LOG_INTERVAL:
                self._warned_at = now
                log.warning(
                    "lease table full: refused %d lease(s) (at most %d rows per node and %d "
                    "in all; %d rows now); those blocks are freed after the GC grace period "
                    "unless leased again",
                    refused,
                    self.max_per_grantor,
                    self.max_total,
                    self._total,
                )
        return refused

    def release(self, owner: bytes, root: bytes, *, now: float | None = None) -> int:
        """Drop ``owner``'s leases for file ``root`` (no one else's); return how many.

        With ``now``, a block left with no lease counts as unleased since ``now`` (its grace
        period starts); without, from when GC first sees it.
        """
        with self._transaction("releasing leases") as conn:
            counts = conn.execute(
                "SELECT granted_by, count(*) FROM leases WHERE owner = ? AND root = ? "
                "GROUP BY granted_by",
                (owner, root),
            ).fetchall()
            if now is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO unleased (block_id, since) "
                    "SELECT block_id, ? FROM leases l WHERE owner = ? AND root = ? "
                    "AND NOT EXISTS (SELECT 1 FROM leases o WHERE o.block_id = l.block_id "
                    "AND NOT (o.owner = ? AND o.root = ?))",
                    (now, owner, root, owner, root),
                )
            conn.execute("DELETE FROM leases WHERE owner = ? AND root = ?", (owner, root))
            return self._uncount(counts)

    def _uncount(self, counts: list[tuple[bytes, int]]) -> int:
        dropped = 0
        for grantor, n in counts:
            key = bytes(grantor)
            left = self._per_grantor.get(key, 0) - int(n)
            if left > 0:
                self._per_grantor[key] = left
            else:
                self._per_grantor.pop(key, None)
            dropped += int(n)
        self._total -= dropped
        return dropped

    # -- questions -----------------------------------------------------------------------------

    def is_live(self, block_id: bytes, now: float) -> bool:
        """Whether some lease on ``block_id`` has not expired."""
        return bool(self.live_among([block_id], now))

    def live_among(self, block_ids: Sequence[bytes], now: float) -> set[bytes]:
        """Those of ``block_ids`` that hold a live lease."""
        out: set[bytes] = set()
        with self._transaction("reading leases") as conn:
            for part in _chunks(block_ids):
                rows = conn.execute(
                    f"SELECT DISTINCT block_id FROM leases WHERE expires > ? "
                    f"AND block_id IN ({','.join('?' * len(part))})",
                    (now, *part),
                )
                out.update(bytes(r[0]) for r in rows)
        return out

    def roots_held(self, now: float) -> list[bytes]:
        """Root CIDs whose root manifest block this node holds under a live lease (leases
        are recorded only for blocks held here), sorted."""
        with self._transaction("reading leases") as conn:
            rows = conn.execute(
                "SELECT DISTINCT root FROM leases WHERE block_id = root AND expires > ? "
                "ORDER BY root",
                (now,),
            ).fetchall()
        return [bytes(r[0]) for r in rows if bytes(r[0]) != ZERO_ROOT]

    def leases_of(self, block_ids: Sequence[bytes], now: float) -> list[Lease]:
        """The live leases on ``block_ids`` (to transfer with a copy of the blocks)."""
        out: list[Lease] = []
        with self._transaction("reading leases") as conn:
            for part in _chunks(block_ids):
                rows = conn.execute(
                    f"SELECT block_id, owner, root, expires FROM leases WHERE expires > ? "
                    f"AND block_id IN ({','.join('?' * len(part))})",
                    (now, *part),
                )
                out.extend(Lease(bytes(b), bytes(o), bytes(r), float(e)) for b, o, r, e in rows)
        return out

    def held_only_for_others(self, self_id: bytes, now: float) -> list[bytes]:
        """Blocks whose live leases all belong to owners other than ``self_id``."""
        with self._transaction("reading leases") as conn:
            rows = conn.execute(
                "SELECT block_id FROM leases WHERE expires > ? GROUP BY block_id "
                "HAVING sum(owner = ?) = 0",
                (now, self_id),
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    # -- garbage collection --------------------------------------------------------------------

    def gc_states(self, block_ids: Sequence[bytes], now: float) -> dict[bytes, GcState]:
        """What GC knows of each of ``block_ids``; blocks with neither a lease row nor an
        ``unleased`` entry are recorded as first seen unleased at ``now``."""
        states: dict[bytes, GcState] = {}
        with self._transaction("reading leases") as conn:
            for part in _chunks(block_ids):
                marks = ",".join("?" * len(part))
                expiry = dict(
                    conn.execute(
                        f"SELECT block_id, max(expires) FROM leases "
                        f"WHERE block_id IN ({marks}) GROUP BY block_id",
                        tuple(part),
                    ).fetchall()
                )
                since = dict(
                    conn.execute(
                        f"SELECT block_id, since FROM unleased WHERE block_id IN ({marks})",
                        tuple(part),
                    ).fetchall()
                )
                for block_id in part:
                    last = expiry.get(block_id)
                    first = since.get(block_id)
                    if last is None and first is None:
                        conn.execute(
                            "INSERT INTO unleased (block_id, since) VALUES (?, ?)", (block_id, now)
                        )
                    states[block_id] = GcState(
                        None if last is None else float(last),
                        None if first is None else float(first),
                    )
        return states

    def gc_candidates(self, block_ids: Sequence[bytes], now: float, grace: float) -> list[bytes]:
        """Those of ``block_ids`` (blocks held here) that GC may delete now (``gc_due``)."""
        states = self.gc_states(block_ids, now)
        return [b for b in block_ids if gc_due(states[b], now, grace)]

    def forget(self, block_ids: Sequence[bytes]) -> int:
        """Drop every row about ``block_ids`` (deleted blocks: leases, ``unleased`` entries,
        share marks); return the lease rows dropped."""
        counts: dict[bytes, int] = {}
        with self._transaction("forgetting blocks") as conn:
            for part in _chunks(block_ids):
                marks = ",".join("?" * len(part))
                for grantor, n in conn.execute(
                    f"SELECT granted_by, count(*) FROM leases WHERE block_id IN ({marks}) "
                    "GROUP BY granted_by",
                    tuple(part),
                ):
                    counts[bytes(grantor)] = counts.get(bytes(grantor), 0) + int(n)
                conn.execute(f"DELETE FROM leases WHERE block_id IN ({marks})", tuple(part))
                conn.execute(f"DELETE FROM unleased WHERE block_id IN ({marks})", tuple(part))
                self._shares -= conn.execute(
                    f"DELETE FROM shares WHERE block_id IN ({marks})", tuple(part)
                ).rowcount
            return self._uncount(list(counts.items()))

    def prune(self, now: float, grace: float) -> int:
        """Drop rows that expired more than ``grace`` seconds ago (they protect nothing any
        more); a block left with no row counts as unleased since its last lease ended."""
        with self._transaction("pruning leases") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO unleased (block_id, since) "
                "SELECT block_id, max(expires) FROM leases GROUP BY block_id "
                "HAVING max(expires) < ?",
                (now - grace,),
            )
            counts = conn.execute(
                "SELECT granted_by, count(*) FROM leases WHERE expires < ? GROUP BY granted_by",
                (now - grace,),
            ).fetchall()
            conn.execute("DELETE FROM leases WHERE expires < ?", (now - grace,))
            return self._uncount(counts)

    def forget_unleased_except(self, block_ids: set[bytes]) -> int:
        """Drop ``unleased`` entries of blocks not in ``block_ids`` (no longer held here)."""
        with self._transaction("pruning leases") as conn:
            gone = [
                bytes(r[0])
                for r in conn.execute("SELECT block_id FROM unleased")
                if bytes(r[0]) not in block_ids
            ]
            for part in _chunks(gone):
                conn.execute(
                    f"DELETE FROM unleased WHERE block_id IN ({','.join('?' * len(part))})",
                    tuple(part),
                )
        return len(gone)

    # -- erasure shares ------------------------------------------------------------------------

    @property
    def share_marks(self) -> int:
        """Blocks marked as erasure shares."""
        return self._shares

    def mark_written(self, block_id: bytes, *, share: bool) -> bool:
        """Record how a PUT just wrote ``block_id`` here: as an erasure share or not.

        Call only when the PUT wrote the block (it was not held intact before), so a sender
        can mark only a block it was the first to store here. At ``max_total`` marks a share
        is left unmarked (the handoff then copies it like a replicated block: space, not data).

        Returns:
            Whether the block is marked as a share now.
        """
        with self._transaction("marking a share") as conn:
            if not share:
                self._shares -= conn.execute(
                    "DELETE FROM shares WHERE block_id = ?", (block_id,)
                ).rowcount
                return False
            if conn.execute("SELECT 1 FROM shares WHERE block_id = ?", (block_id,)).fetchone():
                return True
            if self._shares >= self.max_total:
                return False
            conn.execute("INSERT INTO shares (block_id) VALUES (?)", (block_id,))
            self._shares += 1
            return True

    def shares_among(self, block_ids: Sequence[bytes]) -> set[bytes]:
        """Those of ``block_ids`` marked as erasure shares."""
        out: set[bytes] = set()
        with self._transaction("reading share marks") as conn:
            for part in _chunks(block_ids):
                rows = conn.execute(
                    f"SELECT block_id FROM shares WHERE block_id IN ({','.join('?' * len(part))})",
                    tuple(part),
                )
                out.update(bytes(r[0]) for r in rows)
        return out

    # -- the upgrade ---------------------------------------------------------------------------

    def adopted(self) -> bool:
        """Whether the blocks on disk at the first start with leases got their lease."""
        with self._transaction("reading leases") as conn:
            row = conn.execute("SELECT value FROM lease_meta WHERE key = 'adopted'").fetchone()
        return row is not None

    def adopt(self, owner: bytes, block_ids: Iterable[bytes], expires: float) -> int:
        """Give every block already on disk a lease (``owner``, ``ZERO_ROOT``, ``expires``),
        once, in one transaction with the mark that says it was done; return how many.

        The upgrade lease is not bounded (it covers what the disk already holds).
        """
        ids = list(dict.fromkeys(block_ids))
        with self._transaction("adopting blocks") as conn:
            if conn.execute("SELECT 1 FROM lease_meta WHERE key = 'adopted'").fetchone():
                return 0
            before = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
            conn.executemany(
                "INSERT INTO leases (block_id, owner, root, expires, granted_by) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "expires = max(expires, excluded.expires)",
                ((b, owner, ZERO_ROOT, expires, owner) for b in ids),
            )
            added = conn.execute("SELECT count(*) FROM leases").fetchone()[0] - before
            conn.execute("INSERT INTO lease_meta (key, value) VALUES ('adopted', '1')")
            self._per_grantor[owner] = self._per_grantor.get(owner, 0) + int(added)
            self._total += int(added)
        return len(ids)
