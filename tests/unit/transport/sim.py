"""Connection managers over an in-memory network, for tests that run on virtual time.

A test is a plain function that calls ``run_virtual(main)``; ``main`` builds a :class:`Sim` (an
in-memory network plus the managers on it) and drives it. Hosts are 10.0.0.x unless a test
needs loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shoal.clock import VirtualClock
from shoal.protocol import FindNode, GetPeers, Message, Nodes, PeerAddress, Peers, Pong
from shoal.transport import (
    Backoff,
    ConnectionManager,
    Identity,
    MemoryNetwork,
    PeerConnection,
    PeerRecord,
    TransportLimits,
)
from shoal.transport.backend import AcceptCallback, Listener, NetworkBackend, Stream
from shoal.transport.routing import FullMeshRouting


async def answer_pong(peer: PeerConnection, message: Message) -> Message:
    """A handler that answers every request (GET_PEERS and FIND_NODE with no nodes)."""
    if isinstance(message, GetPeers):
        return Peers(peers=())
    if isinstance(message, FindNode):
        return Nodes(nodes=())
    return Pong()


def peers_handler(entries: Callable[[], Sequence[PeerAddress]]) -> Any:
    """A handler whose GET_PEERS answer is ``entries()``."""

    async def handler(peer: PeerConnection, message: Message) -> Message:
        if isinstance(message, GetPeers):
            return Peers(peers=tuple(entries()))
        if isinstance(message, FindNode):
            return Nodes(nodes=())
        return Pong()

    return handler


class WantSet:
    """A dial policy that wants exactly the IDs in ``ids`` (tests change it)."""

    def __init__(self) -> None:
        self.ids: set[bytes] = set()

    def wanted_peers(self, known: Sequence[PeerRecord]) -> Iterable[bytes]:
        return [r.node_id for r in known if r.node_id in self.ids]


class RecordingBackend:
    """Wraps a backend and records ``(virtual time, "host:port")`` of every dial."""

    def __init__(self, inner: NetworkBackend, clock: VirtualClock) -> None:
        self._inner = inner
        self._clock = clock
        self.dials: list[tuple[float, str]] = []

    async def listen(
        self, host: str, port: int, *, identity: Identity, on_accept: AcceptCallback
    ) -> Listener:
        return await self._inner.listen(host, port, identity=identity, on_accept=on_accept)

    async def connect(self, host: str, port: int, *, timeout: float) -> Stream:
        self.dials.append((self._clock.monotonic(), f"{host}:{port}"))
        return await self._inner.connect(host, port, timeout=timeout)


FAST_BACKOFF = Backoff(base=0.5, cap=30.0)


class Sim:
    """An in-memory network and the managers started on it; ``aclose`` stops them all."""

    def __init__(self, clock: VirtualClock, *, seed: int = 1) -> None:
        self.clock = clock
        self.network = MemoryNetwork()
        self.rng = random.Random(seed)
        self._stack = contextlib.AsyncExitStack()
        self.managers: list[ConnectionManager] = []

    async def __aenter__(self) -> Sim:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def node(
        self,
        host: str,
        *,
        identity: Identity | None = None,
        limits: TransportLimits | None = None,
        handler: Any = answer_pong,
        mesh: bool = True,
        backend: NetworkBackend | None = None,
        port: int = 0,
        **kwargs: Any,
    ) -> ConnectionManager:
        """Start a manager on ``host`` (full-mesh routing unless ``mesh`` is False)."""
        manager = ConnectionManager(
            identity or Identity.generate(),
            listen=f"{host}:{port}",
            handler=handler,
            clock=self.clock,
            backend=backend or self.network.interface(host),
            limits=limits or TransportLimits(),
            rng=kwargs.pop("rng", None) or random.Random(self.rng.random()),
            backoff=kwargs.pop("backoff", FAST_BACKOFF),
            **kwargs,
        )
        if mesh:
            FullMeshRouting(manager)
        await manager.start()
        self._stack.push_async_callback(manager.aclose)
        self.managers.append(manager)
        return manager

    async def stop(self, manager: ConnectionManager) -> None:
        await manager.aclose()
        self.managers.remove(manager)


async def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait (virtual time) until ``predicate()`` holds; AssertionError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def connected(a: ConnectionManager, b: ConnectionManager) -> bool:
    """Both sides hold the same one connection (same dialer)."""
    ca, cb = a.connection(b.node_id), b.connection(a.node_id)
    return ca is not None and cb is not None and ca.dialer_id == cb.dialer_id
