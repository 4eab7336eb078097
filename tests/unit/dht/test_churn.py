"""Findable after churn: whole nodes over the in-memory network, on virtual time.

Put with 10 nodes, start 10 more: every file gets through every node (at once, from the old
holders; after a handoff interval, the new closest nodes hold the blocks).
Then stop 5 of the first 10, at most R - 1 = 2 at once with a handoff interval between (R
copies survive any R - 1 simultaneous failures; the handoff restores R copies before the next
ones): every file still gets through every node left.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest

from shoal import Node
from shoal.clock import VirtualClock, run_virtual
from shoal.content import ReadCap
from shoal.dht.routing import DhtOptions
from shoal.ids import decode_id
from shoal.transport.routing import by_distance
from tests.unit.node.test_runtime_network import no_tracebacks, nodes
from tests.unit.transport.sim import wait_for

CHUNK = 16 * 1024
OPTIONS: dict[str, object] = {
    "chunk_size": CHUNK,
    "replicas": 3,
    "handoff_interval": 300.0,
    "handoff_settle": 5.0,
    "dht": DhtOptions(cache_ttl=60.0),
}


async def read(node: Node, cap: str) -> bytes:
    async with node.get(cap) as reader:
        return await reader.read()


async def every_file_through_every_node(everyone: list[Node], files: dict[str, bytes]) -> None:
    for node in everyone:
        for cap, data in files.items():
            assert await read(node, cap) == data, f"{node.node_id[:8]} could not read a file"


def test_files_stay_readable_as_nodes_join_and_leave(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal")
    rng = random.Random(7)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            first = [await net.add("n0", "10.0.1.1", **OPTIONS)]
            for i in range(1, 10):
                first.append(
                    await net.add(f"n{i}", f"10.0.1.{i + 1}", peers=("10.0.1.1:7000",), **OPTIONS)
                )
            await asyncio.sleep(30)
            files: dict[str, bytes] = {}
            for i in range(6):
                data = rng.randbytes(CHUNK * 3 + 100 * i)
                files[await first[i].store(f"f{i}.bin", data)] = data
            await every_file_through_every_node(first, files)

            # 10 more nodes join through another address; the handoff runs on table changes.
            second = [
                await net.add(f"m{i}", f"10.0.2.{i + 1}", peers=("10.0.1.2:7000",), **OPTIONS)
                for i in range(10)
            ]
            everyone = first + second
            await asyncio.sleep(30)
            # Before any handoff: reads find the old holders (fetching widens its search).
            await every_file_through_every_node(everyone, files)
            await asyncio.sleep(OPTIONS["handoff_interval"])  # type: ignore[arg-type]
            # The three nodes now closest to each root hold it (handed over, not just found).
            ids = [decode_id(n.node_id) for n in everyone]
            for cap in files:
                cid = ReadCap.parse(cap).cid
                for holder in by_distance(cid, ids)[:3]:
                    node = next(n for n in everyone if decode_id(n.node_id) == holder)
                    assert await node._rt.io(node._rt.blocks.has, cid)
            assert sum(n._rt.handoff.stats.pushed for n in everyone if n._rt.handoff) > 0
            await every_file_through_every_node(everyone, files)

            # Five of the first ten leave, two, two and one at a time, a handoff pass apart.
            leaving = rng.sample(first, 5)
            for batch in (leaving[:2], leaving[2:4], leaving[4:]):
                for node in batch:
                    await net.stop(node)
                    everyone.remove(node)
                await asyncio.sleep(OPTIONS["handoff_interval"] + 60)  # type: ignore[operator]
            await wait_for(lambda: all(n._rt.dht is not None for n in everyone))
            await every_file_through_every_node(everyone, files)

    run_virtual(main)
    no_tracebacks(caplog)
