"""The node's get and block walks over real stores: content-only caps, hostile trees, one hash.

Hostile trees are written straight into a node's block store (every block intact: what a
stranger can craft and hand out as a cap); the node must refuse them at once, touch nothing,
and stay bounded in work and memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal import IntegrityError, Node
from shoal.content import MAX_CHILDREN, MAX_FILE_SIZE, ReadCap
from shoal.ids import encode_id
from tests.integration.conftest import Cluster
from tests.unit.content.forge import Ref, cap_of, chunk, forge

MiB = 1 << 20


async def write_blocks(node: Node, store: dict[bytes, bytes]) -> None:
    for block_id, data in store.items():
        await asyncio.to_thread(node._rt.blocks.put, block_id, data)


def corrupt_dir(node: Node) -> list[Path]:
    return list((Path(node.data_dir) / "blocks" / "corrupt").iterdir())


async def test_the_same_bytes_get_the_same_cap_whatever_the_name_and_time(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    node = await cluster.add("a")
    data = random_bytes(300_000)
    first = await node.store("holiday.jpg", data)
    second = await node.store("copy of holiday.txt", data, media_type="text/plain")
    assert first == second
    listing = {(f.name, f.cap, f.media_type) for f in await node.list_files()}
    assert listing == {
        ("holiday.jpg", first, "image/jpeg"),
        ("copy of holiday.txt", first, "text/plain"),
    }
    # Names and media types come from the catalog, by name; by cap there is none.
    async with node.get("copy of holiday.txt") as reader:
        assert (reader.name, reader.media_type) == ("copy of holiday.txt", "text/plain")
        assert await reader.read() == data
    async with node.get(first) as reader:
        assert (reader.name, reader.media_type, reader.cid) == (
            None,
            "application/octet-stream",
            encode_id(ReadCap.parse(first).cid),
        )
        assert await reader.read() == data
    # Another owner (another convergence secret) gets another cap for the same bytes.
    other = await cluster.add("b")
    assert await other.store("holiday.jpg", data) != first


def tower(width: int) -> tuple[dict[bytes, bytes], Ref]:
    """The issue's tree: 9 manifests, each listing the one below ``width`` times, over one
    0-byte chunk: a '0-byte file' of width**9 leaves in 10 blocks."""
    store: dict[bytes, bytes] = {}
    ref = chunk(store, b"")
    for depth in range(9):
        ref = forge(store, depth, 1, width, [ref] * width, 0 if depth == 8 else None)
    return store, ref


async def test_a_get_of_an_endless_tree_fails_at_once_and_touches_nothing(
    cluster: Cluster,
) -> None:
    node = await cluster.add("a")
    store, root = tower(MAX_CHILDREN)
    await write_blocks(node, store)
    cap = str(cap_of(root))
    with pytest.raises(IntegrityError, match="lists 32768 children where the 0 bytes"):
        async with node.get(cap) as reader:
            await reader.read()
    with pytest.raises(IntegrityError, match="larger than"):
        await node.drop_local_copy(cap)
    # Nothing was moved aside or deleted: the blocks are intact, only their tree lies.
    assert corrupt_dir(node) == []
    assert all(node._rt.blocks.has(block_id) for block_id in store)
    # And the node still works.
    good = await node.store("after.bin", b"fine")
    async with node.get(good) as reader:
        assert await reader.read() == b"fine"


async def test_a_wrong_key_below_the_root_is_final_and_quarantines_nothing(
    cluster: Cluster,
) -> None:
    node = await cluster.add("a")
    store: dict[bytes, bytes] = {}
    c0, c1, c2 = (chunk(store, p) for p in (b"abcd", b"efgh", b"ij"))
    m0 = forge(store, 0, 4, 2, [c0, c1])
    m1 = forge(store, 0, 4, 2, [c2])
    wrong_child_key = forge(store, 1, 4, 2, [m0, (m1[0], m1[1], m0[2])], 10)
    wrong_data_key = forge(
        store, 1, 4, 2, [forge(store, 0, 4, 2, [c0, (c1[0], c1[1], c0[2])]), m1], 10
    )
    await write_blocks(node, store)
    for root, message in [
        (wrong_child_key, "the key its parent gives does not open it"),
        (wrong_data_key, "its manifest's key does not open it"),
    ]:
        with pytest.raises(IntegrityError, match=message) as info:
            async with node.get(str(cap_of(root))) as reader:
                await reader.read()
        assert info.value.code == "integrity"  # not corrupt-block: no other holder is asked
    assert corrupt_dir(node) == []
    assert all(node._rt.blocks.has(block_id) for block_id in store)


def wide_tree() -> tuple[dict[bytes, bytes], Ref]:
    """A depth-1 root listing one 2.4 MB manifest (32,768 children) 32,768 times."""
    store: dict[bytes, bytes] = {}
    leaves = [(os.urandom(32), MiB + 16, os.urandom(32)) for _ in range(MAX_CHILDREN)]
    leaf = forge(store, 0, MiB, MAX_CHILDREN, leaves)
    root = forge(store, 1, MiB, MAX_CHILDREN, [leaf] * MAX_CHILDREN, MAX_FILE_SIZE)
    return store, root


async def test_dropping_a_local_copy_streams_in_bounded_memory(cluster: Cluster) -> None:
    node = await cluster.add("a")
    store, root = wide_tree()
    await write_blocks(node, store)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        deleted = await node.drop_local_copy(str(cap_of(root)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert deleted == 2  # the root and its one distinct child (the data blocks never existed)
    assert not any(node._rt.blocks.has(block_id) for block_id in store)
    assert peak < 64 * MiB, peak


async def test_a_local_get_hashes_each_block_once(
    cluster: Cluster, random_bytes: Callable[[int], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.node.runtime import RuntimeOptions

    options = RuntimeOptions(chunk_size=64 * 1024, manifest_fanout=4)
    node = await cluster.add("a", options=options)
    data = random_bytes(20 * 64 * 1024 + 5)  # 21 chunks, fanout 4: 6 + 2 + 1 manifests
    cap = await node.store("f.bin", data)
    hashed: list[int] = []
    real_sha256 = hashlib.sha256

    def counting_sha256(*args: Any, **kwargs: Any) -> Any:
        if args:
            hashed.append(memoryview(args[0]).nbytes)
        return real_sha256(*args, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting_sha256)
    async with node.get(cap) as reader:
        assert await reader.read() == data
    monkeypatch.undo()
    assert len(hashed) == 21 + 9
    assert sorted(hashed)[-20:] == [64 * 1024 + 16] * 20
