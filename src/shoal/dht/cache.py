"""Closest sets of finished lookups, reused for nearby IDs: pure, no I/O, times passed in.

How it works: a finished lookup of ``T`` whose k closest nodes all answered (and none inside
their distance failed) proves that every node within ``d_k`` of ``T`` (the distance to the
k-th) is in its set: the *ball* of radius ``d_k`` around ``T`` is known completely. A set of
the whole network (fewer than k nodes answered) has no radius: it knows everything.

``find(T', count)`` answers without a lookup when it can prove the answer: take the ``count``
closest to ``T'`` among the nodes of all live sets, at distances up to ``r``; if the ball of
radius ``r`` around ``T'`` lies inside the union of the proven balls, no node outside the sets
can be closer, so those are the true ``count`` closest.

The inclusion test is exact for XOR balls split into prefix subtrees: the IDs ``x`` with
``x ^ T' <= r`` are the point ``x = T' ^ r`` and, for every 1-bit ``j`` of ``r``, the subtree
of IDs whose ``x ^ T'`` has ``r``'s bits above ``j`` and a 0 at ``j`` (its low ``j`` bits
free). A subtree lies in the ball ``(T, d)`` when its farthest point from ``T`` (the free bits
all differing from ``T``'s) is within ``d``. Each subtree must fit in one proven ball. (With a
single set this is at least as strong as the triangle inequality ``d(T, T') + r <= d_k``; with
several, a put's blocks are answered from the sets of a few lookups once they cover the space
around the nodes, which in a small network is all of it.)

Entries expire after ``ttl``; an entry is dropped when a node inside its ball joins the
table (``node_joined``) or one of its nodes fails (``node_failed``).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ClosestCache"]


@dataclass
class _Entry:
    key: int  # the target looked up, as an integer
    nodes: list[bytes]  # this node included
    keys: list[int]  # the same nodes as integers
    radius: int | None  # every node within this distance of the target is known; None: all
    expires: float


class ClosestCache:
    """Closest sets of finished lookups (see the module docstring).

    Args:
        ttl: Seconds a set stays usable.
        max_entries: Sets kept (least recently used dropped).
    """

    def __init__(self, *, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, target: bytes, nodes: Sequence[bytes], radius: int | None, now: float) -> None:
        """A lookup of ``target`` found ``nodes``: every node within ``radius`` of it (all
        nodes when ``radius`` is None)."""
        if self.max_entries == 0:
            return
        unique = list(dict.fromkeys(nodes))
        entry = _Entry(
            key=int.from_bytes(target, "big"),
            nodes=unique,
            keys=[int.from_bytes(n, "big") for n in unique],
            radius=radius,
            expires=now + self.ttl,
        )
        self._entries.pop(target, None)
        self._entries[target] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def find(self, target: bytes, count: int, now: float) -> list[bytes] | None:
        """The ``count`` closest nodes to ``target`` if the cached sets prove them, else None.

        Fewer than ``count`` only when a set of the whole network has fewer nodes.
        """
        for entry_target, entry in list(self._entries.items()):
            if entry.expires <= now:
                del self._entries[entry_target]
        if not self._entries or count < 1:
            return None
        key = int.from_bytes(target, "big")
        for entry_target, entry in self._entries.items():
            if entry.radius is None:  # the whole network
                self._entries.move_to_end(entry_target)
                return _ranked(entry.nodes, entry.keys, key, count)
        known: dict[bytes, int] = {}
        for entry in self._entries.values():
            known.update(zip(entry.nodes, entry.keys, strict=True))
        if len(known) < count:
            return None
        ranked = heapq.nsmallest(count, known.items(), key=lambda item: item[1] ^ key)
        reach = ranked[-1][1] ^ key
        if not self._covered(key, reach):
            return None
        return [node for node, _ in ranked]

    def _covered(self, key: int, reach: int) -> bool:
        """Whether every ID within ``reach`` of ``key`` lies in one of the proven balls."""
        # Only balls that meet the ball around key can hold part of it; the biggest subtrees
        # come first, so a miss is found early.
        balls = [
            (e.key, e.radius)
            for e in self._entries.values()
            if e.radius is not None and e.key ^ key <= e.radius + reach
        ]
        if not balls:
            return False
        for bit in range(reach.bit_length() - 1, -1, -1):
            if not (reach >> bit) & 1:
                continue
            # x ^ key has reach's bits above `bit` and a 0 at `bit`; the low bits are free.
            high = ((reach >> (bit + 1)) << 1) ^ (key >> bit)  # x's bits from `bit` up
            low_mask = (1 << bit) - 1
            if not any((((high ^ (t >> bit)) << bit) | low_mask) <= d for t, d in balls):
                return False
        return True

    def node_joined(self, node_id: bytes) -> None:
        """A node appeared: drop every set whose ball it falls in (it may be missing)."""
        value = int.from_bytes(node_id, "big")
        for entry_target, entry in list(self._entries.items()):
            if node_id in entry.nodes:
                continue
            if entry.radius is None or entry.key ^ value <= entry.radius:
                del self._entries[entry_target]

    def node_failed(self, node_id: bytes) -> None:
        """A node failed: drop every set that names it."""
        for entry_target, entry in list(self._entries.items()):
            if node_id in entry.nodes:
                del self._entries[entry_target]


def _ranked(nodes: list[bytes], keys: list[int], key: int, count: int) -> list[bytes]:
    pairs = heapq.nsmallest(count, zip(nodes, keys, strict=True), key=lambda p: p[1] ^ key)
    return [node for node, _ in pairs]
