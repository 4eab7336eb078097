"""Kademlia over the node's connections: the :class:`~shoal.transport.routing.Routing` seam
answered by iterative lookups, with connections made on demand.

How it works:
- The routing table (``dht.table``, pure) holds nodes *heard from directly*: a connection came
  up with them, they asked us FIND_NODE, or they answered ours. A node only named in an answer
  is a lookup candidate, never a table entry.
- ``closest(target, count)`` runs an iterative lookup (``dht.lookup``, pure) over the network:
  FIND_NODE to ``alpha`` nodes at once, each dialed when needed (``ConnectionManager`` makes
  room under ``max_connections`` by closing the connection idle longest). This node itself is
  added to the result when it is among the closest. Only a node's own failures count against
  it (no answer, a broken one, dials that keep failing); a ``busy`` answer or a connection
  closed under the request is tried again, and our own connection cap is never its fault
  (``Miss``, ``_query``).
- Lookups are amortized: a finished lookup of ``T`` proves every node within ``d_k`` of
  ``T`` (the k-th closest that answered); ``dht.cache.ClosestCache`` answers another ID from
  the union of such proven balls when they cover the ball around it. Concurrent misses wait
  for the lookups already running before starting their own (a put's window of blocks shares
  them).
- Refresh: a lookup of this node's own ID as soon as the table has an entry, then every
  bucket without a lookup for ``refresh_interval`` gets a lookup of a random ID in it.
- Liveness: a full bucket whose stalest entry was not heard from for a minute asks for a
  check; the check is a PING (dialing if needed). Failed requests count against an entry; a
  replacement from the bucket's cache takes its place.
- Abuse: FIND_NODE from one peer is rate-limited by a token bucket (``dht.ratelimit``:
  ``find_node_rate`` per second, ``find_node_burst`` at once, bounded LRU); over the limit the
  answer is ``busy`` and a WARNING is logged at most once a minute. Answers carry at most
  ``k`` nodes (``MAX_NODES``) with at most ``MAX_NODE_ADDRS`` addresses each. Addresses named
  in answers are vetted before they are dialed (loopback only from a loopback peer).
- Which peers the manager keeps dialing (the ``DialPolicy``): only the bootstrap peers (or
  those remembered), and only while the table is empty. Everything else is dialed on demand;
  a full peer book makes room for a node a lookup must dial.

Resource handling: the refresh loop, the checks and every query are tasks owned by this object
(``aclose`` cancels and awaits them); every network wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from shoal import defaults
from shoal.dht.cache import ClosestCache
from shoal.dht.lookup import Lookup
from shoal.dht.ratelimit import PeerRateLimit
from shoal.dht.table import RoutingTable, distance, random_id_in_bucket
from shoal.errors import Busy, PeerUnavailable, ProtocolError, ShoalError, TransportError
from shoal.ids import short_id
from shoal.protocol import FindNode, Nodes, PeerAddress
from shoal.protocol.messages import MAX_NODE_ADDRS, MAX_NODES
from shoal.transport.addresses import (
    AddressError,
    host_of,
    is_loopback_host,
    normalize_address,
)
from shoal.transport.book import PeerRecord, PeerSource
from shoal.transport.limits import LimitLog
from shoal.transport.manager import ConnectionManager
from shoal.transport.peer import PeerConnection
from shoal.transport.tasks import TaskSet

__all__ = ["ClosestCache", "DhtOptions", "DhtStats", "KademliaRouting", "Miss", "PeerRateLimit"]

log = logging.getLogger(__name__)

#: Lookup candidates whose addresses are remembered for dialing (bounded memory).
MAX_REMEMBERED_ADDRESSES = 4096
#: Liveness checks running at once.
MAX_CHECKS = 8
#: Seconds before a node that knows fewer than k nodes looks again (doubling to a minute
#: while that finds nobody new).
SMALL_TABLE_REFRESH = 5.0
#: Seconds a node whose request failed counts as down (skipped by lookups).
DOWN_FOR = 30.0
#: Dials of one node a FIND_NODE tries before the node counts as failed (see ``_query``).
DIAL_ATTEMPTS = 3
#: Tries of one FIND_NODE answered ``busy`` or whose connection closed under it.
QUERY_ATTEMPTS = 3
#: Seconds before a FIND_NODE answered ``busy`` is sent again.
BUSY_BACKOFF = 1.0
#: Failed dials after which a node found by mDNS is no longer dialed for its own sake (a
#: lookup may still reach it): an announcement names addresses this node may not reach.
MDNS_HINT_DIALS = 5


class Miss(enum.Enum):
    """Why a FIND_NODE brought no answer."""

    FAILED = "failed"  # the node's failure: it counts as down, and against its table entry
    UNAVAILABLE = "unavailable"  # busy, or no connection slot here: nothing counted


@dataclass(frozen=True)
class DhtOptions:
    """The DHT's tunables; the defaults are what ``shoal run`` uses."""

    k: int = defaults.DHT_K
    alpha: int = defaults.DHT_ALPHA
    refresh_interval: float = defaults.DHT_REFRESH_INTERVAL
    query_timeout: float = defaults.DHT_QUERY_TIMEOUT
    max_per_subnet: int = defaults.DHT_MAX_PER_SUBNET
    find_node_rate: float = defaults.FIND_NODE_RATE
    find_node_burst: int = defaults.FIND_NODE_BURST
    cache_ttl: float = defaults.DHT_CACHE_TTL
    cache_entries: int = 256
    #: Seconds after which a lookup ends with the closest nodes that answered so far.
    lookup_timeout: float = defaults.DHT_LOOKUP_TIMEOUT

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_NODES:
            raise ValueError(f"k must be 1..{MAX_NODES}")
        if self.alpha < 1 or self.find_node_burst < 1 or self.cache_entries < 0:
            raise ValueError("alpha and find_node_burst must be at least 1")
        if min(self.refresh_interval, self.query_timeout, self.find_node_rate) <= 0:
            raise ValueError("DHT intervals, timeouts and rates must be positive")


