"""The README's quick start with real processes: put through one node, kill it, get elsewhere;
and a node that joins afterwards gets the file from the survivors over the network."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import ShoalNet, get_over_network

pytestmark = pytest.mark.e2e

SIZE = 20 * 1024 * 1024
READ_CAP = re.compile(r"^shoal:r:[a-z2-7]{52}:[a-z2-7]{52}$")


def test_quick_start_survives_kill_9_of_the_origin(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    n1, n2, n3 = shoal_net.quick_start()

    # The peers --json contract: node_id, address, state in {"up", "down"}.
    peers = n1.peers()
    assert {p["node_id"] for p in peers} == {n2.node_id, n3.node_id}, peers
    for peer in peers:
        assert {"node_id", "address", "state"} <= peer.keys(), peer
        assert peer["state"] in {"up", "down"}, peer
        assert peer["address"] is None or isinstance(peer["address"], str), peer
    by_id = {p["node_id"]: p for p in n3.peers()}
    # n3 dialed both others at the addresses they listen on.
    assert by_id[n1.node_id]["address"] == n1.listen, by_id
    assert by_id[n2.node_id]["address"] == n2.listen, by_id

    src, data = random_file("picture_1.png", SIZE)
    put = n3.cli("put", str(src)).ok()
    cap = put.last_line
    assert READ_CAP.match(cap), put.describe()
    assert "warning" not in put.stderr, put.describe()  # three nodes up: all three copies

    # The ls --json contract on the node the file was put through.
    listing = n3.files()
    assert [(f["name"], f["cap"], f["size"]) for f in listing] == [("picture_1.png", cap, SIZE)]

    n3.kill9()
    # A SIGKILLed node leaves a stale api.json behind: the CLI says so in one line.
    stale = n3.cli("status")
    assert stale.code == 1, stale.describe()
    assert len(stale.error_lines) == 1, stale.describe()
    assert "shoal run" in stale.error_lines[0], stale.describe()

    # The survivors notice: n3 is reported "down", and they still see each other "up".
    shoal_net.wait_states(n1, {n2: "up", n3: "down"})
    shoal_net.wait_states(n2, {n1: "up", n3: "down"})

    out = tmp_path / "out.png"
    n1.cli("get", cap, "-o", str(out)).ok()
    assert out.read_bytes() == data
    missing = n1.cli("get", "picture_1.png", "-o", str(tmp_path / "by-name.png"))
    assert missing.code == 1, missing.describe()  # by name needs the catalog that had it (n3's)
    assert not (tmp_path / "by-name.png").exists()

    # With three nodes and three copies, every node holds every block: n1 read its own. A node
    # that joins now holds none, so its get proves the survivors serve the file over the
    # network after its origin died.
    file_blocks = n1.block_ids() | n2.block_ids() | n3.block_ids()
    assert n1.block_ids() == n2.block_ids() == file_blocks, "R=3 on three nodes: all hold all"
    n4 = shoal_net.start("n4", peers=[n1])
    shoal_net.wait_states(n4, {n1: "up", n2: "up"})
    fetched = get_over_network(n4, cap, data, file_blocks, tmp_path / "out4.png")
    assert fetched == file_blocks  # every block came from n1 or n2
