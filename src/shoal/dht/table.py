"""The Kademlia routing table: pure, no I/O, no clock, no randomness of its own.

API (all a simulation needs; times are plain floats the caller passes in):

- ``RoutingTable(own_id, *, k=20, replacements=k, max_per_subnet=2, check_after=60.0,
  max_failures=3)``.
- ``observe(node_id, addresses, now, *, seen_from=None) -> Observed``: the node was *heard from
  directly* (it answered us, asked us something, or a connection with it came up). Adds or
  refreshes it; when its bucket is full the newcomer waits in the bucket's replacement cache
  and ``Observed.check`` names the least recently seen entry to check (ping or dial it, then
  call ``observe`` or ``failed`` for it).
- ``failed(node_id, now) -> Contact | None``: a request to the node failed (no answer, dial
  refused). It is replaced at once by the freshest fitting replacement if there is one, else
  dropped after ``max_failures`` failures in a row; returns the replacement promoted, if any.
- ``remove(node_id)``: drop it (forgotten by the transport).
- ``closest(target, count, *, exclude=(), live_only=False) -> list[Contact]``: closest first.
- ``stale_buckets(now, interval) -> list[int]`` and ``refreshed(target, now)``: which buckets
  need a refresh lookup (none within ``interval``), and marking a lookup done; with
  ``random_id_in_bucket(own_id, index, rng)`` to pick the refresh target.
- ``contact(node_id)``, ``node_id in table``, ``len(table)``, ``contacts()``.

How it works: bucket ``i`` holds the nodes whose ID shares exactly ``i`` leading bits with ours
(``i`` = the common prefix length, 0..255), at most ``k`` of them, least recently seen first
(libp2p's table splits only its last bucket; one bucket per prefix length holds the same nodes
and more of the nearby ones). Only nodes heard from directly enter a bucket: a node that is
merely *named* in an answer is a lookup candidate, not a table entry, so nobody can fill our
table by naming nodes. A node that is already in the table moves to the tail when heard from.

Liveness (original Kademlia, lazily): a full bucket keeps its old entries, which have proven
they stay up. The newcomer goes to the bucket's replacement cache (most recent first, bounded),
and if the least recently seen entry was not heard from for ``check_after`` seconds, the caller
is asked to check it; a failure replaces it by the freshest replacement.

Eclipse resistance: at most ``max_per_subnet`` entries of one bucket may share a public /24
(IPv4) or /48 (IPv6), counting every address a node gave and the address it connected from.
Loopback, private, link-local and shared (CGNAT) ranges are exempt, so a LAN or a test on one
host is never throttled; so are host names (they resolve elsewhere).
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ID_BITS",
    "Contact",
    "Observed",
    "RoutingTable",
    "bucket_index",
    "distance",
    "random_id_in_bucket",
    "subnet_of",
]

ID_BITS: Final = 256
ID_BYTES: Final = ID_BITS // 8


def distance(a: bytes, b: bytes) -> int:
    """Kademlia's XOR distance between two 32-byte IDs."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own_id: bytes, node_id: bytes) -> int:
    """The common prefix length of two different IDs (0..255): the bucket ``node_id`` goes in."""
    d = distance(own_id, node_id)
    if d == 0:
        raise ValueError("a node is not in its own routing table")
    return ID_BITS - d.bit_length()


def random_id_in_bucket(own_id: bytes, index: int, rng: random.Random) -> bytes:
    """A random ID sharing exactly ``index`` leading bits with ``own_id`` (a refresh target)."""
    if not 0 <= index < ID_BITS:
        raise ValueError(f"bucket index must be 0..{ID_BITS - 1}")
    low_bits = ID_BITS - index - 1
    flip = (1 << low_bits) | (rng.getrandbits(low_bits) if low_bits else 0)
    value = int.from_bytes(own_id, "big") ^ flip
    return value.to_bytes(ID_BYTES, "big")


