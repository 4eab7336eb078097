"""Leases and garbage collection with real ``shoal run`` processes (``docs/leases.md``).

The nodes run with ``--gc-grace 1 --pending-lease 1``: a block no live lease holds may go one
second after its last lease ended, and a put's pending leases last one second. Every wait
polls a condition (``shoal gc`` until the blocks are gone) against a deadline.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.ids import decode_id
from shoal.node.datadir import load_data_dir
from shoal.protocol import (
    NEED_DATA,
    Lease,
    Leased,
    Message,
    Release,
    Released,
    ResponseReceived,
)
from tests.e2e.conftest import SHOAL, MiB, ShoalNet, ShoalNode, shoal_env
from tests.e2e.rogue import RoguePeer

pytestmark = pytest.mark.e2e

QUICK_GC = ("--gc-grace", "1", "--pending-lease", "1", "--replicas", "3")
RandomFile = Callable[[str, int], tuple[Path, bytes]]


def cid_text(cap: str) -> str:
    return cap.split(":")[2]


def gc_until_gone(net: ShoalNet, nodes: list[ShoalNode], gone: set[str]) -> None:
    """Run ``shoal gc`` on each node until none of them holds any of ``gone``."""
    for node in nodes:

        def check(node: ShoalNode = node) -> tuple[bool, object]:
            result = node.json("gc")
            left = node.block_ids() & gone
            return not left, {"gc": result, "left": len(left)}

        net.wait(check, what=f"{node.name} to free {len(gone)} block(s)")


def test_rm_then_gc_frees_every_holder_but_keeps_a_file_pinned_by_another_owner(
    shoal_net: ShoalNet, random_file: RandomFile, tmp_path: Path
) -> None:
    nodes = shoal_net.mesh("n1", "n2", "n3", args=QUICK_GC)
    n1, n2, n3 = nodes
    shared_src, shared = random_file("shared.bin", 3 * MiB + 17)
    solo_src, _ = random_file("solo.bin", 2 * MiB + 5)
    shared_cap = n1.cli("put", str(shared_src)).ok().last_line
    before_solo = {n.name: n.block_ids() for n in nodes}
    n1.cli("put", str(solo_src)).ok()
    solo_blocks = n1.block_ids() - before_solo["n1"]
    shared_blocks = before_solo["n1"]
    assert solo_blocks
    assert all(solo_blocks <= n.block_ids() for n in nodes), "R=3 on 3 nodes"

    pinned = n2.json("pin", shared_cap, "--name", "mine")
    assert pinned["blocks"] == len(shared_blocks)
    used_before = [n.status()["bytes"] for n in nodes]

    n1.cli("rm", "shared.bin").ok()
    n1.cli("rm", "solo.bin").ok()
    gc_until_gone(shoal_net, nodes, solo_blocks)
    for node, used in zip(nodes, used_before, strict=True):
        assert node.status()["bytes"] < used - 2 * MiB, f"{node.name} freed no space"
        assert shared_blocks <= node.block_ids(), f"{node.name} lost a block n2 keeps"

    def held_for_others() -> tuple[bool, int]:
        # Held for n2 only now. The figure is recounted at most every 30 s: wait for it.
        held = int(n3.status()["bytes_for_others"])
        return held > 3 * MiB, held

    shoal_net.wait(held_for_others, what="n3 to count the pinned file as held for others")
    assert n3.get_bytes(shared_cap, tmp_path / "shared-from-n3.bin") == shared
    assert n1.get_bytes(shared_cap, tmp_path / "shared-from-n1.bin") == shared

    # And once its last owner lets go, it is freed everywhere too.
    n2.cli("rm", "mine").ok()
    gc_until_gone(shoal_net, nodes, shared_blocks)


def test_kill_9_during_a_put_frees_its_blocks_and_keeps_a_finished_put(
    shoal_net: ShoalNet, random_file: RandomFile, tmp_path: Path
) -> None:
    nodes = shoal_net.mesh("n1", "n2", "n3", args=QUICK_GC)
    n1, n2, n3 = nodes
    good_src, good = random_file("good.bin", 2 * MiB + 3)
    good_cap = n1.cli("put", str(good_src)).ok().last_line
    kept = {n.name: n.block_ids() for n in nodes}
    big_src, _ = random_file("big.bin", 96 * MiB)
    put = subprocess.Popen(
        [*SHOAL, "put", "--data-dir", str(n1.data_dir), str(big_src)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=shoal_env(),
    )
    try:

        def some_placed() -> tuple[bool, int]:
            new = len(n2.block_ids() - kept["n2"])
            return new >= 4, new

        shoal_net.wait(some_placed, what="the big put to place a few blocks on n2")
        assert put.poll() is None, "the put finished before the kill: use a bigger file"
        n1.kill9()
        assert put.wait(timeout=60) != 0
    finally:
        if put.poll() is None:
            put.kill()
            put.wait()
    partial = set().union(*(n.block_ids() - kept[n.name] for n in nodes))
    assert partial

    n1.start(listen=n1.listen or "127.0.0.1:0", args=QUICK_GC)
    for node in nodes:
        shoal_net.wait_states(node, {o: "up" for o in nodes if o is not node})
    assert all(f["name"] != "big.bin" for f in n1.files())
    gc_until_gone(shoal_net, nodes, partial)
    for node in nodes:
        assert node.block_ids() == kept[node.name], f"{node.name} lost a block of good.bin"
    assert n3.get_bytes(good_cap, tmp_path / "good-from-n3.bin") == good
    assert n1.get_bytes("good.bin", tmp_path / "good-from-n1.bin") == good


def ask(rogue: RoguePeer, message: Message) -> Message:
    """Send one request as the rogue and read until its answer comes (the node's own
    requests to the rogue are left unanswered)."""
    request_id = rogue.conn.send_request(message)
    rogue.flush()
    while True:
        event = rogue.conn.next_event()
        rogue.flush()  # PONGs the connection queued by itself
        if isinstance(event, ResponseReceived) and event.request_id == request_id:
            return event.message
        if event is NEED_DATA:
            data = rogue.sock.recv(65536)
            assert data, "the node closed the connection"
            rogue.conn.receive_data(data)


def test_a_stranger_cannot_make_a_node_drop_data(
    shoal_net: ShoalNet, random_file: RandomFile, tmp_path: Path
) -> None:
    nodes = shoal_net.mesh("n1", "n2", "n3", args=QUICK_GC)
    n1, n2, n3 = nodes
    src, data = random_file("precious.bin", 2 * MiB + 9)
    cap = n1.cli("put", str(src)).ok().last_line
    blocks = n2.block_ids()
    root = decode_id(cid_text(cap))
    assert n1.node_id is not None
    assert n2.listen is not None
    owner = decode_id(n1.node_id)

    # An insider with another key: it holds the network secret, as anyone invited does.
    rogue = RoguePeer(n2.listen, load_data_dir(n2.data_dir).network)
    try:
        assert ask(rogue, Release(root=root)) == Released(count=0)
        ids = tuple(decode_id(b) for b in sorted(blocks))
        forged = ask(rogue, Lease(root=root, seconds=0, block_ids=ids, owner=owner))
        assert isinstance(forged, Leased)  # it may only keep data alive, never shorten
        # The rows it sent are n1's, not its own: its RELEASE still drops nothing.
        assert ask(rogue, Release(root=root)) == Released(count=0)
    finally:
        rogue.close()

    freed = n2.json("gc")
    assert freed["blocks"] == 0, freed
    assert n2.block_ids() == blocks
    # n2 alone serves the file: its copies are all there and intact.
    for other in (n1, n3):
        assert other.terminate() == 0
    assert n2.get_bytes(cap, tmp_path / "precious-from-n2.bin") == data
