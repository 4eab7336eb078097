"""The DHT in the node: FIND_NODE answers and their limits, lookups over the in-memory network
on virtual time, the closest-set cache, the connection limit with connections on demand."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.clock import VirtualClock, run_virtual
from shoal.dht.cache import ClosestCache
from shoal.dht.ratelimit import PeerRateLimit
from shoal.errors import Busy, PeerUnavailable
from shoal.ids import decode_id
from shoal.protocol import FindNode, GetPeers, Nodes, Ping, Pong
from shoal.protocol.messages import MAX_NODE_ADDRS
from shoal.transport import PeerSource, TransportLimits
from shoal.transport.routing import by_distance
from tests.unit.node.test_runtime_network import no_tracebacks, nodes
from tests.unit.transport.sim import Sim, wait_for

# -- pure parts -----------------------------------------------------------------------------


def test_rate_limit_refills_and_is_bounded_in_peers() -> None:
    limit = PeerRateLimit(rate=2.0, burst=3, max_peers=4)
    assert [limit.allow(b"a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow(b"a", 0.5)  # one token back after half a second at 2/s
    assert not limit.allow(b"a", 0.5)
    assert limit.allow(b"b", 0.5)  # another peer has its own bucket
    for n in range(100):
        limit.allow(bytes([n]), 1.0)
    assert len(limit) == 4


@settings(max_examples=60)
@given(st.integers(0, 2**32), st.integers(1, 8), st.integers(30, 120))
def test_the_cache_answers_only_what_it_can_prove(seed: int, count: int, size: int) -> None:
    """A cached lookup of T (its k closest nodes) answers for T' only when the answer equals
    the true closest nodes of T' in the whole network."""
    rng = random.Random(seed)
    network = [rng.randbytes(32) for _ in range(size)]
    cache = ClosestCache(ttl=60.0, max_entries=8)
    target = rng.randbytes(32)
    found = by_distance(target, network)[:20]
    radius = int.from_bytes(found[-1], "big") ^ int.from_bytes(target, "big")
    cache.add(target, found, radius, 0.0)
    answered = 0
    for _ in range(50):
        # Nearby IDs (a shared prefix) and random ones.
        shared = rng.randrange(0, 12)
        mask = (1 << (256 - shared)) - 1
        near = (int.from_bytes(target, "big") & ~mask) | (rng.getrandbits(256) & mask)
        other = near.to_bytes(32, "big")
        result = cache.find(other, count, 1.0)
        if result is not None:
            answered += 1
            assert result == by_distance(other, network)[:count]
    assert cache.find(target, count, 1.0) == found[:count]
    assert cache.find(target, count, 61.0) is None  # expired


def test_the_cache_forgets_sets_a_new_or_failed_node_changes() -> None:
    cache = ClosestCache(ttl=60.0, max_entries=8)
    ids = [bytes([n]) * 32 for n in range(1, 6)]
    cache.add(ids[0], ids[:3], None, 0.0)  # the whole network
    assert cache.find(ids[0], 2, 1.0) == by_distance(ids[0], ids[:3])[:2]
    cache.node_joined(ids[4])
    assert cache.find(ids[0], 2, 1.0) is None
    cache.add(ids[0], ids[:3], None, 0.0)
    cache.node_failed(ids[1])
    assert cache.find(ids[0], 2, 1.0) is None


# -- over the in-memory network -------------------------------------------------------------


def test_find_node_answer_is_bounded_and_never_names_the_asker(tmp_path: Path) -> None:
    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            hub = await net.add("hub", "10.0.0.1")
            others = [
                await net.add(f"n{i}", f"10.0.1.{i}", peers=("10.0.0.1:7000",)) for i in range(25)
            ]
            dht = hub._rt.dht
            assert dht is not None
            await wait_for(lambda: len(dht.table) == 25)
            asker = others[0]._rt
            conn = await asker.routing.connect(hub._rt.node_id)
            answer = await conn.request(FindNode(target=asker.node_id), timeout=5)
            assert isinstance(answer, Nodes)
            assert len(answer.nodes) == 20  # k, although the hub knows 25
            assert asker.node_id not in {n.node_id for n in answer.nodes}
            assert all(1 <= len(n.addrs) <= MAX_NODE_ADDRS for n in answer.nodes)
            truth = by_distance(asker.node_id, [decode_id(o.node_id) for o in others[1:]])
            assert [n.node_id for n in answer.nodes] == truth[:20]

    run_virtual(main)


