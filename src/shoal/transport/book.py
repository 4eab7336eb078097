"""The peer book: every peer a node knows, with vetted addresses, within fixed bounds.

How it works: peers enter the book in two ways. *Learning* (bootstrap, catalog, a peer's own
HELLO, peer exchange) only ever adds what passes :func:`normalize_address`, at most
``max_addresses_per_peer`` addresses per peer, and is refused once the book holds
``max_known_peers`` peers, or once one peer told us about ``max_learnt_per_peer`` peers we have
not reached ourselves. *Connecting* (a completed handshake) always gets a record, evicting the
longest-unreachable peer if the book is full, because a connected peer is proven and the
number of connections is bounded on its own.

No I/O and no clock: times are passed in (monotonic seconds), so the book is tested directly.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shoal.transport.addresses import AddressError, normalize_address
from shoal.transport.limits import TransportLimits
from shoal.transport.peer import PeerConnection

__all__ = ["Learnt", "PeerBook", "PeerRecord", "PeerSource"]


class PeerSource(enum.Enum):
    """How a peer was first learnt."""

    BOOTSTRAP = "bootstrap"  # a --peer / config address
    CATALOG = "catalog"  # remembered from an earlier run
    INBOUND = "inbound"  # it connected to us
    HELLO = "hello"  # announced by the peer itself in its handshake
    EXCHANGE = "exchange"  # another peer told us (GET_PEERS)
    DHT = "dht"  # an answer to a DHT lookup (FIND_NODE) named it
    MDNS = "mdns"  # announced on the local network (mDNS); a hint, authenticated by its key

    @property
    def shown(self) -> str:
        """The name ``shoal peers`` shows: how the user would say it was learnt."""
        return _SHOWN.get(self, self.value)


# What ``shoal peers`` calls each source: one learnt from its own HELLO came in, one from an
# earlier run came from wherever it did then (bootstrap at worst).
_SHOWN = {PeerSource.HELLO: "inbound", PeerSource.CATALOG: "bootstrap"}


@dataclass(eq=False)
class PeerRecord:
    """What the node knows about one peer.

    Attributes:
        node_id: The peer's node ID.
        addresses: Where to dial it, canonical ``host:port``, most trusted first.
        connection: The open connection, if any (see ``up``).
        last_seen: Wall-clock time the peer was last heard from (None: never).
        source: How the peer was first learnt.
        learnt_via: The peer that told us about it, until we reach it ourselves.
        bootstrap: Reached through a bootstrap address (never forgotten).
        verified: A handshake with it completed at least once.
        failures: Dial attempts that failed in a row.
        unreachable_since: Monotonic time since which it has not been connected.
        closed_idle: Its last connection was closed by us, idle, to make room (so it was not
            the peer that went away).
    """

    node_id: bytes
    addresses: list[str] = field(default_factory=list)
    connection: PeerConnection | None = None
    last_seen: float | None = None
    source: PeerSource = PeerSource.INBOUND
    learnt_via: bytes | None = None
    bootstrap: bool = False
    verified: bool = False
    failures: int = 0
    unreachable_since: float | None = None
    closed_idle: bool = False

    @property
    def up(self) -> bool:
        return self.connection is not None and not self.connection.closed.is_set()


@dataclass
class Learnt:
    """What :meth:`PeerBook.learn` did.

    Attributes:
        record: The peer's record (None if the peer was not taken in).
        added: Addresses newly remembered.
        bad: ``(address as received, why it was refused)`` for each refused address.
        refused: The limit that kept a new peer out, if one did.
        new: Whether the record was created by this call.
    """

    record: PeerRecord | None
    added: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    refused: str | None = None
    new: bool = False


class PeerBook:
    """Peers by node ID, bounded by ``limits``.

    Args:
        own_id: This node's ID (never a peer of itself).
        limits: ``max_known_peers``, ``max_addresses_per_peer``, ``max_learnt_per_peer``.
        is_own_address: Whether a canonical address is one of this node's own.
    """

    def __init__(
        self,
        own_id: bytes,
        limits: TransportLimits,
        *,
        is_own_address: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self._own_id = own_id
        self._limits = limits
        self._is_own = is_own_address
        self._records: dict[bytes, PeerRecord] = {}
        self._learnt_from: Counter[bytes] = Counter()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._records

    def get(self, node_id: bytes) -> PeerRecord | None:
        return self._records.get(node_id)

    def records(self) -> list[PeerRecord]:
        return list(self._records.values())

    def learnt_from(self, node_id: bytes) -> int:
        """Peers ``node_id`` told us about that we have not reached yet."""
        return self._learnt_from[node_id]

    def vet(
        self, addresses: Iterable[str], *, allow_loopback: bool
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """``(canonical good addresses without duplicates, [(bad address, reason)])``."""
        good: list[str] = []
        bad: list[tuple[str, str]] = []
        for text in addresses:
            try:
                address = normalize_address(text, allow_loopback=allow_loopback)
            except AddressError as exc:
                bad.append((str(text), str(exc)))
                continue
            if self._is_own(address):
                bad.append((text, "this node's own address"))
            elif address not in good:
                good.append(address)
        return good, bad

    def learn(
        self,
        node_id: bytes,
        addresses: Iterable[str],
        *,
        source: PeerSource,
        now: float,
        via: bytes | None = None,
        allow_loopback: bool = True,
        authoritative: bool = False,
    ) -> Learnt:
        """Remember ``node_id`` at the good ones of ``addresses``.

        Args:
            node_id: The peer.
            addresses: Addresses as received (vetted here).
            source: How we learnt them.
            now: Monotonic time.
            via: The peer that told us (peer exchange), charged against its
                ``max_learnt_per_peer``.
            allow_loopback: Whether loopback addresses are acceptable.
            authoritative: The peer announced these itself (its HELLO): they replace the
                addresses remembered so far, instead of being added after them.
        """
        good, bad = self.vet(addresses, allow_loopback=allow_loopback)
        if node_id == self._own_id:
            return Learnt(None, bad=bad)
        record = self._records.get(node_id)
        new = record is None
        if record is None:
            if not good:
                return Learnt(None, bad=bad)
            if len(self._records) >= self._limits.max_known_peers:
                return Learnt(None, bad=bad, refused="max_known_peers")
            if via is not None and self._learnt_from[via] >= self._limits.max_learnt_per_peer:
                return Learnt(None, bad=bad, refused="max_learnt_per_peer")
            record = PeerRecord(node_id, source=source, unreachable_since=now)
            if via is not None:
                record.learnt_via = via
                self._learnt_from[via] += 1
            self._records[node_id] = record
        cap = self._limits.max_addresses_per_peer
        if authoritative and good:
            added = [a for a in good[:cap] if a not in record.addresses]
            record.addresses = good[:cap]
        else:
            added = []
            for address in good:
                if len(record.addresses) >= cap:
                    break
                if address not in record.addresses:
                    record.addresses.append(address)
                    added.append(address)
        return Learnt(record, added=added, bad=bad, new=new)

    def connected(
        self, node_id: bytes, *, source: PeerSource = PeerSource.INBOUND
    ) -> tuple[PeerRecord, PeerRecord | None]:
        """The record of a peer we just completed a handshake with (created if needed).

        Returns ``(record, evicted)``: when the book was full, the peer unreachable for
        longest (never a connected or bootstrap one) makes room and is returned.
        """
        record = self._records.get(node_id)
        evicted = None
        if record is None:
            if len(self._records) >= self._limits.max_known_peers:
                evicted = self._evictable()
                if evicted is not None:
                    self.forget(evicted.node_id)
            record = PeerRecord(node_id, source=source)
            self._records[node_id] = record
        self._release(record)
        record.closed_idle = False
        record.verified = True
        record.failures = 0
        record.unreachable_since = None
        return record, evicted

    def disconnected(self, record: PeerRecord, *, now: float, idle: bool = False) -> None:
        """The peer's connection ended (``idle``: we closed it to make room)."""
        record.connection = None
        record.closed_idle = idle
        if record.unreachable_since is None:
            record.unreachable_since = now

    def forget(self, node_id: bytes) -> PeerRecord | None:
        """Drop ``node_id``; its record, if it was known."""
        record = self._records.pop(node_id, None)
        if record is not None:
            self._release(record)
        return record

    def _release(self, record: PeerRecord) -> None:
        via, record.learnt_via = record.learnt_via, None
        if via is not None:
            self._learnt_from[via] -= 1
            if self._learnt_from[via] <= 0:
                del self._learnt_from[via]

    def _evictable(self) -> PeerRecord | None:
        candidates = [
            r
            for r in self._records.values()
            if not r.up and not r.bootstrap and r.unreachable_since is not None
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda r: (r.verified, r.unreachable_since or 0.0))

    def expired(self, *, now: float, after: float) -> list[PeerRecord]:
        """Peers (not bootstrap ones) that have been unreachable for ``after`` seconds."""
        return [
            r
            for r in self._records.values()
            if not r.up
            and not r.bootstrap
            and r.unreachable_since is not None
            and now - r.unreachable_since >= after
        ]
