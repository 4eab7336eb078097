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


def entry(
    name: str,
    seed: int,
    *,
    size: int = 10,
    created: float = 1000.0,
    mtime: float | None = None,
    replicas: int | None = None,
    wanted: int | None = None,
) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        cap=cap(seed),
        size=size,
        media_type="text/plain",
        created=created,
        mtime=mtime,
        replicas=replicas,
        replicas_wanted=wanted,
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


# -- schema v2: replicas, mtime, peer failures ----------------------------------------------

# The version-1 schema exactly as Shoal created it (not imported: the test pins the old format).
_V1_SCHEMA = (
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
)


def make_v1(path: Path, *extra: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode=WAL")
        for statement in (*_V1_SCHEMA, *extra):
            raw.execute(statement)
        raw.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
            ("old.txt", cap(7), cid(7), 123, "text/plain", 50.0),
        )
        raw.execute("INSERT INTO pins VALUES (?, ?)", (cid(7), 50.0))
        raw.execute("INSERT INTO peers VALUES (?, ?, ?)", ("peer-old", '["10.0.0.1:7000"]', 40.0))
        raw.execute("PRAGMA user_version = 1")
    finally:
        raw.close()


def columns(path: Path, table: str) -> list[str]:
    raw = sqlite3.connect(path)
    try:
        return [row[1] for row in raw.execute(f"PRAGMA table_info({table})")]
    finally:
        raw.close()


def user_version(path: Path) -> int:
    raw = sqlite3.connect(path)
    try:
        return int(raw.execute("PRAGMA user_version").fetchone()[0])
    finally:
        raw.close()


def test_migration_from_v1_keeps_every_row(db_path: Path) -> None:
    make_v1(db_path)
    with Catalog(db_path) as cat:
        assert user_version(db_path) == catalog_module.SCHEMA_VERSION == 3
        old = cat.get_file("old.txt")
        assert old == CatalogEntry(
            name="old.txt", cap=cap(7), size=123, media_type="text/plain", created=50.0
        )
        assert old is not None
        assert (old.mtime, old.replicas, old.replicas_wanted) == (None, None, None)
        assert not old.under_replicated
        assert cat.pins() == {cid(7)}
        assert cat.peers() == [("peer-old", ["10.0.0.1:7000"], 40.0)]
        (record,) = cat.peer_records()
        assert (record.failures, record.last_failure) == (0, None)
        assert cat.under_replicated() == []  # unknown counts are not reported as missing
        # The migrated file takes new rows.
        cat.put_file(entry("new", 8, replicas=2, wanted=3, mtime=9.5))
        assert [e.name for e in cat.under_replicated()] == ["new"]
    with Catalog(db_path) as again:  # reopening a v2 file migrates nothing
        assert again.get_file("new") == entry("new", 8, replicas=2, wanted=3, mtime=9.5)


def test_a_failed_migration_leaves_version_1_intact(db_path: Path) -> None:
    # An object in the way of the v2 migration makes it fail halfway through.
    make_v1(db_path, "CREATE TABLE peers_last_seen (x)")
    with pytest.raises(StorageError, match="peers_last_seen"):
        Catalog(db_path)
    assert user_version(db_path) == 1
    assert "replicas" not in columns(db_path, "files")
    assert "failures" not in columns(db_path, "peers")
    raw = sqlite3.connect(db_path)
    raw.execute("DROP TABLE peers_last_seen")
    raw.commit()
    raw.close()
    with Catalog(db_path) as cat:
        assert cat.get_file("old.txt") is not None
    assert "replicas" in columns(db_path, "files")


def test_replicas_and_mtime_round_trip(catalog: Catalog) -> None:
    full = entry("full", 1, replicas=3, wanted=3, mtime=1.25)
    short = entry("short", 2, replicas=1, wanted=3)
    unknown = entry("unknown", 3)
    for item in (full, short, unknown):
        catalog.put_file(item)
    assert catalog.get_file("full") == full
    assert catalog.list_files() == [full, short, unknown]
    assert catalog.under_replicated() == [short]
    assert short.under_replicated
    assert not full.under_replicated

    assert catalog.set_replicas("short", 3) is True
    assert catalog.under_replicated() == []
    assert catalog.set_replicas("missing", 3) is False
    assert catalog.remove_file("short") == entry("short", 2, replicas=3, wanted=3)


