"""Dial loops: one per wanted peer, one per bootstrap address not yet resolved to a node.

How it works: the :class:`DialPolicy` (the routing implementation) names the peers it wants
connected. Whenever something changes (a peer learnt, forgotten, up or down, or the policy's
view), :meth:`Dialer.refresh` schedules a reconcile on the next loop iteration: a loop starts
for every wanted peer that has an address and none yet, and the loop of every peer no longer
wanted (or forgotten) is cancelled. A loop dials the peer's addresses in turn; each dial first
takes a token from one bucket shared by all loops (``dial_rate`` per second, ``dial_burst`` at
once) and needs a free connection slot. Then it waits while the connection lasts; otherwise it
sleeps with exponential backoff and jitter. A connection that ends within
``STABLE_CONNECTION`` seconds counts as a failed dial, so no peer (nor a second process with
the same key) can make a loop reconnect in a tight circle. Dials on demand (``connect``,
``try_connect``) take their tokens from a bucket of their own (``demand_dial_rate``), so
neither kind waits behind the other, and may close an idle connection to make room.

A bootstrap address (``--peer``) means "whoever listens there": its loop dials without an
expected key until it reaches a node, which then becomes an ordinary peer marked ``bootstrap``
(never forgotten, preferred by the full mesh). If the address later answers with another key,
the bootstrap loop starts again and follows the new node.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from shoal.clock import Clock
from shoal.errors import HandshakeError, PeerUnavailable, ProtocolError, TransportError
from shoal.ids import short_id
from shoal.transport.book import PeerBook, PeerRecord, PeerSource
from shoal.transport.limits import Backoff, LimitLog, TokenBucket, TransportLimits
from shoal.transport.peer import PeerConnection
from shoal.transport.tasks import TaskSet

if TYPE_CHECKING:
    from shoal.transport.manager import ConnectionManager

__all__ = ["STABLE_CONNECTION", "DialPolicy", "Dialer"]

log = logging.getLogger("shoal.transport.manager")

#: Handshake failures that mean "a node of another network": never worth dialing again.
OTHER_NETWORK_CODES = frozenset({"wrong-network", "wrong-network-secret"})

#: Seconds a connection must last for its end to count as a drop rather than a failed dial.
STABLE_CONNECTION: Final = 5.0


class DialPolicy(Protocol):
    """Which peers to keep connected: the routing implementation's decision."""

    def wanted_peers(self, known: Sequence[PeerRecord]) -> Iterable[bytes]:
        """Node IDs (among ``known``) the manager should keep dialing."""
        ...


class _Progress:
    """Whether a dial on demand got as far as dialing (see ``Dialer.try_connect``)."""

    dialed = False


class _NoDials:
    def wanted_peers(self, known: Sequence[PeerRecord]) -> Iterable[bytes]:
        return ()


