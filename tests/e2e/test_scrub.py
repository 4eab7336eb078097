"""Scrub with real ``shoal run`` processes: bit rot on disk is found and repaired.

What is proved, as a user sees it:
- Blocks whose bytes rot on disk under an intact mtime (so the store's stamp still vouches for
  them) on two of four nodes: every file still reads back bit for bit through every node (a
  node serving a rotten copy moves it aside, the reader asks another holder); ``shoal scrub``
  on each node finds the rot no read met and fetches every rotten block again from a holder:
  each file on disk is intact again, the rotten copy is in ``corrupt/``, and nothing else
  changed (every node holds the same blocks as before, the counts in ``shoal scrub --json``
  and ``shoal status`` say what happened).
- With a short ``--scrub-interval``, the background pass does the same with no command.

How it works: R = 3 on four nodes, so every block has three holders; the rot is put on at most
one holder of each block (one byte flipped in place, the mtime put back).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from shoal.ids import decode_id
from tests.e2e.conftest import ShoalNet, ShoalNode

pytestmark = pytest.mark.e2e

MiB: Final = 1 << 20
FAST: Final = ("--scrub-rate", "256MiB")


def block_path(node: ShoalNode, name: str) -> Path:
    return node.data_dir / "blocks" / name[0:2] / name[2:4] / name


def rot(node: ShoalNode, name: str) -> None:
    """Flip one byte of a block file in place and put its mtime back: bit rot below the file
    system, which the store's mtime stamp cannot see."""
    path = block_path(node, name)
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def intact(node: ShoalNode, name: str) -> bool:
    path = block_path(node, name)
    return path.exists() and hashlib.sha256(path.read_bytes()).digest() == decode_id(name)


def quarantined(node: ShoalNode) -> set[str]:
    """Block names in ``corrupt/`` (files are named ``<id>.<time>.<random>``)."""
    corrupt = node.data_dir / "blocks" / "corrupt"
    return {p.name.split(".")[0] for p in corrupt.iterdir()} if corrupt.exists() else set()


def scrub(node: ShoalNode) -> dict[str, Any]:
    report = node.json("scrub")
    assert isinstance(report, dict), report
    return report


def test_rotten_blocks_are_read_around_and_replaced_by_shoal_scrub(
    shoal_net: ShoalNet,
    random_file: Callable[[str, int], tuple[Path, bytes]],
    tmp_path: Path,
) -> None:
    nodes = shoal_net.mesh("n1", "n2", "n3", "n4", args=FAST)
    n1, n2, n3, n4 = nodes
    files = {}
    for i in range(3):
        src, data = random_file(f"f{i}.bin", 3 * MiB + 1000 * i)
        files[n1.cli("put", str(src)).ok().last_line] = data
    before = {node.name: node.block_ids() for node in nodes}
    assert all(len(held) >= 4 for held in before.values()), before

    # Rot on n1 and on n2, never on two holders of one block.
    on_n1 = sorted(before["n1"])[:3]
    on_n2 = sorted(before["n2"] - set(on_n1))[:3]
    assert len(on_n2) == 3
    for name in on_n1:
        rot(n1, name)
    for name in on_n2:
        rot(n2, name)
    assert not any(intact(n1, name) for name in on_n1)

    # Every file reads back bit for bit through every node but n2. n1 meets its rotten
    # copies on the way, moves them aside and reads a holder's; n2 moves aside those of its
    # rotten copies it was asked to serve (the readers then ask another holder).
    for node in (n1, n3, n4):
        for i, (cap, data) in enumerate(files.items()):
            assert node.get_bytes(cap, tmp_path / f"{node.name}-{i}.bin") == data
    assert quarantined(n1) == set(on_n1)
    # Moved aside; the background repair may already have copied an intact one back.
    assert all(not block_path(n1, name).exists() or intact(n1, name) for name in on_n1)
    served = quarantined(n2)
    assert served <= set(on_n2)
    # More rot on n2 that no read has met: only hashing can find it.
    later = sorted(before["n2"] - set(on_n1) - set(on_n2))[:2]
    assert len(later) == 2
    for name in later:
        rot(n2, name)
    rotten_n2 = set(on_n2) | set(later)

    found = {node.name: scrub(node) for node in nodes}
    # n1's copies were moved aside by the reads: fetched again (unless the background repair
    # did it first). n2's unread ones were found by hashing (repair's presence check trusts the
    # unchanged mtime: only hashing finds them); all of them were fetched again.
    assert found["n1"]["corrupt"] == 0, found["n1"]
    assert found["n1"]["replaced"] <= 3, found["n1"]
    n2_found = len(rotten_n2 - served)
    assert n2_found >= 2
    assert found["n2"]["corrupt"] == n2_found, found["n2"]
    assert n2_found <= found["n2"]["replaced"] <= 5, found["n2"]
    for node in (n3, n4):
        assert (found[node.name]["corrupt"], found[node.name]["replaced"]) == (0, 0)
    for node in nodes:
        report = found[node.name]
        assert report["checked"] == len(before[node.name]), report
        assert report["unreplaced"] == 0

    # Whole again, the evidence kept, nothing else changed.
    assert all(intact(n1, name) for name in on_n1)
    assert all(intact(n2, name) for name in rotten_n2)
    assert quarantined(n1) == set(on_n1)
    assert quarantined(n2) == rotten_n2
    for node in nodes:
        assert node.block_ids() == before[node.name]
        assert all(intact(node, name) for name in before[node.name])
    status = n2.status()["scrub"]
    assert status["running"] is False
    assert status["last"] == found["n2"]
    text = n2.cli("status").ok().stdout
    assert f"pass {found['n2']['pass']} finished" in text
    assert f"{n2_found} corrupt, {found['n2']['replaced']} replaced" in text
    for node in nodes:
        for i, (cap, data) in enumerate(files.items()):
            assert node.get_bytes(cap, tmp_path / f"after-{node.name}-{i}.bin") == data
        assert node.alive
        assert "Traceback" not in node.stderr_text()


def test_the_background_pass_replaces_rotten_blocks_by_itself(
    shoal_net: ShoalNet,
    random_file: Callable[[str, int], tuple[Path, bytes]],
    tmp_path: Path,
) -> None:
    nodes = shoal_net.mesh("n1", "n2", "n3", args=(*FAST, "--scrub-interval", "3"))
    n1 = nodes[0]
    src, data = random_file("f.bin", 2 * MiB)
    cap = n1.cli("put", str(src)).ok().last_line
    held = sorted(n1.block_ids())
    rotten = held[:2]
    for name in rotten:
        rot(n1, name)

    def replaced() -> tuple[bool, dict[str, Any]]:
        done = all(intact(n1, name) for name in rotten) and quarantined(n1) == set(rotten)
        return done, n1.status()["scrub"]

    shoal_net.wait(replaced, what="n1's background scrub to replace the rotten blocks")
    assert n1.block_ids() == set(held)
    for node in nodes:
        assert node.get_bytes(cap, tmp_path / f"{node.name}.bin") == data
        assert "Traceback" not in node.stderr_text()
