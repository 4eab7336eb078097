"""A frozen peer (SIGSTOP: its sockets stay open, it answers nothing) costs a put a few
seconds in all, not the request timeout once per block; the frozen node comes back on SIGCONT."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import MiB, ShoalNet, get_over_network

pytestmark = pytest.mark.e2e

SIZE = 20 * MiB  # 20 chunks of 1 MiB: about 15 of them have the frozen node among
# their 3 closest nodes (each of 4 nodes is among the 3 closest of a block with odds 3/4).

REQUEST_TIMEOUT = 30.0  # shoal.defaults.REQUEST_TIMEOUT, the wait the put must not pay per block
PUT_BOUND = 25.0
"""Bound on the put, as the command's timeout (not a timing assert: it only bounds failure).

A 20 MiB put takes 1-3 s on this 2-core machine, and the frozen node may add a few seconds
(stall detection: 2 s of silence, then 2 s for a PING). Waiting the 30 s request timeout even
once would exceed this bound, and once per block (about 15 blocks, 8 in flight at a time, so at
least two rounds: 60 s or more) far more so.
"""


def test_a_frozen_holder_neither_stalls_the_put_nor_loses_the_file(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    assert PUT_BOUND < REQUEST_TIMEOUT
    n1, n2, n3, n4 = shoal_net.mesh("n1", "n2", "n3", "n4")
    assert n4.block_ids() == set()
    src, data = random_file("during-freeze.bin", SIZE)

    n4.freeze()
    put = n1.cli("put", str(src), timeout=PUT_BOUND).ok()
    cap = put.last_line

    # What was placed, read from the data dirs: the frozen node wrote nothing, so the file's
    # blocks are exactly what the three live nodes hold (they held nothing before).
    assert n4.block_ids() == set(), "a SIGSTOPped process wrote block files"
    live = (n1, n2, n3)
    copies = Counter(block for node in live for block in node.block_ids())
    file_blocks = set(copies)
    assert len(file_blocks) >= SIZE // MiB + 1, len(file_blocks)  # the chunks and a root
    # Three live nodes can take three copies of every block: a block whose three closest
    # nodes included the frozen one went to the spare node instead (a replacement holder).
    # So the put reports every copy it wanted, and says nothing about fewer.
    assert sorted(set(copies.values())) == [3], (sorted(copies.values()), put.describe())
    assert "warning" not in put.stderr, put.describe()
    assert [(f["name"], f["cap"], f["size"]) for f in n1.files()] == [
        ("during-freeze.bin", cap, SIZE)
    ]

    # A get through a third node while the fourth is still frozen.
    assert n3.get_bytes(cap, tmp_path / "from-n3.bin") == data

    # Resumed, the node is seen up again by everyone, and sees everyone up.
    n4.thaw()
    for node in live:
        shoal_net.wait_states(node, {n4: "up"})
    shoal_net.wait_states(n4, dict.fromkeys(live, "up"))
    # It missed the file while frozen: a get through it fetches the blocks from its peers.
    get_over_network(n4, cap, data, file_blocks, tmp_path / "from-n4.bin")
    assert n4.status()["node_id"] == n4.node_id
