"""Repair with real processes: R=3 on 5 nodes, two holders killed (kill -9), copies made
again by ``shoal repair`` or by the background loop, then a third node killed and every file
read back bit for bit.

Copies are counted in the live nodes' data dirs (block files), and ``shoal check --json``
(with a verify cap) must agree. The files are small (a few KiB each) so the tests stay quick
on two cores.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client.http import Client
from shoal.content import parse_cap
from tests.e2e.conftest import ShoalNet, ShoalNode

pytestmark = pytest.mark.e2e

FILES = 20
REPLICAS = 3


def put_files(
    n0: ShoalNode, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> dict[str, bytes]:
    """Store ``FILES`` small files through ``n0`` in one command; return cap -> bytes."""
    sources = [random_file(f"f{i:02}.bin", 1000 + 517 * i) for i in range(FILES)]
    out = n0.cli("put", *(str(path) for path, _ in sources)).ok()
    caps = [line for line in out.stdout.splitlines() if line.startswith("shoal:r:")]
    assert len(caps) == FILES, out.describe()
    return {cap: data for cap, (_, data) in zip(caps, sources, strict=True)}


def copies(nodes: list[ShoalNode]) -> Counter[str]:
    """How many of ``nodes`` hold each block (block files in their data dirs)."""
    counts: Counter[str] = Counter()
    for node in nodes:
        counts.update(node.block_ids())
    return counts


def start_five(shoal_net: ShoalNet, *, delay: float) -> list[ShoalNode]:
    """n0, then n1..n4 with ``--peer`` to n0 (a star: quicker to wait for than a mesh; the
    DHT finds the rest), until n0 sees the four up."""
    args = ("--replicas", str(REPLICAS), "--repair-delay", str(delay))
    n0 = shoal_net.start("n0", args=args)
    others = [shoal_net.start(f"n{i}", peers=[n0], args=args) for i in range(1, 5)]
    shoal_net.wait_states(n0, dict.fromkeys(others, "up"))
    return [n0, *others]


def check_json(node: ShoalNode, cap: str) -> dict[str, object]:
    """``shoal check --json`` with the file's verify cap (exit 0 healthy, 1 not)."""
    verify_cap = str(parse_cap(cap).verify_cap)  # type: ignore[union-attr]
    result = node.cli("check", "--json", verify_cap)
    assert result.code in (0, 1), result.describe()
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    assert report["healthy"] is (result.code == 0), result.describe()
    return report


def kill_and_read_back(
    shoal_net: ShoalNet, nodes: list[ShoalNode], files: dict[str, bytes], tmp_path: Path
) -> None:
    """Kill -9 one more node (not n0); every file reads back through n0 and n1 by cap (one
    with ``shoal get``, the rest through each node's HTTP API: a CLI process per file would
    make the test slow)."""
    n0, n1, third = nodes[0], nodes[1], nodes[2]
    third.kill9()
    (first_cap, first_data), *rest = files.items()
    assert n1.get_bytes(first_cap, tmp_path / "first.bin") == first_data
    with Client.from_data_dir(n0.data_dir) as c0, Client.from_data_dir(n1.data_dir) as c1:
        for i, (cap, data) in enumerate(rest):
            out = tmp_path / f"back{i}.bin"
            (c0 if i % 2 == 0 else c1).get(cap, out)
            assert out.read_bytes() == data, f"file {i} differs"


def every_block_has_three(live: list[ShoalNode], blocks: set[str]) -> tuple[bool, dict[str, int]]:
    counts = copies(live)
    short = {b[:12]: counts[b] for b in blocks if counts[b] < REPLICAS}
    return not short, short


def test_shoal_repair_restores_three_copies(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    nodes = start_five(shoal_net, delay=3600)  # the background loop would wait an hour
    files = put_files(nodes[0], random_file)
    blocks = set(copies(nodes))
    assert all(n >= REPLICAS for n in copies(nodes).values())
    nodes[3].kill9()
    nodes[4].kill9()
    live = nodes[:3]
    done, short = every_block_has_three(live, blocks)
    assert not done, "two of five nodes held no block: the test proves nothing"
    result = nodes[0].cli("repair", "--json", timeout=120)
    assert result.code == 0, result.describe()
    report = json.loads(result.stdout)
    assert report["files"] == FILES
    # The loop's early pass (last copies at once) or the handoff may have made some of the
    # copies since `short` was counted; the repair made the rest.
    assert 0 < report["copied"] <= len(short) * REPLICAS
    assert report["unrepaired"] == []
    done, short = every_block_has_three(live, blocks)
    assert done, f"blocks with fewer than {REPLICAS} copies on the live nodes: {short}"
    first = next(iter(files))
    health = check_json(nodes[1], first)
    assert health["healthy"] is True
    assert health["min_copies"] == REPLICAS
    # The text forms and the exit codes: 0 healthy, 1 an unknown name, 2 a malformed cap.
    assert "healthy" in nodes[0].cli("check", "f00.bin").ok().stdout
    assert "copied 0 block(s)" in nodes[0].cli("repair", "f00.bin").ok().stdout
    unknown = nodes[0].cli("check", "no-such-file")
    assert unknown.code == 1
    assert unknown.error_lines, unknown.describe()
    assert nodes[0].cli("check", "shoal:v:not-a-cap").code == 2
    kill_and_read_back(shoal_net, nodes, files, tmp_path)


def test_background_repair_restores_three_copies(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    nodes = start_five(shoal_net, delay=2)
    files = put_files(nodes[0], random_file)
    blocks = set(copies(nodes))
    nodes[3].kill9()
    nodes[4].kill9()
    live = nodes[:3]
    # No command: the nodes' repair loops notice the absent nodes and copy after the delay.
    shoal_net.wait(
        lambda: every_block_has_three(live, blocks),
        what=f"every block to have {REPLICAS} copies on the live nodes",
        timeout=90,
    )
    shoal_net.wait(
        lambda: (check_json(nodes[0], next(iter(files)))["healthy"] is True, None),
        what="shoal check to call the file healthy",
    )
    status = nodes[0].status()
    assert status["files_lost"] == 0
    kill_and_read_back(shoal_net, nodes, files, tmp_path)


def test_owner_gone_the_holders_restore_three_copies(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    nodes = start_five(shoal_net, delay=2)
    n0 = nodes[0]
    files = put_files(n0, random_file)
    blocks = set(copies(nodes))
    # The owner goes away for good, and one more holder with it. The others keep no catalog
    # entry: they find the files through the leases on the roots they hold.
    n0.kill9()
    nodes[1].kill9()
    live = nodes[2:]
    assert all(node.files() == [] for node in live)
    shoal_net.wait(
        lambda: every_block_has_three(live, blocks),
        what=f"every block to have {REPLICAS} copies on the three nodes left",
        timeout=90,
    )
    (first_cap, first_data), *rest = files.items()
    assert live[0].get_bytes(first_cap, tmp_path / "first.bin") == first_data
    clients = [Client.from_data_dir(node.data_dir) for node in live]
    try:
        for i, (cap, data) in enumerate(rest):
            out = tmp_path / f"back{i}.bin"
            clients[i % len(clients)].get(cap, out)
            assert out.read_bytes() == data, f"file {i} differs"
    finally:
        for client in clients:
            client.close()
