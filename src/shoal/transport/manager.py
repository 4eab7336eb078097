"""The connection manager: listener, dialing, one connection per peer, reconnect, liveness.

How it works:
- The network is a :class:`~shoal.transport.backend.NetworkBackend` (real TCP + TLS by default,
  in-memory in tests) and time a :class:`~shoal.clock.Clock`; both are constructor arguments.
- What the node tells peers (HELLO's ``listen_addrs``) is ``advertised_addresses``: the
  ``advertise`` addresses if given, else the listen address, or for a wildcard listen
  (``0.0.0.0``, ``::``) the host's interface addresses (``transport.addresses``); never an
  unspecified address. Each is one of the node's own addresses, never dialed.
- Peers are keyed by node ID, never by address, in a bounded :class:`PeerBook`; every address
  is vetted (``transport.addresses``) before it is remembered or dialed.
- Which peers to keep connected is the routing's decision (a ``DialPolicy``); the manager's
  ``Dialer`` (``transport.dialing``) keeps one dial loop per wanted peer, with a global dial
  rate limit and backoff, and ends the loop of a peer no longer wanted.
- Two connections to one peer: if one was dialed by each side (a simultaneous dial), both
  sides keep the one dialed by the smaller node ID. If both were dialed by the same side (a
  reconnect while we still hold the old one, or one key used by two running nodes), the
  existing connection stays, the new one is closed and the old one is checked with a PING.
- ``max_connections`` bounds the open connections. At the cap, a connection needed now makes
  room by closing the connection idle longest (no request open either way): a dial on demand
  if one has been idle for ``idle_grace`` seconds (else it waits for one, within its
  timeout), an inbound connection if one has been idle for ``inbound_idle_grace`` (default:
  any idle one; else it is refused).
- Inbound connections are admitted against the limits (``TransportLimits``) right after the
  TCP accept, before TLS allocates anything; over a limit they are closed at once.
- A peer unreachable for ``forget_after`` seconds is forgotten (``on_peer_forgotten`` removes
  it from the catalog).
- Each connection has a monitor task that PINGs it when it was quiet for a ping interval; a
  PING without answer closes it, which marks the peer down (not forgotten).

Resource handling: every task is owned by the manager's ``TaskSet``; ``aclose`` stops the
listener, closes every connection and awaits every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from shoal.clock import SYSTEM_CLOCK, Clock
from shoal.errors import (
    ConfigError,
    HandshakeError,
    PeerUnavailable,
    ProtocolError,
    TransportError,
)
from shoal.ids import sha256, short_id
from shoal.protocol import Connection, LocalNode, Role, node_id_for
from shoal.transport.addresses import (
    AddressError,
    OwnAddresses,
    advertised_addresses,
    format_address,
    host_of,
    is_loopback_host,
    is_wildcard_host,
    normalize_address,
    parse_address,
    parse_advertise,
    printable,
)
from shoal.transport.backend import (
    Incoming,
    Listener,
    NetworkBackend,
    Stream,
    TcpTlsBackend,
    plain_ip,
)
from shoal.transport.book import PeerBook, PeerRecord, PeerSource
from shoal.transport.dialing import Dialer, DialPolicy
from shoal.transport.identity import Identity, certificate_public_key
from shoal.transport.interfaces import interface_addresses
from shoal.transport.limits import Admission, Backoff, LimitLog, TransportLimits
from shoal.transport.peer import Handler, PeerConnection
from shoal.transport.stream import FrameStream
from shoal.transport.tasks import TaskSet

__all__ = [
    "Backoff",
    "ConnectionManager",
    "DialPolicy",
    "PeerRecord",
    "PeerSource",
    "TransportStats",
    "format_address",
    "parse_address",
]

log = logging.getLogger(__name__)

DEFAULT_BACKOFF: Final = Backoff()
DEFAULT_LIMITS: Final = TransportLimits()

PeerUpCallback = Callable[[PeerConnection], Coroutine[Any, Any, None]]
PeerDownCallback = Callable[[bytes], None]
PeerForgottenCallback = Callable[[bytes], Coroutine[Any, Any, None]]


@dataclass
class TransportStats:
    """Counters since start, for tests, status and logs."""

    dials: int = 0  # dial attempts (after the rate limit)
    accepted: int = 0  # inbound connections admitted to the TLS handshake
    rejected: int = 0  # inbound connections closed at once by a limit
    registered: int = 0  # connections that became a peer's connection
    duplicates_closed: int = 0  # second connections to a connected peer, closed
    replaced: int = 0  # connections replaced by a simultaneous-dial winner
    forgotten: int = 0  # peers forgotten (unreachable too long, or evicted)
    idle_closed: int = 0  # idle connections closed to make room (the connection limit)


class ConnectionManager:
    """Owns every connection of a node. Use ``start()`` then ``aclose()``.

    Args:
        identity: This node's key.
        tls_dir: Where the real backend writes its certificate files (the data dir); only
            needed when ``backend`` is not given.
        listen: ``host:port`` to listen on (port 0: any).
        advertise: ``host:port`` addresses to tell peers instead of the listen address (for
            a node behind NAT or port forwarding); validated at ``start()``.
        handler: Answers peers' requests.
        network, network_secret: Which network this node belongs to (see the handshake).
        on_peer_up: Awaited (in a task) when a peer comes up.
        on_peer_down: Called when a peer's connection ends.
        on_peer_forgotten: Awaited (in a task) when a peer is forgotten.
        ping_interval, ping_timeout: Liveness checks of quiet connections.
        backoff: Delays between dial attempts of one peer.
        rng: Randomness for jitter (seed it in tests).
        clock: Time (virtual in tests).
        backend: The network (real TCP + TLS by default).
        limits: Connection, address and dialing limits.
        interfaces: Lists this host's interface addresses, for a wildcard listen (the real
            interfaces by default; tests give fake ones).
    """

    def __init__(
        self,
        identity: Identity,
        tls_dir: Path | None = None,
        *,
        listen: str,
        handler: Handler,
        network: str = "shoal",
        network_secret: bytes | None = None,
        on_peer_up: PeerUpCallback | None = None,
        on_peer_down: PeerDownCallback | None = None,
        on_peer_forgotten: PeerForgottenCallback | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 10.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        backend: NetworkBackend | None = None,
        limits: TransportLimits = DEFAULT_LIMITS,
        advertise: Sequence[str] = (),
        interfaces: Callable[[], Iterable[str]] = interface_addresses,
    ) -> None:
        if backend is None:
            if tls_dir is None:
                raise ValueError("the real network backend needs a tls_dir")
            backend = TcpTlsBackend(tls_dir)
        self.identity = identity
        self.limits = limits
        self._backend = backend
        self._clock = clock
        self._listen = listen
        self._advertise = tuple(advertise)
        self._interfaces = interfaces
        self._advertised: tuple[str, ...] = ()
        self._handler = handler
        self._network = network
        self._network_secret = network_secret
        self._on_peer_up = on_peer_up
        self._on_peer_down = on_peer_down
        self._on_peer_forgotten = on_peer_forgotten
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._book = PeerBook(identity.node_id, limits, is_own_address=self.is_own_address)
        self._own = OwnAddresses()
        self._connections: dict[bytes, PeerConnection] = {}
        self._checking: set[PeerConnection] = set()
        self._admission = Admission(limits)
        self._dialing = 0
        self._limit_log = LimitLog(log, clock=clock)
        self._tasks = TaskSet("connection manager")
        self._dialer = Dialer(
            self,
            self._book,
            limits=limits,
            clock=clock,
            backoff=backoff,
            rng=rng or random.Random(),
            limit_log=self._limit_log,
            tasks=self._tasks,
        )
        self.stats = TransportStats()
        self._listener: Listener | None = None
        self._changed = asyncio.Condition()
        self._closing = False
        self.listen_address = listen
        self._cert_hash = b""
        self._local: LocalNode | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; raises ``AddressInUse`` or ``ConfigError``."""
        host, port = parse_address(self._listen)
        explicit = parse_advertise(self._advertise)  # a typo fails before we listen
        self._listener = await self._backend.listen(
            host, port, identity=self.identity, on_accept=self._on_incoming
        )
        self.listen_address = self._listener.address
        self._cert_hash = sha256(self._listener.certificate_der)
        self.add_own_address(self.listen_address)
        self._advertised = self._compute_advertised(explicit)
        for address in self._advertised:
            self.add_own_address(address)
        self._local = LocalNode(
            private_key=self.identity.private_key,
            listen_addrs=self._advertised,
            network=self._network,
            network_secret=self._network_secret,
        )
        self._tasks.spawn(self._sweep_loop(), name="forget unreachable peers")
        self._dialer.start()

    def _compute_advertised(self, explicit: tuple[str, ...]) -> tuple[str, ...]:
        bound_host, bound_port = parse_address(self.listen_address)
        wildcard = is_wildcard_host(bound_host)
        found = list(self._interfaces()) if wildcard and not explicit else []
        # dual_stack=False: asyncio's listener on :: sets IPV6_V6ONLY, so it takes no IPv4.
        advertised = advertised_addresses(
            bound_host, bound_port, advertise=explicit, interfaces=found
        )
        if advertised:
            log.info("telling peers to reach this node at %s", ", ".join(advertised))
        else:
            log.warning(
                "listening on %s, but found no address peers can dial; other nodes can still "
                "connect to this one, but not learn where it is: use --advertise HOST:PORT",
                self.listen_address,
            )
        return advertised

    async def aclose(self) -> None:
        self._closing = True
        self._dialer.close()
        if self._listener is not None:
            self._listener.close()
        for conn in list(self._connections.values()):
            await conn.close()
        await self._tasks.aclose()
        if self._listener is not None:
            # Every connection was closed (or aborted) above; this only waits for asyncio's
            # bookkeeping, bounded in case a transport lingers.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._listener.wait_closed()

    # -- queries -------------------------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    @property
    def advertised_addresses(self) -> tuple[str, ...]:
        """Where peers should dial this node, best first (HELLO's ``listen_addrs``, invites).

        Canonical ``host:port`` addresses, never an unspecified one; empty before ``start()``.
        """
        return self._advertised

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def limit_hits(self) -> dict[str, int]:
        """How often each limit was hit, by limit name."""
        return dict(self._limit_log.counts)

    def records(self) -> list[PeerRecord]:
        """Every known peer, connected or not."""
        return self._book.records()

    def record(self, node_id: bytes) -> PeerRecord | None:
        return self._book.get(node_id)

    def connection(self, node_id: bytes) -> PeerConnection | None:
        conn = self._connections.get(node_id)
        return conn if conn is not None and not conn.closed.is_set() else None

    def live_ids(self) -> list[bytes]:
        """Node IDs of peers with an open connection (not including ourselves)."""
        return [n for n, c in self._connections.items() if not c.closed.is_set()]

    def dialing(self) -> set[bytes]:
        """Peers that have a dial loop."""
        return self._dialer.dialing()

    def open_connections(self) -> int:
        """Connections open or being dialed (what ``max_connections`` bounds)."""
        return len(self._connections) + self._dialing

    def pending(self) -> int:
        """Inbound connections being set up."""
        return self._admission.pending

    def make_room(self, *, grace: float | None = None) -> bool:
        """Whether a connection slot is free, after closing the least recently used idle
        connection if the cap is reached: one with no request open either way for at least
        ``grace`` seconds (default ``idle_grace``).

        The closed connection leaves the count at once (its peer is down from now on), so a
        caller that goes on without awaiting anything never exceeds ``max_connections``.
        """
        if self.open_connections() < self.limits.max_connections:
            return True
        victim: PeerConnection | None = None
        longest = self.limits.idle_grace if grace is None else grace
        for conn in self._connections.values():
            idle = conn.idle_for()
            if idle > 0 and idle >= longest and not conn.closed.is_set():
                victim, longest = conn, idle
        if victim is None:
            return False
        self._close_idle(victim)
        return self.open_connections() < self.limits.max_connections

    async def wait_for_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until :meth:`make_room` succeeds."""
        deadline = self._clock.monotonic() + timeout
        while not self.make_room():
            left = deadline - self._clock.monotonic()
            if left <= 0 or self._closing:
                return False
            await self._clock.sleep(min(left, max(0.05, self.limits.idle_grace / 4)))
        return True

    def _close_idle(self, conn: PeerConnection) -> None:
        node_id = conn.peer_id
        self.stats.idle_closed += 1
        log.debug("closing idle connection to %s to make room", short_id(node_id))
        if self._connection_ended(node_id, conn, idle=True):
            self._spawn(self._notify(), "notify")
        self._spawn(conn.close(), "close idle")

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds; raise ``PeerUnavailable`` after ``timeout``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError as exc:
            raise PeerUnavailable(
                f"peers did not reach the expected state in {timeout:g} s"
            ) from exc

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- addresses -----------------------------------------------------------------------------

    def add_own_address(self, address: str) -> None:
        """Never dial ``address`` (this node's listen or API address)."""
        self._own.add(address)

    def is_own_address(self, address: str) -> bool:
        """Whether the canonical ``address`` reaches this very node."""
        return address in self._own

    def add_bootstrap(self, address: str) -> None:
        """Keep dialing ``address`` (a ``--peer``): whoever listens there is a peer.

        Raises:
            ConfigError: The address is malformed or cannot be dialed.
        """
        try:
            normalized = normalize_address(address)
        except AddressError as exc:
            raise ConfigError(f"invalid peer address {printable(address)!r}: {exc}") from exc
        if self.is_own_address(normalized):
            log.info("%s is this node's own address; not dialing it", normalized)
            return
        self._dialer.add_bootstrap(normalized)

    def learn(
        self,
        node_id: bytes,
        addresses: Iterable[str],
        *,
        source: PeerSource,
        via: PeerConnection | None = None,
    ) -> list[str]:
        """Remember ``node_id`` at the good ones of ``addresses``; those newly remembered.

        Addresses from a peer (``via``) may only be loopback addresses if that peer itself
        connects over loopback. A bad address is one DEBUG line; a limit that keeps the peer
        out is one WARNING a minute at most.
        """
        from_loopback = via is None or is_loopback_host(host_of(via.remote_address))
        told_by = via.peer_id if via is not None and source is PeerSource.EXCHANGE else None
        result = self._book.learn(
            node_id,
            addresses,
            source=source,
            now=self._clock.monotonic(),
            via=told_by,
            allow_loopback=from_loopback,
            authoritative=source is PeerSource.HELLO,
        )
        who = f"peer {short_id(via.peer_id)}" if via is not None else source.value
        for text, reason in result.bad:
            log.debug(
                "ignoring address %s for %s (from %s): %s",
                printable(text),
                short_id(node_id),
                who,
                reason,
            )
        if result.refused == "max_known_peers":
            self._limit_log.hit(
                "max_known_peers",
                "this node already knows %d peers; not remembering more",
                self.limits.max_known_peers,
            )
        elif result.refused == "max_learnt_per_peer":
            self._limit_log.hit(
                "max_learnt_per_peer",
                "%s told us about %d peers we have not reached yet; ignoring the rest",
                who,
                self.limits.max_learnt_per_peer,
            )
        if result.new or result.added:
            self._dialer.refresh()
        return result.added

    def forget(self, node_id: bytes) -> None:
        """Forget ``node_id`` now (its connection, if any, is closed)."""
        record = self._book.get(node_id)
        if record is not None:
            self._forget(record, "asked to")

    def _forget(self, record: PeerRecord, reason: str) -> None:
        self._book.forget(record.node_id)
        self.stats.forgotten += 1
        log.info("forgetting peer %s: %s", short_id(record.node_id), reason)
        self._dialer.forget(record.node_id)
        conn = self._connections.get(record.node_id)
        if conn is not None:
            self._spawn(conn.close(), "close forgotten peer")
        if self._on_peer_forgotten is not None:
            self._spawn(self._on_peer_forgotten(record.node_id), "peer forgotten")
        self._dialer.refresh()

    # -- wanted peers and dialing (see shoal.transport.dialing) ------------------------------

    def set_dial_policy(self, policy: DialPolicy) -> None:
        """Let ``policy`` (the routing) decide which peers to keep connected."""
        self._dialer.set_policy(policy)

    def refresh(self) -> None:
        """Ask the dial policy again which peers it wants (call after its view changed)."""
        self._dialer.refresh()

    async def connect(self, node_id: bytes, *, timeout: float) -> PeerConnection:
        """The connection to ``node_id``, dialed now if there is none (dial on demand).

        Raises:
            PeerUnavailable: Unknown, no address, or not reachable within ``timeout``.
        """
        return await self._dialer.connect(node_id, timeout=timeout)

    async def try_connect(self, node_id: bytes, *, timeout: float) -> PeerConnection | None:
        """Like :meth:`connect`, but None when no dial was made because no connection slot
        came free within ``timeout``: this node's own limit, not the peer's failure (a DHT
        query must not count it against the peer).

        Raises:
            PeerUnavailable: Unknown, no address, or the dial failed.
        """
        return await self._dialer.try_connect(node_id, timeout=timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        try:
            return self._tasks.spawn(coro, name=name)
        except RuntimeError:  # closing
            return None

    async def dial(self, address: str, *, expected_id: bytes | None = None) -> PeerConnection:
        """Connect to ``address``, authenticate, register and return the connection.

        The returned connection may already be closed if the peer was connected by another
        connection that wins (see the module docstring); ``connection(id)`` is the live one.
        """
        if self._local is None:
            raise RuntimeError("manager not started")
        host, port = parse_address(address)
        self.stats.dials += 1
        self._dialing += 1
        try:
            stream = await self._backend.connect(host, port, timeout=self.limits.connect_timeout)
            try:
                cert_der = stream.get_extra_info("ssl_object").getpeercert(binary_form=True)
                public_key = certificate_public_key(cert_der)
            except (ValueError, AttributeError, TypeError) as exc:
                stream.abort()
                raise HandshakeError(f"{address} presented an unusable certificate: {exc}") from exc
            if expected_id is not None and node_id_for(public_key) != expected_id:
                stream.abort()
                raise HandshakeError(
                    f"{address} is not node {short_id(expected_id)} (it presented another key)",
                    code="wrong-peer",
                )
            conn = Connection(
                Role.DIALER,
                self._local,
                nonce=os.urandom(32),
                listener_cert_hash=sha256(cert_der),
                listener_public_key=public_key,
                expected_peer_id=expected_id,
            )
            peer = self._peer_connection(stream, conn, dialed=True)
            await peer.handshake(self.limits.handshake_timeout)
        finally:
            self._dialing -= 1
        if self._register(peer) and peer.peer is not None:
            # The address that worked first, then those the peer announces.
            self.learn(
                peer.peer_id,
                [address, *peer.peer.listen_addrs],
                source=PeerSource.HELLO,
                via=peer,
            )
        return peer

    def _peer_connection(self, stream: Stream, conn: Connection, *, dialed: bool) -> PeerConnection:
        # PeerConnection is annotated with FrameStream but uses only the Stream surface, which
        # the in-memory streams provide too.
        return PeerConnection(
            cast(FrameStream, stream),
            conn,
            dialed=dialed,
            local_id=self.node_id,
            handler=self._handler,
            max_uploads=self.limits.max_uploads_per_connection,
            max_downloads=self.limits.max_downloads_per_connection,
            max_queued_requests=self.limits.max_queued_requests_per_connection,
            max_unflushed_answers=self.limits.max_unflushed_answers,
            stall_timeout=self.limits.stall_timeout,
            stall_ping_timeout=self.limits.stall_ping_timeout,
        )

    # -- accepting -----------------------------------------------------------------------------

    def _inbound_from(self, host: str) -> int:
        return sum(
            1
            for c in self._connections.values()
            if not c.dialed and plain_ip(host_of(c.remote_address)) == host
        )

    def _on_incoming(self, incoming: Incoming) -> None:
        """A raw inbound connection (no TLS yet): admit it or close it at once."""
        host = incoming.remote_host
        refusal = (
            ("closing", "")
            if self._closing
            else self._admission.refusal(
                host,
                established=len(self._connections),
                established_from_host=self._inbound_from(host),
            )
        )
        if (
            refusal is not None
            and refusal[0] == "max_connections"
            and self.make_room(grace=self.limits.inbound_idle_grace)
        ):
            refusal = self._admission.refusal(
                host,
                established=len(self._connections),
                established_from_host=self._inbound_from(host),
            )
        if refusal is not None:
            self.stats.rejected += 1
            incoming.reject()
            limit, why = refusal
            if limit != "closing":
                self._limit_log.hit(limit, "%s; closing new connections at once", why)
            return
        task = self._spawn(self._accept(incoming, host), "accept")
        if task is None:
            incoming.reject()
            return
        self.stats.accepted += 1
        self._admission.begin(host)

    async def _accept(self, incoming: Incoming, host: str) -> None:
        try:
            peer = await self._secure(incoming)
        finally:
            self._admission.end(host)
        if peer is None:
            return
        if self._register(peer) and peer.peer is not None:
            # A peer that connected to us is reached at the addresses it announced.
            self.learn(peer.peer_id, peer.peer.listen_addrs, source=PeerSource.HELLO, via=peer)

    async def _secure(self, incoming: Incoming) -> PeerConnection | None:
        assert self._local is not None
        timeout = self.limits.handshake_timeout
        try:
            stream = await incoming.secure(timeout)
        except TransportError as exc:
            log.debug("inbound connection from %s failed: %s", incoming.remote_address, exc)
            return None
        conn = Connection(
            Role.LISTENER,
            self._local,
            nonce=os.urandom(32),
            listener_cert_hash=self._cert_hash,
        )
        peer = self._peer_connection(stream, conn, dialed=False)
        try:
            await peer.handshake(timeout)
        except (TransportError, ProtocolError) as exc:
            # Quietly: nodes of other networks found by chance are none of the log's business.
            log.debug("refused connection from %s: %s", incoming.remote_address, exc)
            return None
        return peer

    # -- registry ------------------------------------------------------------------------------

    def _register(self, conn: PeerConnection) -> bool:
        """Make ``conn`` its peer's connection, or close it; whether it was kept."""
        node_id = conn.peer_id
        existing = self.connection(node_id)
        if existing is not None and existing is not conn:
            keep_new = False
            if existing.dialed != conn.dialed:
                # One dialed by each side: both sides keep the one dialed by the smaller ID.
                tie_winner = min(self.node_id, node_id)
                keep_new = conn.dialer_id == tie_winner and existing.dialer_id != tie_winner
            if _two_places(existing, conn):
                self._limit_log.hit(
                    "duplicate_node_id",
                    "node %s is connected from two places (%s and %s); keeping one "
                    "connection. Are two running nodes using one key?",
                    short_id(node_id),
                    existing.remote_address,
                    conn.remote_address,
                )
            if not keep_new:
                log.debug("keeping %s, closing duplicate %s", existing.describe(), conn.describe())
                self.stats.duplicates_closed += 1
                self._spawn(conn.close(), "close duplicate")
                if existing.dialed == conn.dialed:
                    # The peer reconnected although we hold a connection: is ours stale?
                    self._spawn(self._check_alive(existing), "check duplicate")
                return False
            log.debug(
                "replacing %s by %s (simultaneous dial)", existing.describe(), conn.describe()
            )
            self.stats.replaced += 1
            self._spawn(existing.close(), "close duplicate")
        elif existing is None:
            refusal = None
            if len(self._connections) >= self.limits.max_connections:
                # Slots filled while this one was set up: an idle connection makes room.
                self.make_room(
                    grace=self.limits.idle_grace if conn.dialed else self.limits.inbound_idle_grace
                )
            if len(self._connections) >= self.limits.max_connections:
                refusal = "max_connections", f"{self.limits.max_connections} connections are open"
            elif not conn.dialed:
                host = plain_ip(host_of(conn.remote_address))
                if self._inbound_from(host) >= self.limits.max_connections_per_address:
                    refusal = (
                        "max_connections_per_address",
                        f"{self.limits.max_connections_per_address} connections from "
                        f"{host} are open",
                    )
            if refusal is not None:
                limit, why = refusal
                self._limit_log.hit(limit, "%s; closing a new connection", why)
                self._spawn(conn.close(), "close over limit")
                return False
        source = PeerSource.BOOTSTRAP if conn.dialed else PeerSource.INBOUND
        record, evicted = self._book.connected(node_id, source=source)
        if evicted is not None:
            self._forget(evicted, "the peer book is full and it was unreachable longest")
        record.connection = conn
        record.last_seen = self._clock.time()
        self._connections[node_id] = conn
        self.stats.registered += 1
        if existing is None:
            log.info("peer %s up (%s)", short_id(node_id), conn.remote_address)
        self._spawn(self._run(record, conn), f"peer {short_id(node_id)}")
        self._spawn(self._monitor(record, conn), f"ping {short_id(node_id)}")
        self._spawn(self._notify(), "notify")
        if self._on_peer_up is not None and existing is None:
            self._spawn(self._on_peer_up(conn), "peer up")
        self._dialer.refresh()
        return True

    async def _run(self, record: PeerRecord, conn: PeerConnection) -> None:
        try:
            await conn.run()
        finally:
            if self._connection_ended(record.node_id, conn):
                await self._notify()

    def _connection_ended(
        self, node_id: bytes, conn: PeerConnection, *, idle: bool = False
    ) -> bool:
        """Book-keeping of a connection that ends; whether it was the peer's connection."""
        if self._connections.get(node_id) is not conn:
            return False
        del self._connections[node_id]
        record = self._book.get(node_id)
        if record is not None:
            self._book.disconnected(record, now=self._clock.monotonic(), idle=idle)
        if not idle:
            log.info("peer %s down", short_id(node_id))
        if self._on_peer_down is not None:
            self._on_peer_down(node_id)
        self._dialer.refresh()
        return True

    async def _monitor(self, record: PeerRecord, conn: PeerConnection) -> None:
        # The listening side checks less often, so on a quiet link the dialer's PINGs (which
        # it sees arrive) usually spare it from sending its own.
        interval = self.ping_interval if conn.dialed else self.ping_interval * 1.5
        seen = conn.last_seen
        while not conn.closed.is_set():
            try:
                async with asyncio.timeout(interval):
                    await conn.closed.wait()
                return
            except TimeoutError:
                pass
            if conn.last_seen != seen:
                seen = conn.last_seen  # bytes arrived since: the peer is alive, no need to ask
                record.last_seen = self._clock.time()
                continue
            if not await self._ping(conn):
                return
            record.last_seen = self._clock.time()
            seen = conn.last_seen

    async def _ping(self, conn: PeerConnection) -> bool:
        """PING ``conn``; close it and return False if it does not answer."""
        try:
            await conn.ping(self.ping_timeout)
        except (TransportError, ProtocolError) as exc:
            log.info("peer %s failed liveness check: %s", short_id(conn.peer_id), exc)
            await conn.close()
            return False
        return True

    async def _check_alive(self, conn: PeerConnection) -> None:
        if conn in self._checking:
            return
        self._checking.add(conn)
        try:
            await self._ping(conn)
        finally:
            self._checking.discard(conn)

    # -- forgetting ----------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        interval = min(60.0, self.limits.forget_after / 4)
        while True:
            await self._clock.sleep(interval)
            self.sweep()

    def sweep(self) -> None:
        """Forget the peers unreachable for ``forget_after``; re-ask the policy."""
        after = self.limits.forget_after
        for record in self._book.expired(now=self._clock.monotonic(), after=after):
            self._forget(record, f"not reachable for {after:g} s")
        self._dialer.refresh()


def _two_places(a: PeerConnection, b: PeerConnection) -> bool:
    """Whether two connections of one node ID come from two running nodes (they announce
    different listen addresses; one node announces the same ones on every connection)."""
    return a.peer is not None and b.peer is not None and a.peer.listen_addrs != b.peer.listen_addrs