class Dialer:
    """The dial loops of one connection manager."""

    def __init__(
        self,
        manager: ConnectionManager,
        book: PeerBook,
        *,
        limits: TransportLimits,
        clock: Clock,
        backoff: Backoff,
        rng: random.Random,
        limit_log: LimitLog,
        tasks: TaskSet,
    ) -> None:
        self._manager = manager
        self._book = book
        self._limits = limits
        self._clock = clock
        self._backoff = backoff
        self._rng = rng
        self._limit_log = limit_log
        self._tasks = tasks
        self._policy: DialPolicy = _NoDials()
        self._dialers: dict[bytes, asyncio.Task[None]] = {}
        self._dial_locks: dict[bytes, asyncio.Lock] = {}
        self._bootstrap: dict[str, bytes | None] = {}  # address -> node there, once known
        self._bootstrap_loops: dict[str, asyncio.Task[None]] = {}
        self._budget = TokenBucket(limits.dial_rate, limits.dial_burst, clock=clock)
        self._demand_budget = TokenBucket(
            limits.demand_dial_rate, limits.demand_dial_burst, clock=clock
        )
        self._reconcile_scheduled = False
        self._running = False

    # -- wanted peers --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin dialing (the manager is listening, so handshakes can run)."""
        self._running = True
        self.refresh()

    def close(self) -> None:
        """Stop reconciling (the loops are tasks of the manager, cancelled with it)."""
        self._running = False

    def dialing(self) -> set[bytes]:
        """Peers that have a dial loop."""
        return set(self._dialers)

    def add_bootstrap(self, address: str) -> None:
        """Dial the canonical ``address`` until the node there is known."""
        self._bootstrap.setdefault(address, None)
        self.refresh()

    def forget(self, node_id: bytes) -> None:
        """``node_id`` left the book: end its loop."""
        self._dial_locks.pop(node_id, None)
        loop = self._dialers.pop(node_id, None)
        if loop is not None:
            loop.cancel()
        for address, found in self._bootstrap.items():
            if found == node_id:  # a bootstrap address is dialed again, whoever is there
                self._bootstrap[address] = None
        self.refresh()

    def set_policy(self, policy: DialPolicy) -> None:
        """Let ``policy`` (the routing) decide which peers to keep connected."""
        self._policy = policy
        self._schedule_reconcile()

    def refresh(self) -> None:
        """Ask the policy again which peers it wants (call after its view changed)."""
        self._schedule_reconcile()

    def _schedule_reconcile(self) -> None:
        # Coalesced and run from the loop, never from inside a dial loop that it may cancel.
        if self._reconcile_scheduled or not self._running:
            return
        self._reconcile_scheduled = True
        asyncio.get_running_loop().call_soon(self._reconcile)

    def _reconcile(self) -> None:
        self._reconcile_scheduled = False
        if not self._running:
            return
        wanted = set(self._policy.wanted_peers(self._book.records()))
        for node_id, loop in list(self._dialers.items()):
            if node_id not in wanted or node_id not in self._book:
                loop.cancel()
                del self._dialers[node_id]
        for node_id in wanted:
            record = self._book.get(node_id)
            if record is None or not record.addresses or node_id in self._dialers:
                continue
            task = self._spawn(self._dial_loop(node_id), f"dial {short_id(node_id)}")
            if task is not None:
                self._dialers[node_id] = task
                task.add_done_callback(functools.partial(_loop_ended, self._dialers, node_id))
        for address, found in self._bootstrap.items():
            if found is None and address not in self._bootstrap_loops:
                task = self._spawn(self._bootstrap_loop(address), f"bootstrap {address}")
                if task is not None:
                    self._bootstrap_loops[address] = task
                    task.add_done_callback(
                        functools.partial(_loop_ended, self._bootstrap_loops, address)
                    )

    # -- dialing -------------------------------------------------------------------------------

    async def _dial_loop(self, node_id: bytes) -> None:
        attempt = 0
        while True:
            record = self._book.get(node_id)
            if record is None or not record.addresses:
                return
            conn = self._manager.connection(node_id) or await self._attempt(record)
            if conn is not None:
                since = self._clock.monotonic()
                await conn.closed.wait()
                if self._clock.monotonic() - since >= STABLE_CONNECTION:
                    attempt = 0
                    continue
            await self._clock.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    async def _bootstrap_loop(self, address: str) -> None:
        attempt = 0
        while self._bootstrap.get(address, b"") is None:
            known = next((r for r in self._book.records() if r.up and address in r.addresses), None)
            if known is not None:
                self._resolve_bootstrap(address, known.node_id)
                return
            if await self._may_dial():
                try:
                    conn = await self._manager.dial(address)
                except HandshakeError as exc:
                    if exc.code == "self-connection":
                        log.info("%s is this node itself; not dialing it", address)
                        self._manager.add_own_address(address)
                        self._bootstrap.pop(address, None)
                        return
                    if exc.code in OTHER_NETWORK_CODES:
                        # The user named this address: say once why it will never connect.
                        log.warning(
                            "%s is a node of another network (%s); not dialing it again. To "
                            "join its network, run `shoal init --join INVITE` with the invite "
                            "that `shoal invite` prints there",
                            address,
                            exc.code,
                        )
                        self._bootstrap.pop(address, None)
                        return
                    self._dial_failed(address, exc, first=attempt == 0)
                except (TransportError, ProtocolError) as exc:
                    self._dial_failed(address, exc, first=attempt == 0)
                else:
                    self._resolve_bootstrap(address, conn.peer_id)
                    return
            await self._clock.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    def _resolve_bootstrap(self, address: str, node_id: bytes) -> None:
        if address not in self._bootstrap:
            return
        self._bootstrap[address] = node_id
        self._book.learn(
            node_id, [address], source=PeerSource.BOOTSTRAP, now=self._clock.monotonic()
        )
        record = self._book.get(node_id)
        if record is not None:
            record.bootstrap = True
            record.source = PeerSource.BOOTSTRAP
            # The address the user gave comes first, even when the list was full.
            if address in record.addresses:
                record.addresses.remove(address)
            record.addresses.insert(0, address)
            del record.addresses[self._limits.max_addresses_per_peer :]
        self._schedule_reconcile()

    async def _may_dial(self, *, room_within: float | None = None) -> bool:
        """Wait for a dial token; False (and a log line) if no connection slot is free.

        With ``room_within`` (a dial on demand), the token comes from the budget of dials on
        demand (``demand_dial_rate``), an idle connection may be closed to make room, and the
        dial waits up to that many seconds for one to become idle. Background loops take
        theirs from ``dial_rate``: neither kind waits behind the other.
        """
        if room_within is None:
            if await self._budget.acquire():
                self._limit_log.hit(
                    "dial_rate",
                    "more than %g dials per second wanted; dials are being delayed",
                    self._limits.dial_rate,
                )
        elif await self._demand_budget.acquire():
            self._limit_log.hit(
                "demand_dial_rate",
                "more than %g dials on demand per second wanted; dials are being delayed",
                self._limits.demand_dial_rate,
            )
        # Checked after the token (the last wait) so no other dial can take the slot between.
        if room_within is not None:
            free = await self._manager.wait_for_room(room_within)
        else:
            free = self._manager.open_connections() < self._limits.max_connections
        if not free:
            self._limit_log.hit(
                "max_connections",
                "%d connections open or being dialed, none idle; not dialing more",
                self._limits.max_connections,
            )
        return free

    async def _attempt(
        self,
        record: PeerRecord,
        *,
        room_within: float | None = None,
        progress: _Progress | None = None,
    ) -> PeerConnection | None:
        """Dial ``record``'s addresses in turn (one at a time per peer); the connection.
        ``progress.dialed`` tells whether a dial was actually made (not only waited for)."""
        node_id = record.node_id
        lock = self._dial_locks.setdefault(node_id, asyncio.Lock())
        async with lock:
            for address in list(record.addresses):
                conn = self._manager.connection(node_id)
                if conn is not None:
                    return conn
                if not await self._may_dial(room_within=room_within):
                    return None
                if self._manager.connection(node_id) is not None:  # came in while we waited
                    return self._manager.connection(node_id)
                if progress is not None:
                    progress.dialed = True
                try:
                    return await self._manager.dial(address, expected_id=node_id)
                except HandshakeError as exc:
                    self._dial_refused(record, address, exc)
                except (TransportError, ProtocolError) as exc:
                    self._dial_failed(address, exc, first=record.failures == 0)
            record.failures += 1
            return None

    def _dial_failed(self, address: str, exc: Exception, *, first: bool) -> None:
        if first:
            log.info("cannot connect to %s yet: %s", address, exc)
        else:
            log.debug("cannot connect to %s: %s", address, exc)

    def _dial_refused(self, record: PeerRecord, address: str, exc: HandshakeError) -> None:
        if exc.code == "self-connection":
            log.info("%s is this node itself; not dialing it", address)
            self._manager.add_own_address(address)
        elif exc.code in OTHER_NETWORK_CODES:
            # Found by chance (a stale address, a LAN neighbour): not ours; forget the address.
            log.debug("%s is a node of another network; not dialing it again", address)
        elif exc.code == "wrong-peer":
            if address in self._bootstrap and self._bootstrap[address] == record.node_id:
                # A bootstrap address means "whoever listens there": a node re-created there
                # with a new key is a new peer, not an impostor.
                log.info("%s now answers with another node key; following it", address)
                self._bootstrap[address] = None
                if not any(self._bootstrap.get(a) == record.node_id for a in record.addresses):
                    record.bootstrap = False
            else:
                log.info("%s: %s", address, exc)
        else:
            self._dial_failed(address, exc, first=record.failures == 0)
            return
        if address in record.addresses:
            record.addresses.remove(address)
        self._schedule_reconcile()

    async def connect(self, node_id: bytes, *, timeout: float) -> PeerConnection:
        """The connection to ``node_id``, dialed now if there is none (dial on demand).

        Raises:
            PeerUnavailable: Unknown, no address, no connection slot free here, or not
                reachable within ``timeout``.
        """
        conn = await self.try_connect(node_id, timeout=timeout)
        if conn is None:
            raise PeerUnavailable(
                f"peer {short_id(node_id)} could not be dialed within {timeout:g} s: none of "
                f"this node's {self._limits.max_connections} connection slots came free"
            )
        return conn

    async def try_connect(self, node_id: bytes, *, timeout: float) -> PeerConnection | None:
        """Like :meth:`connect`, but None when no dial was made because no connection slot
        came free here within ``timeout`` (this node's own limit, not the peer's failure).

        Raises:
            PeerUnavailable: Unknown, no address, or a dial was made and failed (or did not
                finish within ``timeout``).
        """
        conn = self._manager.connection(node_id)
        if conn is not None:
            return conn
        record = self._book.get(node_id)
        if record is None or not record.addresses:
            raise PeerUnavailable(f"peer {short_id(node_id)} is not connected and has no address")
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout):
                await self._attempt(record, room_within=timeout, progress=progress)
        except TimeoutError as exc:
            if not progress.dialed:
                return None
            raise PeerUnavailable(
                f"peer {short_id(node_id)} could not be reached within {timeout:g} s"
            ) from exc
        conn = self._manager.connection(node_id)
        if conn is None:
            if not progress.dialed:
                return None
            raise PeerUnavailable(f"peer {short_id(node_id)} could not be reached")
        return conn

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        try:
            return self._tasks.spawn(coro, name=name)
        except RuntimeError:  # the manager is closing
            return None


def _loop_ended(loops: dict[Any, asyncio.Task[None]], key: Any, task: asyncio.Task[None]) -> None:
    if loops.get(key) is task:
        del loops[key]
