"""Rebalancing: nodes that join receive the blocks they are now closest to, within the
handoff's byte budget, and nobody deletes anything. Whole nodes over the in-memory network,
on virtual time.

The bound is counted, not timed: every byte a node's handoff sent is recorded with the
virtual time it was granted, and the bytes granted before any grant never exceed the burst
plus the rate times the time since the first one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from shoal import Node
from shoal.clock import VirtualClock, run_virtual
from shoal.dht.routing import DhtOptions
from shoal.ids import decode_id
from shoal.node.budget import ByteBudget
from shoal.transport.routing import by_distance
from tests.unit.node.test_runtime_network import no_tracebacks, nodes
from tests.unit.transport.sim import wait_for

CHUNK = 16 * 1024
RATE = 48 * 1024.0  # bytes per second of handoff per node: three blocks a second
OPTIONS: dict[str, object] = {
    "chunk_size": CHUNK,
    "replicas": 3,
    "handoff_interval": 300.0,
    "handoff_settle": 5.0,
    "handoff_rate": RATE,
    "scrub_interval": 1e9,
    "dht": DhtOptions(cache_ttl=60.0),
}


class CountingBudget(ByteBudget):
    """A byte budget that records, for each grant, when it was made and the bytes before."""

    def __init__(self, rate: float, clock: VirtualClock) -> None:
        super().__init__(rate, clock=clock)
        self._virtual = clock
        self.grants: list[tuple[float, int]] = []

    async def take(self, nbytes: int) -> None:
        await super().take(nbytes)
        self.grants.append((self._virtual.monotonic(), self.granted - nbytes))


def held(node: Node) -> set[bytes]:
    return set(node._rt.blocks.ids())


def test_nodes_that_join_receive_their_blocks_within_the_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal")

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            first = [await net.add("n0", "10.0.1.1", **OPTIONS)]
            for i in range(1, 4):
                first.append(
                    await net.add(f"n{i}", f"10.0.1.{i + 1}", peers=("10.0.1.1:7000",), **OPTIONS)
                )
            await asyncio.sleep(10)
            files = {}
            for i in range(5):
                data = os.urandom(CHUNK * 6 + 7 * i)
                files[await first[i % 4].store(f"f{i}.bin", data)] = data
            before = {n.node_id: held(n) for n in first}
            every_block = set().union(*before.values())
            budgets = {}
            for node in first:
                assert node._rt.handoff is not None
                budgets[node.node_id] = node._rt.handoff.budget = CountingBudget(RATE, clock)

            joined = [
                await net.add(f"m{i}", f"10.0.2.{i + 1}", peers=("10.0.1.2:7000",), **OPTIONS)
                for i in range(4)
            ]
            everyone = first + joined
            ids = [decode_id(n.node_id) for n in everyone]
            by_id = {decode_id(n.node_id): n for n in everyone}
            owed = {
                (block, holder)
                for block in every_block
                for holder in by_distance(block, ids)[:3]
                if by_id[holder] in joined
            }
            assert owed, "no joined node is among the closest of any block: nothing to test"

            def placed() -> bool:
                return all(block in held(by_id[holder]) for block, holder in owed)

            # Within a bounded wait: a handoff interval, then the bytes at the budget's rate.
            bound = OPTIONS["handoff_interval"] + len(every_block) * (CHUNK + 64) * 3 / RATE
            await wait_for(placed, timeout=bound + 60)  # type: ignore[operator]

            # Every block is on the three nodes now closest to it.
            for block in every_block:
                for holder in by_distance(block, ids)[:3]:
                    assert block in held(by_id[holder])
            # Nothing was deleted: the old holders keep all they had.
            for node in first:
                assert before[node.node_id] <= held(node)
            # The budget held: counted over every grant of every sender.
            sent = 0
            for node in first:
                budget = budgets[node.node_id]
                handoff = node._rt.handoff
                assert handoff is not None
                assert budget.granted == handoff.stats.bytes
                sent += budget.granted
                if budget.grants:
                    start = budget.grants[0][0]
                    for when, before_grant in budget.grants:
                        assert before_grant <= budget.burst + RATE * (when - start) + 1e-6
            assert sent > 0
            assert any(b.waits for b in budgets.values()), "the budget never had to wait"
            for cap, data in files.items():
                for node in joined:
                    async with node.get(cap) as reader:
                        assert await reader.read() == data

    run_virtual(main)
    no_tracebacks(caplog)
