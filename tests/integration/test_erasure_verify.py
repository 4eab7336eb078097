"""``check --verify`` on an erasure-coded file downloads and hashes every share (real nodes,
real sockets, real files): a share rotted below the file system's notice is not a live copy."""

from __future__ import annotations

from collections.abc import Callable

from shoal import Node
from shoal.content import parse_cap
from tests.integration.conftest import Cluster
from tests.integration.test_erasure import holders, stripes_of
from tests.integration.test_share_handoff import ERASURE, OPTIONS
from tests.unit.node.test_scrub import rot


async def test_verify_downloads_every_share_and_counts_a_rotten_one_out(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    first = await cluster.add("n0", options=OPTIONS)
    nodes: list[Node] = [first]
    for i in range(1, 5):
        nodes.append(await cluster.add(f"n{i}", peers=[first.listen_address], options=OPTIONS))
    for node in nodes:
        await node.wait_for_peers(4, timeout=20)
    data = random_bytes(700_000)
    cap = await first.store("coded.bin", data, redundancy=ERASURE)
    verify_cap = str(parse_cap(cap).verify_cap)  # type: ignore[union-attr]
    stripes = await stripes_of(first, cap)
    assert len(stripes) == 11
    # Healthy, and with --verify every share (55) and manifest copy (3) was downloaded.
    report = await first.check(verify_cap, verify=True)
    assert report.healthy
    assert (report.min_copies, report.wanted) == (5, 5)
    assert report.verified_copies == 5 * 11 + 3
    # Rot one share on the checking node and one on another node, in two stripes.
    # (Five nodes, five shares a stripe: every node holds one share of every stripe.)
    local = next(s for s in stripes[0].ids if holders([first], s))
    remote_share = next(s for s in stripes[5].ids if not holders([first], s))
    (remote,) = holders(nodes, remote_share)
    rot(first._rt.blocks.path_for(local))
    rot(remote._rt.blocks.path_for(remote_share))
    # A plain check trusts the holders' stamps: it still counts 5.
    plain = await first.check(verify_cap)
    assert plain.min_copies == 5
    assert not plain.verified
    # --verify downloads and hashes: both rotten shares fail and do not count.
    verified = await first.check(verify_cap, verify=True)
    assert verified.verified
    assert verified.state == "degraded"
    assert not verified.healthy
    assert verified.min_copies == 4
    assert verified.verified_copies == 5 * 11 + 3 - 2
    assert verified.to_json()["verified_copies"] == verified.verified_copies
    # Nothing else broke: the file reads back, and repair restores five intact shares.
    async with nodes[1].get(cap) as reader:
        assert await reader.read() == data
    await first.repair()
    after = await first.check(verify_cap, verify=True)
    assert after.healthy
    assert after.min_copies == 5
    assert after.verified_copies == 5 * 11 + 3
