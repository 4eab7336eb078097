"""Erasure-coded files on real nodes over real sockets: distinct holders, reads after losses,
repair of lost shares."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shoal import Client, ConfigError, Node, QuorumNotMet
from shoal.api.http import serve_api
from shoal.content import BlockWalk, NeedManifest, Redundancy, Stripe, parse_cap
from shoal.content.manifest import load_manifest
from shoal.node.blocks import fetch_block
from shoal.node.erasure import count_stripe, repair_stripe
from tests.integration.conftest import FAST, Cluster

ERASURE = Redundancy.erasure(3, 5)
# Small chunks: many stripes per file, so shares land on every node. The default dial
# budgets (dials on demand have their own, not the background loops' 10/s).
OPTIONS = dataclasses.replace(FAST, chunk_size=64 * 1024)


async def start(
    cluster: Cluster, count: int, *, default: tuple[int, int] | None = None
) -> list[Node]:
    """``count`` nodes that all see each other; n0's default scheme is ``default`` (k, n)."""
    first = await cluster.add("n0", options=dataclasses.replace(OPTIONS, erasure=default))
    nodes = [first]
    for i in range(1, count):
        nodes.append(await cluster.add(f"n{i}", peers=[first.listen_address], options=OPTIONS))
    for node in nodes:
        await node.wait_for_peers(count - 1, timeout=20)
    return nodes


async def stripes_of(node: Node, cap: str) -> list[Stripe]:
    """Every stripe of a file, by a keyless walk from ``node``."""
    rt = node._rt
    walk = BlockWalk(parse_cap(cap).cid)
    found: list[Stripe] = []
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(await fetch_block(rt, step.block_id, step.open))
        elif isinstance(step, Stripe):
            found.append(step)
    return found


def holders(nodes: list[Node], share_id: bytes) -> list[Node]:
    return [n for n in nodes if n._rt.blocks.has(share_id, verify=True)]


async def read(node: Node, cap: str) -> bytes:
    async with node.get(cap) as reader:
        return await reader.read()


