"""Tests for shoal.store.catalog.Catalog."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.errors import ConfigError, InvalidCapability, StorageError
from shoal.ids import encode_id, sha256
from shoal.store import Catalog, CatalogEntry, cid_of_cap
from shoal.store import catalog as catalog_module


def cid(seed: int) -> str:
    return encode_id(sha256(seed.to_bytes(4, "big")))


def cap(seed: int) -> str:
    return f"shoal:r:{cid(seed)}:{encode_id(sha256(b'key' + seed.to_bytes(4, 'big')))}"


def entry(name: str, seed: int, *, size: int = 10, created: float = 1000.0) -> CatalogEntry:
    return CatalogEntry(
        name=name, cap=cap(seed), size=size, media_type="text/plain", created=created
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "shoal.db"


@pytest.fixture
def catalog(db_path: Path) -> Iterator[Catalog]:
    cat = Catalog(db_path)
    yield cat
    cat.close()


def test_cid_of_cap() -> None:
    assert cid_of_cap(cap(1)) == cid(1)
    assert cid_of_cap(f"shoal:v:{cid(1)}") == cid(1)
    for bad in ["", "shoal:r", "other:r:x:y", f"shoal:r:{cid(1)[:-1]}:k", "shoal:r:!!:k"]:
        with pytest.raises(InvalidCapability):
            cid_of_cap(bad)


def test_file_crud(catalog: Catalog) -> None:
    assert catalog.get_file("a.txt") is None
    assert catalog.list_files() == []
    a = entry("a.txt", 1, size=5, created=1.5)
    catalog.put_file(a)
    assert catalog.get_file("a.txt") == a

    replaced = entry("a.txt", 2, size=7, created=2.5)
    catalog.put_file(replaced)
    assert catalog.get_file("a.txt") == replaced

    assert catalog.remove_file("a.txt") == replaced
    assert catalog.get_file("a.txt") is None
    assert catalog.remove_file("a.txt") is None


def test_list_files_sorted_by_name(catalog: Catalog) -> None:
    names = ["b", "a", "Z", "é.txt", "a/b", "ab"]
    for i, name in enumerate(names):
        catalog.put_file(entry(name, i))
    assert [e.name for e in catalog.list_files()] == sorted(names)


def test_pins_follow_names(catalog: Catalog) -> None:
    catalog.put_file(entry("one", 1))
    catalog.put_file(entry("same-content", 1))
    catalog.put_file(entry("two", 2))
    assert catalog.pins() == {cid(1), cid(2)}
    assert catalog.is_pinned(cid(1))
    assert catalog.is_pinned(cid(1).upper())

    catalog.remove_file("one")
    assert catalog.is_pinned(cid(1))  # still used by "same-content"
    catalog.remove_file("same-content")
    assert not catalog.is_pinned(cid(1))

    # Pointing a name at new content unpins the old content if nothing else uses it.
    catalog.put_file(entry("two", 3))
    assert catalog.pins() == {cid(3)}
    catalog.remove_file("two")
    assert catalog.pins() == set()


def test_pin_time_is_the_first_pin(catalog: Catalog, db_path: Path) -> None:
    catalog.put_file(entry("a", 1, created=10.0))
    catalog.put_file(entry("b", 1, created=20.0))
    raw = sqlite3.connect(db_path)
    try:
        rows = raw.execute("SELECT cid, pinned_at FROM pins").fetchall()
    finally:
        raw.close()
    assert rows == [(cid(1), 10.0)]


def test_invalid_cap_writes_nothing(catalog: Catalog) -> None:
    bad = CatalogEntry(name="x", cap="not a cap", size=1, media_type="", created=0.0)
    with pytest.raises(InvalidCapability):
        catalog.put_file(bad)
    assert catalog.list_files() == []
    assert catalog.pins() == set()


def test_wal_mode_and_schema_version(catalog: Catalog, db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = raw.execute("PRAGMA user_version").fetchone()[0]
        assert version == catalog_module.SCHEMA_VERSION >= 1
    finally:
        raw.close()


def test_reopen_persists(db_path: Path) -> None:
    with Catalog(db_path) as first:
        first.put_file(entry("kept", 1, size=42, created=3.25))
        first.upsert_peer("peer-a", ["127.0.0.1:4000"], 5.0)
    with Catalog(db_path) as second:
        assert second.get_file("kept") == entry("kept", 1, size=42, created=3.25)
        assert second.pins() == {cid(1)}
        assert second.peers() == [("peer-a", ["127.0.0.1:4000"], 5.0)]


def test_peer_upsert_round_trip(catalog: Catalog) -> None:
    assert catalog.peers() == []
    catalog.upsert_peer("bbb", ["10.0.0.2:7000", "[::1]:7000"], 100.0)
    catalog.upsert_peer("aaa", [], 50.0)
    assert catalog.peers() == [
        ("aaa", [], 50.0),
        ("bbb", ["10.0.0.2:7000", "[::1]:7000"], 100.0),
    ]
    catalog.upsert_peer("bbb", ["10.0.0.3:7000"], 200.5)
    assert catalog.peers()[1] == ("bbb", ["10.0.0.3:7000"], 200.5)


def test_closed_catalog_raises(db_path: Path) -> None:
    cat = Catalog(db_path)
    cat.close()
    cat.close()  # twice is fine
    with pytest.raises(StorageError, match="closed"):
        cat.list_files()


def test_newer_schema_is_refused(db_path: Path) -> None:
    Catalog(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {catalog_module.SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(ConfigError, match="upgrade"):
        Catalog(db_path)


def test_unopenable_path_is_storage_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StorageError, match=r"dir\.db"):
        Catalog(tmp_path / "dir.db")


def test_not_a_database_is_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"garbage\.db"):
        Catalog(path)


def test_locked_database_is_storage_error(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "_BUSY_TIMEOUT_S", 0.05)
    cat = Catalog(db_path)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="locked") as info:
            cat.put_file(entry("a", 1))
        assert str(db_path) in str(info.value)
        other.execute("ROLLBACK")
        # Nothing half written, and the catalog works once the lock is gone.
        assert cat.list_files() == []
        cat.put_file(entry("a", 1))
        assert cat.pins() == {cid(1)}
    finally:
        other.close()
        cat.close()


def test_concurrent_use_from_threads(catalog: Catalog) -> None:
    def worker(t: int) -> None:
        for i in range(25):
            name = f"t{t}-{i}"
            catalog.put_file(entry(name, t * 1000 + i))
            assert catalog.get_file(name) is not None
            catalog.upsert_peer(f"peer-{t}", [f"127.0.0.1:{i}"], float(i))
            if i % 2:
                assert catalog.remove_file(name) is not None
            catalog.list_files()
            catalog.pins()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(worker, t) for t in range(8)]:
            future.result()

    names = {e.name for e in catalog.list_files()}
    assert names == {f"t{t}-{i}" for t in range(8) for i in range(0, 25, 2)}
    assert catalog.pins() == {cid(t * 1000 + i) for t in range(8) for i in range(0, 25, 2)}
    assert catalog.peers() == [(f"peer-{t}", ["127.0.0.1:24"], 24.0) for t in range(8)]
