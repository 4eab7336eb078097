"""Scrub: whole nodes over the in-memory network, on virtual time (real files, real SQLite).

What is proved: the walk visits every block once in name order and resumes after any name; a
pass finds blocks whose bytes rotted under an intact mtime stamp, moves them aside and fetches
them again from their holders, and touches nothing else; a block moved aside by a read is
fetched again by the next pass; the reads stay within the byte budget (counted); a node
stopped mid-pass resumes at its cursor after a restart, without checking again what it did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from shoal import Node
from shoal.clock import VirtualClock, run_virtual
from shoal.ids import decode_id, encode_id
from shoal.node.scrub import STATE_FILE, ids_after
from shoal.store import BlockStore
from tests.unit.node.test_runtime_network import Nodes, no_tracebacks, nodes
from tests.unit.transport.sim import wait_for

CHUNK = 4096
#: No background pass during a test: passes run when the test asks.
QUIET: dict[str, object] = {"chunk_size": CHUNK, "scrub_interval": 1e9}


def rot(path: Path, offset: int = 7) -> None:
    """Flip one byte of ``path`` below the file system's notice: its mtime (and with it the
    store's stamp) stays, as with bit rot on the disk."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x20]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def block_files(node: Node) -> dict[str, bytes]:
    store = node._rt.blocks
    return {encode_id(b): store.path_for(b).read_bytes() for b in store.ids()}


def test_ids_after_walks_every_block_once_in_name_order(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "blocks", reserve_bytes=0)
    ids = []
    for i in range(300):
        data = os.urandom(20) + bytes([i % 256])
        block_id = hashlib.sha256(data).digest()
        store.put(block_id, data)
        ids.append(block_id)
    # Strays the walk must skip: a file in tmp/, one in corrupt/, a misplaced and a bad name.
    (tmp_path / "blocks" / "tmp" / "x.tmp").write_bytes(b"x")
    (tmp_path / "blocks" / "corrupt" / encode_id(ids[0])).write_bytes(b"x")
    leaf = store.path_for(ids[1]).parent
    (leaf / "not-a-block").write_bytes(b"x")
    (leaf / ("a" * 52)).write_bytes(b"x")  # a block name in the wrong fan-out directory

    walked: list[bytes] = []
    cursor: str | None = None
    while batch := ids_after(store.root, cursor, 7):
        walked += batch
        cursor = encode_id(batch[-1])
    assert [encode_id(b) for b in walked] == sorted(encode_id(b) for b in ids)
    middle = sorted(encode_id(b) for b in ids)[150]
    assert [encode_id(b) for b in ids_after(store.root, middle, 1000)] == sorted(
        encode_id(b) for b in ids
    )[151:]


def test_a_pass_replaces_rotten_blocks_from_their_holders_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal")

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a, b, c = await start_three(net)
            data = os.urandom(CHUNK * 12)
            cap = await a.store("f.bin", data)
            before = {n.node_id: block_files(n) for n in (a, b, c)}
            assert len(before[a.node_id]) == 13  # R = 3 on 3 nodes: everyone holds everything
            rotten = sorted(before[a.node_id])[2:5]
            for text in rotten:
                rot(a._rt.blocks.path_for(decode_id(text)))
            # The stamp still says intact: only reading finds the rot.
            assert all(a._rt.blocks.has(decode_id(t), verify=True) for t in rotten)

            report = await a.scrub()
            assert (report.checked, report.corrupt, report.replaced) == (13, 3, 3)
            assert report.unreplaced == 0
            assert report.bytes == sum(len(v) for v in before[a.node_id].values())
            # Every file is whole again, the rotten copies are in corrupt/, nothing else moved.
            for node in (a, b, c):
                assert block_files(node) == before[node.node_id]
            quarantined = {encode_id(i) for i in a._rt.blocks.quarantined()}
            assert quarantined == set(rotten)
            status = a.scrub_status()
            assert not status.running
            assert status.last == report
            assert status.next_pass is not None
            assert status.next_pass > report.finished
            for node in (a, b, c):
                async with node.get(cap) as reader:
                    assert await reader.read() == data
            assert b.scrub_status().last is None  # the others ran no pass

            # A read that meets rot moves the block aside; the next pass fetches it again.
            victim = sorted(before[a.node_id])[8]
            victim_id = decode_id(victim)
            rot(a._rt.blocks.path_for(victim_id), offset=30)
            async with a.get(cap) as reader:
                assert await reader.read() == data
            assert not a._rt.blocks.has(victim_id)
            report = await a.scrub()
            # Fetched again first, then checked with the others.
            assert (report.checked, report.corrupt, report.replaced) == (13, 0, 1)
            assert block_files(a) == before[a.node_id]
            assert report.pass_number == 2

    run_virtual(main)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def start_three(net: Nodes, **changes: object) -> tuple[Node, Node, Node]:
    options = {**QUIET, **changes}
    a = await net.add("a", "10.0.0.1", **options)
    b = await net.add("b", "10.0.0.2", peers=("10.0.0.1:7000",), **options)
    c = await net.add("c", "10.0.0.3", peers=("10.0.0.1:7000",), **options)
    for node in (a, b, c):
        await node.wait_for_peers(2, timeout=60)
    return a, b, c


