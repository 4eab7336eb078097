"""Storage limits of BlockStore on real small file systems (tmpfs): max_bytes, the free-disk
reserve, and a disk that really fills up. Each flood checks that the store refuses cleanly,
leaves no temporary or partial file, keeps serving reads, accepts again once space is freed,
and that its running usage stays exact."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.errors import StorageError, StorageFull
from shoal.ids import sha256
from shoal.store import BlockStore
from shoal.store.space import RESERVE_FRACTION, RESERVE_MAX
from tests.conftest import SmallDisk

KIB = 1024
MIB = 1024 * 1024


def block(seed: int, size: int) -> tuple[bytes, bytes]:
    data = (seed.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return sha256(data), data


def on_disk(store: BlockStore) -> tuple[int, int]:
    """``(count, bytes)`` of the block files really in the tree, by walking it."""
    files = [p for p in store.root.glob("??/??/*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def flood(store: BlockStore, blocks: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[str]]:
    """Put ``blocks`` from 8 threads, as a node's I/O pool does; return what was stored and
    the messages of the refusals. Any other outcome fails the test."""

    def put(item: tuple[bytes, bytes]) -> bytes | str:
        block_id, data = item
        try:
            assert store.put(block_id, data) is True
        except StorageFull as exc:
            return str(exc)
        return block_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(put, blocks))
    stored = [r for r in results if isinstance(r, bytes)]
    refused = [r for r in results if isinstance(r, str)]
    return stored, refused


def assert_clean_and_serving(store: BlockStore, stored: list[bytes]) -> None:
    """No temp files, every stored block reads back intact, usage matches the disk."""
    assert os.listdir(store.root / "tmp") == []
    assert set(store.ids()) == set(stored)
    for block_id in stored:
        assert sha256(store.get(block_id)) == block_id
    assert store.usage() == on_disk(store)


def test_max_bytes_refuses_cleanly_and_accepts_again(small_disk: SmallDisk) -> None:
    disk = small_disk(16 * MIB)
    store = BlockStore(disk / "blocks", max_bytes=2 * MIB, reserve_bytes=0)
    size = 100 * KIB
    blocks = [block(i, size) for i in range(60)]  # 6 MiB offered, 2 MiB allowed

    stored, refused = flood(store, blocks)

    count, used = store.usage()
    assert used <= 2 * MIB  # concurrent puts never overshoot: room is reserved up front
    assert used > 2 * MIB - 8 * size  # nor refuse early: at most the 8 in flight were counted
    assert count == len(stored)
    assert refused
    for message in refused:
        assert "storage limit is reached" in message
        assert "max_storage" in message
        assert "/" not in message  # no local path: peers receive this
    assert_clean_and_serving(store, stored)
    refused_ids = [b for b, _ in blocks if b not in set(stored)]
    assert not any(store.has(b) for b in refused_ids)

    # Freeing space makes room again, and usage follows exactly.
    for block_id in stored[:3]:
        assert store.delete(block_id) is True
    again = [b for b in blocks if b[0] in set(refused_ids[:3])]
    for block_id, data in again:
        assert store.put(block_id, data) is True
    with pytest.raises(StorageFull):
        store.put(*blocks[[b for b, _ in blocks].index(refused_ids[3])])
    assert_clean_and_serving(store, stored[3:] + refused_ids[:3])
    # An intact block that is already stored is never refused, even at the limit.
    assert store.put(stored[5], dict(blocks)[stored[5]]) is False


def test_reserve_is_never_eaten_into(small_disk: SmallDisk) -> None:
    disk = small_disk(8 * MIB)
    reserve = 3 * MIB
    store = BlockStore(disk / "blocks", reserve_bytes=reserve)
    size = 64 * KIB
    blocks = [block(1000 + i, size) for i in range(120)]  # 7.5 MiB offered

    stored, refused = flood(store, blocks)

    free = store.free_bytes()
    assert free >= reserve
    assert free < reserve + 16 * size  # refused only near the reserve, not long before
    assert refused
    for message in refused:
        assert "nearly full" in message
        assert "reserved_space" in message
        assert "/" not in message
    assert_clean_and_serving(store, stored)

    for block_id in stored[:4]:
        store.delete(block_id)
    late = next(item for item in blocks if item[0] not in set(stored))
    assert store.put(*late) is True
    assert store.free_bytes() >= reserve
    assert_clean_and_serving(store, [*stored[4:], late[0]])


def test_a_disk_that_fills_for_real_is_storage_full_without_partial_files(
    small_disk: SmallDisk,
) -> None:
    disk = small_disk(1 * MIB)
    store = BlockStore(disk / "blocks", reserve_bytes=0)  # nothing stops it but the disk
    size = 100 * KIB
    blocks = [block(2000 + i, size) for i in range(30)]  # 3 MiB onto a 1 MiB disk

    stored, refused = flood(store, blocks)

    assert stored
    assert refused
    for message in refused:
        assert "disk full" in message
        assert "/" not in message
    assert_clean_and_serving(store, stored)
    assert store.usage() == (len(stored), len(stored) * size)

    for block_id in stored[:3]:
        store.delete(block_id)
    late = next(item for item in blocks if item[0] not in set(stored))
    assert store.put(*late) is True
    assert_clean_and_serving(store, [*stored[3:], late[0]])


def test_storage_full_is_a_storage_error(small_disk: SmallDisk) -> None:
    disk = small_disk(1 * MIB)
    store = BlockStore(disk / "blocks", max_bytes=10, reserve_bytes=0)
    block_id, data = block(1, 11)
    with pytest.raises(StorageError) as info:
        store.put(block_id, data)
    assert isinstance(info.value, StorageFull)
    assert info.value.code == "storage-full"
    assert store.usage() == (0, 0)
    small_id, small = block(2, 10)
    assert store.put(small_id, small) is True  # exactly at the limit is allowed
    assert store.usage() == (1, 10)


def test_default_reserve_is_five_percent_capped_at_one_gib(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    disk = small_disk(16 * MIB)
    small = BlockStore(disk / "blocks")
    st = os.statvfs(disk)
    assert small.reserve_bytes == int(st.f_blocks * st.f_frsize * RESERVE_FRACTION)
    assert small.max_bytes is None
    big = BlockStore(tmp_path / "blocks")
    st = os.statvfs(tmp_path)
    assert big.reserve_bytes == min(RESERVE_MAX, int(st.f_blocks * st.f_frsize * 0.05))
    assert BlockStore(tmp_path / "other", reserve_bytes=0).reserve_bytes == 0


def test_a_limit_is_logged_once_then_at_most_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    store = BlockStore(
        tmp_path / "blocks",
        max_bytes=1000,
        reserve_bytes=0,
        clock=lambda: now[0],
        limit_log_interval=300.0,
    )
    store.put(*block(1, 900))
    caplog.set_level(logging.WARNING, logger="shoal.store")

    def refusals_logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "refuses new blocks" in r.getMessage()]

    for seed in range(2, 12):
        with pytest.raises(StorageFull):
            store.put(*block(seed, 200))
        now[0] += 10.0
    assert len(refusals_logged()) == 1
    line = refusals_logged()[0]
    assert "storage limit is reached" in line
    assert str(tmp_path) not in line
    now[0] += 300.0
    with pytest.raises(StorageFull):
        store.put(*block(50, 200))
    assert len(refusals_logged()) == 2


def test_usage_is_exact_after_mixed_concurrent_work(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks", reserve_bytes=0)
    blocks = [block(3000 + i, 1000 + i) for i in range(80)]

    def work(i: int) -> None:
        block_id, data = blocks[i]
        store.put(block_id, data)
        store.put(block_id, data)  # already stored: no change
        if i % 3 == 0:
            store.delete(block_id)
        elif i % 5 == 1:
            path = store.path_for(block_id)
            path.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # damaged behind its back...
            assert store.has(block_id, verify=True) is False  # ...found and moved aside

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(len(blocks))))
    assert store.usage() == on_disk(store)
    assert BlockStore(tmp_path / "blocks", reserve_bytes=0).usage() == store.usage()
