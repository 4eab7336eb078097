"""The connection manager: listener, dialing, one connection per peer, reconnect, liveness.

How it works:
- Every address we know (bootstrap ``--peer`` addresses, addresses announced in HELLO, peers
  remembered in the catalog) has a dial loop. The loop dials, authenticates and registers the
  connection, then waits for it to close; if no connection can be made it sleeps with
  exponential backoff and jitter (0.5 s doubling up to 30 s) and tries again. A peer that is not
  up yet is simply dialed again later.
- Peers are keyed by node ID, never by address. When two connections to the same peer exist
  (both sides dialed at once), both sides keep the one dialed by the smaller node ID and close
  the other, so they agree without talking.
- Each connection has a monitor task that PINGs it; a PING without answer closes it, which marks
  the peer down (not forgotten) and lets its dial loop reconnect.

Resource handling: every task is owned by the manager's ``TaskSet``; ``aclose`` stops the
listener, closes every connection and awaits every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal import defaults
from shoal.errors import (
    AddressInUse,
    ConfigError,
    HandshakeError,
    PeerUnavailable,
    ProtocolError,
    TransportError,
)
from shoal.ids import sha256, short_id
from shoal.protocol import Connection, LocalNode, Role, node_id_for
from shoal.transport.identity import Identity, certificate_public_key
from shoal.transport.peer import Handler, PeerConnection
from shoal.transport.stream import FrameStream
from shoal.transport.tasks import TaskSet
from shoal.transport.tls import client_context, server_context

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); ``ConfigError`` if malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"invalid address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:3000")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid port in {address!r}: must be 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**attempt`` capped, times U(0.5, 1)."""

    base: float = defaults.BACKOFF_BASE
    cap: float = defaults.BACKOFF_CAP

    def delay(self, attempt: int, rng: random.Random) -> float:
        scaled: float = self.base * 2.0 ** min(attempt, 32)
        return min(self.cap, scaled) * rng.uniform(0.5, 1.0)


@dataclass
class PeerRecord:
    """What the manager knows about one peer."""

    node_id: bytes
    addresses: list[str] = field(default_factory=list)
    connection: PeerConnection | None = None
    last_seen: float | None = None

    @property
    def up(self) -> bool:
        return self.connection is not None and not self.connection.closed.is_set()


PeerUpCallback = Callable[[PeerConnection], Coroutine[Any, Any, None]]
PeerDownCallback = Callable[[bytes], None]