async def test_three_of_five_on_six_nodes_survives_two_stopped_holders(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 6)
    writer = nodes[0]
    files = {f"f{i}.bin": random_bytes(size) for i, size in enumerate((1, 200_000, 700_001))}
    caps = {}
    for name, data in files.items():
        result = await writer.store_with_result(name, data, redundancy=ERASURE)
        assert (result.replicas, result.replicas_wanted) == (5, 5)
        assert result.blocks == 5 * -(-len(data) // OPTIONS.chunk_size) + 1  # shares + root
        caps[name] = result.cap
    # The manifest records the scheme; each chunk has 5 shares on 5 distinct nodes.
    some_stripes = []
    for cap in caps.values():
        root = parse_cap(cap).cid
        stored = next(n for n in nodes if n._rt.blocks.has(root))
        assert load_manifest(root, stored._rt.blocks.get(root)).redundancy == ERASURE
        for stripe in await stripes_of(writer, cap):
            some_stripes.append(stripe)
            for share_id in stripe.ids:
                assert len(holders(nodes, share_id)) == 1
            assert len({holders(nodes, s)[0].node_id for s in stripe.ids}) == 5
    assert len(some_stripes) == 1 + 4 + 11
    # Stop two nodes that hold shares (not the writer), then read through each survivor.
    doomed = [n for n in nodes[1:] if any(holders([n], s.share_id(0)) for s in some_stripes)][:2]
    assert len(doomed) == 2
    for node in doomed:
        await cluster.stop(node)
    for reader in cluster.nodes:
        for name, cap in caps.items():
            assert await read(reader, cap) == files[name], name
    # A ranged read decodes only the stripes it needs, and trims them.
    big = files["f2.bin"]
    async with cluster.nodes[-1].get(caps["f2.bin"], offset=100_000, length=150_000) as reader:
        assert await reader.read() == big[100_000:250_000]


async def test_repair_stripe_restores_five_shares_after_two_holders_are_gone(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 7)
    data = random_bytes(300_000)
    cap = await nodes[0].store("r.bin", data, redundancy=ERASURE)
    stripes = await stripes_of(nodes[0], cap)
    for stripe in stripes:
        assert await count_stripe(nodes[0]._rt, stripe.ids) == 5
    doomed = [n for n in nodes[1:] if holders([n], stripes[0].share_id(0))]
    doomed += [n for n in nodes[1:] if n not in doomed and holders([n], stripes[0].share_id(1))]
    for node in doomed[:2]:
        await cluster.stop(node)
    survivors = cluster.nodes
    before = {n.node_id: set(n._rt.blocks.ids()) for n in survivors}
    repairer = survivors[-1]
    rebuilt = moved = 0
    for stripe in stripes:
        count = await count_stripe(repairer._rt, stripe.share_ids, k=3, n=5)
        assert 3 <= count <= 5
        done, nbytes = await repair_stripe(
            repairer._rt, stripe.ids, [stripe.share_size] * 5, stripe.k, stripe.n
        )
        assert done == 5 - count
        rebuilt += done
        moved += nbytes
        assert await count_stripe(repairer._rt, stripe.ids) == 5
        assert await repair_stripe(repairer._rt, stripe.share_ids, stripe.share_size, 3, 5) == (
            0,
            0,
        )
    assert rebuilt >= 2  # the first stripe lost two shares
    assert moved > 0
    # Every stripe now has its 5 shares on the 5 survivors; nothing was deleted anywhere.
    for stripe in stripes:
        assert sorted(len(holders(survivors, s)) for s in stripe.ids) == [1] * 5
    for node in survivors:
        assert before[node.node_id] <= set(node._rt.blocks.ids())
    # The manifests (n - k + 1 = 3 replicated copies) are repair's other half: restored by a
    # whole-file pass, or the two losses below could take their last copies (seen 1 run in 10).
    await repairer.repair(cap)
    # Two more losses: the file still reads back from the rebuilt shares.
    await cluster.stop(survivors[0])
    await cluster.stop(survivors[1])
    assert await read(cluster.nodes[-1], cap) == data


async def test_a_put_that_cannot_place_k_shares_fails_and_leaves_no_name(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    nodes = await start(cluster, 2)
    with pytest.raises(QuorumNotMet, match=r"only 2 of the 5 shares .* 3 are needed"):
        await nodes[0].store("doomed.bin", random_bytes(10_000), redundancy=ERASURE)
    assert await nodes[0].list_files() == []
    # Fewer than n but at least k: stored, and reported as under-replicated.
    result = await nodes[0].store_with_result(
        "thin.bin", b"x" * 1000, redundancy=Redundancy.erasure(2, 4)
    )
    assert (result.replicas, result.replicas_wanted) == (2, 4)
    assert await read(nodes[1], result.cap) == b"x" * 1000


async def test_the_http_api_and_client_choose_the_scheme_per_file(
    cluster: Cluster, tmp_path: Path, random_bytes: Callable[[int], bytes]
) -> None:
    first, *others = await start(cluster, 5, default=(3, 5))
    source = tmp_path / "source.bin"
    data = random_bytes(150_000)
    source.write_bytes(data)
    async with serve_api(first, cluster.root / "n0") as api:
        with Client.from_data_dir(api.data_dir) as client:

            def put(name: str, **kwargs: object) -> dict[str, object]:
                return client.put(source, name, **kwargs)  # type: ignore[arg-type]

            default = await asyncio.to_thread(put, "default.bin")
            two = await asyncio.to_thread(put, "two.bin", replicas=2)
            wide = await asyncio.to_thread(put, "wide.bin", erasure="2-of-4")
            with pytest.raises(ConfigError, match="erasure coding needs 1 <= k < n"):
                await asyncio.to_thread(put, "bad.bin", erasure="9-of-3")
            with pytest.raises(ConfigError, match="give replicas or erasure"):
                await asyncio.to_thread(put, "both.bin", replicas=2, erasure="2-of-4")
            listed = await asyncio.to_thread(client.list_files)
        async with httpx.AsyncClient(
            base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}
        ) as http:
            both = await http.put("/v1/files/raw.bin?replicas=1&erasure=3-of-5", content=b"x")
            assert both.status_code == 400
            assert both.json()["error"]["code"] == "config"
            huge = await http.put("/v1/files/raw.bin?replicas=" + "9" * 5000, content=b"x")
            assert huge.status_code == 400
    assert default["redundancy"] == {"kind": "erasure", "k": 3, "n": 5, "replicas": 3}
    assert (default["replicas"], default["replicas_wanted"]) == (5, 5)
    assert two["redundancy"] == {"kind": "replicate", "replicas": 2}
    assert wide["redundancy"] == {"kind": "erasure", "k": 2, "n": 4, "replicas": 3}
    assert {e["name"]: e["redundancy"] for e in listed} == {
        "default.bin": default["redundancy"],
        "two.bin": two["redundancy"],
        "wide.bin": wide["redundancy"],
    }
    # The scheme is part of the cap: three schemes, three caps; each reads back elsewhere.
    caps = {str(r["cap"]) for r in (default, two, wide)}
    assert len(caps) == 3
    for cap in caps:
        assert await read(others[-1], cap) == data


async def test_a_node_whose_default_is_erasure_codes_folders_too(
    cluster: Cluster, tmp_path: Path, random_bytes: Callable[[int], bytes]
) -> None:
    first, *others = await start(cluster, 4, default=(2, 4))
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(random_bytes(100_000))
    (folder / "sub" / "b.txt").write_bytes(b"hello")
    result = await first.store_folder("folder", folder)
    assert (result.replicas, result.replicas_wanted) == (4, 4)
    (entry,) = await first.list_files()
    assert entry.redundancy == {"kind": "erasure", "k": 2, "n": 4, "replicas": 3}
    out = tmp_path / "out"
    await others[-1].get_folder(result.cap, out)
    assert (out / "a.bin").read_bytes() == (folder / "a.bin").read_bytes()
    assert (out / "sub" / "b.txt").read_bytes() == b"hello"


async def test_every_share_is_leased_on_its_holder_and_repair_rebuilds_leased_shares(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    """The lease and repair wiring of erasure-coded files: shares live on the nodes closest
    to their stripe (not to their own IDs), and that is where the put's leases go; `repair`
    (the Node API that `shoal repair` calls) rebuilds lost shares, which get leases too, so
    garbage collection never frees a share of a kept file."""
    nodes = await start(cluster, 7)
    data = random_bytes(400_000)
    cap = await nodes[0].store("e.bin", data, redundancy=ERASURE)
    stripes = await stripes_of(nodes[0], cap)

    def unleased_shares(among: list[Node]) -> list[str]:
        out = []
        for stripe in stripes:
            for share_id in stripe.ids:
                for node in holders(among, share_id):
                    now = node._rt.options.clock.time()
                    if not node._rt.leases.is_live(share_id, now):
                        out.append(f"{node.node_id[:8]}:{share_id.hex()[:8]}")
        return out

    assert unleased_shares(nodes) == []
    check = await nodes[0].check(cap)
    assert (check.healthy, check.wanted, check.min_copies) == (True, 5, 5)
    # Two share holders go (not the owner); a check sees the stripes degraded.
    doomed = [n for n in nodes[1:] if holders([n], stripes[0].share_id(0))]
    doomed += [n for n in nodes[1:] if n not in doomed and holders([n], stripes[0].share_id(1))]
    for node in doomed[:2]:
        await cluster.stop(node)
    survivors = cluster.nodes
    before = {n.node_id: set(n._rt.blocks.ids()) for n in survivors}
    degraded = await nodes[0].check(cap)
    assert not degraded.healthy
    assert 3 <= (degraded.min_copies or 0) < 5
    # One repair pass by a node that is not the owner, with the verify cap only.
    repairer = survivors[-1]
    verify_cap = str(parse_cap(cap).verify_cap)
    report = await repairer.repair(verify_cap)
    assert report.to_json()["copied"] >= 2
    after = await repairer.check(verify_cap)
    assert (after.healthy, after.min_copies) == (True, 5), after.to_json()
    for stripe in stripes:
        assert sorted(len(holders(survivors, s)) for s in stripe.ids) == [1] * 5
    assert unleased_shares(survivors) == []
    for node in survivors:  # copies only: nothing deleted
        assert before[node.node_id] <= set(node._rt.blocks.ids())
    assert await read(survivors[1], cap) == data


async def test_shares_are_leased_where_they_live_in_a_network_wider_than_the_lease_fanout(
    cluster: Cluster, random_bytes: Callable[[int], bytes]
) -> None:
    """With more nodes than a lease reaches (n + 8 = 13 closest), only leases sent to the
    nodes closest to each stripe's ID (where its shares are) keep the shares alive."""
    nodes = await start(cluster, 16)
    data = random_bytes(600_000)
    cap = await nodes[0].store("w.bin", data, redundancy=ERASURE)
    stripes = await stripes_of(nodes[0], cap)
    unleased = []
    for stripe in stripes:
        for share_id in stripe.ids:
            for node in holders(nodes, share_id):
                if not node._rt.leases.is_live(share_id, node._rt.options.clock.time()):
                    unleased.append(share_id.hex()[:8])
    assert unleased == []
