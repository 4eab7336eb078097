"""Puts and gets that fail must fail cleanly: clear errors, no partial state, node stays up."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal import ConfigError, InvalidCapability, Node, NotFound, QuorumNotMet, StorageError
from tests.conftest import SmallDisk
from tests.integration.conftest import FAST, Cluster


def break_disk(cluster: Cluster, name: str) -> Path:
    """Break a node's disk for real: its temp directory becomes a plain file."""
    tmp = cluster.root / name / "blocks" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"not a directory")
    return tmp


def repair_disk(tmp: Path) -> None:
    tmp.unlink()
    tmp.mkdir()


async def test_put_with_a_failing_holder_keeps_the_copies_it_could_place(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address], replicas=2)
    await b.wait_for_peers(1, timeout=15)
    tmp = break_disk(cluster, "a")
    data = random_bytes(300_000)
    result = await b.store_with_result("half.bin", data)
    assert (result.replicas, result.replicas_wanted) == (1, 2)
    assert [f.name for f in await b.list_files()] == ["half.bin"]
    repair_disk(tmp)
    async with a.get(result.cap) as reader:  # a has no copy: the bytes come from b
        assert await reader.read() == data


async def test_put_that_can_place_a_block_nowhere_fails_and_leaves_no_name(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address], replicas=2)
    await b.wait_for_peers(1, timeout=15)
    broken = [break_disk(cluster, "a"), break_disk(cluster, "b")]
    with pytest.raises(QuorumNotMet) as info:
        await b.store("doomed.bin", random_bytes(300_000))
    assert "could not be stored on any node" in str(info.value)
    assert info.value.placed
    assert await b.list_files() == []
    # Both nodes are still up and serving once the disks are repaired.
    for tmp in broken:
        repair_disk(tmp)
    data = random_bytes(100_000)
    cap = await b.store("fine.bin", data)
    async with a.get(cap) as reader:
        assert await reader.read() == data


