"""Tests for shoal.store.blocks.BlockStore."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.errors import IntegrityError, NotFound, StorageError
from shoal.ids import encode_id, sha256
from shoal.store import BlockStore


def block(seed: int, size: int = 1000) -> tuple[bytes, bytes]:
    """A deterministic block of ``size`` bytes and its ID."""
    data = (seed.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return sha256(data), data


def tmp_files(store: BlockStore) -> list[str]:
    return os.listdir(store.root / "tmp")


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore(tmp_path / "blocks")


def test_put_get_round_trip(store: BlockStore) -> None:
    block_id, data = block(1, 1 << 20)
    assert store.put(block_id, data) is True
    assert store.get(block_id) == data
    assert store.has(block_id)


def test_layout_uses_two_fanout_levels(store: BlockStore) -> None:
    block_id, data = block(2)
    store.put(block_id, data)
    text = encode_id(block_id)
    path = store.path_for(block_id)
    assert path == store.root / text[:2] / text[2:4] / text
    assert path.read_bytes() == data


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_put_accepts_buffers(store: BlockStore, wrap: type) -> None:
    block_id, data = block(3)
    assert store.put(block_id, wrap(data)) is True
    assert store.get(block_id) == data


def test_put_accepts_non_byte_memoryview(store: BlockStore) -> None:
    block_id, data = block(4, 1024)
    view = memoryview(data).cast("I")
    assert store.put(block_id, view) is True
    assert store.get(block_id) == data


def test_empty_block(store: BlockStore) -> None:
    block_id = sha256(b"")
    assert store.put(block_id, b"") is True
    assert store.get(block_id) == b""


def test_put_is_idempotent_and_does_not_rewrite(store: BlockStore) -> None:
    block_id, data = block(5)
    assert store.put(block_id, data) is True
    path = store.path_for(block_id)
    inode = path.stat().st_ino
    assert store.put(block_id, data) is False
    assert path.stat().st_ino == inode
    assert tmp_files(store) == []


def test_verification_failure_writes_nothing(store: BlockStore) -> None:
    block_id, data = block(6)
    with pytest.raises(IntegrityError):
        store.put(block_id, data + b"x")
    assert not store.has(block_id)
    assert not store.path_for(block_id).parent.exists()
    assert tmp_files(store) == []


def test_verify_false_trusts_the_caller(store: BlockStore) -> None:
    block_id, data = block(7)
    assert store.put(block_id, data, verify=False) is True
    assert store.get(block_id) == data


def test_missing_block_is_not_found(store: BlockStore) -> None:
    block_id, _ = block(8)
    with pytest.raises(NotFound):
        store.get(block_id)
    assert not store.has(block_id)
    assert store.delete(block_id) is False


def test_bad_id_length_is_a_caller_bug(store: BlockStore) -> None:
    with pytest.raises(ValueError):
        store.path_for(b"short")


def test_corrupt_file_is_detected_and_moved_aside(store: BlockStore) -> None:
    block_id, data = block(9)
    store.put(block_id, data)
    path = store.path_for(block_id)
    damaged = bytearray(data)
    damaged[10] ^= 1
    path.write_bytes(bytes(damaged))

    with pytest.raises(IntegrityError, match="corrupt"):
        store.get(block_id)

    assert not path.exists()
    assert not store.has(block_id)
    moved = list((store.root / "corrupt").iterdir())
    assert len(moved) == 1
    assert moved[0].name.startswith(encode_id(block_id))
    assert moved[0].read_bytes() == bytes(damaged)
    # A good copy can be stored again, and corrupt/ is not listed as blocks.
    assert store.put(block_id, data) is True
    assert store.get(block_id) == data
    assert list(store.ids()) == [block_id]


def test_truncated_file_is_corrupt(store: BlockStore) -> None:
    block_id, data = block(10)
    store.put(block_id, data)
    store.path_for(block_id).write_bytes(data[:-1])
    with pytest.raises(IntegrityError):
        store.get(block_id)
    with pytest.raises(NotFound):
        store.get(block_id)


def test_delete(store: BlockStore) -> None:
    block_id, data = block(11)
    store.put(block_id, data)
    assert store.delete(block_id) is True
    assert not store.has(block_id)
    assert store.delete(block_id) is False
    # The fan-out dir is still cached; a new put must still work.
    assert store.put(block_id, data) is True


def test_ids_and_usage_skip_junk(store: BlockStore) -> None:
    blocks = [block(i, 100 + i) for i in range(20, 26)]
    for block_id, data in blocks:
        store.put(block_id, data)
    root = store.root
    # Junk the walk must skip: temp and corrupt files, unparsable names, misplaced blocks.
    (root / "tmp" / "leftover.tmp").write_bytes(b"x" * 50)
    other_id, _ = block(99)
    (root / "corrupt" / encode_id(other_id)).write_bytes(b"bad")
    first = store.path_for(blocks[0][0]).parent
    (first / "not-a-block").write_bytes(b"junk")
    (first / encode_id(other_id)).write_bytes(b"misplaced")
    (root / "README").write_text("hello")
    (root / "zz").mkdir()

    assert set(store.ids()) == {block_id for block_id, _ in blocks}
    assert store.usage() == (len(blocks), sum(len(data) for _, data in blocks))


def test_empty_store_usage(store: BlockStore) -> None:
    assert list(store.ids()) == []
    assert store.usage() == (0, 0)


def test_no_temp_files_left_after_puts(store: BlockStore) -> None:
    for i in range(30):
        store.put(*block(100 + i))
    assert tmp_files(store) == []


def test_stale_temp_files_removed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    first = BlockStore(root)
    block_id, data = block(12)
    first.put(block_id, data)
    (root / "tmp" / "crashed-1.tmp").write_bytes(b"half a block")
    (root / "tmp" / "crashed-2.tmp").write_bytes(b"")

    reopened = BlockStore(root)
    assert tmp_files(reopened) == []
    assert reopened.get(block_id) == data


def test_enospc_during_write_leaves_nothing(
    store: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    block_id, data = block(13, 1 << 20)
    real_write = os.write
    calls = 0

    def full_disk(fd: int, buf: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # a short write lands part of the block first
            return real_write(fd, memoryview(buf)[: len(buf) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", full_disk)
        with pytest.raises(StorageError, match="disk full") as info:
            store.put(block_id, data)

    message = str(info.value)
    assert encode_id(block_id) in message
    assert "free space and retry" in message
    assert calls == 2
    assert isinstance(info.value.__cause__, OSError)
    assert tmp_files(store) == []
    assert not store.has(block_id)
    # The disk has room again: the same put now succeeds.
    assert store.put(block_id, data) is True
    assert store.get(block_id) == data


def test_fsync_failure_leaves_nothing(store: BlockStore, monkeypatch: pytest.MonkeyPatch) -> None:
    block_id, data = block(14)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", failing_fsync)
        with pytest.raises(StorageError, match=encode_id(block_id)):
            store.put(block_id, data)
    assert tmp_files(store) == []
    assert not store.has(block_id)


def test_rename_failure_leaves_nothing(store: BlockStore, monkeypatch: pytest.MonkeyPatch) -> None:
    block_id, data = block(15)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing_replace)
        with pytest.raises(StorageError, match="disk full"):
            store.put(block_id, data)
    assert tmp_files(store) == []
    assert not store.has(block_id)


def test_fanout_dir_removed_behind_the_cache(store: BlockStore) -> None:
    block_id, data = block(16)
    store.put(block_id, data)
    leaf = store.path_for(block_id).parent
    store.delete(block_id)
    leaf.rmdir()
    assert store.put(block_id, data) is True
    assert store.get(block_id) == data


def test_concurrent_puts_of_the_same_block(store: BlockStore) -> None:
    block_id, data = block(17, 256 * 1024)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: store.put(block_id, data), range(32)))
    assert results.count(True) == 1
    assert store.get(block_id) == data
    assert tmp_files(store) == []


def test_concurrent_puts_and_gets_of_different_blocks(store: BlockStore) -> None:
    blocks = [block(1000 + i, 64 * 1024) for i in range(64)]

    def put_then_get(item: tuple[bytes, bytes]) -> bool:
        block_id, data = item
        new = store.put(block_id, data)
        assert store.get(block_id) == data
        return new

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(put_then_get, blocks))
    assert all(results)
    assert set(store.ids()) == {block_id for block_id, _ in blocks}
    assert store.usage() == (64, 64 * 64 * 1024)
    assert tmp_files(store) == []
