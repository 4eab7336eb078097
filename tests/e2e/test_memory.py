"""Streaming with bounded memory: a file far larger than the memory bound goes through nodes
(CLI → HTTP API → node → peers, and back) without any node holding it whole."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import ShoalNet, ShoalNode

pytestmark = pytest.mark.e2e

MiB = 1 << 20
FILE_SIZE = 320 * MiB  # well above the bound: buffering the file anywhere would break it
RSS_BOUND = 200 * MiB


def peak_rss(node: ShoalNode) -> int:
    assert node.pid is not None
    for line in Path(f"/proc/{node.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


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

    cap = n2.cli("put", str(src), timeout=300).ok().last_line
    out = tmp_path / "back.bin"
    n1.cli("get", cap, "-o", str(out), timeout=300).ok()

    assert out.stat().st_size == FILE_SIZE
    assert sha256_file(out) == expected
    for node in (n1, n2):
        rss = peak_rss(node)
        assert rss < RSS_BOUND, f"{node.name} peaked at {rss / MiB:.0f} MiB"