async def test_cancelled_put_leaves_no_name_and_node_keeps_working(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address])
    await b.wait_for_peers(1, timeout=15)
    started = asyncio.Event()

    async def slow_source():  # type: ignore[no-untyped-def]
        for _ in range(64):
            yield random_bytes(256 * 1024)
            started.set()
            await asyncio.sleep(0)
        await asyncio.Event().wait()  # never finishes: the put must be cancelled

    task = asyncio.ensure_future(b.store("cancelled.bin", slow_source()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await b.list_files() == []
    data = random_bytes(2_000_000)
    cap = await b.store("after.bin", data)
    async with a.get(cap) as reader:
        assert await reader.read() == data


async def test_get_fails_over_to_a_good_holder_when_a_block_is_corrupt(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address])
    await b.wait_for_peers(1, timeout=15)
    data = random_bytes(3 * 1024 * 1024)
    cap = await b.store("f.bin", data)
    # Corrupt every block file on b: b must notice and fetch good copies from a.
    corrupted = 0
    for path in (cluster.root / "b" / "blocks").glob("??/??/*"):
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        corrupted += 1
    assert corrupted >= 4
    async with b.get(cap) as reader:
        assert await reader.read() == data
    # The corrupt files were moved aside, never to be served again.
    assert len(list((cluster.root / "b" / "blocks" / "corrupt").iterdir())) >= 1


async def test_get_of_unreachable_blocks_fails_and_writes_no_file(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    data = random_bytes(2 * 1024 * 1024)
    cap = await a.store("f.bin", data)
    await a.drop_local_copy(cap)
    out = cluster.root / "out.bin"
    with pytest.raises(NotFound):
        await a.get_to_file(cap, out)
    assert not out.exists()
    assert [p.name for p in cluster.root.iterdir() if p.name.startswith(".out")] == []


async def test_put_with_fewer_nodes_than_replicas_says_so(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    alone = await cluster.add("alone")
    result = await alone.store_with_result("f.bin", random_bytes(1000))
    assert (result.replicas, result.replicas_wanted) == (1, 3)
    assert result.under_replicated


async def test_get_to_file_on_a_full_disk_is_a_storage_error_and_leaves_nothing(
    cluster: Cluster, random_bytes: Callable[[int], bytes], small_disk: SmallDisk
) -> None:
    a = await cluster.add("a")
    cap = await a.store("f.bin", random_bytes(3 * 1024 * 1024))
    disk = small_disk(1024 * 1024)  # a real file system with room for a third of the file
    with pytest.raises(StorageError) as info:
        await a.get_to_file(cap, disk / "out.bin")
    assert "disk full" in str(info.value) or "No space left" in str(info.value)
    assert list(disk.iterdir()) == []
    # The node is fine: the same get to a disk with room works.
    assert await a.get_to_file(cap, cluster.root / "ok.bin") == 3 * 1024 * 1024


async def test_a_cap_with_a_wrong_key_touches_nothing_and_the_right_cap_still_reads(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    first = await cluster.add("n0")
    nodes = [first] + [await cluster.add(f"n{i}", peers=[first.listen_address]) for i in (1, 2, 3)]
    for node in nodes:
        await node.wait_for_peers(3, timeout=15)
    data = random_bytes(2 * 1024 * 1024 + 5)
    cap = await first.store("f.bin", data)
    cid, key = cap.rsplit(":", 1)
    wrong = f"{cid}:{'a' if key[0] != 'a' else 'b'}{key[1:]}"  # one character differs
    for node in nodes:  # every node, holders of the root and not
        with pytest.raises(InvalidCapability, match="key does not open this file"):
            async with node.get(wrong) as reader:
                await reader.read()
    for node in nodes:
        assert list((cluster.root / node_dir(cluster, node) / "blocks" / "corrupt").iterdir()) == []
        async with node.get(cap) as reader:
            assert await reader.read() == data


def node_dir(cluster: Cluster, node: Node) -> str:
    return Path(node.data_dir).name


async def test_a_second_node_on_the_same_data_dir_is_refused_and_the_first_keeps_working(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    data = random_bytes(100_000)
    cap = await a.store("f.bin", data)
    with pytest.raises(ConfigError, match=r"in use by another running node \(pid \d+\)"):
        async with Node.start(a.data_dir, listen="127.0.0.1:0"):
            pass
    async with a.get(cap) as reader:
        assert await reader.read() == data
    cap2 = await a.store("g.bin", random_bytes(50_000))  # and it still stores
    async with a.get(cap2) as reader:
        assert len(await reader.read()) == 50_000


@pytest.mark.parametrize("name", ["", "two\nlines", "nul\x00", "x" * 2000])
async def test_the_python_api_refuses_bad_names_before_any_work(
    cluster: Cluster, name: str
) -> None:
    a = await cluster.add("a")
    with pytest.raises(ConfigError):
        await a.store(name, b"data")
    with pytest.raises(ConfigError):
        await a.store("ok.txt", b"data", media_type="x" * 5000)
    assert await a.list_files() == []
    assert (await a.status()).blocks == 0


async def test_a_peer_lost_during_a_put_leaves_a_smaller_but_successful_put(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address])
    c = await cluster.add("c", peers=[a.listen_address])
    for node in (a, b, c):
        await node.wait_for_peers(2, timeout=15)
    data = random_bytes(24 * 1024 * 1024)
    done = 0
    halfway = asyncio.Event()

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done >= len(data) // 2:
            halfway.set()

    put = asyncio.create_task(a.store_with_result("big.bin", data, progress=progress))
    async with asyncio.timeout(60):
        await halfway.wait()
    await cluster.stop(c)  # a holder goes away in the middle of the put
    result = await put
    assert (result.replicas, result.replicas_wanted) == (2, 3)
    [entry] = await a._rt.io(a._rt.catalog.under_replicated)
    assert (entry.name, entry.replicas, entry.replicas_wanted) == ("big.bin", 2, 3)
    async with b.get(result.cap) as reader:
        assert await reader.read() == data


async def test_a_full_holder_refuses_and_its_blocks_go_to_the_next_closest(
    cluster: Cluster, random_bytes: Callable[[int], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal")
    tiny = dataclasses.replace(FAST, max_storage=256 * 1024, reserved_space=0)
    full = await cluster.add("full", options=tiny)
    others = [await cluster.add(f"n{i}", peers=[full.listen_address], replicas=2) for i in range(3)]
    for node in (full, *others):
        await node.wait_for_peers(3, timeout=15)
    data = random_bytes(12 * 1024 * 1024)  # 13 blocks: the full node is among the closest of some
    result = await others[0].store_with_result("f.bin", data)
    assert (result.replicas, result.replicas_wanted) == (2, 2)  # every block found two holders
    assert (await full.status()).bytes <= 256 * 1024
    refusals = [r.getMessage() for r in caplog.records if "storage limit" in r.getMessage()]
    assert refusals, "the full node never refused a block"
    assert not any(str(cluster.root) in text for text in refusals)  # peers learn no local path
    async with others[2].get(result.cap) as reader:
        assert await reader.read() == data
