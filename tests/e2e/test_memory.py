"""Streaming with bounded memory: a file far larger than the memory bound goes through nodes
(CLI → HTTP API → node → peer, then peers → another node → HTTP API → CLI) without any node
holding it whole."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import MiB, ShoalNet

pytestmark = pytest.mark.e2e

FILE_SIZE = 320 * MiB  # well above the bound: buffering the file anywhere would break it
RSS_BOUND = 200 * MiB


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // (4 * MiB)):
            piece = os.urandom(4 * MiB)
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(4 * MiB):
            digest.update(piece)
    return digest.hexdigest()


def test_large_file_round_trip_keeps_node_memory_bounded(
    shoal_net: ShoalNet, tmp_path: Path
) -> None:
    n1 = shoal_net.start("n1")
    n2 = shoal_net.start("n2", peers=[n1])
    shoal_net.wait_states(n1, {n2: "up"})
    shoal_net.wait_states(n2, {n1: "up"})
    src = tmp_path / "big.bin"
    expected = write_random(src, FILE_SIZE)

    # In through n2's API; out to n1 over the network (n2 sends every block to n1).
    cap = n2.cli("put", str(src), timeout=300).ok().last_line
    file_blocks = n2.block_ids()
    assert n1.block_ids() == file_blocks, "two nodes, three copies wanted: both hold all"

    # Back through a node that joins now: the blocks it lacks cross the network (n1 and n2
    # serve them, n3 receives them), then go out through n3's API.
    n3 = shoal_net.start("n3", peers=[n1, n2])
    shoal_net.wait_states(n3, {n1: "up", n2: "up"})
    # Repair may start giving n3 the third copies it now has room for (throttled); most
    # blocks still cross the network at the get.
    lacked = file_blocks - n3.block_ids()
    assert len(lacked) > len(file_blocks) // 2, "n3 already held most of the file"
    out = tmp_path / "back.bin"
    n3.cli("get", cap, "-o", str(out), timeout=300).ok()

    assert out.stat().st_size == FILE_SIZE
    assert sha256_file(out) == expected
    for node in (n1, n2, n3):
        peak = node.memory().peak
        assert peak < RSS_BOUND, f"{node.name} peaked at {peak / MiB:.0f} MiB"
