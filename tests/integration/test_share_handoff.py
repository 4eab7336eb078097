"""Erasure shares and the handoff, on real nodes over real sockets (real files, real SQLite).

The handoff places a block on the R nodes closest to its own ID; a share belongs on one of the
N nodes closest to its stripe's ID. So the handoff must leave shares alone (or a 3-of-5 file
would cost up to 5 + 5 * R copies), while it still moves replicated blocks; and stripe repair
is what moves shares when nodes join (``docs/decisions/0012-erasure-share-marks.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from shoal import Node
from shoal.content import Redundancy, Stripe, parse_cap
from shoal.ids import sha256
from shoal.node.get import walk_block_ids
from shoal.node.repair_plan import rank_by_distance
from shoal.protocol import PutBlock, PutBlockOk
from tests.integration.conftest import FAST, Cluster
from tests.integration.test_erasure import holders, stripes_of

ERASURE = Redundancy.erasure(3, 5)
# Small chunks: many stripes and blocks. No background handoff or repair: the test runs each
# pass itself.
OPTIONS = dataclasses.replace(
    FAST,
    chunk_size=64 * 1024,
    handoff_interval=1e6,
    handoff_settle=1e6,
    repair_interval=1e6,
    repair_settle=1e6,
)


async def add_nodes(cluster: Cluster, names: list[str], peer: str | None) -> list[Node]:
    return [
        await cluster.add(name, peers=[peer] if peer else [], options=OPTIONS, replicas=3)
        for name in names
    ]


def share_copies(nodes: list[Node], stripes: list[Stripe]) -> int:
    return sum(len(holders(nodes, s)) for stripe in stripes for s in stripe.ids)


async def handoff_everywhere(nodes: list[Node]) -> int:
    """One handoff pass on every node; the blocks pushed."""
    pushed = 0
    for node in nodes:
        handoff = node._rt.handoff
        assert handoff is not None
        before = handoff.stats.pushed
        await handoff.run_pass()
        pushed += handoff.stats.pushed - before
    return pushed


async def test_handoff_moves_replicated_blocks_but_not_shares_and_repair_moves_shares(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    first = (await add_nodes(cluster, ["n0"], None))[0]
    nodes = [first, *await add_nodes(cluster, ["n1", "n2", "n3", "n4"], first.listen_address)]
    for node in nodes:
        await node.wait_for_peers(4, timeout=20)
    coded = await first.store("coded.bin", random_bytes(700_000), redundancy=ERASURE)
    plain = await first.store("plain.bin", random_bytes(600_000))
    stripes = await stripes_of(first, coded)
    assert len(stripes) == 11
    plain_blocks = [b async for b in walk_block_ids(first._rt, parse_cap(plain).cid)]
    assert len(plain_blocks) >= 10
    # The put placed each share once, on distinct nodes, and each holder marked it a share.
    for stripe in stripes:
        for share_id in stripe.ids:
            (holder,) = holders(nodes, share_id)
            assert holder._rt.leases.shares_among([share_id]) == {share_id}
    for block_id in plain_blocks:
        for holder in holders(nodes, block_id):
            assert holder._rt.leases.shares_among([block_id]) == set()
    stored_before = {n.node_id: set(n._rt.blocks.ids()) for n in nodes}

    # Three nodes join: the closest sets of blocks and stripes change.
    nodes += await add_nodes(cluster, ["n5", "n6", "n7"], first.listen_address)
    for node in nodes:
        await node.wait_for_peers(7, timeout=20)
    pushed = await handoff_everywhere(nodes)
    pushed += await handoff_everywhere(nodes)

    # Replicated blocks moved: each is on the three nodes now closest to it (the test fails
    # if the handoff does nothing: some closest set gained a new node).
    assert pushed > 0
    ids = [n._rt.node_id for n in nodes]
    for block_id in plain_blocks:
        closest = set(rank_by_distance(block_id, ids)[:3])
        assert closest <= {n._rt.node_id for n in holders(nodes, block_id)}
    # Shares did not: still one copy each, 5 per stripe, not copied R times.
    assert share_copies(nodes, stripes) == 5 * len(stripes)
    assert all(n._rt.handoff.stats.shares > 0 for n in nodes[:5] if n._rt.handoff)

    # Repair (the owner's pass) moves shares where stripe placement now says: each of the 5
    # nodes closest to a stripe holds one of its shares. It copies: nothing was deleted.
    report = await first.repair()
    rebuilt = report.to_json()["copied"]
    assert rebuilt > 0
    for stripe in stripes:
        placement = rank_by_distance(stripe.stripe_id, ids)[:5]
        held = {
            node_id: [s for s in stripe.ids if holders([by_id(nodes, node_id)], s)]
            for node_id in placement
        }
        assert all(len(shares) >= 1 for shares in held.values()), "a placement node lacks one"
        assert len({s for shares in held.values() for s in shares}) == 5
        for node_id, shares in held.items():
            node = by_id(nodes, node_id)
            assert node._rt.leases.shares_among(shares) == set(shares)
    assert share_copies(nodes, stripes) <= 5 * len(stripes) + rebuilt
    for node in nodes[:5]:
        assert stored_before[node.node_id] <= set(node._rt.blocks.ids())
    # The shares repair placed are not spread further by the next handoff passes.
    copies = share_copies(nodes, stripes)
    await handoff_everywhere(nodes)
    assert share_copies(nodes, stripes) == copies
    assert (await first.check(coded)).min_copies == 5


def by_id(nodes: list[Node], node_id: bytes) -> Node:
    return next(n for n in nodes if n._rt.node_id == node_id)


async def test_a_share_mark_applies_only_to_a_block_the_put_wrote(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    """A sender marks as a share only a block it stored first: a block the receiver already
    held stays what it was, so a stranger cannot stop the handoff of someone else's block."""
    receiver = (await add_nodes(cluster, ["n0"], None))[0]
    (sender,) = await add_nodes(cluster, ["n1"], receiver.listen_address)
    await receiver.wait_for_peers(1, timeout=20)
    cap = await receiver.store("plain.bin", random_bytes(100_000))
    held = [b async for b in walk_block_ids(receiver._rt, parse_cap(cap).cid)]
    assert all(receiver._rt.blocks.has(b) for b in held)
    new = random_bytes(5000)
    new_id = sha256(new)
    conn = await sender._rt.routing.connect(receiver._rt.node_id)
    for block_id, data in [(held[0], receiver._rt.blocks.get(held[0])), (new_id, new)]:
        answer = await conn.request(PutBlock(block_id=block_id, data=data, share=True), timeout=10)
        assert isinstance(answer, PutBlockOk)
    assert receiver._rt.leases.shares_among([*held, new_id]) == {new_id}
    # A PUT_BLOCK without the key (an older sender, a replicated copy) marks nothing.
    other = random_bytes(6000)
    other_id = sha256(other)
    await conn.request(PutBlock(block_id=other_id, data=other), timeout=10)
    assert receiver._rt.blocks.has(other_id)
    assert receiver._rt.leases.shares_among([other_id]) == set()
