from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from shoal.node.placement import by_distance, closest, distance

ids = st.binary(min_size=32, max_size=32)


def nid(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def test_distance_is_xor() -> None:
    a = bytes(31) + b"\x05"
    b = bytes(31) + b"\x03"
    assert distance(a, b) == 6
    assert distance(a, a) == 0


def test_closest_orders_by_xor_distance() -> None:
    target = bytes(32)
    near = bytes(31) + b"\x01"
    mid = bytes(31) + b"\x10"
    far = b"\x80" + bytes(31)
    assert closest(target, [far, near, mid], 2) == [near, mid]
    assert closest(target, [far, near], 5) == [near, far]
    assert closest(target, [], 3) == []


@given(target=ids, nodes=st.lists(ids, max_size=30), n=st.integers(0, 10))
def test_closest_is_a_prefix_of_the_full_order(target: bytes, nodes: list[bytes], n: int) -> None:
    full = by_distance(target, nodes)
    assert closest(target, nodes, n) == full[:n]
    assert len(full) == len(set(nodes))
    dists = [distance(target, x) for x in full]
    assert dists == sorted(dists)


@given(target=ids, nodes=st.lists(ids, min_size=1, max_size=20, unique=True), seed=st.randoms())
def test_every_node_computes_the_same_set(target: bytes, nodes: list[bytes], seed) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(nodes)
    seed.shuffle(shuffled)
    assert closest(target, nodes, 3) == closest(target, shuffled, 3)
