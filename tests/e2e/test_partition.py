"""A partition heals by itself: a host cut off while a put happens gets its copies once it is
back, with no restart and no command.

What is proved, as a user sees it: four nodes, one per host (network namespaces on one bridge,
each with its own address, finding each other by mDNS). One host's link goes down; the others
see it down; a put on another host places every block on the three live nodes (placement uses
the live closest nodes). The link comes back: the same process reconnects, is again among the
three nodes closest to some of the file's blocks, and the others' handoff pass (rebalancing,
``--handoff-interval`` shortened) sends it exactly those, intact, within a bounded wait;
nobody lost a block.

Needs root and iproute2 (as ``test_hosts.py``); without them the test skips, saying which is
missing. Every wait polls a condition against a deadline; the time the heal took is printed,
never asserted.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from shoal.ids import decode_id
from shoal.transport.routing import by_distance
from tests.e2e.conftest import NET_KEY
from tests.e2e.netns import NamespacedNode, lan, skip_without_netns
from tests.e2e.test_hosts import HostsNet, wait_mesh

pytestmark = pytest.mark.e2e

SUBNET: Final = "10.78.0"
MEMBERS: Final = 4
#: Bound on the nodes seeing a cut (or healed) host down (or up).
MESH_TIMEOUT: Final = 90.0
#: Bound on the handoff bringing the healed host its blocks (passes every 3 s).
HEAL_TIMEOUT: Final = 120.0
HANDOFF: Final = ("--handoff-interval", "3")
MiB: Final = 1 << 20


@pytest.fixture
def hosts(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HostsNet]:
    skip_without_netns()
    with lan(MEMBERS, SUBNET) as the_lan:
        net = HostsNet(tmp_path, the_lan)
        request.node.stash[NET_KEY] = net
        try:
            yield net
        finally:
            net.close()


def start_members(net: HostsNet) -> list[NamespacedNode]:
    """One closed network, one member per host, found by mDNS, with a short handoff interval."""
    members = [net.host_node(i, f"m{i + 1}") for i in range(MEMBERS)]
    for member in members[1:]:
        shutil.copyfile(members[0].data_dir / "network.key", member.data_dir / "network.key")
    for member in members:
        member.launch(listen=f"{member.namespace.address}:0", args=HANDOFF)
    for member in members:
        member.wait_ready()
    return members


def intact(node: NamespacedNode, name: str) -> bool:
    path = node.data_dir / "blocks" / name[0:2] / name[2:4] / name
    return path.exists() and hashlib.sha256(path.read_bytes()).digest() == decode_id(name)


def test_a_host_cut_off_during_a_put_gets_its_copies_when_it_is_back(
    hosts: HostsNet,
    random_file: Callable[[str, int], tuple[Path, bytes]],
    tmp_path: Path,
) -> None:
    members = start_members(hosts)
    wait_mesh(hosts, members)
    cut, rest = members[-1], members[:-1]
    pid = cut.pid

    hosts.lan.cut(cut.namespace)
    for node in rest:
        hosts.wait_states(node, {cut: "down"}, timeout=MESH_TIMEOUT)

    # The put while the host is away: every block on the three live nodes.
    files = {}
    for i in range(3):
        src, data = random_file(f"while-cut-{i}.bin", 3 * MiB + 100 * i)
        files[rest[0].cli("put", str(src)).ok().last_line] = data
    file_blocks = set.intersection(*(node.block_ids() for node in rest))
    assert len(file_blocks) >= 12, file_blocks
    assert not cut.block_ids() & file_blocks
    before = {node.name: node.block_ids() for node in rest}

    # What placement says the cut host holds once it is back: blocks it is among the 3
    # closest nodes to, out of the 4.
    ids = [decode_id(str(node.node_id)) for node in members]
    cut_id = decode_id(str(cut.node_id))
    owed = {name for name in file_blocks if cut_id in by_distance(decode_id(name), ids)[:3]}
    assert owed, "the cut host is among the closest of none of the blocks: nothing to test"

    hosts.lan.restore(cut.namespace)
    started = time.monotonic()
    wait_mesh(hosts, members)

    def handed_over() -> tuple[bool, list[str]]:
        missing = sorted(owed - cut.block_ids())
        return not missing, missing

    hosts.wait(handed_over, what="the healed host to receive its blocks", timeout=HEAL_TIMEOUT)
    print(f"the healed host held its blocks {time.monotonic() - started:.1f} s after its link")
    assert cut.pid == pid
    assert cut.alive
    assert cut.starts == 1
    assert all(intact(cut, name) for name in owed)
    # Copies, not moves: the others keep everything they had.
    for node in rest:
        assert before[node.name] <= node.block_ids()
    # The healed host reads the files from its own copies and its peers.
    for i, (cap, data) in enumerate(files.items()):
        assert cut.get_bytes(cap, tmp_path / f"healed-{i}.bin") == data
    for node in members:
        assert "Traceback" not in node.stderr_text()
