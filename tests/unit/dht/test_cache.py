"""The closest-set cache with several sets: an answer only when the union of the proven balls
covers the ball around the new ID, and then it is the truth."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dht.cache import ClosestCache
from shoal.transport.routing import by_distance


def lookup_into(cache: ClosestCache, network: list[bytes], target: bytes, k: int) -> None:
    """What a finished lookup of ``target`` adds: its k closest and their radius."""
    found = by_distance(target, network)[:k]
    radius = int.from_bytes(found[-1], "big") ^ int.from_bytes(target, "big")
    cache.add(target, found, radius, 0.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 12), st.integers(25, 400), st.integers(1, 12))
def test_answers_from_several_sets_are_the_true_closest(
    seed: int, count: int, size: int, lookups: int
) -> None:
    rng = random.Random(seed)
    network = [rng.randbytes(32) for _ in range(size)]
    cache = ClosestCache(ttl=60.0, max_entries=64)
    for _ in range(lookups):
        lookup_into(cache, network, rng.randbytes(32), k=20)
    for _ in range(40):
        target = rng.randbytes(32)
        found = cache.find(target, count, 1.0)
        if found is not None:
            assert found == by_distance(target, network)[:count]


def test_a_few_lookups_answer_most_ids_of_a_small_network() -> None:
    """50 nodes, k = 20: after 8 lookups nearly every ID's 11 closest (a block's 3 holders
    and 8 spares) are proven; one set at a time (the triangle inequality) proved about half."""
    rng = random.Random(3)
    network = [rng.randbytes(32) for _ in range(50)]
    cache = ClosestCache(ttl=60.0, max_entries=64)
    for _ in range(8):
        lookup_into(cache, network, rng.randbytes(32), k=20)
    targets = [rng.randbytes(32) for _ in range(200)]
    answered = [t for t in targets if cache.find(t, 11, 1.0) is not None]
    assert len(answered) >= 190
    for target in answered:
        assert cache.find(target, 11, 1.0) == by_distance(target, network)[:11]


def test_a_ball_not_covered_is_not_answered() -> None:
    """Two sets far apart: an ID between them whose closest nodes lie partly outside both
    balls gets no answer (a lookup is needed)."""
    rng = random.Random(9)
    network = [rng.randbytes(32) for _ in range(2000)]
    cache = ClosestCache(ttl=60.0, max_entries=8)
    low, high = bytes(32), b"\xff" * 32
    lookup_into(cache, network, low, k=20)
    lookup_into(cache, network, high, k=20)
    assert cache.find(b"\x80" + bytes(31), 3, 1.0) is None
    assert cache.find(low, 3, 1.0) == by_distance(low, network)[:3]
    assert cache.find(low, 3, 61.0) is None  # expired