def test_replica_counts_are_validated(catalog: Catalog) -> None:
    with pytest.raises(ValueError):
        catalog.put_file(entry("a", 1, replicas=1))
    with pytest.raises(ValueError):
        catalog.put_file(entry("a", 1, replicas=-1, wanted=3))
    assert catalog.list_files() == []


def test_entry_stays_positional() -> None:
    # Callers that build entries positionally (five fields) keep working.
    made = CatalogEntry("n", cap(1), 5, "text/plain", 2.0)
    assert (made.mtime, made.replicas, made.replicas_wanted) == (None, None, None)


def test_peer_failures_forget_and_prune(catalog: Catalog) -> None:
    catalog.upsert_peer("a", ["10.0.0.1:1"], 100.0)
    catalog.upsert_peer("b", ["10.0.0.2:1"], 200.0)
    catalog.upsert_peer("c", ["10.0.0.3:1"], 300.0)
    assert catalog.record_peer_failure("a", 150.0) == 1
    assert catalog.record_peer_failure("a", 160.0) == 2
    assert catalog.record_peer_failure("unknown", 160.0) == 0
    assert catalog.peers() == [  # the old shape is unchanged
        ("a", ["10.0.0.1:1"], 100.0),
        ("b", ["10.0.0.2:1"], 200.0),
        ("c", ["10.0.0.3:1"], 300.0),
    ]
    a = catalog.peer_records()[0]
    assert (a.failures, a.last_failure) == (2, 160.0)

    # Seen again: failures reset.
    catalog.upsert_peer("a", ["10.0.0.1:1"], 400.0)
    assert catalog.peer_records()[0].failures == 0
    catalog.record_peer_failure("b", 500.0)

    assert catalog.prune_peers(seen_before=350.0, min_failures=1) == 1  # b only
    assert [p[0] for p in catalog.peers()] == ["a", "c"]
    assert catalog.prune_peers(seen_before=350.0) == 1  # c
    assert catalog.forget_peer("a") is True
    assert catalog.forget_peer("a") is False
    assert catalog.peers() == []


def test_max_peers_keeps_the_most_recently_seen(db_path: Path) -> None:
    with Catalog(db_path, max_peers=10) as cat:
        for i in range(500):  # 500 throwaway identities
            cat.upsert_peer(f"peer-{i:03d}", ["10.0.0.1:1"], float(i))
        assert [p[0] for p in cat.peers()] == [f"peer-{i:03d}" for i in range(490, 500)]
        # A peer seen again moves up; the least recently seen goes.
        cat.upsert_peer("peer-490", ["10.0.0.1:1"], 1000.0)
        cat.upsert_peer("newcomer", [], 600.0)
        assert len(cat.peers()) == 10
        assert "peer-491" not in {p[0] for p in cat.peers()}
        assert "peer-490" in {p[0] for p in cat.peers()}
    with Catalog(db_path, max_peers=3) as smaller:  # a lower cap applies at open
        assert [p[0] for p in smaller.peers()] == ["newcomer", "peer-490", "peer-499"]


def test_peer_addresses_are_bounded(catalog: Catalog) -> None:
    many = [f"10.0.{i // 256}.{i % 256}:7000" for i in range(100)]
    catalog.upsert_peer("p", ["x" * 301, *many], 1.0)
    (_, kept, _) = catalog.peers()[0]
    assert kept == many[: catalog_module.MAX_PEER_ADDRESSES]


def test_cap_errors_never_show_the_cap(catalog: Catalog) -> None:
    key = encode_id(sha256(b"secret key"))
    for bad in [f"shoal-r:{cid(1)}:{key}", f"shoal:r:{key[:-1]}!:{key}", f"x:{key}"]:
        with pytest.raises(InvalidCapability) as info:
            cid_of_cap(bad)
        assert key[:8] not in str(info.value)
        assert info.value.__cause__ is None
