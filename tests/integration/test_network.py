"""Several real nodes in one process: store, get, failures, reconnection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal import Node, NotFound, PeerState
from tests.integration.conftest import FAST, Cluster


async def start_three(cluster: Cluster) -> list[Node]:
    a = await cluster.add("a")
    b = await cluster.add("b")
    c = await cluster.add("c", peers=[a.listen_address, b.listen_address])
    # Peer exchange makes a and b find each other through c.
    for node in (a, b, c):
        await node.wait_for_peers(2, timeout=15)
    return [a, b, c]


async def test_store_on_one_get_on_each_other(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a, b, c = await start_three(cluster)
    data = random_bytes(3 * 1024 * 1024 + 12345)
    cap = await c.store("picture_1.png", data)
    assert cap.startswith("shoal:r:")
    for node in (a, b, c):
        async with node.get(cap) as reader:
            assert reader.size == len(data)
            # Names are not part of a file: got by cap, it has none (the CID stands in).
            assert (reader.name, reader.media_type) == (None, "application/octet-stream")
            assert cap.startswith(f"shoal:r:{reader.cid}:")
            assert await reader.read() == data
    async with c.get("picture_1.png") as reader:
        assert (reader.name, reader.media_type) == ("picture_1.png", "image/png")
        assert await reader.read() == data
    with pytest.raises(NotFound):
        async with a.get("picture_1.png"):
            pass  # a's catalog does not have the name


async def test_get_still_works_after_origin_stops(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a, b, c = await start_three(cluster)
    data = random_bytes(2 * 1024 * 1024 + 1)
    cap = await c.store("f.bin", data)
    await cluster.stop(c)
    for node in (a, b):
        async with node.get(cap) as reader:
            assert await reader.read() == data


async def test_get_fetches_blocks_missing_locally(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    _, _, c = await start_three(cluster)
    data = random_bytes(1024 * 1024 * 2 + 7)
    cap = await c.store("f.bin", data)
    dropped = await c.drop_local_copy(cap)
    assert dropped >= 4  # three data blocks and the root manifest
    async with c.get(cap) as reader:
        assert await reader.read() == data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_node_started_before_its_peer_connects_once_peer_is_up(cluster: Cluster) -> None:
    port = free_port()
    early = await cluster.add("early", peers=[f"127.0.0.1:{port}"])
    assert early.peers() == []
    late = await cluster.add("late", listen=f"127.0.0.1:{port}")
    await early.wait_for_peers(1, timeout=15)
    await late.wait_for_peers(1, timeout=15)
    assert [p.node_id for p in early.peers()] == [late.node_id]


async def test_dropped_peer_is_reconnected(cluster: Cluster) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address])
    await b.wait_for_peers(1, timeout=15)
    conn = b._rt.manager.connection(a._rt.node_id)
    assert conn is not None
    await conn.close()  # the link drops
    manager = b._rt.manager
    await manager.wait_until(
        lambda: (c := manager.connection(a._rt.node_id)) is not None and c is not conn, 15
    )
    assert [p.state for p in b.peers()] == [PeerState.UP]


async def test_stopped_peer_is_marked_down_then_back_up(cluster: Cluster) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address])
    await b.wait_for_peers(1, timeout=15)
    address = a.listen_address
    await cluster.stop(a)
    manager = b._rt.manager
    await manager.wait_until(lambda: not manager.live_ids(), 15)
    assert [p.state for p in b.peers()] == [PeerState.DOWN]
    await cluster.add("a", listen=address)
    await b.wait_for_peers(1, timeout=15)
    assert [p.state for p in b.peers()] == [PeerState.UP]


async def test_manifest_tree_round_trip_across_nodes(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    # Small chunks and fanout 2 give a manifest tree several levels deep from a small file.
    options = dataclasses.replace(FAST, chunk_size=4096, manifest_fanout=2)
    a = await cluster.add("a", options=options)
    b = await cluster.add("b", peers=[a.listen_address], options=options)
    await b.wait_for_peers(1, timeout=15)
    data = random_bytes(4096 * 9 + 5)
    cap = await b.store("tree.bin", data)
    await b.drop_local_copy(cap)
    await cluster.stop(b)
    async with a.get(cap) as reader:
        chunks = [chunk async for chunk in reader]
    assert b"".join(chunks) == data
    assert len(chunks) == 10


async def test_bootstrap_address_follows_a_node_recreated_with_a_new_key(cluster: Cluster) -> None:
    old = await cluster.add("old")
    b = await cluster.add("b", peers=[old.listen_address])
    await b.wait_for_peers(1, timeout=15)
    address = old.listen_address
    await cluster.stop(old)
    new = await cluster.add("new", listen=address)  # same address, another data dir and key
    manager = b._rt.manager
    await manager.wait_until(lambda: manager.connection(new._rt.node_id) is not None, 15)
    states = {p.node_id: p.state for p in b.peers()}
    assert states == {old.node_id: PeerState.DOWN, new.node_id: PeerState.UP}


def held_blocks(node: Node) -> set[str]:
    """The block files a node holds on disk (what it could serve without the network)."""
    root = node.data_dir / "blocks"
    return {
        p.name
        for p in root.glob("*/*/*")
        if p.is_file() and p.parent.parent.name not in ("tmp", "corrupt")
    }


async def test_five_nodes_r2_each_node_reads_what_it_does_not_hold(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    first = await cluster.add("n0", replicas=2)
    nodes = [first] + [
        await cluster.add(f"n{i}", peers=[first.listen_address], replicas=2) for i in range(1, 5)
    ]
    for node in nodes:
        await node.wait_for_peers(4, timeout=15)
    data = random_bytes(6 * 1024 * 1024 + 99)  # 7 data blocks and a root
    result = await nodes[2].store_with_result("f.bin", data)
    assert (result.replicas, result.replicas_wanted) == (2, 2)
    held = {node.node_id: held_blocks(node) for node in nodes}
    all_blocks = set().union(*held.values())
    assert len(all_blocks) == result.blocks
    # Every block is on exactly two nodes, so no node holds the whole file.
    for block in all_blocks:
        assert sum(block in h for h in held.values()) == 2
    for node in nodes:
        assert held[node.node_id] != all_blocks
        async with node.get(result.cap) as reader:
            assert await reader.read() == data
        assert held_blocks(node) == held[node.node_id]  # a get stores nothing (no cache yet)


async def test_a_node_that_joins_after_the_put_reads_the_file_over_the_network(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", peers=[a.listen_address])
    c = await cluster.add("c", peers=[a.listen_address])
    for node in (a, b, c):
        await node.wait_for_peers(2, timeout=15)
    data = random_bytes(3 * 1024 * 1024 + 1)
    cap = await a.store("f.bin", data)
    late = await cluster.add("late", peers=[b.listen_address])
    await late.wait_for_peers(3, timeout=15)
    assert held_blocks(late) == set()
    async with late.get(cap) as reader:
        assert await reader.read() == data


async def test_a_node_of_another_network_is_refused_and_not_dialed_again(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # A stranger: its own new closed network (what `shoal init` makes).
        stranger = await stack.enter_async_context(
            Node.start(tmp_path / "stranger", listen="127.0.0.1:0", options=FAST)
        )
        caplog.set_level(logging.INFO, logger="shoal")
        member = await cluster.add("member", peers=[stranger.listen_address])
        dialer = member._rt.manager._dialer
        async with asyncio.timeout(15):  # the bootstrap loop for the stranger ends
            while dialer._bootstrap_loops or not dialer._bootstrap.keys().isdisjoint(
                [stranger.listen_address]
            ):
                await asyncio.sleep(0.05)
        warnings = [r.getMessage() for r in caplog.records if "another network" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "shoal init --join" in warnings[0]
        assert member.peers() == []
        assert stranger.peers() == []
        # Both nodes keep working in their own networks.
        other = await cluster.add("other", peers=[member.listen_address])
        await member.wait_for_peers(1, timeout=15)
        assert [p.node_id for p in member.peers()] == [other.node_id]
