"""Leases and GC across in-process nodes over real sockets, files and SQLite.

GC grace and pending leases are 0 seconds here, so a pass frees at once whatever no live lease
holds; background renewal and GC are pushed out of the way (each test runs passes itself).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from shoal import Client, Node
from shoal.api.http import serve_api
from shoal.content import ReadCap
from shoal.errors import InvalidCapability, QuorumNotMet, ShoalError, StorageFull
from shoal.ids import sha256
from shoal.node.get import walk_block_ids
from shoal.node.leases import transfer_leases
from shoal.node.runtime import NodeRuntime
from shoal.node.service import init_data_dir
from shoal.protocol import Lease, Leased, PutBlock, Release, Released
from shoal.store import BlockStore

from .conftest import FAST, Cluster

MiB = 1 << 20
# window=2: a put has placed all but the last two chunks it took (a failed put leaves blocks).
QUICK_GC = dataclasses.replace(
    FAST, gc_grace=0.0, pending_lease=0.0, lease_renew_first=3600.0, gc_interval=3600.0, window=2
)


def rt(node: Node) -> NodeRuntime:
    return node._rt


def local_blocks(node: Node) -> set[bytes]:
    return set(rt(node).blocks.ids())


async def three(cluster: Cluster) -> list[Node]:
    first = await cluster.add("n0", options=QUICK_GC, replicas=3)
    others = [
        await cluster.add(f"n{i}", options=QUICK_GC, peers=[first.listen_address], replicas=3)
        for i in (1, 2)
    ]
    nodes = [first, *others]
    for node in nodes:
        await node.wait_for_peers(2)
    return nodes


async def gc_until(node: Node, expected: set[bytes], timeout: float = 30.0) -> None:
    """Run GC passes on ``node`` until it holds exactly ``expected`` (or fail)."""
    async with asyncio.timeout(timeout):
        while True:
            await node.gc()
            if local_blocks(node) == expected:
                return
            assert local_blocks(node) >= expected, "GC deleted a block it had to keep"
            await asyncio.sleep(0.05)


async def file_blocks(node: Node, cap: str) -> set[bytes]:
    return {b async for b in walk_block_ids(rt(node), ReadCap.parse(cap).cid)}


async def test_rm_then_gc_frees_everywhere_but_a_pinned_copy_lives(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, n2 = await three(cluster)
    data = random_bytes(2 * MiB + 123)
    cap = await n0.store("a.bin", data)
    blocks = await file_blocks(n0, cap)
    assert all(blocks <= local_blocks(n) for n in (n0, n1, n2))
    for node in (n0, n1, n2):  # every block is leased: nothing goes
        assert (await node.gc()).blocks == 0
    pinned = await n1.pin(cap, "mine")
    assert pinned["blocks"] == len(blocks)
    assert pinned["leased"] >= 3 * len(blocks)  # on every holder

    await n0.remove("a.bin")
    for node in (n0, n1, n2):
        assert (await node.gc()).blocks == 0  # n1's leases keep every copy
    async with n2.get(cap) as reader:
        assert await reader.read() == data
    assert (await n2.status()).bytes_for_others > 2 * MiB  # held only for n0/n1 now

    await n1.remove("mine")
    for node in (n0, n1, n2):
        result = await node.gc()
        assert result.blocks == len(blocks)
        assert result.bytes > 2 * MiB
        assert not blocks & local_blocks(node)


async def test_a_name_still_in_the_catalog_keeps_its_leases(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, n2 = await three(cluster)
    data = random_bytes(MiB + 5)
    cap = await n0.store("one", data)
    assert await n0.store("two", data) == cap  # same bytes, same cap
    await n0.remove("one")
    for node in (n0, n1, n2):
        assert (await node.gc()).blocks == 0
    async with n1.get(cap) as reader:
        assert await reader.read() == data


async def test_a_failed_put_is_freed_and_a_finished_one_kept(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, n2 = await three(cluster)
    good = random_bytes(MiB + 1)
    cap = await n0.store("good", good)
    before = {n.node_id: local_blocks(n) for n in (n0, n1, n2)}

    async def broken() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield random_bytes(MiB)
        raise QuorumNotMet("the source failed", placed={})

    with pytest.raises(ShoalError):
        await n0.store("bad", broken())
    assert all(local_blocks(n) > before[n.node_id] for n in (n0, n1, n2))
    for node in (n0, n1, n2):
        # A holder may still be writing a block whose PUT_BLOCK the failed put abandoned
        # (with its pending lease): GC until it is gone.
        await gc_until(node, before[node.node_id])
    async with n2.get(cap) as reader:
        assert await reader.read() == good


async def test_strangers_cannot_release_or_shorten_leases(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, n2 = await three(cluster)
    data = random_bytes(MiB + 7)
    cap = await n0.store("kept", data)
    root = ReadCap.parse(cap).cid
    blocks = sorted(await file_blocks(n0, cap))
    stranger = await cluster.add("stranger", options=QUICK_GC, peers=[n1.listen_address])
    await stranger.wait_for_peers(3)
    conn = await rt(stranger).routing.connect(rt(n1).node_id)
    answer = await conn.request(Release(root=root), timeout=10.0)
    assert answer == Released(count=0)
    # A "transferred" lease naming the owner can only keep data alive, never shorten it.
    answer = await conn.request(
        Lease(root=root, seconds=0, block_ids=tuple(blocks), owner=rt(n0).node_id), timeout=10.0
    )
    assert isinstance(answer, Leased)
    assert all(answer.held)
    assert (await n1.gc()).blocks == 0
    assert set(blocks) <= local_blocks(n1)
    await n2.drop_local_copy(cap)  # n2 now reads through n1 (and n0)
    async with n2.get(cap) as reader:
        assert await reader.read() == data


async def test_lease_records_only_held_blocks(cluster: Cluster) -> None:
    n0, n1, _ = await three(cluster)
    missing = sha256(b"not stored anywhere")
    conn = await rt(n0).routing.connect(rt(n1).node_id)
    answer = await conn.request(Lease(root=missing, seconds=60, block_ids=(missing,)), timeout=10)
    assert answer == Leased(held=(False,))
    assert rt(n1).leases.leases_of([missing], 0.0) == []


async def test_transferred_leases_keep_a_copy_until_the_owner_releases(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, n2 = await three(cluster)
    cap = await n0.store("f", random_bytes(1000))
    root = ReadCap.parse(cap).cid
    await n2.drop_local_copy(cap)
    rt(n2).leases.forget([root])
    # A copy made as repair or handoff makes one: no pending lease, then the leases follow.
    data = await rt(n1).io(rt(n1).blocks.get, root)
    conn = await rt(n1).routing.connect(rt(n2).node_id)
    await conn.request(PutBlock(block_id=root, data=data), timeout=10)
    assert not rt(n2).leases.is_live(root, rt(n2).options.clock.time())
    assert await transfer_leases(rt(n1), rt(n2).node_id, [root]) == 1
    owners = {row.owner for row in rt(n2).leases.leases_of([root], 0.0)}
    assert owners == {rt(n0).node_id}
    assert (await n2.gc()).blocks == 0
    await n0.remove("f")  # the owner's RELEASE drops the transferred row too
    assert (await n2.gc()).blocks == 1
    assert root not in local_blocks(n2)


async def test_blocks_on_disk_before_leases_are_kept_at_upgrade(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    init_data_dir(data_dir, open_network=True)
    store = BlockStore(data_dir / "blocks")
    payload = b"stored by a version without leases"
    old_block = sha256(payload)
    store.put(old_block, payload)
    async with Node.start(data_dir, listen="127.0.0.1:0", options=QUICK_GC) as node:
        assert (await node.gc()).blocks == 0
        assert old_block in local_blocks(node)
        assert node._rt.leases.is_live(old_block, node._rt.options.clock.time())


async def test_gc_never_deletes_what_the_catalog_needs(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    n0, _, _ = await three(cluster)
    cap = await n0.store("mine", random_bytes(MiB + 3))
    blocks = await file_blocks(n0, cap)
    # As if every lease had lapsed (the node was off for longer than a lease).
    n0._rt.leases.forget(sorted(blocks))
    await n0.gc()  # first seen unleased
    result = await n0.gc()
    assert result.blocks == 0
    assert result.kept_for_catalog == len(blocks)
    assert blocks <= local_blocks(n0)


async def test_a_lease_flood_is_refused_at_the_bound_and_others_still_lease(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    small = dataclasses.replace(QUICK_GC, max_leases_per_owner=8, max_leases=1000)
    holder = await cluster.add("holder", options=small)
    flooder = await cluster.add("flooder", options=QUICK_GC, peers=[holder.listen_address])
    owner = await cluster.add("owner", options=QUICK_GC, peers=[holder.listen_address])
    await holder.wait_for_peers(2)
    payloads = [i.to_bytes(4, "big") * 8 for i in range(20)]
    ids = tuple(sha256(p) for p in payloads)
    for block_id, payload in zip(ids, payloads, strict=True):
        rt(holder).blocks.put(block_id, payload)
    conn = await rt(flooder).routing.connect(rt(holder).node_id)
    root = sha256(b"flood")
    with pytest.raises(StorageFull):
        await conn.request(Lease(root=root, seconds=3600, block_ids=ids), timeout=10)
    # The flood is refused ever after, renewing what it has is not, and nothing grew past 8.
    for n in range(5):
        with pytest.raises(StorageFull):
            await conn.request(
                Lease(root=sha256(bytes([n])), seconds=60, block_ids=ids), timeout=10
            )
    assert await conn.request(Lease(root=root, seconds=7200, block_ids=ids[:8]), timeout=10) == (
        Leased(held=(True,) * 8)
    )
    assert rt(holder).leases.rows_of(rt(flooder).node_id) == 8
    assert len([r for r in caplog.records if "lease table full" in r.getMessage()]) == 1
    # Another owner is not held back by the flooder's bound.
    other = await rt(owner).routing.connect(rt(holder).node_id)
    answer = await other.request(Lease(root=root, seconds=60, block_ids=ids[8:16]), timeout=10)
    assert answer == Leased(held=(True,) * 8)


async def test_pin_gc_and_renew_over_http(
    cluster: Cluster, tmp_path: Path, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, _ = await three(cluster)
    data = random_bytes(MiB + 11)
    cap = await n0.store("shared", data)
    async with serve_api(n1, tmp_path / "n1") as api:
        client = Client.from_data_dir(api.data_dir)
        with client:
            pinned = await asyncio.to_thread(client.pin, cap, "kept")
            # Two data blocks and the root, leased on all three holders.
            assert (pinned["name"], pinned["cap"], pinned["blocks"]) == ("kept", cap, 3)
            assert pinned["leased"] == 9
            with pytest.raises(InvalidCapability):
                await asyncio.to_thread(client.pin, "shoal:v:" + cap.split(":")[2], "x")
            renewed = await asyncio.to_thread(client.renew_leases)
            assert renewed["roots"] == 1
            assert renewed["blocks"] == 3
            await n0.remove("shared")
            assert (await asyncio.to_thread(client.gc))["blocks"] == 0
            await asyncio.to_thread(client.remove, "kept")
            freed = await asyncio.to_thread(client.gc)
            assert freed["blocks"] == 3
            assert freed["bytes"] > MiB
        async with httpx.AsyncClient(
            base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}
        ) as http:
            for body in (b"not json", b"[1]", b'{"cap": 1, "name": "x"}', b"x" * 9000):
                answer = await http.post("/v1/pins", content=body)
                assert answer.status_code == 400, body[:20]
                assert answer.json()["error"]["code"] == "config"


async def test_a_folder_and_every_file_in_it_are_leased_and_released(
    cluster: Cluster, tmp_path: Path, random_bytes: Callable[[int], bytes]
) -> None:
    n0, n1, n2 = await three(cluster)
    source = tmp_path / "album"
    (source / "sub").mkdir(parents=True)
    (source / "a.bin").write_bytes(random_bytes(MiB + 1))
    (source / "sub" / "b.bin").write_bytes(random_bytes(1000))
    alone = random_bytes(2000)
    (source / "sub" / "alone.bin").write_bytes(alone)
    alone_cap = await n0.store("alone.bin", alone)  # the same bytes, also on its own
    empty = {n.node_id: local_blocks(n) for n in (n0, n1, n2)}
    await n0.store_folder("album", source)
    stored = {n.node_id: local_blocks(n) for n in (n0, n1, n2)}
    for node in (n0, n1, n2):
        assert (await node.gc()).blocks == 0  # every object of the folder is leased
        assert local_blocks(node) == stored[node.node_id]
    await n0.remove("album")
    for node in (n0, n1, n2):
        await gc_until(node, empty[node.node_id])
    async with n2.get(alone_cap) as reader:  # still kept under its own name
        assert await reader.read() == alone
