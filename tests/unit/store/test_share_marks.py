"""Share marks in the lease table: set and cleared by the PUT that writes a block, dropped with
the block, bounded, kept across a restart, and added to a schema-1 database (real SQLite)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.ids import sha256
from shoal.store.leases import SCHEMA_VERSION, ZERO_ROOT, LeaseTable

A = sha256(b"owner a")


def block(i: int) -> bytes:
    return sha256(i.to_bytes(4, "big"))


@pytest.fixture
def table(tmp_path: Path) -> Iterator[LeaseTable]:
    leases = LeaseTable(tmp_path / "shoal.db")
    yield leases
    leases.close()


def test_a_write_marks_or_clears(table: LeaseTable) -> None:
    assert table.mark_written(block(1), share=True)
    assert table.mark_written(block(1), share=True)  # again: still one mark
    assert not table.mark_written(block(2), share=False)
    assert table.shares_among([block(1), block(2), block(3)]) == {block(1)}
    assert table.share_marks == 1
    # Written again as a plain block (it was deleted or moved aside meanwhile): unmarked.
    assert not table.mark_written(block(1), share=False)
    assert table.shares_among([block(1)]) == set()
    assert table.share_marks == 0


def test_marks_are_separate_from_leases(table: LeaseTable) -> None:
    table.grant(A, ZERO_ROOT, [block(1), block(2)], 100.0, now=0.0)
    table.mark_written(block(1), share=True)
    assert table.live_among([block(1), block(2)], 1.0) == {block(1), block(2)}
    assert table.total == 2  # a mark is not a lease row
    table.release(A, ZERO_ROOT)
    assert table.shares_among([block(1)]) == {block(1)}  # releasing keeps the block's kind


def test_forget_drops_the_mark_with_the_block(table: LeaseTable) -> None:
    table.mark_written(block(1), share=True)
    table.mark_written(block(2), share=True)
    table.forget([block(1)])
    assert table.shares_among([block(1), block(2)]) == {block(2)}
    assert table.share_marks == 1


def test_marks_are_bounded(tmp_path: Path) -> None:
    table = LeaseTable(tmp_path / "shoal.db", max_total=3)
    try:
        assert all(table.mark_written(block(i), share=True) for i in range(3))
        # Past the bound a share stays unmarked (handed off like a plain block).
        assert not table.mark_written(block(3), share=True)
        assert table.share_marks == 3
        assert table.shares_among([block(i) for i in range(4)]) == {block(i) for i in range(3)}
        # An existing mark is still reported, and clearing one makes room.
        assert table.mark_written(block(0), share=True)
        table.mark_written(block(1), share=False)
        assert table.mark_written(block(3), share=True)
    finally:
        table.close()


def test_marks_survive_a_restart(tmp_path: Path) -> None:
    table = LeaseTable(tmp_path / "shoal.db")
    table.mark_written(block(1), share=True)
    table.close()
    again = LeaseTable(tmp_path / "shoal.db")
    try:
        assert again.shares_among([block(1), block(2)]) == {block(1)}
        assert again.share_marks == 1
    finally:
        again.close()


def test_a_schema_one_database_gets_the_table_and_keeps_its_leases(tmp_path: Path) -> None:
    path = tmp_path / "shoal.db"
    table = LeaseTable(path)
    table.grant(A, ZERO_ROOT, [block(1)], 100.0, now=0.0)
    table.close()
    # Turn it back into what the first lease release wrote: schema 1, no shares table.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE shares")
    conn.execute("UPDATE lease_meta SET value = '1' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    upgraded = LeaseTable(path)
    try:
        assert upgraded.is_live(block(1), 1.0)
        assert upgraded.shares_among([block(1)]) == set()
        assert upgraded.mark_written(block(1), share=True)
    finally:
        upgraded.close()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM lease_meta WHERE key = 'schema'").fetchone()
    finally:
        conn.close()
    assert row == (str(SCHEMA_VERSION),)
    assert SCHEMA_VERSION == 2
