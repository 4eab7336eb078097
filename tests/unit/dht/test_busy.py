"""A node that is busy (rate-limited, or at a connection cap, its own or ours) is not a node
that failed: FIND_NODE is tried again, and nothing counts against the node (no "down" mark,
no failure in the routing table), so a lookup never drops a live node for being busy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.dht.routing import BUSY_BACKOFF, DhtOptions, Miss
from shoal.ids import decode_id
from shoal.transport import TransportLimits
from shoal.transport.routing import by_distance
from tests.unit.node.test_runtime_network import no_tracebacks, nodes
from tests.unit.transport.sim import wait_for


def test_a_busy_node_is_asked_again_after_a_backoff_and_nothing_counts_against_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over its FIND_NODE rate a node answers ``busy``: the asker waits and asks again (the
    answer comes), and a node busy every time is only skipped by that one lookup."""
    strict = DhtOptions(find_node_rate=1.0, find_node_burst=1)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            hub = await net.add("hub", "10.0.0.1", dht=strict)
            asker = await net.add("a", "10.0.0.2", peers=("10.0.0.1:7000",))
            dht, hub_dht = asker._rt.dht, hub._rt.dht
            assert dht is not None
            assert hub_dht is not None
            hub_id = decode_id(hub.node_id)
            await wait_for(lambda: hub_id in dht.table)
            await wait_for(lambda: not dht._running_lookups)
            await clock.sleep(10)  # the hub's bucket for the asker is full again
            target = bytes(32)
            refused = hub_dht.stats.refused
            assert isinstance(await dht._query(hub_id, target), list)
            started = clock.monotonic()
            # The token is spent: busy, then answered after the backoff.
            assert isinstance(await dht._query(hub_id, target), list)
            assert hub_dht.stats.refused > refused  # (its refresh lookups may be refused too)
            assert clock.monotonic() - started >= BUSY_BACKOFF
            # Busy every time (a rate that never refills in time): skipped, not failed.
            hub_dht._rate.rate = 1e-6
            assert await dht._query(hub_id, target) is Miss.UNAVAILABLE
            contact = dht.table.contact(hub_id)
            assert contact is not None
            assert contact.failures == 0
            assert not dht._is_down(hub_id)
            # And the next query still goes out (a "down" node would be skipped unasked).
            before = hub_dht.stats.refused
            assert await dht._query(hub_id, target) is Miss.UNAVAILABLE
            assert hub_dht.stats.refused > before

    run_virtual(main)
    no_tracebacks(caplog)


def test_our_own_connection_cap_never_counts_against_the_node_we_could_not_dial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At our cap, with no connection idle long enough to close, neither a FIND_NODE nor a
    liveness check can dial: that is our limit, not the other node's failure."""
    tight = TransportLimits(
        max_connections=1, idle_grace=1000.0, inbound_idle_grace=1000.0, connect_timeout=2.0
    )

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            hub = await net.add("hub", "10.0.0.1")
            others = [
                await net.add(f"n{i}", f"10.0.0.{i + 3}", peers=("10.0.0.1:7000",))
                for i in range(2)
            ]
            asker = await net.add("a", "10.0.0.2", peers=("10.0.0.1:7000",), limits=tight)
            dht = asker._rt.dht
            assert dht is not None
            await wait_for(lambda: len(dht.table) >= 1)
            await wait_for(lambda: not dht._running_lookups)
            live = asker._rt.manager.live_ids()
            assert len(live) == 1  # the one slot, never idle long enough to be closed
            other = next(n for n in [hub, *others] if decode_id(n.node_id) not in live)
            other_id = decode_id(other.node_id)
            dht.table.observe(other_id, [other.listen_address], clock.monotonic())
            assert await dht._query(other_id, bytes(32)) is Miss.UNAVAILABLE
            await dht._run_check(other_id)
            contact = dht.table.contact(other_id)
            assert contact is not None
            assert contact.failures == 0
            assert not dht._is_down(other_id)
            # A lookup of the other node's ID goes on without it, and proves nothing.
            found = await dht.lookup(other_id)
            assert other_id not in found
            assert dht.cache.find(other_id, 1, clock.monotonic()) is None
            assert not dht._is_down(other_id)

    run_virtual(main)
    no_tracebacks(caplog)


def test_the_peer_book_bound_holds_with_dials_on_demand(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A node whose peer book holds at most 8 peers, in a network of 20 where its lookups
    dial whoever they must: the book never grows past 8, and its lookups still find the
    true closest nodes (a named node the full book refuses is dialed after an old record
    makes room)."""
    small_book = TransportLimits(max_known_peers=8, max_connections=4)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            hub = await net.add("hub", "10.0.0.1")
            others = [
                await net.add(f"n{i}", f"10.0.1.{i + 1}", peers=("10.0.0.1:7000",))
                for i in range(18)
            ]
            small = await net.add("small", "10.0.0.2", peers=("10.0.0.1:7000",), limits=small_book)
            dht = small._rt.dht
            assert dht is not None
            manager = small._rt.manager
            await wait_for(lambda: len(dht.table) > 0)
            await wait_for(lambda: not dht._running_lookups)
            ids = [decode_id(n.node_id) for n in [hub, *others, small]]
            most = 0
            rng = random.Random(4)
            for _ in range(15):
                target = rng.randbytes(32)
                found = await small._rt.routing.closest(target, 3)
                most = max(most, len(manager.records()))
                assert found == by_distance(target, ids)[:3]
            assert most <= 8

    run_virtual(main)
    no_tracebacks(caplog)