class ConnectionManager:
    """Owns every connection of a node. Use ``start()`` then ``aclose()``."""

    def __init__(
        self,
        identity: Identity,
        tls_dir: Path,
        *,
        listen: str,
        handler: Handler,
        network: str = defaults.OPEN_NETWORK,
        network_secret: bytes | None = None,
        on_peer_up: PeerUpCallback | None = None,
        on_peer_down: PeerDownCallback | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 10.0,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self._tls_dir = tls_dir
        self._listen = listen
        self._handler = handler
        self._network = network
        self._network_secret = network_secret
        self._on_peer_up = on_peer_up
        self._on_peer_down = on_peer_down
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._peers: dict[bytes, PeerRecord] = {}
        self._dial_loops: dict[str, asyncio.Task[None]] = {}
        self._address_ids: dict[str, bytes] = {}
        self._self_addresses: set[str] = set()
        self._bootstrap: set[str] = set()  # addresses given without a node ID (--peer)
        self._tasks = TaskSet("connection manager")
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self.listen_address = listen
        self._cert_hash = b""
        self._local: LocalNode | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listener; raises ``AddressInUse`` or ``ConfigError``."""
        host, port = parse_address(self._listen)
        cert_path, key_path, cert_der = self.identity.write_tls_files(self._tls_dir)
        self._cert_hash = sha256(cert_der)
        loop = asyncio.get_running_loop()
        tls = server_context(cert_path, key_path)
        try:
            self._server = await loop.create_server(
                self._new_inbound_stream,
                host,
                port,
                ssl=tls,
                ssl_handshake_timeout=CONNECT_TIMEOUT,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"cannot listen on {self._listen}: address already in use "
                    "(another node or program has it; choose another --listen port)"
                ) from exc
            raise ConfigError(f"cannot listen on {self._listen}: {exc.strerror}") from exc
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.listen_address = format_address(sock_host, sock_port)
        self._self_addresses.add(self.listen_address)
        self._local = LocalNode(
            private_key=self.identity.private_key,
            listen_addrs=(self.listen_address,),
            network=self._network,
            network_secret=self._network_secret,
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for record in self._peers.values():
            if record.connection is not None:
                await record.connection.close()
        await self._tasks.aclose()
        if self._server is not None:
            # Every connection was closed (or aborted) above; this only waits for asyncio's
            # bookkeeping, bounded in case a transport lingers.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    # -- queries -------------------------------------------------------------------------------

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    def records(self) -> list[PeerRecord]:
        return list(self._peers.values())

    def connection(self, node_id: bytes) -> PeerConnection | None:
        record = self._peers.get(node_id)
        return record.connection if record is not None and record.up else None

    def live_ids(self) -> list[bytes]:
        """Node IDs of peers with an open connection (not including ourselves)."""
        return [r.node_id for r in self._peers.values() if r.up]

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

    # -- dialing -------------------------------------------------------------------------------

    def add_address(self, address: str, node_id: bytes | None = None) -> None:
        """Remember ``address`` and keep a connection to whoever listens there."""
        if address in self._self_addresses or node_id == self.node_id:
            return
        if node_id is None:
            self._bootstrap.add(address)
        else:
            self._address_ids.setdefault(address, node_id)
            record = self._peers.setdefault(node_id, PeerRecord(node_id))
            if address not in record.addresses:
                record.addresses.append(address)
        if address not in self._dial_loops:
            self._dial_loops[address] = self._tasks.spawn(
                self._dial_loop(address), name=f"dial {address}"
            )

    async def _dial_loop(self, address: str) -> None:
        attempt = 0
        while True:
            known = self._address_ids.get(address)
            existing = self.connection(known) if known is not None else None
            if existing is not None:
                await existing.closed.wait()
                attempt = 0
                continue
            try:
                conn = await self.dial(address, expected_id=known)
            except HandshakeError as exc:
                if exc.code == "self-connection":
                    log.info("%s is this node itself; not dialing it", address)
                    self._self_addresses.add(address)
                    return
                if exc.code == "wrong-peer" and address in self._bootstrap:
                    # A bootstrap address means "whoever listens there": a node that was
                    # re-created there with a new key is a new peer, not an impostor.
                    log.info("%s now answers with another node key; following it", address)
                    self._address_ids.pop(address, None)
                    continue
                log.warning("handshake with %s failed: %s", address, exc)
            except (TransportError, ProtocolError) as exc:
                if attempt == 0:
                    log.info("cannot connect to %s yet: %s", address, exc)
            else:
                attempt = 0
                await conn.closed.wait()
                continue
            await asyncio.sleep(self._backoff.delay(attempt, self._rng))
            attempt += 1

    async def dial(self, address: str, *, expected_id: bytes | None = None) -> PeerConnection:
        """Connect to ``address``, authenticate, register and return the connection."""
        if self._local is None:
            raise RuntimeError("manager not started")
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                _, stream = await loop.create_connection(
                    FrameStream,
                    host,
                    port,
                    ssl=client_context(),
                    ssl_handshake_timeout=CONNECT_TIMEOUT,
                )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc.strerror or exc)
            raise PeerUnavailable(f"cannot reach {address}: {reason}") from exc
        try:
            cert_der = stream.get_extra_info("ssl_object").getpeercert(binary_form=True)
            public_key = certificate_public_key(cert_der)
        except (ValueError, AttributeError, TypeError) as exc:
            stream.close()
            raise HandshakeError(f"{address} presented an unusable certificate: {exc}") from exc
        if expected_id is not None and node_id_for(public_key) != expected_id:
            stream.close()
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
        peer = PeerConnection(
            stream, conn, dialed=True, local_id=self.node_id, handler=self._handler
        )
        await peer.handshake()
        self._address_ids[address] = peer.peer_id
        self._register(peer)
        return peer

    # -- accepting -----------------------------------------------------------------------------

    def _new_inbound_stream(self) -> FrameStream:
        stream = FrameStream()
        stream.on_connected = self._on_accept
        return stream

    def _on_accept(self, stream: FrameStream) -> None:
        # Called by asyncio once TLS is up; the handshake runs in a task we own.
        try:
            self._tasks.spawn(self._accept(stream), name="accept")
        except RuntimeError:
            stream.close()

    async def _accept(self, stream: FrameStream) -> None:
        assert self._local is not None
        conn = Connection(
            Role.LISTENER,
            self._local,
            nonce=os.urandom(32),
            listener_cert_hash=self._cert_hash,
        )
        peer = PeerConnection(
            stream, conn, dialed=False, local_id=self.node_id, handler=self._handler
        )
        try:
            await peer.handshake()
        except (TransportError, ProtocolError) as exc:
            log.info("refused connection from %s: %s", peer.remote_address, exc)
            return
        self._register(peer)
        for address in peer.peer.listen_addrs[:4] if peer.peer else ():
            self.add_address(address, peer.peer_id)

    # -- registry ------------------------------------------------------------------------------

    def _register(self, conn: PeerConnection) -> None:
        node_id = conn.peer_id
        record = self._peers.setdefault(node_id, PeerRecord(node_id))
        existing = record.connection
        if existing is not None and not existing.closed.is_set() and existing is not conn:
            tie_winner = min(self.node_id, node_id)
            if conn.dialer_id == tie_winner and existing.dialer_id != tie_winner:
                log.debug("replacing %r by %r (simultaneous dial)", existing, conn)
                record.connection = conn
                self._tasks.spawn(existing.close(), name="close duplicate")
            else:
                log.debug("keeping %r, closing duplicate %r", existing, conn)
                self._tasks.spawn(conn.close(), name="close duplicate")
                return
        else:
            record.connection = conn
        record.last_seen = time.time()
        if conn.peer is not None:
            for address in conn.peer.listen_addrs:
                if address not in record.addresses:
                    record.addresses.append(address)
        was_up = existing is not None and not existing.closed.is_set()
        log.info("peer %s up (%s)", short_id(node_id), conn.remote_address)
        self._tasks.spawn(self._run(record, conn), name=f"peer {short_id(node_id)}")
        self._tasks.spawn(self._monitor(record, conn), name=f"ping {short_id(node_id)}")
        self._tasks.spawn(self._notify(), name="notify")
        if self._on_peer_up is not None and not was_up:
            self._tasks.spawn(self._on_peer_up(conn), name="peer up")

    async def _run(self, record: PeerRecord, conn: PeerConnection) -> None:
        try:
            await conn.run()
        finally:
            if record.connection is conn:
                record.connection = None
                log.info("peer %s down", short_id(record.node_id))
                if self._on_peer_down is not None:
                    self._on_peer_down(record.node_id)
                await self._notify()

    async def _monitor(self, record: PeerRecord, conn: PeerConnection) -> None:
        while not conn.closed.is_set():
            try:
                async with asyncio.timeout(self.ping_interval):
                    await conn.closed.wait()
                return
            except TimeoutError:
                pass
            if time.time() - conn.last_seen < self.ping_interval / 2:
                record.last_seen = conn.last_seen
                continue  # bytes arrived recently: the peer is alive, no need to ask
            try:
                await conn.ping(self.ping_timeout)
                record.last_seen = time.time()
            except TransportError as exc:
                log.info("peer %s failed liveness check: %s", short_id(record.node_id), exc)
                await conn.close()
                return
