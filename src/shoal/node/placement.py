"""Placement: which nodes hold a block (pure).

Kademlia distance: the XOR of two 256-bit IDs read as an unsigned integer. The R nodes closest
to a block ID hold it. Every node computes the same order from the same set of node IDs, so
any node (and later, repair) knows where a block belongs.
"""

from __future__ import annotations

from collections.abc import Iterable


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two IDs of equal length."""
    if len(a) != len(b):
        raise ValueError("IDs must have the same length")
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def by_distance(target: bytes, node_ids: Iterable[bytes]) -> list[bytes]:
    """``node_ids`` without duplicates, closest to ``target`` first."""
    key = int.from_bytes(target, "big")
    unique = set(node_ids)
    return sorted(unique, key=lambda n: int.from_bytes(n, "big") ^ key)


def closest(target: bytes, node_ids: Iterable[bytes], n: int) -> list[bytes]:
    """The ``n`` node IDs closest to ``target`` (fewer if there are fewer nodes)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return by_distance(target, node_ids)[:n]