def test_a_find_node_flood_from_one_peer_is_answered_busy_in_bounded_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer sending thousands of FIND_NODE gets its burst answered, then ``busy``; the
    node keeps one rate bucket for it, one log line a minute, and answers others meanwhile."""
    caplog.set_level(logging.INFO, logger="shoal")

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            node = await net.add("a", "10.0.0.1")
            honest = await net.add("b", "10.0.0.2", peers=("10.0.0.1:7000",))
            sim = Sim(clock)
            sim.network = net.network
            async with sim:
                flooder = await sim.node("10.0.0.66", mesh=False)
                conn = await flooder.dial(node.listen_address)
                dht = node._rt.dht
                assert dht is not None
                busy = ok = 0
                most_open = 0
                peer_side = node._rt.manager.connection(flooder.node_id)
                assert peer_side is not None

                async def one(n: int) -> None:
                    nonlocal busy, ok
                    try:
                        await conn.request(FindNode(target=bytes([n % 256]) * 32), timeout=30)
                        ok += 1
                    except Busy:
                        busy += 1

                # 5,000 requests, 500 at a time: each batch is one instant of virtual time.
                for _ in range(10):
                    batch = [asyncio.ensure_future(one(n)) for n in range(500)]
                    while not all(t.done() for t in batch):
                        most_open = max(most_open, peer_side._conn.open_peer_requests)
                        await asyncio.sleep(0)
                    await asyncio.gather(*batch)
                assert ok + busy == 5000
                assert ok == node._rt.options.dht.find_node_burst  # the burst, then busy
                assert busy == 5000 - ok
                # Queued requests are bounded by the connection's own limit (plus the one
                # read that waits for a slot while reading is paused).
                limit = node._rt.options.limits.max_queued_requests_per_connection
                assert most_open <= limit + 1
                assert len(dht._rate) <= 3  # one bucket per asker
                assert dht.stats.refused == busy
                # The honest node is answered meanwhile.
                honest_conn = await honest._rt.routing.connect(node._rt.node_id)
                answer = await honest_conn.request(FindNode(target=b"\x00" * 32), timeout=5)
                assert isinstance(answer, Nodes)
                # After a second, the flooder gets tokens back.
                await asyncio.sleep(1.0)
                await conn.request(FindNode(target=b"\x01" * 32), timeout=5)
        lines = [r.getMessage() for r in caplog.records if "find_node_rate" in r.getMessage()]
        assert len(lines) == 1

    run_virtual(main)
    no_tracebacks(caplog)


def test_lookups_find_the_true_closest_nodes_under_a_small_connection_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """30 nodes, each with at most 6 connections and one bootstrap address: a lookup from any
    node finds the true closest nodes of the whole network, dialing on demand; no node ever
    holds more than 6 connections, and a quiet network makes no dials.

    Regression (it failed about 1 run in 3): the dial policy kept every node with fewer than
    alpha connections dialing the bootstrap node, which closed another node's connection to
    make room, which then dialed it again, for ever; lookups met a bootstrap node with no slot
    free, and a refused or closed connection counted as the node's failure (down for 30 s,
    skipped by lookups)."""
    limits = TransportLimits(max_connections=6)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            everyone = [await net.add("n0", "10.0.0.1", limits=limits)]
            for i in range(1, 30):
                everyone.append(
                    await net.add(
                        f"n{i}", f"10.0.0.{i + 1}", limits=limits, peers=("10.0.0.1:7000",)
                    )
                )
            most = 0

            async def watch() -> None:
                nonlocal most
                while True:
                    most = max(most, *(len(n._rt.manager.live_ids()) for n in everyone))
                    await asyncio.sleep(0.01)

            watcher = asyncio.ensure_future(watch())
            ids = [decode_id(n.node_id) for n in everyone]
            rng = random.Random(5)
            tables = [n._rt.dht.table for n in everyone if n._rt.dht is not None]
            await wait_for(lambda: min(len(t) for t in tables) >= 10, timeout=120)
            # The start-up lookups of every node are over (a storm under 6 connections each).
            await wait_for(lambda: not any(n._rt.dht._running_lookups for n in everyone))
            # No node keeps a dial loop (connections are made on demand only), however few
            # connections it holds.
            for _ in range(30):
                assert not any(n._rt.manager.dialing() for n in everyone)
                await asyncio.sleep(1)
            for _ in range(20):
                origin = rng.choice(everyone)
                target = rng.randbytes(32)
                found = await origin._rt.routing.closest(target, 5)
                assert found == by_distance(target, ids)[:5]
            watcher.cancel()
            assert most <= 6
            assert sum(n._rt.manager.stats.idle_closed for n in everyone) > 0  # made room

    run_virtual(main)
    no_tracebacks(caplog)


def test_at_the_cap_the_connection_idle_longest_makes_room() -> None:
    """Under ``max_connections``, a connection idle past the grace is closed (least recently
    used first) for an inbound one or a dial on demand; one in use, or used within the grace,
    is not."""

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            limits = TransportLimits(max_connections=2, idle_grace=10.0, inbound_idle_grace=10.0)
            hub = await sim.node("10.0.0.1", limits=limits, mesh=False)
            first, second, third, fourth = [
                await sim.node(f"10.0.0.{n}", mesh=False) for n in (2, 3, 4, 5)
            ]
            conn_first = await first.dial(hub.listen_address)
            await asyncio.sleep(1)
            conn_second = await second.dial(hub.listen_address)
            await wait_for(lambda: len(hub.live_ids()) == 2)
            # Within the grace: refused.
            with pytest.raises(PeerUnavailable):
                await third.dial(hub.listen_address)
            await asyncio.sleep(5)
            # First is used again (a request; PINGs do not count): second is LRU.
            await conn_first.request(GetPeers(), timeout=5)
            await asyncio.sleep(6)  # second idle 11 s, first 6 s
            await third.dial(hub.listen_address)
            await wait_for(lambda: set(hub.live_ids()) == {first.node_id, third.node_id})
            assert hub.stats.idle_closed == 1
            assert conn_second.closed.is_set()
            assert not conn_first.closed.is_set()
            # A dial on demand from the hub waits for a connection to pass the grace.
            hub.learn(fourth.node_id, [fourth.listen_address], source=PeerSource.DHT)
            started = clock.monotonic()
            conn = await hub.connect(fourth.node_id, timeout=30)
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)
            assert clock.monotonic() - started >= 4.0  # first was idle 6 s of 10
            assert len(hub.live_ids()) == 2

    run_virtual(main)


def test_peers_lists_the_routing_table_and_status_counts_connections(tmp_path: Path) -> None:
    """`shoal peers`: table entries with connected, source and state ("up" while connected or
    heard from within a minute, after we closed the connection as idle); `shoal status`: the
    table size, the open connections and their limit."""
    limits = TransportLimits(max_connections=8)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            hub = await net.add("hub", "10.0.0.1", limits=limits)
            others = [
                await net.add(f"n{i}", f"10.0.0.{i + 2}", peers=("10.0.0.1:7000",))
                for i in range(4)
            ]
            dht = hub._rt.dht
            assert dht is not None
            await wait_for(lambda: len(dht.table) == 4)
            status = (await hub.status()).to_json()
            assert status["routing_table"] == 4
            assert status["max_connections"] == 8
            assert status["connections"] == len(hub._rt.manager.live_ids()) == 4
            peers = hub.peers()
            assert sorted(p.node_id for p in peers) == sorted(o.node_id for o in others)
            assert sum(p.connected for p in peers) == status["connections"]
            assert {p.source for p in peers} <= {"inbound", "dht", "bootstrap"}
            assert all(p.address is not None for p in peers)
            assert {p.state.value for p in peers} == {"up"}  # heard from just now
            # A node that stops is down at once (one we closed as idle stays up a minute).
            leaving = next(p for p in peers if p.connected)
            await net.stop(next(o for o in others if o.node_id == leaving.node_id))
            await wait_for(
                lambda: leaving.node_id not in {p.node_id for p in hub.peers() if p.connected}
            )
            gone = next(p for p in hub.peers() if p.node_id == leaving.node_id)
            assert gone.state.value == "down"
            await asyncio.sleep(120)
            now = clock.time()
            for peer in hub.peers():
                if peer.state.value == "up" and not peer.connected:
                    assert peer.last_seen is not None
                    assert now - peer.last_seen < 60
                if peer.last_seen is None or now - peer.last_seen >= 60:
                    assert peer.connected == (peer.state.value == "up")
            json_peer = hub.peers()[0].to_json()
            assert set(json_peer) == {
                "node_id",
                "address",
                "state",
                "connected",
                "source",
                "last_seen",
            }

    run_virtual(main)


def test_addresses_named_in_answers_are_vetted() -> None:
    """An answer's addresses are dialed only after the vetting every named address gets:
    loopback only from a peer on loopback, malformed ones dropped, at most two kept."""
    from shoal.dht.routing import _vetted

    named = ["127.0.0.1:7000", "garbage", "10.0.0.9:99999", "10.0.0.9:7000", "10.0.0.8:7000"]
    assert _vetted(named, loopback_ok=False) == ("10.0.0.9:7000", "10.0.0.8:7000")
    assert _vetted(named, loopback_ok=True) == ("127.0.0.1:7000", "10.0.0.9:7000")
    assert _vetted(["a" * 300 + ":1", "[::1]:7000"], loopback_ok=False) == ()