@dataclass
class DhtStats:
    """Counters since start (for ``shoal status``, bench and tests)."""

    lookups: int = 0  # iterative lookups run
    messages: int = 0  # FIND_NODE requests sent
    cache_hits: int = 0  # closest() answered from an earlier lookup
    answered: int = 0  # FIND_NODE requests answered
    refused: int = 0  # FIND_NODE requests refused (rate limit)
    checks: int = 0  # liveness checks of stale entries
    rounds: list[int] = field(default_factory=list)  # of the last lookups (at most 64)

    def to_json(self) -> dict[str, int]:
        return {
            "lookups": self.lookups,
            "messages": self.messages,
            "cache_hits": self.cache_hits,
            "answered": self.answered,
            "refused": self.refused,
        }


class KademliaRouting:
    """The ``Routing`` seam over a Kademlia DHT (see the module docstring).

    Installs itself as ``manager``'s dial policy. Call :meth:`start` once the manager listens,
    :meth:`aclose` before closing the manager. The node's request handler calls
    :meth:`answer_find_node`, and the runtime calls :meth:`peer_up` for every new connection.

    Args:
        manager: The connection manager.
        options: k, alpha, intervals and limits.
        rng: Randomness for refresh targets (seed it in tests and simulations).
        connect_timeout: How long ``connect`` may wait and dial (default: the manager's).
    """

    def __init__(
        self,
        manager: ConnectionManager,
        *,
        options: DhtOptions | None = None,
        rng: random.Random | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._manager = manager
        self.options = options or DhtOptions()
        self._rng = rng or random.Random()
        self._clock = manager.clock
        self._connect_timeout = (
            connect_timeout if connect_timeout is not None else manager.limits.connect_timeout
        )
        self.table = RoutingTable(
            manager.node_id, k=self.options.k, max_per_subnet=self.options.max_per_subnet
        )
        self.stats = DhtStats()
        self.cache = ClosestCache(
            ttl=self.options.cache_ttl, max_entries=self.options.cache_entries
        )
        self._rate = PeerRateLimit(self.options.find_node_rate, self.options.find_node_burst)
        self._limit_log = LimitLog(log, clock=self._clock)
        self._addresses: OrderedDict[bytes, tuple[str, ...]] = OrderedDict()
        self._running_lookups: set[asyncio.Future[None]] = set()
        self._checking: set[bytes] = set()
        self._querying: Counter[bytes] = Counter()  # nodes with a FIND_NODE under way
        self._down: dict[bytes, float] = {}  # node -> until when a failed node counts as down
        # Per running lookup, the nodes that entered the table while it ran: one inside its
        # radius that it did not find means its set may miss more (not cached).
        self._joined_during: dict[asyncio.Future[None], set[bytes]] = {}
        self._tasks = TaskSet("dht")
        self._not_empty = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        manager.set_dial_policy(self)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Begin the refresh loop (a self-lookup once the table has an entry)."""
        self._tasks.spawn(self._refresh_loop(), name="dht refresh")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    def on_node_left(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when a node leaves the table (failed, or forgotten): the
        handoff re-replicates soon. Joins wait for the periodic pass."""
        self._listeners.append(callback)

    # -- the Routing seam ----------------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        return self._manager.node_id

    async def closest(self, target: bytes, count: int) -> list[bytes]:
        """Up to ``count`` node IDs closest to ``target`` in the network (this one included),
        found by lookup or proven by an earlier one."""
        now = self._clock.monotonic()
        found = self.cache.find(target, count, now)
        if found is None and self._running_lookups:
            # Placement batched: a lookup already running may well cover this ID.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lookup_budget()):
                    await asyncio.wait(list(self._running_lookups))
            found = self.cache.find(target, count, self._clock.monotonic())
        if found is not None:
            self.stats.cache_hits += 1
            return found
        nodes = await self.lookup(target)
        if len(nodes) == 1 and self._down:
            # Nobody but us: the nodes counted down may be back (a frozen one thawed). Better
            # one more lookup that asks them than a put or get with no peer at all.
            self._down.clear()
            nodes = await self.lookup(target)
        return nodes[:count]

    async def connect(self, node_id: bytes) -> PeerConnection:
        """The connection to ``node_id``, dialed now if needed (room made under the limit)."""
        conn = self._manager.connection(node_id)
        if conn is not None:
            return conn
        if not self._learn_for_dialing(node_id):
            raise PeerUnavailable(f"node {short_id(node_id)} has no known address")
        return await self._manager.connect(node_id, timeout=self._connect_timeout)

    def wanted_peers(self, known: Sequence[PeerRecord]) -> list[bytes]:
        """The DialPolicy: nodes found by mDNS until each is reached once (at most
        ``MDNS_HINT_DIALS`` failed dials); and while the routing table is empty and fewer
        than ``alpha`` connections are open, the bootstrap peers (or, without any, those
        remembered from an earlier run), so a node gets into the network. Nobody else:
        lookups dial on demand the nodes the table names.

        Not "while fewer than ``alpha`` connections are open": at small connection caps that
        made every node whose connection a busy bootstrap node had closed to make room dial
        it again, which closed another one there, for ever (a storm of dials and idle
        closes at the bootstrap node, whose own lookups then found no connection slot)."""
        # A node announced on the local network is a hint to check once: dialed until a
        # handshake proves its key (then the table has it), whatever the table holds. Without
        # this, two LAN nodes that each got one inbound connection first never met the rest.
        hints = [
            r.node_id
            for r in known
            if r.source is PeerSource.MDNS and not r.verified and r.failures < MDNS_HINT_DIALS
        ]
        if len(self.table) > 0 or len(self._manager.live_ids()) >= self.options.alpha:
            return hints
        wanted = hints + [r.node_id for r in known if r.bootstrap]
        if not wanted:  # remembered from an earlier run: those reached before first
            ranked = sorted(known, key=lambda r: (not r.verified, r.failures))
            wanted = [r.node_id for r in ranked[: self.options.alpha]]
        return wanted

    # -- lookups -------------------------------------------------------------------------------

    def _lookup_budget(self) -> float:
        return self._connect_timeout + self.options.query_timeout * 4

    async def lookup(self, target: bytes) -> list[bytes]:
        """Run one iterative lookup of ``target``; the closest nodes that answered, this node
        included, closest first (at most ``k + 1``)."""
        k = self.options.k
        seeds = [(c.node_id, c.addresses) for c in self.table.closest(target, k)]
        lookup = Lookup(target, seeds, k=k, alpha=self.options.alpha, exclude=[self.node_id])
        self.stats.lookups += 1
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running_lookups.add(marker)
        joined = self._joined_during[marker] = set()
        queries: dict[asyncio.Task[list[tuple[bytes, tuple[str, ...]]] | Miss], bytes] = {}
        deadline = self._clock.monotonic() + self.options.lookup_timeout
        failed: list[bytes] = []
        try:
            while True:
                for candidate in lookup.next_queries():
                    self._remember(candidate.node_id, candidate.addresses)
                    task = asyncio.get_running_loop().create_task(
                        self._query(candidate.node_id, target),
                        name=f"find node {short_id(candidate.node_id)}",
                    )
                    queries[task] = candidate.node_id
                left = deadline - self._clock.monotonic()
                if not queries or lookup.done or left <= 0:
                    break
                answered_now, _ = await asyncio.wait(
                    queries, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                for task in answered_now:
                    node_id = queries.pop(task)
                    found = task.result()
                    if isinstance(found, Miss):
                        failed.append(node_id)
                        lookup.failed(node_id)
                    else:
                        lookup.succeeded(node_id, found)
        finally:
            finished = lookup.done
            for task in queries:
                task.cancel()
            if queries:
                await asyncio.gather(*queries, return_exceptions=True)
            lookup.cancel_pending()
            self._running_lookups.discard(marker)
            self._joined_during.pop(marker, None)
            marker.set_result(None)
        now = self._clock.monotonic()
        answered = [c.node_id for c in lookup.result()]
        if answered:  # a lookup nobody answered refreshed nothing
            self.table.refreshed(target, now)
        self.stats.rounds = [*self.stats.rounds[-63:], lookup.rounds]
        # The set proves what lies within its radius only if the lookup finished, no node
        # inside the radius failed (it may be alive and missing), and every node that joined
        # the table inside the radius while the lookup ran is in the set (one that is not may
        # be one of several it missed). Nodes heard from for the first time *by* the lookup
        # join the table as it runs: they are in the set.
        radius = distance(target, answered[-1]) if len(answered) >= k else None
        trusted = (
            finished
            and bool(answered)
            and not any(
                (radius is None or distance(target, n) < radius) and not self._is_down(n)
                for n in failed
            )
        )
        missed = any(
            n not in answered and (radius is None or distance(target, n) <= radius) for n in joined
        )
        if trusted and not missed:
            self.cache.add(target, [*answered, self.node_id], radius, now)
        key = int.from_bytes(target, "big")
        return sorted([*answered, self.node_id], key=lambda n: int.from_bytes(n, "big") ^ key)

    async def _query(
        self, node_id: bytes, target: bytes
    ) -> list[tuple[bytes, tuple[str, ...]]] | Miss:
        """FIND_NODE(target) to ``node_id``: what it named (addresses vetted), or why not.

        Only the node's own failures count against it (``Miss.FAILED``: marked down, a
        failure in the table): no answer in time, a broken answer, or dials that failed
        ``DIAL_ATTEMPTS`` times (a node at its own connection cap refuses new connections
        until one of its connections is idle, which looks like a node that is down, so one
        refusal is not enough). Tried again without counting: a ``busy`` answer (after
        ``BUSY_BACKOFF``) and a connection closed under the request (the peer closed it idle
        to make room before our request reached it, or a simultaneous dial replaced it).
        ``Miss.UNAVAILABLE`` (the lookup goes on without the node, nothing else changes):
        still busy or closing our connections after ``QUERY_ATTEMPTS``, or no connection
        slot of *our own* came free.
        """
        if self._is_down(node_id):
            return Miss.FAILED  # failed moments ago: not worth a dial or a timeout again
        self._querying[node_id] += 1
        try:
            return await self._query_once(node_id, target)
        finally:
            self._querying[node_id] -= 1
            if self._querying[node_id] <= 0:
                del self._querying[node_id]

    async def _query_once(
        self, node_id: bytes, target: bytes
    ) -> list[tuple[bytes, tuple[str, ...]]] | Miss:
        budget = self._connect_timeout + self.options.query_timeout
        deadline = self._clock.monotonic() + budget
        dial_failures = busy = closed_under_us = 0
        transient = False  # the last try ended busy or closed under us (not a failure)
        try:
            # The hard bound: each step below has its own timeout; retries stop at deadline.
            async with asyncio.timeout(budget + self._connect_timeout + self.options.query_timeout):
                while True:
                    conn: PeerConnection | None = None
                    delay = 0.0
                    sent = self._clock.monotonic()
                    try:
                        conn = await self._reach(node_id)
                        if conn is None:
                            return Miss.UNAVAILABLE  # our own limits: not its failure
                        self.stats.messages += 1
                        sent = self._clock.monotonic()
                        answer = await conn.request(
                            FindNode(target=target), timeout=self.options.query_timeout
                        )
                        break
                    except Busy:
                        busy += 1
                        if busy >= QUERY_ATTEMPTS:
                            return Miss.UNAVAILABLE  # up, only unwilling now
                        delay, transient = BUSY_BACKOFF, True
                    except PeerUnavailable:
                        if conn is None:
                            dial_failures += 1
                            if dial_failures >= DIAL_ATTEMPTS:
                                raise
                            delay = max(0.05, self._manager.limits.idle_grace)
                            transient = False
                        elif self._clock.monotonic() - sent < self._manager.limits.stall_timeout:
                            # Closed under the request at once: closed idle by the node to
                            # make room before our request got there, or replaced by a
                            # simultaneous dial. Dial again (a node that crashed fails that).
                            closed_under_us += 1
                            if closed_under_us >= QUERY_ATTEMPTS:
                                return Miss.UNAVAILABLE  # up, but closing our connections
                            transient = True
                        else:
                            raise  # it stopped answering (stall detection closed it)
                    if self._clock.monotonic() + delay >= deadline:
                        if transient:
                            return Miss.UNAVAILABLE
                        raise PeerUnavailable(
                            f"node {short_id(node_id)} did not answer FIND_NODE within {budget:g} s"
                        )
                    if delay:
                        await self._clock.sleep(delay)
        except (TimeoutError, TransportError, ProtocolError, ShoalError) as exc:
            log.debug("FIND_NODE to %s failed: %s", short_id(node_id), exc)
            self._failed(node_id)
            return Miss.FAILED
        if not isinstance(answer, Nodes):
            self._failed(node_id)
            return Miss.FAILED
        self._heard_from(conn)
        loopback_ok = is_loopback_host(host_of(conn.remote_address))
        found = []
        for entry in answer.nodes[: self.options.k]:
            if entry.node_id == node_id:
                continue
            found.append((entry.node_id, _vetted(entry.addrs, loopback_ok=loopback_ok)))
        return found

    async def _reach(self, node_id: bytes) -> PeerConnection | None:
        """The connection to ``node_id``, dialed if needed; None when this node could not dial
        it: no connection slot came free within the connect timeout, or no address of it is
        at hand (our own limits and bookkeeping, not the node's failure).

        Raises:
            PeerUnavailable: The dial failed.
        """
        conn = self._manager.connection(node_id)
        if conn is not None:
            return conn
        if not self._learn_for_dialing(node_id):
            return None
        return await self._manager.try_connect(node_id, timeout=self._connect_timeout)

    def _learn_for_dialing(self, node_id: bytes) -> bool:
        """Whether ``node_id`` is in the peer book (which the dialer dials from): put there
        with the addresses the table or an answer gave. A full book (``max_known_peers``)
        makes room: the peer unreachable longest goes, never a connected or bootstrap one nor
        one being asked now, one in the routing table last (so the book's bound holds and a
        lookup can still dial anyone)."""
        if self._manager.record(node_id) is not None:
            return True
        addresses = self._known_addresses(node_id)
        if not addresses:
            return False
        self._manager.learn(node_id, addresses, source=PeerSource.DHT)
        if self._manager.record(node_id) is not None:
            return True
        idle = [
            r
            for r in self._manager.records()
            if not r.up
            and not r.bootstrap
            and r.unreachable_since is not None
            and r.node_id not in self._querying
        ]
        if idle:
            victim = min(
                idle, key=lambda r: (r.node_id in self.table, r.verified, r.unreachable_since)
            )
            self._manager.forget(victim.node_id)
            self._manager.learn(node_id, addresses, source=PeerSource.DHT)
        return self._manager.record(node_id) is not None

    def _remember(self, node_id: bytes, addresses: Iterable[str]) -> None:
        addresses = tuple(addresses)
        if not addresses or node_id == self.node_id:
            return
        self._addresses.pop(node_id, None)
        self._addresses[node_id] = addresses
        while len(self._addresses) > MAX_REMEMBERED_ADDRESSES:
            self._addresses.popitem(last=False)

    def _known_addresses(self, node_id: bytes) -> tuple[str, ...]:
        contact = self.table.contact(node_id)
        if contact is not None and contact.addresses:
            return contact.addresses
        return self._addresses.get(node_id, ())

    # -- the table -----------------------------------------------------------------------------

    def peer_up(self, conn: PeerConnection) -> None:
        """A connection came up: the peer was heard from directly."""
        self._heard_from(conn)

    def _heard_from(self, conn: PeerConnection) -> None:
        if conn.peer is None:
            return
        node_id = conn.peer_id
        record = self._manager.record(node_id)
        addresses = list(record.addresses) if record is not None else []
        if not addresses:
            addresses = list(self._known_addresses(node_id))
        was_in = node_id in self.table
        if self._down.pop(node_id, None) is not None:
            self.cache.node_joined(node_id)  # back: the sets made without it are wrong now
        observed = self.table.observe(
            node_id, addresses, self._clock.monotonic(), seen_from=conn.remote_address
        )
        if observed.added and not was_in:
            for joined in self._joined_during.values():
                joined.add(node_id)
            self.cache.node_joined(node_id)
            self._not_empty.set()
            if len(self.table) == 1:
                self._manager.refresh()  # the dial policy depends on an empty table
        if observed.check is not None:
            self._check(observed.check)

    def forget(self, node_id: bytes) -> None:
        """The transport forgot ``node_id`` (unreachable too long): out of the table too."""
        self.cache.node_failed(node_id)
        self._addresses.pop(node_id, None)
        if self.table.remove(node_id):
            self._node_left()

    def _is_down(self, node_id: bytes) -> bool:
        until = self._down.get(node_id)
        if until is None:
            return False
        if until <= self._clock.monotonic():
            del self._down[node_id]
            return False
        return True

    def _failed(self, node_id: bytes) -> None:
        # Counted down for a while: lookups skip it, and a set it is missing from still proves
        # what it covers (a node that comes back is heard from and rejoins the sets).
        self._down.pop(node_id, None)
        self._down[node_id] = self._clock.monotonic() + DOWN_FOR
        while len(self._down) > MAX_REMEMBERED_ADDRESSES:
            self._down.pop(next(iter(self._down)))
        self.cache.node_failed(node_id)
        was_in = node_id in self.table
        self.table.failed(node_id, self._clock.monotonic())
        if was_in and node_id not in self.table:
            self._node_left()

    def _node_left(self) -> None:
        if len(self.table) == 0:
            self._manager.refresh()  # the dial policy depends on an empty table
        for callback in self._listeners:
            callback()

    def _check(self, node_id: bytes) -> None:
        if node_id in self._checking or len(self._checking) >= MAX_CHECKS:
            return
        self._checking.add(node_id)
        try:
            self._tasks.spawn(self._run_check(node_id), name=f"check {short_id(node_id)}")
        except RuntimeError:  # closing
            self._checking.discard(node_id)

    async def _run_check(self, node_id: bytes) -> None:
        """Liveness of a stale entry: a PING (dialing if needed)."""
        self.stats.checks += 1
        try:
            async with asyncio.timeout(self._connect_timeout + self.options.query_timeout):
                conn = await self._reach(node_id)
                if conn is None:
                    return  # no connection slot here: no verdict (checked at the next need)
                await conn.ping(self.options.query_timeout)
        except Busy:
            pass  # up, only unwilling now
        except (TimeoutError, TransportError, ProtocolError, ShoalError):
            self._failed(node_id)
        else:
            self._heard_from(conn)
        finally:
            self._checking.discard(node_id)

    async def _refresh_loop(self) -> None:
        interval = self.options.refresh_interval
        while True:
            await self._not_empty.wait()
            await self._refresh(own=True)
            # Refresh checks run often enough that no bucket goes much past its interval. A
            # node that knows fewer than k nodes looks again soon (its first lookups may have
            # met full connection slots), backing off while that finds nobody new.
            deadline = self._clock.monotonic() + interval
            delay = SMALL_TABLE_REFRESH
            while self._clock.monotonic() < deadline:
                small = len(self.table) < self.options.k
                await self._clock.sleep(delay if small else min(60.0, interval / 4))
                if len(self.table) == 0:
                    self._not_empty.clear()
                    break
                before = len(self.table)
                await self._refresh(own=small)
                grew = len(self.table) > before
                delay = SMALL_TABLE_REFRESH if grew else min(delay * 2, 60.0)

    async def _refresh(self, *, own: bool) -> None:
        try:
            if own:
                await self.lookup(self.node_id)
            now = self._clock.monotonic()
            for index in self.table.stale_buckets(now, self.options.refresh_interval):
                target = random_id_in_bucket(self.node_id, index, self._rng)
                await self.lookup(target)
        except ShoalError as exc:  # a lookup never raises these; a refresh must not die of one
            log.debug("DHT refresh failed: %s", exc)

    # -- answering -----------------------------------------------------------------------------

    def answer_find_node(self, peer: PeerConnection, message: FindNode) -> Nodes:
        """Answer a peer's FIND_NODE from the table: up to ``k`` nodes closest to the target
        (never the asker itself), each with at most ``MAX_NODE_ADDRS`` addresses.

        Raises:
            Busy: The peer sent more FIND_NODE than its rate limit allows.
        """
        now = self._clock.monotonic()
        if not self._rate.allow(peer.peer_id, now):
            self.stats.refused += 1
            self._limit_log.hit(
                "find_node_rate",
                "%s sends more than %g FIND_NODE per second; answering busy",
                peer.describe(),
                self.options.find_node_rate,
            )
            raise Busy(
                f"too many FIND_NODE requests (more than {self.options.find_node_rate:g} per "
                "second); slow down and retry"
            )
        self.stats.answered += 1
        self._heard_from(peer)
        contacts = self.table.closest(message.target, self.options.k, exclude=(peer.peer_id,))
        return Nodes(
            nodes=tuple(
                PeerAddress(node_id=c.node_id, addrs=c.addresses[:MAX_NODE_ADDRS]) for c in contacts
            )
        )


def _vetted(addresses: Iterable[str], *, loopback_ok: bool) -> tuple[str, ...]:
    good: list[str] = []
    for text in addresses:
        try:
            address = normalize_address(text, allow_loopback=loopback_ok)
        except AddressError:
            continue
        if address not in good:
            good.append(address)
    return tuple(good[:MAX_NODE_ADDRS])
