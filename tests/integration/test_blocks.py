"""Placing and fetching blocks across real nodes: replacement holders, failover, hostile peers.

A "rogue" peer here is a real connection manager (real TLS, real handshake) whose request
handler lies, stalls or fails: an adversary built from our own protocol, not a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shoal import Node
from shoal.content import ReadCap
from shoal.errors import NotFound
from shoal.ids import decode_id, encode_id
from shoal.node.network import closed_network_name
from shoal.protocol import (
    BlockData,
    Error,
    FindNode,
    GetBlock,
    GetPeers,
    Message,
    Nodes,
    Peers,
    Pong,
)
from shoal.transport import ConnectionManager, Identity, PeerConnection
from shoal.transport.routing import by_distance
from tests.integration.conftest import FAST, Cluster

RogueAnswer = Callable[[GetBlock], Awaitable[Message]]


def block_files(node: Node) -> set[str]:
    """Names of the block files a node holds on disk."""
    root = Path(node.data_dir) / "blocks"
    return {
        p.name
        for p in root.glob("*/*/*")
        if p.is_file() and p.parent.parent.name not in ("tmp", "corrupt")
    }


def corrupt_files(node: Node) -> list[Path]:
    return list((Path(node.data_dir) / "blocks" / "corrupt").iterdir())


@contextlib.asynccontextmanager
async def rogue_peer(
    tmp_path: Path,
    target: Node,
    answer: RogueAnswer,
    *,
    closer_than: list[Node],
    to: bytes,
    network_secret: bytes,
) -> AsyncIterator[ConnectionManager]:
    """A peer connected to ``target`` whose node ID is XOR-closer to ``to`` than every node
    of ``closer_than``, so ``target`` asks it first; it answers GET_BLOCK with ``answer``.

    It is a member of the network (it has the secret): the worst case, an insider."""
    honest = [decode_id(n.node_id) for n in closer_than]
    while True:
        identity = Identity.generate()
        if by_distance(to, [identity.node_id, *honest])[0] == identity.node_id:
            break
    directory = tmp_path / f"rogue-{identity.node_id_text[:8]}"
    directory.mkdir()
    identity.save(directory / "node.key")

    async def handler(peer: PeerConnection, message: Message) -> Message:
        if isinstance(message, GetBlock):
            return await answer(message)
        if isinstance(message, FindNode):
            return Nodes(nodes=())
        if isinstance(message, GetPeers):
            return Peers(peers=())
        return Pong()

    mgr = ConnectionManager(
        identity,
        directory,
        listen="127.0.0.1:0",
        handler=handler,
        network=closed_network_name(network_secret),
        network_secret=network_secret,
    )
    await mgr.start()
    try:
        await mgr.dial(target.listen_address)
        yield mgr
    finally:
        await mgr.aclose()


def insider(cluster: Cluster, honest: list[Node], cid: bytes) -> dict[str, object]:
    return {"closer_than": honest, "to": cid, "network_secret": cluster.network.secret}


async def three_nodes(cluster: Cluster, **options: object) -> list[Node]:
    opts = dataclasses.replace(FAST, **options)  # type: ignore[arg-type]
    a = await cluster.add("a", options=opts, replicas=2)
    b = await cluster.add("b", peers=[a.listen_address], options=opts, replicas=2)
    c = await cluster.add("c", peers=[a.listen_address], options=opts, replicas=2)
    for node in (a, b, c):
        await node.wait_for_peers(2, timeout=15)
    return [a, b, c]


async def test_a_failing_holder_is_replaced_by_the_next_closest(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await three_nodes(cluster)
    a, b, c = nodes
    # b's disk breaks for real: every write there fails.
    tmp = Path(b.data_dir) / "blocks" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"not a directory")
    replaced = 0
    for i in range(12):
        data = random_bytes(2000 + i)
        result = await a.store_with_result(f"f{i}.bin", data)
        assert (result.replicas, result.replicas_wanted) == (2, 2)  # a and c took every block
        cid = ReadCap.parse(result.cap).cid
        closest_two = by_distance(cid, [decode_id(n.node_id) for n in nodes])[:2]
        if decode_id(b.node_id) in closest_two:
            replaced += 1
    assert replaced > 0  # b was among the two closest of some root, and was replaced
    assert block_files(b) == set()
    assert block_files(a) == block_files(c)


async def test_get_fails_over_from_a_peer_that_sends_wrong_bytes(
    cluster: Cluster, random_bytes: Callable[[int], bytes], tmp_path: Path
) -> None:
    a, b, c = await three_nodes(cluster)
    data = random_bytes(1500)
    cap = await a.store("f.bin", data)
    cid = ReadCap.parse(cap).cid
    asked: list[bytes] = []

    async def lie(request: GetBlock) -> Message:
        asked.append(request.block_id)
        return BlockData(block_id=request.block_id, data=b"not the block you want" * 10)

    reader_node = await cluster.add("reader", peers=[a.listen_address], options=FAST)
    await reader_node.wait_for_peers(3, timeout=15)
    async with rogue_peer(
        tmp_path,
        reader_node,
        lie,
        closer_than=[a, b, c],
        to=cid,
        network_secret=cluster.network.secret,
    ):
        await reader_node.wait_for_peers(4, timeout=15)
        async with reader_node.get(cap) as reader:
            assert await reader.read() == data
    assert cid in asked  # the rogue was asked first, and its bytes were refused
    for node in (a, b, c, reader_node):
        assert corrupt_files(node) == []


@pytest.mark.parametrize(
    "behaviour", ["error-not-found", "error-invalid-cap", "error-integrity", "silence"]
)
async def test_get_fails_over_from_a_peer_that_fails_or_stalls(
    cluster: Cluster, random_bytes: Callable[[int], bytes], tmp_path: Path, behaviour: str
) -> None:
    a, b, c = await three_nodes(cluster)
    data = random_bytes(1500)
    cap = await a.store("f.bin", data)
    cid = ReadCap.parse(cap).cid

    async def misbehave(request: GetBlock) -> Message:
        if behaviour == "silence":
            await asyncio.Event().wait()  # never answers; the rogue's loop still answers PINGs
        code = behaviour.removeprefix("error-")
        return Error(code=code, message="no, and the user should see nothing of this")

    options = dataclasses.replace(FAST, request_timeout=1.0)
    reader_node = await cluster.add("reader", peers=[a.listen_address], options=options)
    await reader_node.wait_for_peers(3, timeout=15)
    async with rogue_peer(
        tmp_path,
        reader_node,
        misbehave,
        closer_than=[a, b, c],
        to=cid,
        network_secret=cluster.network.secret,
    ):
        await reader_node.wait_for_peers(4, timeout=15)
        async with reader_node.get(cap) as reader:
            assert await reader.read() == data


async def test_get_fails_over_when_a_peer_drops_mid_request(
    cluster: Cluster, random_bytes: Callable[[int], bytes], tmp_path: Path
) -> None:
    a, b, c = await three_nodes(cluster)
    data = random_bytes(1500)
    cap = await a.store("f.bin", data)
    cid = ReadCap.parse(cap).cid
    asked = asyncio.Event()

    async def hang(request: GetBlock) -> Message:
        asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    reader_node = await cluster.add("reader", peers=[a.listen_address], options=FAST)
    await reader_node.wait_for_peers(3, timeout=15)
    async with rogue_peer(
        tmp_path,
        reader_node,
        hang,
        closer_than=[a, b, c],
        to=cid,
        network_secret=cluster.network.secret,
    ) as rogue:
        await reader_node.wait_for_peers(4, timeout=15)

        async def read() -> bytes:
            async with reader_node.get(cap) as reader:
                return await reader.read()

        got = asyncio.create_task(read())
        async with asyncio.timeout(15):
            await asyncio.wait(
                [got, asyncio.create_task(asked.wait())], return_when="FIRST_COMPLETED"
            )
        await rogue.aclose()  # the rogue vanishes with the request open
        async with asyncio.timeout(15):
            assert await got == data


async def test_a_block_nobody_has_is_not_found_and_names_the_block(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a, b, c = await three_nodes(cluster)
    cap = await a.store("f.bin", random_bytes(1500))
    cid = ReadCap.parse(cap).cid
    for node in (a, b, c):  # the root manifest vanishes from every disk
        for path in (Path(node.data_dir) / "blocks").glob(f"*/*/{encode_id(cid)}"):
            path.unlink()
    with pytest.raises(NotFound, match="not available"):
        async with a.get(cap) as reader:
            await reader.read()
    # The nodes are fine: a new file stores and reads.
    data = random_bytes(3000)
    cap2 = await b.store("g.bin", data)
    async with c.get(cap2) as reader:
        assert await reader.read() == data


async def test_concurrent_puts_of_one_name_leave_one_readable_entry(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    a, _, c = await three_nodes(cluster)
    versions = [random_bytes(200_000 + i) for i in range(4)]
    caps = await asyncio.gather(*(a.store("same.bin", v) for v in versions))
    entries = await a.list_files()
    assert [e.name for e in entries] == ["same.bin"]
    assert entries[0].cap in caps
    async with a.get("same.bin") as reader:
        assert await reader.read() == versions[caps.index(entries[0].cap)]
    for cap, version in zip(caps, versions, strict=True):  # every version stays readable by cap
        async with c.get(cap) as reader:
            assert await reader.read() == version
