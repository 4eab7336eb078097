"""Kademlia distance order: what every node computes to agree where a block belongs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.transport.routing import by_distance

ids = st.binary(min_size=32, max_size=32)


def test_order_is_by_xor_distance_not_by_value() -> None:
    target = bytes(31) + b"\x10"
    near = bytes(31) + b"\x11"  # xor 0x01
    mid = bytes(31) + b"\x00"  # xor 0x10: numerically closer to 0 but farther in XOR
    far = b"\x80" + bytes(31)
    assert by_distance(target, [far, mid, near]) == [near, mid, far]
    assert by_distance(target, []) == []


@given(target=ids, nodes=st.lists(ids, max_size=30))
def test_sorted_by_distance_without_duplicates(target: bytes, nodes: list[bytes]) -> None:
    order = by_distance(target, nodes)
    assert len(order) == len(set(nodes))
    key = int.from_bytes(target, "big")
    dists = [int.from_bytes(n, "big") ^ key for n in order]
    assert dists == sorted(dists)


@given(target=ids, nodes=st.lists(ids, min_size=1, max_size=20, unique=True), seed=st.randoms())
def test_every_node_computes_the_same_order(
    target: bytes, nodes: list[bytes], seed: st.SearchStrategy[object]
) -> None:
    shuffled = list(nodes)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    assert by_distance(target, nodes) == by_distance(target, shuffled)