def test_the_reads_stay_within_the_budget(tmp_path: Path) -> None:
    rate = 8192.0

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            node = await net.add("a", "10.0.0.1", replicas=1, scrub_rate=rate, **QUIET)
            await node.store("f.bin", os.urandom(CHUNK * 20))
            budget = node._rt.scrub.budget
            started = clock.monotonic()
            report = await node.scrub()
            took = clock.monotonic() - started
            assert report.checked == 21
            assert budget.granted == report.bytes  # every byte read was paid for
            assert budget.waits > 0
            # ~86 KiB at 8 KiB/s with one second's burst: the budget made it take its time.
            assert took >= (report.bytes - budget.burst - CHUNK - 64) / rate

    run_virtual(main)


def test_a_restart_resumes_the_pass_at_its_cursor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal")
    rate = 4 * (CHUNK + 16)  # about four blocks a second

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            node = await net.add("a", "10.0.0.1", replicas=1, scrub_rate=rate, **QUIET)
            await node.store("f.bin", os.urandom(CHUNK * 60))
            total = node._rt.blocks.usage()[0]
            assert total == 61
            number = node.start_scrub()
            await wait_for(lambda: node.scrub_status().checked >= 20, timeout=600)
            await net.stop(node)
            saved = json.loads((tmp_path / "a" / STATE_FILE).read_bytes())
            assert saved["started"] is not None
            assert saved["cursor"]
            done_before = saved["checked"]
            assert 20 <= done_before < total

            node = await net.add("a", "10.0.0.1", replicas=1, scrub_rate=rate, **QUIET)
            status = node.scrub_status()
            assert status.pass_number == number
            await wait_for(
                lambda: (
                    (last := node.scrub_status().last) is not None and last.pass_number == number
                ),
                timeout=600,
            )
            last = node.scrub_status().last
            assert last is not None
            assert last.checked == total
            # Resumed where it stopped: what was checked before the restart was not read again.
            assert node._rt.scrub.checked_here == total - done_before

    run_virtual(main)
    no_tracebacks(caplog)


def test_a_damaged_state_file_starts_afresh(tmp_path: Path) -> None:
    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            node = await net.add("a", "10.0.0.1", replicas=1, **QUIET)
            await node.store("f.bin", os.urandom(CHUNK * 3))
            await net.stop(node)
            (tmp_path / "a" / STATE_FILE).write_bytes(b"{not json")
            node = await net.add("a", "10.0.0.1", replicas=1, **QUIET)
            report = await node.scrub()
            assert report.checked == 4
            assert report.pass_number == 1

    run_virtual(main)


def test_a_disk_error_under_the_walk_is_retried_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from shoal.node import scrub as scrub_module

    real = scrub_module.ids_after
    failures = [OSError(errno.EIO, "Input/output error")]

    def flaky(root: Path, after: str | None, limit: int) -> list[bytes]:
        if failures:
            raise failures.pop()
        return real(root, after, limit)

    monkeypatch.setattr(scrub_module, "ids_after", flaky)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            node = await net.add("a", "10.0.0.1", replicas=1, **QUIET)
            await node.store("f.bin", os.urandom(CHUNK * 3))
            started = clock.monotonic()
            report = await node.scrub()
            assert report.checked == 4
            assert clock.monotonic() - started >= scrub_module.RETRY_AFTER

    run_virtual(main)
    assert "scrub pass stopped" in caplog.text


def test_a_pass_asked_for_while_one_runs_starts_over_and_checks_everything(
    tmp_path: Path,
) -> None:
    rate = 4 * (CHUNK + 16)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            node = await net.add("a", "10.0.0.1", replicas=1, scrub_rate=rate, **QUIET)
            await node.store("f.bin", os.urandom(CHUNK * 30))
            first = node.start_scrub()
            await wait_for(lambda: node.scrub_status().checked >= 10, timeout=600)
            assert node.scrub_status().running
            report = await node.scrub()
            assert report.pass_number == first + 1
            assert report.checked == 31  # from the start again, not from where the first was
            assert node._rt.scrub.checked_here >= 41

    run_virtual(main)
