"""The lease table: grants only extend, releases are per owner and root, GC decisions, bounds,
schema migration and the upgrade lease (real SQLite files)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import ConfigError
from shoal.ids import sha256
from shoal.store import Catalog, CatalogEntry
from shoal.store.leases import ZERO_ROOT, GcState, LeaseTable, gc_due

A = sha256(b"owner a")
B = sha256(b"owner b")
ROOT1 = sha256(b"root 1")
ROOT2 = sha256(b"root 2")
DAY = 86400.0


def block(i: int) -> bytes:
    return sha256(i.to_bytes(4, "big"))


@pytest.fixture
def table(tmp_path: Path) -> Iterator[LeaseTable]:
    leases = LeaseTable(tmp_path / "shoal.db")
    yield leases
    leases.close()  # an unclosed connection is a ResourceWarning (an error) on Python 3.13


def test_grant_only_extends(table: LeaseTable) -> None:
    table.grant(A, ROOT1, [block(1)], 1000.0, now=0.0)
    table.grant(A, ROOT1, [block(1)], 500.0, now=0.0)  # shorter: ignored
    assert table.is_live(block(1), 999.0)
    assert not table.is_live(block(1), 1000.0)
    table.grant(A, ROOT1, [block(1)], 2000.0, now=0.0)
    assert table.is_live(block(1), 1999.0)
    assert table.total == 1  # one row per (block, owner, root)


def test_release_drops_only_that_owner_and_root(table: LeaseTable) -> None:
    shared, only_a = block(1), block(2)
    table.grant(A, ROOT1, [shared, only_a], DAY, now=0.0)
    table.grant(A, ROOT2, [shared], DAY, now=0.0)  # the same block in a second file of A
    table.grant(B, ROOT1, [shared], DAY, now=0.0)  # the same file kept by a second owner
    assert table.release(A, ROOT1) == 2
    assert table.is_live(shared, 1.0)
    assert not table.is_live(only_a, 1.0)
    assert table.release(A, ROOT2) == 1
    assert table.is_live(shared, 1.0)  # B still holds it
    assert table.release(A, ROOT1) == 0  # nothing left of A's
    assert table.release(B, ROOT1) == 1
    assert not table.is_live(shared, 1.0)
    assert table.total == 0


def test_roots_held_and_leases_of(table: LeaseTable) -> None:
    table.grant(A, ROOT1, [ROOT1, block(1)], DAY, now=0.0)
    table.grant(B, ROOT2, [block(2)], DAY, now=0.0)  # ROOT2's root block is not held here
    table.grant(A, ZERO_ROOT, [block(3)], DAY, now=0.0)
    table.grant(B, ROOT2, [ROOT2], 10.0, now=0.0)
    assert table.roots_held(5.0) == sorted([ROOT1, ROOT2])
    assert table.roots_held(20.0) == [ROOT1]  # ROOT2's lease on its root ended
    rows = table.leases_of([ROOT1, block(1), block(9)], 1.0)
    assert {(r.block_id, r.owner, r.root) for r in rows} == {
        (ROOT1, A, ROOT1),
        (block(1), A, ROOT1),
    }
    assert table.live_among([block(1), block(2), block(9)], 1.0) == {block(1), block(2)}


def test_held_only_for_others(table: LeaseTable) -> None:
    table.grant(A, ROOT1, [block(1), block(2)], DAY, now=0.0)
    table.grant(B, ROOT1, [block(2), block(3)], DAY, now=0.0)
    assert set(table.held_only_for_others(A, 1.0)) == {block(3)}


@pytest.mark.parametrize(
    ("state", "now", "due"),
    [
        (GcState(None, None), 1e9, False),  # first seen now: its grace starts
        (GcState(None, 100.0), 100.0 + DAY - 1, False),
        (GcState(None, 100.0), 100.0 + DAY, True),
        (GcState(500.0, None), 499.0, False),  # live
        (GcState(500.0, None), 500.0 + DAY - 1, False),  # ended, within the grace
        (GcState(500.0, None), 500.0 + DAY, True),
        (GcState(500.0, 0.0), 501.0, False),  # a lease row wins over an old unleased mark
    ],
)
def test_gc_due(state: GcState, now: float, due: bool) -> None:
    assert gc_due(state, now, DAY) is due


def test_gc_candidates_track_first_seen_and_last_lease(table: LeaseTable) -> None:
    never, expired, live = block(1), block(2), block(3)
    table.grant(A, ROOT1, [expired], 100.0, now=0.0)
    table.grant(A, ROOT1, [live], 10 * DAY, now=0.0)
    ids = [never, expired, live]
    assert table.gc_candidates(ids, 50.0, DAY) == []  # never: first seen at 50
    assert table.gc_candidates(ids, 100.0 + DAY, DAY) == [never, expired]
    # A grant clears the unleased mark; a release then starts from the lease's end.
    table.grant(B, ROOT2, [never], 5 * DAY, now=0.0)
    assert table.gc_candidates(ids, 2 * DAY, DAY) == [expired]
    table.release(B, ROOT2)
    assert table.gc_candidates([never], 2 * DAY, DAY) == []  # first seen again now
    assert table.gc_candidates([never], 3 * DAY, DAY) == [never]
    assert table.forget([never, expired]) == 1
    assert table.total == 1
    assert table.gc_candidates([expired], 4 * DAY, DAY) == []  # forgotten: seen anew


def test_prune_drops_rows_long_expired(table: LeaseTable) -> None:
    table.grant(A, ROOT1, [block(1)], 100.0, now=0.0)
    table.grant(A, ROOT1, [block(2)], 10 * DAY, now=0.0)
    assert table.prune(100.0 + DAY - 1, DAY) == 0
    assert table.prune(101.0 + DAY, DAY) == 1
    assert table.total == table.rows_of(A) == 1


def test_bounds_refuse_a_flood_and_warn_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = LeaseTable(tmp_path / "shoal.db", max_per_grantor=100, max_total=150)
    caplog.set_level(logging.WARNING, logger="shoal.store.leases")
    refused = table.grant(A, ROOT1, [block(i) for i in range(1000)], DAY, now=0.0)
    assert refused == 900
    assert table.rows_of(A) == 100
    # Renewing what is already leased is never refused.
    assert table.grant(A, ROOT1, [block(i) for i in range(100)], 2 * DAY, now=1.0) == 0
    assert table.grant(A, ROOT1, [block(1000)], DAY, now=2.0) == 1
    # Another owner fits until the total bound.
    assert table.grant(B, ROOT1, [block(i) for i in range(100)], DAY, now=3.0) == 50
    assert table.total == 150
    warnings = [r for r in caplog.records if "lease table full" in r.getMessage()]
    assert len(warnings) == 1  # the floods at 0, 2 and 3 s: one line
    table.grant(B, ROOT2, [block(5000)], DAY, now=61.0)
    assert len([r for r in caplog.records if "lease table full" in r.getMessage()]) == 2
    # Releasing makes room again; the counts survive a reopen.
    assert table.release(A, ROOT1) == 100
    assert table.grant(B, ROOT2, [block(7000)], DAY, now=62.0) == 0
    table.close()
    again = LeaseTable(tmp_path / "shoal.db", max_per_grantor=100, max_total=150)
    assert again.rows_of(B) == 51
    assert again.total == 51
    assert again.rows_of(A) == 0
    again.close()


def test_transferred_rows_are_charged_to_the_sender(table: LeaseTable) -> None:
    table.grant(A, ROOT1, [block(1)], DAY, now=0.0, granted_by=B)
    assert table.rows_of(B) == 1
    assert table.rows_of(A) == 0
    assert table.release(A, ROOT1) == 1  # still A's lease: A may release it
    assert table.rows_of(B) == 0


def test_adopt_once_and_keep_catalog_data(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    catalog = Catalog(path)
    catalog.put_file(CatalogEntry("x", "shoal:r:" + "a" * 52 + ":" + "b" * 52, 1, "t", 0.0))
    table = LeaseTable(path)
    assert not table.adopted()
    assert table.adopt(A, [block(1), block(2)], 31 * DAY) == 2
    assert table.adopted()
    assert table.adopt(A, [block(3)], 31 * DAY) == 0  # once only
    assert table.gc_candidates([block(1), block(2)], 31 * DAY - 1, 0.0) == []
    table.close()
    # The lease tables live beside the catalog's without touching them.
    assert [e.name for e in catalog.list_files()] == ["x"]
    catalog.close()
    reopened = LeaseTable(path)
    assert reopened.adopted()
    assert reopened.total == 2
    reopened.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    LeaseTable(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE lease_meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        LeaseTable(path)


def test_threads_grant_and_release_concurrently(table: LeaseTable) -> None:
    def work(owner: bytes) -> None:
        for i in range(50):
            table.grant(owner, ROOT1, [block(i)], DAY, now=0.0)
        table.release(owner, ROOT1)

    owners = [sha256(bytes([i])) for i in range(4)]
    threads = [threading.Thread(target=work, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert table.total == 0