@functools.lru_cache(maxsize=16384)  # pure; parsing an address was a sixth of observe()
def subnet_of(address: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) of a ``host:port`` address, or None when exempt.

    Exempt: host names, loopback, private, link-local and shared (CGNAT) addresses, and
    anything that is not an IP literal.
    """
    host = address.rpartition(":")[0]
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_global:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _groups(addresses: Iterable[str], seen_from: str | None) -> frozenset[str]:
    found = {subnet_of(a) for a in addresses}
    if seen_from is not None:
        found.add(subnet_of(seen_from))
    found.discard(None)
    return frozenset(g for g in found if g is not None)


@dataclass(slots=True)
class Contact:
    """A node in the routing table (or its replacement cache).

    Attributes:
        node_id: Its ID.
        addresses: Where to reach it, best first (as vetted by the caller).
        last_seen: When it was last heard from directly.
        failures: Requests to it that failed in a row since then.
        groups: The public subnets its addresses are in (for the per-subnet cap).
        key: ``node_id`` as an integer (XOR distances without converting it every time).
    """

    node_id: bytes
    addresses: tuple[str, ...]
    last_seen: float
    failures: int = 0
    groups: frozenset[str] = field(default_factory=frozenset)
    key: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = int.from_bytes(self.node_id, "big")


@dataclass(frozen=True)
class Observed:
    """What :meth:`RoutingTable.observe` did.

    Attributes:
        added: The node is new in the table (not just refreshed).
        check: A table entry to check now (ping or dial it; then ``observe`` or ``failed``).
        refused: Why the node is neither in the table nor waiting as a replacement.
    """

    added: bool = False
    check: bytes | None = None
    refused: str | None = None


@dataclass
class _Bucket:
    entries: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)
    replacements: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)
    last_lookup: float | None = None

    def subnet_count(self, group: str, *, besides: bytes | None = None) -> int:
        return sum(1 for c in self.entries.values() if group in c.groups and c.node_id != besides)


class RoutingTable:
    """Nodes by XOR distance from ``own_id``, ``k`` per bucket (see the module docstring).

    Args:
        own_id: This node's ID.
        k: Entries per bucket (and replacements kept per bucket, unless ``replacements``).
        replacements: Replacement cache size per bucket.
        max_per_subnet: Entries of one bucket in one public /24 or /48.
        check_after: Seconds without news from the least recently seen entry of a full bucket
            before a newcomer asks for it to be checked.
        max_failures: Failed requests in a row after which an entry is dropped even when no
            replacement is waiting.
    """

    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = 20,
        replacements: int | None = None,
        max_per_subnet: int = 2,
        check_after: float = 60.0,
        max_failures: int = 3,
    ) -> None:
        if len(own_id) != ID_BYTES:
            raise ValueError(f"IDs are {ID_BYTES} bytes")
        if k < 1 or max_per_subnet < 1 or max_failures < 1:
            raise ValueError("k, max_per_subnet and max_failures must be at least 1")
        self.own_id = own_id
        self.k = k
        self.replacement_size = k if replacements is None else replacements
        self.max_per_subnet = max_per_subnet
        self.check_after = check_after
        self.max_failures = max_failures
        self._own_key = int.from_bytes(own_id, "big")
        self._buckets: dict[int, _Bucket] = {}
        self._size = 0

    def _index(self, node_id: bytes) -> int:
        """``bucket_index(own_id, node_id)`` for a valid, different ID (own key cached)."""
        return ID_BITS - (self._own_key ^ int.from_bytes(node_id, "big")).bit_length()

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, bytes) and self.contact(node_id) is not None

    def contact(self, node_id: bytes) -> Contact | None:
        """The table entry of ``node_id`` (not a replacement), or None."""
        if node_id == self.own_id or len(node_id) != ID_BYTES:
            return None
        bucket = self._buckets.get(self._index(node_id))
        return None if bucket is None else bucket.entries.get(node_id)

    def contacts(self) -> Iterator[Contact]:
        """Every entry, bucket by bucket (farthest bucket first)."""
        for index in sorted(self._buckets):
            yield from self._buckets[index].entries.values()

    def replacement_count(self) -> int:
        return sum(len(b.replacements) for b in self._buckets.values())

    def closest(
        self,
        target: bytes,
        count: int,
        *,
        exclude: Iterable[bytes] = (),
        live_only: bool = False,
    ) -> list[Contact]:
        """Up to ``count`` entries closest to ``target``, closest first.

        Args:
            target: The ID to measure from.
            count: How many.
            exclude: IDs to leave out (the node asking).
            live_only: Leave out entries whose last request failed.

        Only the buckets nearest the target are sorted, until ``count`` entries are found.
        Why that is right: bucket ``i`` holds the IDs that start with our first ``i`` bits and
        then the other bit, a subtree of the ID space. Seen from any target, a subtree not
        holding the target is one contiguous range of XOR distances, whose top bits are the
        subtree's prefix XOR the target's; so the buckets can be put in order by those
        prefixes alone, and each bucket's entries are all closer than the next bucket's.
        """
        skip = exclude if isinstance(exclude, (tuple, frozenset, set)) else tuple(exclude)
        key = int.from_bytes(target, "big")
        from_own = self._own_key ^ key
        order = []
        for index, bucket in self._buckets.items():
            if bucket.entries:
                low_bits = ID_BITS - 1 - index
                order.append(((((1 << low_bits) ^ from_own) >> low_bits) << low_bits, index))
        order.sort()
        chosen: list[Contact] = []
        xor = key.__xor__
        for _, index in order:
            wanted = count - len(chosen)
            if wanted <= 0:
                break
            members = [
                c
                for c in self._buckets[index].entries.values()
                if not (live_only and c.failures) and c.node_id not in skip
            ]
            # (distance, contact) pairs sorted in C: distances differ, contacts never compared.
            ranked = sorted(zip(map(xor, [c.key for c in members]), members, strict=True))
            chosen.extend(c for _, c in ranked[:wanted])
        return chosen

    def bucket_sizes(self) -> dict[int, int]:
        """Entries per non-empty bucket, by bucket index."""
        return {i: len(b.entries) for i, b in sorted(self._buckets.items()) if b.entries}

    # -- changes -------------------------------------------------------------------------------

    def observe(
        self,
        node_id: bytes,
        addresses: Sequence[str],
        now: float,
        *,
        seen_from: str | None = None,
    ) -> Observed:
        """``node_id`` was heard from directly at ``now``; add or refresh it.

        Args:
            node_id: The node.
            addresses: Where it can be dialed (vetted by the caller); a node without any is
                not added (nobody could reach it through us).
            now: The time.
            seen_from: The address its connection came from, for the per-subnet cap.
        """
        if node_id == self.own_id or len(node_id) != ID_BYTES:
            return Observed(refused="own or malformed ID")
        index = self._index(node_id)
        bucket = self._buckets.get(index)
        existing = None if bucket is None else bucket.entries.get(node_id)
        if existing is not None:
            assert bucket is not None
            if addresses:
                groups = _groups(addresses, seen_from)
                if self._fits(bucket, groups, besides=node_id):
                    existing.addresses, existing.groups = tuple(addresses), groups
            existing.last_seen = max(existing.last_seen, now)
            existing.failures = 0
            bucket.entries.move_to_end(node_id)
            return Observed()
        if not addresses:
            return Observed(refused="no address to reach it at")
        groups = _groups(addresses, seen_from)
        contact = Contact(node_id, tuple(addresses), now, groups=groups)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        if not self._fits(bucket, groups):
            bucket.replacements.pop(node_id, None)
            return Observed(refused="subnet")
        if len(bucket.entries) < self.k:
            bucket.replacements.pop(node_id, None)
            bucket.entries[node_id] = contact
            self._size += 1
            return Observed(added=True)
        # Full: wait as a replacement; ask for the stalest entry to be checked.
        bucket.replacements.pop(node_id, None)
        bucket.replacements[node_id] = contact
        while len(bucket.replacements) > self.replacement_size:
            bucket.replacements.popitem(last=False)
        head = next(iter(bucket.entries.values()))
        if head.failures or now - head.last_seen >= self.check_after:
            return Observed(check=head.node_id)
        return Observed()

    def failed(self, node_id: bytes, now: float) -> Contact | None:
        """A request to ``node_id`` failed; returns the replacement that took its place, if any.

        An entry is replaced at once when a replacement fits its bucket; without one it stays
        (a node may be briefly unreachable) until ``max_failures`` failures in a row.
        """
        if node_id == self.own_id or len(node_id) != ID_BYTES:
            return None
        bucket = self._buckets.get(self._index(node_id))
        if bucket is None:
            return None
        if node_id in bucket.replacements:
            del bucket.replacements[node_id]  # not worth promoting any more
            return None
        entry = bucket.entries.get(node_id)
        if entry is None:
            return None
        entry.failures += 1
        replacement = self._pop_replacement(bucket, besides=node_id)
        if replacement is None and entry.failures < self.max_failures:
            return None
        del bucket.entries[node_id]
        self._size -= 1
        if replacement is not None:
            bucket.entries[replacement.node_id] = replacement
            self._size += 1
        return replacement

    def remove(self, node_id: bytes) -> bool:
        """Drop ``node_id`` (entry or replacement); whether it was a table entry."""
        if node_id == self.own_id or len(node_id) != ID_BYTES:
            return False
        index = self._index(node_id)
        bucket = self._buckets.get(index)
        if bucket is None:
            return False
        bucket.replacements.pop(node_id, None)
        if bucket.entries.pop(node_id, None) is None:
            return False
        self._size -= 1
        replacement = self._pop_replacement(bucket)
        if replacement is not None:
            bucket.entries[replacement.node_id] = replacement
            self._size += 1
        return True

    def _fits(
        self, bucket: _Bucket, groups: frozenset[str], *, besides: bytes | None = None
    ) -> bool:
        return all(bucket.subnet_count(g, besides=besides) < self.max_per_subnet for g in groups)

    def _pop_replacement(self, bucket: _Bucket, *, besides: bytes | None = None) -> Contact | None:
        """The freshest replacement that fits the bucket once ``besides`` is gone."""
        for node_id in reversed(bucket.replacements):
            candidate = bucket.replacements[node_id]
            if self._fits(bucket, candidate.groups, besides=besides):
                del bucket.replacements[node_id]
                return candidate
        return None

    # -- refresh -------------------------------------------------------------------------------

    def refreshed(self, target: bytes, now: float) -> None:
        """A lookup of ``target`` finished at ``now``: its bucket counts as refreshed."""
        if target == self.own_id:
            return
        index = self._index(target)
        self._buckets.setdefault(index, _Bucket()).last_lookup = now

    def stale_buckets(self, now: float, interval: float, *, deepest: int = 15) -> list[int]:
        """Buckets to refresh: every index from 0 to the deepest non-empty bucket, at most
        ``deepest``, that saw no lookup in the last ``interval`` seconds. libp2p refreshes the
        same, up to 15: deeper buckets are filled by the lookup of the node's own ID."""
        deepest = min(deepest, max((i for i, b in self._buckets.items() if b.entries), default=0))
        stale = []
        for index in range(deepest + 1):
            bucket = self._buckets.get(index)
            last = None if bucket is None else bucket.last_lookup
            if last is None or now - last >= interval:
                stale.append(index)
        return stale
