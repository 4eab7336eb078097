"""Check and repair with in-process nodes over real sockets (real files, real SQLite)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal import Node
from shoal.api.http import serve_api
from shoal.client.http import Client
from shoal.content import parse_cap
from shoal.errors import InvalidCapability, NotFound
from shoal.ids import encode_id
from shoal.node.get import walk_block_ids
from shoal.node.repair_state import STATE_FILE

from .conftest import FAST, Cluster

#: No handoff during these tests (it would make copies too): repair alone must do it.
OPTIONS = dataclasses.replace(FAST, handoff_interval=1e6, handoff_settle=1e6, repair_settle=0.2)


async def start(cluster: Cluster, count: int, **changes: object) -> list[Node]:
    options = dataclasses.replace(OPTIONS, **changes)  # type: ignore[arg-type]
    first = await cluster.add("n0", options=options, replicas=3)
    nodes = [first]
    for i in range(1, count):
        nodes.append(
            await cluster.add(f"n{i}", peers=[first.listen_address], options=options, replicas=3)
        )
    await first.wait_for_peers(count - 1, timeout=30)
    return nodes


async def block_ids(node: Node, cap: str) -> list[bytes]:
    return [b async for b in walk_block_ids(node._rt, parse_cap(cap).cid)]


async def copies(nodes: list[Node], block_id: bytes) -> int:
    return sum([await n._rt.io(n._rt.blocks.has, block_id, verify=True) for n in nodes])


async def min_copies(nodes: list[Node], caps: list[str]) -> int:
    return min([await copies(nodes, b) for cap in caps for b in await block_ids(nodes[0], cap)])


async def wait_until(predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():  # type: ignore[misc]
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def holders_of(nodes: list[Node], block_id: bytes) -> list[Node]:
    return [n for n in nodes if n._rt.blocks.has(block_id)]


async def test_check_counts_and_repair_restores_three_copies(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 5)
    n0 = nodes[0]
    files = {f"f{i}": random_bytes(3000 + i) for i in range(6)}
    caps = [await n0.store(name, data) for name, data in files.items()]
    report = await n0.check(caps[0])
    assert report.healthy
    assert (report.min_copies, report.wanted) == (3, 3)
    # Two nodes other than n0 go away: some blocks are down to one copy, most to two.
    for gone in nodes[3:]:
        await cluster.stop(gone)
    live = nodes[:3]
    verify_cap = str(parse_cap(caps[0]).verify_cap)  # type: ignore[union-attr]
    assert (await n0.check(verify_cap)).min_copies <= 3
    result = await n0.repair()
    assert result.to_json()["files"] == len(files)
    assert await min_copies(live, caps) == 3
    after = await n0.check(verify_cap, verify=True)
    assert after.healthy
    assert after.verified
    assert after.min_copies == 3
    # Nothing is left to copy: a second pass moves no bytes.
    assert (await n0.repair()).to_json()["copied"] == 0
    await cluster.stop(nodes[2])
    for name, data in files.items():
        async with nodes[1].get(caps[list(files).index(name)]) as reader:
            assert await reader.read() == data


async def test_background_pass_waits_for_an_absent_node(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 5, repair_delay=3600.0, repair_interval=1e6)
    n0 = nodes[0]
    # Twelve files: the chance that n0 holds every block (3 of 5 nodes each) is about 1e-5.
    caps = [await n0.store(f"f{i}", random_bytes(2000 + i)) for i in range(12)]
    blocks = [b for cap in caps for b in await block_ids(n0, cap)]
    # Stop one holder of a block n0 does not hold: that block has two live copies left.
    target = next(b for b in blocks if not n0._rt.blocks.has(b))
    gone = holders_of(nodes[1:], target)[0]
    await cluster.stop(gone)
    live = [n for n in nodes if n is not gone]
    report = await n0._rt.repair.run_pass()
    waiting = [f for f in report.files if f.waiting]
    assert waiting, "some file waits for the absent node"
    assert all(f.due is not None and f.due > time.time() + 3000 for f in waiting)
    assert await copies(live, target) == 2  # not copied: the node may come back
    assert n0._rt.repair.queue_length >= len(waiting)  # due files are queued
    # Asked for now, repair does not wait.
    await n0.repair()
    assert await copies(live, target) == 3


async def test_background_repair_copies_when_the_delay_runs_out(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 5, repair_delay=1.5, repair_interval=1e6)
    n0 = nodes[0]
    caps = [await n0.store(f"f{i}", random_bytes(2000 + i)) for i in range(4)]
    blocks = [b for cap in caps for b in await block_ids(n0, cap)]
    gone = nodes[2]
    await cluster.stop(gone)
    live = [n for n in nodes if n is not gone]
    # No command and no periodic pass (interval 1e6 s): the loop's timers do it.
    await wait_until(lambda: _all_have_three(live, blocks), timeout=30)
    assert any(n._rt.repair.stats.copied for n in live)


async def _has_absent(node: Node, gone: Node) -> bool:
    return any(encode_id(n) == gone.node_id for n in node._rt.repair.state.absent)


async def _all_have_three(nodes: list[Node], blocks: list[bytes]) -> bool:
    return all([await copies(nodes, b) >= 3 for b in blocks])


async def test_last_copy_is_copied_at_once(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 5, repair_delay=3600.0, repair_interval=1e6)
    n0 = nodes[0]
    cap = await n0.store("one", random_bytes(5000))
    blocks = await block_ids(n0, cap)
    # Stop two of the three holders of a block: the third has its last copy.
    target = blocks[-1]
    keeper, *others = holders_of(nodes, target)
    for gone in others:
        await cluster.stop(gone)
    live = cluster.nodes
    # Background repair, which honours the one-hour delay, copies it all the same (the loop's
    # early pass after the nodes went away may have done it already; this pass then finds
    # nothing left to do). Handoff is off: only repair copies.
    await keeper._rt.repair.run_pass([parse_cap(cap).cid])
    assert await copies(live, target) == 3
    assert sum(n._rt.repair.stats.copied for n in live) > 0


async def test_owner_gone_holders_repair_the_roots_they_hold_under_lease(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 5, repair_delay=0.5, repair_interval=1e6)
    n0 = nodes[0]
    data = {f"f{i}": random_bytes(4000 + i) for i in range(3)}
    caps = [await n0.store(name, d) for name, d in data.items()]
    blocks = [b for cap in caps for b in await block_ids(n0, cap)]
    # The owner goes away for good, and one more holder with it. Only the lease table tells
    # the others which files they hold (their catalogs are empty).
    await cluster.stop(n0)
    await cluster.stop(nodes[1])
    live = nodes[2:]
    assert [await n.list_files() for n in live] == [[], [], []]
    await wait_until(lambda: _all_have_three(live, blocks), timeout=30)
    for cap, expected in zip(caps, data.values(), strict=True):
        async with live[0].get(cap) as reader:
            assert await reader.read() == expected
    # Every copy carries a lease of the owner's, so GC keeps it.
    now = time.time()
    for node in live:
        held = [b for b in blocks if node._rt.blocks.has(b)]
        leases = await node._rt.io(node._rt.leases.leases_of, held, now)
        assert {lease.block_id for lease in leases} == set(held)


async def test_cursor_survives_a_restart(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 3, repair_interval=1e6)
    n0 = nodes[0]
    for i in range(3):
        await n0.store(f"f{i}", random_bytes(100 + i))
    repairer = n0._rt.repair
    roots = sorted(await repairer.catalog_roots())
    repairer.state.cursor = roots[0]
    await repairer._save_soon(force=True)
    saved = json.loads((n0.data_dir / STATE_FILE).read_text())
    assert saved["cursor"] == encode_id(roots[0])


@pytest.mark.parametrize("bad", ["shoal:v:nonsense", "no-such-name"])
async def test_check_of_bad_input_raises(cluster: Cluster, bad: str) -> None:
    nodes = await start(cluster, 1)
    with pytest.raises((InvalidCapability, NotFound)):
        await nodes[0].check(bad)


async def test_http_api_and_client_check_and_repair(tmp_path: Path) -> None:
    data_dir = tmp_path / "solo"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0", replicas=1, options=OPTIONS) as node,
        serve_api(node, data_dir) as api,
    ):
        cap = await node.store("a.txt", b"hello " * 1000)
        verify_cap = str(parse_cap(cap).verify_cap)  # type: ignore[union-attr]

        def calls() -> tuple[dict[str, object], ...]:
            with Client(api.url, api.token) as client:
                by_name = client.check("a.txt")
                by_verify_cap = client.check(verify_cap, verify=True)
                one = client.repair(verify_cap)
                every = client.repair()
                with pytest.raises(NotFound):
                    client.check("missing.txt")
                with pytest.raises(InvalidCapability):
                    client.check("shoal:v:nonsense")
                status = client.status()
            return by_name, by_verify_cap, one, every, status

        by_name, by_verify_cap, one, every, status = await asyncio.to_thread(calls)
    assert by_name["healthy"] is True
    assert (by_name["blocks"], by_name["min_copies"], by_name["wanted"]) == (2, 1, 1)
    assert by_verify_cap["verified"] is True
    assert by_verify_cap["healthy"] is True
    assert one["copied"] == 0
    assert one["cap"] == verify_cap
    assert (every["files"], every["copied"], every["healthy"]) == (1, 0, 1)
    assert status["files_healthy"] == 1
    assert status["files_unchecked"] == 0


async def test_background_repair_off_leaves_repair_to_the_command(
    cluster: Cluster, random_bytes: Callable[[int], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """``--no-background-repair``: no repair loop runs (not even the first look after a
    start), and a pass asked for still restores what a lost holder had."""
    caplog.set_level(logging.INFO, logger="shoal.node.repair_loop")
    nodes = await start(cluster, 4, background_repair=False, repair_delay=0.0)
    assert all(len(n._rt.repair._tasks) == 0 for n in nodes)
    assert "background repair is off" in caplog.text
    n0 = nodes[0]
    cap = await n0.store("kept", random_bytes(200_000))
    blocks = await block_ids(n0, cap)
    gone = next(n for n in nodes[1:] if any(n._rt.blocks.has(b) for b in blocks))
    await cluster.stop(gone)
    live = cluster.nodes
    assert await min_copies(live, [cap]) < 3
    assert all(n._rt.repair.stats.passes == 0 for n in live)
    report = await n0.repair(cap)
    assert sum(f.copied for f in report.files) > 0
    assert await min_copies(live, [cap]) == 3
