"""The routing table's bucket-walking ``closest`` is exactly the closest entries (the simulation
answers every FIND_NODE with it); the simulated network's time and failures behave."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dht.sim_network import LookupRecord, SimNetwork
from shoal.dht.table import RoutingTable, distance


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(0, 400),
    st.sampled_from([1, 3, 20]),
    st.integers(0, 45),
    st.booleans(),
)
def test_closest_is_exactly_the_closest_entries(
    seed: int, size: int, k: int, count: int, live_only: bool
) -> None:
    rng = random.Random(seed)
    own = rng.randbytes(32)
    table = RoutingTable(own, k=k)
    node_ids = [rng.randbytes(32) for _ in range(size)]
    for node_id in node_ids:
        table.observe(node_id, ("10.0.0.1:7000",), 0.0)
        if rng.random() < 0.2:
            table.failed(node_id, 1.0)
    # Nodes near our own ID, so deep buckets are not empty.
    for depth in range(1, 40):
        flipped = int.from_bytes(own, "big") ^ (1 << (256 - depth)) ^ rng.getrandbits(256 - depth)
        table.observe(flipped.to_bytes(32, "big"), ("10.0.0.2:7000",), 0.0)
    targets = [own, rng.randbytes(32), *node_ids[:3], *(c.node_id for c in table.contacts())][:12]
    for target in targets:
        exclude = tuple(rng.sample(node_ids, min(2, len(node_ids))))
        fast = table.closest(target, count, exclude=exclude, live_only=live_only)
        every = [
            c.node_id
            for c in table.contacts()
            if c.node_id not in exclude and not (live_only and c.failures)
        ]
        assert [c.node_id for c in fast] == sorted(every, key=lambda n: distance(n, target))[:count]
    assert len(table.closest(own, 10_000)) == len(table)


def test_a_node_that_joins_through_one_node_learns_the_network_and_is_learnt() -> None:
    network = SimNetwork(seed=7)
    first = network.add_node()
    for number in range(1, 60):
        node = network.add_node()
        network.join(node, network.nodes[number - 1] if number % 2 else first)
        network.run()
    newcomer = network.add_node()
    network.join(newcomer, first)
    network.run()
    assert len(newcomer.table) >= 40  # k = 20, and its own neighbourhood
    # The nodes closest to it heard from it (its self-lookup asked them).
    others = sorted(network.nodes[:-1], key=lambda n: distance(n.node_id, newcomer.node_id))
    assert all(newcomer.node_id in n.table for n in others[:5])
    assert network.find_node_sent > 0


def test_failed_nodes_time_out_under_virtual_time_and_the_lookup_still_ends() -> None:
    network = SimNetwork(seed=3, timeout=10.0, lookup_timeout=300.0)
    first = network.add_node()
    for _ in range(80):
        node = network.add_node()
        network.join(node, first)
        network.run()
    origin = network.nodes[1]
    target = random.Random(5).randbytes(32)
    dead = sorted(network.nodes[2:], key=lambda n: distance(n.node_id, target))[:10]
    for node in dead:
        network.fail(node)
    records: list[LookupRecord] = []
    started = network.now()
    network.lookup(origin, target, records.append)
    network.run()
    (record,) = records
    assert record.timeouts >= 1
    assert record.seconds >= 10.0  # it waited out the timeout, on the virtual clock
    assert network.now() - started >= 10.0
    dead_ids = {n.node_id for n in dead}
    assert not dead_ids & set(record.found)
    live = [n for n in network.nodes if n.alive and n is not origin]
    closest_live = sorted(live, key=lambda n: distance(n.node_id, target))[:3]
    assert record.found[:3] == [n.node_id for n in closest_live]


def test_events_run_in_time_order_and_the_clock_follows() -> None:
    network = SimNetwork(seed=1)
    seen: list[tuple[str, float]] = []
    network.at(2.0, lambda: seen.append(("b", network.now())))
    network.at(1.0, lambda: seen.append(("a", network.now())))
    network.at(2.0, lambda: seen.append(("c", network.now())))
    network.run()
    assert seen == [("a", 1.0), ("b", 2.0), ("c", 2.0)]


def test_a_lookup_that_runs_out_of_time_ends_with_what_it_has() -> None:
    network = SimNetwork(seed=4, timeout=5.0, lookup_timeout=7.0)
    first = network.add_node()
    for _ in range(30):
        node = network.add_node()
        network.join(node, first)
        network.run()
    origin = network.nodes[-1]
    for node in network.nodes:
        if node is not origin:
            network.fail(node)
    records: list[LookupRecord] = []
    network.lookup(origin, random.Random(1).randbytes(32), records.append)
    network.run()
    (record,) = records
    assert record.seconds == 7.0  # two waves of timeouts would take 10 s
    assert record.found == []
    assert record.queries == 6  # alpha, then alpha more after the first wave timed out
