"""A node stopped with SIGTERM and started again on the same data dir and port picks up where
it left off: same identity, same catalog, its peers reconnect, and it serves the blocks it
stored before the restart to a node that never had them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ShoalNet

pytestmark = pytest.mark.e2e


def test_restart_on_the_same_data_dir_and_port(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    n1 = shoal_net.start("n1")
    n2 = shoal_net.start("n2", peers=[n1])
    shoal_net.wait_states(n1, {n2: "up"})
    shoal_net.wait_states(n2, {n1: "up"})
    src, data = random_file("before.bin", 5 * 1024 * 1024 + 1)
    cap = n1.cli("put", str(src)).ok().last_line
    address, node_id = n1.listen, n1.node_id
    assert address is not None

    # A clean stop: exit code 0, api.json removed, nothing alarming in the log.
    assert n1.terminate() == 0, n1.stderr_text()
    assert not (n1.data_dir / "api.json").exists()
    assert "Traceback" not in n1.stderr_text(), "a traceback while stopping (see n1's stderr)"
    shoal_net.wait_states(n2, {n1: "down"})

    # Same data dir, same port, no --peer: it is the same node and knows its peer already.
    n1.start(listen=address)
    assert (n1.listen, n1.node_id) == (address, node_id)
    shoal_net.wait_states(n1, {n2: "up"})
    shoal_net.wait_states(n2, {n1: "up"})

    assert [(f["name"], f["cap"]) for f in n1.files()] == [("before.bin", cap)]
    out = tmp_path / "after.bin"
    n1.cli("get", "before.bin", "-o", str(out)).ok()
    assert out.read_bytes() == data

    # It serves what it stored before the restart to its peers. Two nodes hold every block, so
    # the reader is a node that joins now (holding nothing), and n2 stops first: the blocks
    # can only come from the restarted n1.
    file_blocks = n1.block_ids()
    assert n2.block_ids() == file_blocks, "two nodes, three copies wanted: both hold all"
    n3 = shoal_net.start("n3", peers=[n2])
    shoal_net.wait_states(n3, {n1: "up", n2: "up"})
    assert n2.terminate() == 0, n2.stderr_text()
    shoal_net.wait_states(n3, {n1: "up", n2: "down"})
    # n3 held none of the file when it joined: what it reads came from n1 (by this get, or by
    # the repair that gives it the third copies it now has room for).
    assert n3.get_bytes(cap, tmp_path / "from-n3.bin") == data

    # And it takes new files as before, placing copies on its peers.
    src2, data2 = random_file("after.bin", 2 * 1024 * 1024)
    cap2 = n1.cli("put", str(src2)).ok().last_line
    assert n1.get_bytes("after.bin", out) == data2
    assert n3.get_bytes(cap2, tmp_path / "after-from-n3.bin") == data2
    new_blocks = n1.block_ids() - file_blocks
    assert new_blocks, "the new file left no block on n1"
    assert new_blocks <= n3.block_ids(), "n1 did not place a copy of every new block on n3"
