"""The iterative lookup: pure, driven over simulated networks of routing tables."""

from __future__ import annotations

import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dht.lookup import CandidateState, Lookup
from shoal.dht.table import RoutingTable, distance

K = 20


def network(size: int, rng: random.Random, *, k: int = K) -> dict[bytes, RoutingTable]:
    """``size`` nodes, each with the table refreshes give it: in each bucket, ``k`` random
    nodes of those that belong there (all of them when fewer)."""
    node_ids = [rng.randbytes(32) for _ in range(size)]
    values = [int.from_bytes(n, "big") for n in node_ids]
    tables = {}
    for n, own in zip(node_ids, values, strict=True):
        by_bucket: dict[int, list[bytes]] = {}
        for o, value in zip(node_ids, values, strict=True):
            if value != own:
                by_bucket.setdefault(256 - (value ^ own).bit_length(), []).append(o)
        table = RoutingTable(n, k=k)
        for members in by_bucket.values():
            for o in rng.sample(members, min(k, len(members))):
                table.observe(o, ("10.0.0.1:1",), 0.0)
        tables[n] = table
    return tables


def run(
    lookup: Lookup,
    tables: dict[bytes, RoutingTable],
    rng: random.Random,
    *,
    down: frozenset[bytes] = frozenset(),
) -> None:
    """Answer the lookup's queries in a random interleaving; ``down`` nodes never answer."""
    pending: list[bytes] = []
    max_in_flight = 0
    asked: set[bytes] = set()
    while not lookup.done:
        for c in lookup.next_queries():
            assert c.node_id not in asked  # nobody is asked twice
            asked.add(c.node_id)
            pending.append(c.node_id)
        max_in_flight = max(max_in_flight, lookup.in_flight)
        assert lookup.in_flight <= lookup.alpha
        if not pending:
            break
        node_id = pending.pop(rng.randrange(len(pending)))
        if node_id in down:
            lookup.failed(node_id)
        else:
            answer = tables[node_id].closest(lookup.target, lookup.k)
            lookup.succeeded(node_id, [(c.node_id, c.addresses) for c in answer])
    lookup.cancel_pending()
    assert lookup.queries == len(asked)


def true_closest(target: bytes, node_ids: list[bytes], count: int) -> list[bytes]:
    return sorted(node_ids, key=lambda n: distance(n, target))[:count]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 150), st.integers(0, 2**32), st.integers(1, 4))
def test_without_failures_a_lookup_finds_exactly_the_k_closest_nodes(
    size: int, seed: int, alpha: int
) -> None:
    rng = random.Random(seed)
    tables = network(size, rng)
    origin = rng.choice(list(tables))
    target = rng.randbytes(32)
    table = tables[origin]
    lookup = Lookup(
        target,
        [(c.node_id, c.addresses) for c in table.closest(target, K)],
        k=K,
        alpha=alpha,
        exclude=[origin],
    )
    run(lookup, tables, rng)
    others = [n for n in tables if n != origin]
    assert [c.node_id for c in lookup.result()] == true_closest(target, others, K)
    assert all(c.state is CandidateState.RESPONDED for c in lookup.result())
    assert origin not in {c.node_id for c in lookup.result()}


@settings(max_examples=15, deadline=None)
@given(st.integers(30, 150), st.integers(0, 2**32), st.floats(0.0, 0.3))
def test_with_failed_nodes_a_lookup_returns_live_nodes_closest_first(
    size: int, seed: int, failed_share: float
) -> None:
    rng = random.Random(seed)
    tables = network(size, rng)
    node_ids = list(tables)
    origin = node_ids[0]
    down = frozenset(rng.sample(node_ids[1:], int(failed_share * (size - 1))))
    target = rng.randbytes(32)
    lookup = Lookup(
        target,
        [(c.node_id, c.addresses) for c in tables[origin].closest(target, K)],
        exclude=[origin],
    )
    run(lookup, tables, rng, down=down)
    found = [c.node_id for c in lookup.result()]
    assert not set(found) & down
    assert found == sorted(found, key=lambda n: distance(n, target))
    # Answers name the k closest nodes, failed ones included: every live node among the k
    # closest of the whole network is found, ahead of any other.
    top = true_closest(target, [n for n in node_ids if n != origin], K)
    live_top = [n for n in top if n not in down]
    assert found[: len(live_top)] == live_top


def test_late_and_unasked_answers_are_ignored_and_names_do_not_pile_up() -> None:
    rng = random.Random(7)
    target = rng.randbytes(32)
    seeds = [(rng.randbytes(32), ()) for _ in range(5)]
    lookup = Lookup(target, seeds, k=4, alpha=2, max_candidates=10)
    first = lookup.next_queries()
    assert len(first) == 2
    stranger = rng.randbytes(32)
    assert lookup.succeeded(stranger, [(rng.randbytes(32), ())]) == 0  # never asked
    flood = [(rng.randbytes(32), ()) for _ in range(500)]
    lookup.succeeded(first[0].node_id, flood)
    assert lookup.succeeded(first[0].node_id, flood) == 0  # answered already
    waiting = [c for c in lookup._by_distance.values() if c.state is CandidateState.WAITING]
    assert len(waiting) <= 10


def test_a_lookup_ends_after_max_queries_even_if_answers_keep_naming_closer_nodes() -> None:
    """A liar that always names nodes closer to the target cannot keep a lookup going."""
    target = bytes(32)
    lookup = Lookup(target, [((1 << 200).to_bytes(32, "big"), ())], k=3, alpha=1, max_queries=12)
    closer = 199
    while not lookup.done:
        queries = lookup.next_queries()
        assert queries
        for c in queries:
            lookup.succeeded(c.node_id, [((1 << closer).to_bytes(32, "big"), ())])
            closer -= 1
    assert lookup.queries == 12


def test_lookups_in_a_thousand_node_network_take_few_rounds() -> None:
    """A small version of the simulation: median rounds at most 3 at 1,000 nodes (4 is the
    target at 10,000), and every lookup exact."""
    rng = random.Random(11)
    tables = network(1000, rng)
    node_ids = list(tables)
    rounds = []
    messages = []
    for _ in range(40):
        origin = rng.choice(node_ids)
        target = rng.randbytes(32)
        lookup = Lookup(
            target,
            [(c.node_id, c.addresses) for c in tables[origin].closest(target, K)],
            exclude=[origin],
        )
        run(lookup, tables, rng)
        assert len(lookup.result()) == K
        rounds.append(lookup.rounds)
        messages.append(lookup.queries)
    assert statistics.median(rounds) <= 3
    assert max(messages) <= 8 * K
