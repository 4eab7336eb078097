"""A holder never acknowledges a block it cannot verify it has: puts over existing files,
``has(verify=True)`` and its mtime stamp, and corrupt/ (logged, listed, bounded)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.errors import CorruptBlock, IntegrityError
from shoal.ids import encode_id, sha256
from shoal.store import BlockStore


def block(seed: int, size: int = 1000) -> tuple[bytes, bytes]:
    data = (seed.to_bytes(4, "big") * (size // 4 + 1))[:size]
    return sha256(data), data


def flip(path: Path, at: int = 10) -> None:
    """Damage a block file in place, keeping its size (as bit rot or a stray write would)."""
    raw = bytearray(path.read_bytes())
    raw[at] ^= 1
    path.write_bytes(bytes(raw))


def corrupt_files(store: BlockStore) -> list[Path]:
    return sorted((store.root / "corrupt").iterdir())


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore(tmp_path / "blocks", reserve_bytes=0)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, store: BlockStore) -> list[bytes]:
    """Block IDs whose file the store read (a spy on its one read helper)."""
    seen: list[bytes] = []
    real: Callable[[BlockStore, bytes, Path], bytes] = BlockStore._read

    def spy(self: BlockStore, block_id: bytes, path: Path) -> bytes:
        seen.append(block_id)
        return real(self, block_id, path)

    monkeypatch.setattr(BlockStore, "_read", spy)
    return seen


# -- a put over an existing file ------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(flip, id="same-size"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-7]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="emptied"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes() + b"x"), id="grown"),
    ],
)
def test_put_over_a_corrupt_file_replaces_it(
    store: BlockStore, damage: Callable[[Path], object], caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a put of a block that existed as a corrupt file answered "already stored".
    block_id, data = block(1)
    assert store.put(block_id, data) is True
    path = store.path_for(block_id)
    damage(path)
    caplog.set_level(logging.WARNING, logger="shoal.store")

    assert store.put(block_id, data) is True  # written again: the old copy was not intact

    assert path.read_bytes() == data
    assert store.get(block_id) == data
    moved = corrupt_files(store)
    assert len(moved) == 1
    assert moved[0].name.startswith(encode_id(block_id))
    assert moved[0].read_bytes() != data
    assert any(
        encode_id(block_id) in r.getMessage() and str(moved[0]) in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )
    assert os.listdir(store.root / "tmp") == []
    # The running usage follows what the store did; a size changed behind its back is
    # counted again at the next open.
    assert store.usage()[0] == 1
    if damage is flip:
        assert store.usage() == (1, len(data))
    assert BlockStore(store.root, reserve_bytes=0).usage() == (1, len(data))


def test_put_of_an_intact_block_compares_and_keeps_it(store: BlockStore) -> None:
    block_id, data = block(2)
    store.put(block_id, data)
    inode = store.path_for(block_id).stat().st_ino
    assert store.put(block_id, data) is False
    assert store.put(block_id, bytearray(data), verify=False) is False
    assert store.path_for(block_id).stat().st_ino == inode
    assert corrupt_files(store) == []
    assert store.usage() == (1, len(data))


def test_unverified_put_of_wrong_bytes_never_displaces_an_intact_block(store: BlockStore) -> None:
    # Only a file's own bytes failing its own hash may move it: wrong bytes from a caller that
    # skipped verification leave the intact file alone.
    block_id, data = block(3)
    store.put(block_id, data)
    assert store.put(block_id, data[:-1] + b"?", verify=False) is False
    assert store.get(block_id) == data
    assert corrupt_files(store) == []


def test_verified_put_of_wrong_bytes_is_corrupt_block(store: BlockStore) -> None:
    block_id, data = block(4)
    with pytest.raises(CorruptBlock, match="does not hash to its ID"):
        store.put(block_id, data + b"x")
    assert not store.has(block_id)
    assert store.usage() == (0, 0)


def test_concurrent_puts_over_a_corrupt_file(store: BlockStore) -> None:
    block_id, data = block(5, 200_000)
    store.put(block_id, data)
    flip(store.path_for(block_id))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: store.put(block_id, data), range(16)))
    assert results.count(True) == 1
    assert len(corrupt_files(store)) == 1
    assert store.get(block_id) == data
    assert store.usage() == (1, len(data))


# -- has(verify=True) -----------------------------------------------------------------------


def test_has_verify_trusts_a_stamped_file_after_one_stat(
    store: BlockStore, reads: list[bytes], tmp_path: Path
) -> None:
    block_id, data = block(6)
    store.put(block_id, data)
    assert store.has(block_id, verify=True)
    assert reads == []
    # The stamp is on disk: a new store (a restarted node) trusts it too.
    reopened = BlockStore(tmp_path / "blocks", reserve_bytes=0)
    assert reopened.has(block_id, verify=True)
    assert reads == []


def test_has_verify_sees_a_change_made_right_after_the_write(
    store: BlockStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Written and damaged within the same clock tick: mtime/ctime alone could not tell, the
    # stamp can.
    block_id, data = block(7)
    store.put(block_id, data)
    flip(store.path_for(block_id))
    caplog.set_level(logging.WARNING, logger="shoal.store")
    assert store.has(block_id) is True  # without verify: a stat, nothing checked
    assert store.has(block_id, verify=True) is False
    assert not store.path_for(block_id).exists()
    assert store.quarantined() == [block_id]
    assert [r for r in caplog.records if encode_id(block_id) in r.getMessage()]
    assert store.usage() == (0, 0)
    # And a put stores it again.
    assert store.put(block_id, data) is True
    assert store.has(block_id, verify=True)


def test_has_verify_sees_another_blocks_file_copied_with_its_times(store: BlockStore) -> None:
    a_id, a = block(8)
    b_id, b = block(9)
    store.put(a_id, a)
    store.put(b_id, b)
    shutil.copy2(store.path_for(a_id), store.path_for(b_id))  # keeps a's mtime
    assert store.has(a_id, verify=True)
    assert store.has(b_id, verify=True) is False
    assert store.quarantined() == [b_id]


def test_has_verify_hashes_an_unstamped_file_once_then_stamps_it(
    store: BlockStore, reads: list[bytes]
) -> None:
    block_id, data = block(10)
    store.put(block_id, data)
    path = store.path_for(block_id)
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # as if old
    assert store.has(block_id, verify=True)
    assert reads == [block_id]
    assert store.has(block_id, verify=True)
    assert reads == [block_id]  # stamped by the first check
    assert path.read_bytes() == data


def test_has_verify_of_a_missing_block(store: BlockStore) -> None:
    block_id, _ = block(11)
    assert store.has(block_id, verify=True) is False
    assert store.quarantined() == []


# -- quarantine ------------------------------------------------------------------------------


def test_get_of_a_corrupt_block_moves_it_aside_and_names_no_path(
    store: BlockStore, caplog: pytest.LogCaptureFixture
) -> None:
    block_id, data = block(12)
    store.put(block_id, data)
    flip(store.path_for(block_id))
    caplog.set_level(logging.WARNING, logger="shoal.store")
    with pytest.raises(CorruptBlock) as info:
        store.get(block_id)
    assert isinstance(info.value, IntegrityError)
    assert "/" not in str(info.value)  # peers receive this message
    (moved,) = corrupt_files(store)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(encode_id(block_id) in w and str(moved) in w for w in warnings)
    assert store.usage() == (0, 0)


def test_quarantine_checks_the_hash_itself(store: BlockStore) -> None:
    # A caller that thinks a block is bad (or raced with a put that replaced the bad file)
    # cannot make the store move an intact file.
    block_id, data = block(13)
    store.put(block_id, data)
    assert store.quarantine(block_id) is None
    assert store.get(block_id) == data
    assert corrupt_files(store) == []
    missing, _ = block(14)
    assert store.quarantine(missing) is None

    flip(store.path_for(block_id))
    moved = store.quarantine(block_id)
    assert moved is not None
    assert moved.parent == store.root / "corrupt"
    assert not store.has(block_id)
    assert store.quarantined() == [block_id]


def test_corrupt_dir_is_bounded_oldest_dropped(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks", reserve_bytes=0, corrupt_max_files=3)
    ids = []
    for seed in range(20, 26):
        block_id, data = block(seed)
        store.put(block_id, data)
        flip(store.path_for(block_id))
        assert store.quarantine(block_id) is not None
        ids.append(block_id)
    assert len(corrupt_files(store)) == 3
    assert store.quarantined() == ids[::-1][:3]  # newest first
    assert store.usage() == (0, 0)


def test_corrupt_dir_is_bounded_in_bytes(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks", reserve_bytes=0, corrupt_max_bytes=2500)
    for seed in range(30, 35):
        block_id, data = block(seed, 1000)
        store.put(block_id, data)
        flip(store.path_for(block_id))
        store.quarantine(block_id)
    assert sum(p.stat().st_size for p in corrupt_files(store)) <= 2500
    assert len(corrupt_files(store)) == 2


def test_quarantined_skips_foreign_files_and_lists_old_names(store: BlockStore) -> None:
    old_id, _ = block(40)
    corrupt = store.root / "corrupt"
    (corrupt / f"{encode_id(old_id)}.1a2b3c4d").write_bytes(b"from an older version")
    (corrupt / "notes.txt").write_text("not a block")
    (corrupt / ("z" * 52)).write_bytes(b"not an ID")
    assert store.quarantined() == [old_id]
