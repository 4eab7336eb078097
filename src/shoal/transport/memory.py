"""An in-memory network: many nodes' connection managers in one process, without sockets.

How it works: a :class:`MemoryNetwork` holds listeners by ``(host, port)``. Each node gets its
own view, ``network.interface("10.0.0.7")`` (a :class:`MemoryBackend`), which listens on that
host and dials from it. A dial reaches the listener's accept callback as an
:class:`~shoal.transport.backend.Incoming` connection, exactly as over TCP: the manager checks
its limits, then ``secure()`` (standing in for TLS) links two :class:`MemoryStream` ends. The
streams have the ``FrameStream`` surface: bytes are delivered on the next loop iteration, in
order; ``drain()`` waits while the reader has more than ``high_water`` bytes it has not asked
for (TCP's back-pressure); ``get_extra_info("ssl_object").getpeercert(binary_form=True)`` gives
the dialer the listener's certificate, and ``"peername"`` a fake ``(host, port)``. So
``PeerConnection`` and the sans-I/O handshake run over it unchanged.

Failures a test can cause: no listener (refused at once), an unreachable host (a dial hangs
until its timeout), cut links (``disconnect``: both ends see it), a host that vanishes silently
(``crash``: the other ends only notice by their liveness checks), and idle connections that
never finish TLS (``open_idle``, for flood tests). Pair it with ``shoal.clock.run_virtual``
for virtual time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.errors import AddressInUse, ConfigError, PeerUnavailable
from shoal.transport.addresses import format_address
from shoal.transport.backend import AcceptCallback, Listener, Stream
from shoal.transport.identity import Identity
from shoal.transport.stream import Sink

__all__ = ["IdleConnection", "MemoryBackend", "MemoryNetwork", "MemoryStream"]

#: Bytes a reader may have pending before the writer's ``drain()`` waits.
HIGH_WATER = 1 << 20
FIRST_EPHEMERAL_PORT = 40000

Endpoint = tuple[str, int]


class _PeerCertificate:
    """Stands in for ``ssl.SSLObject``: only ``getpeercert`` is used."""

    def __init__(self, der: bytes | None) -> None:
        self._der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        if self._der is None:
            return None
        return self._der if binary_form else None

    def version(self) -> str:
        return "memory"


class MemoryStream:
    """One end of an in-memory connection, with the ``FrameStream`` surface."""

    def __init__(
        self,
        network: MemoryNetwork,
        local: Endpoint,
        remote: Endpoint,
        peer_certificate: bytes | None,
    ) -> None:
        self._network = network
        self.local = local
        self.remote = remote
        self._certificate = _PeerCertificate(peer_certificate)
        self._peer: MemoryStream | None = None
        self._sink: Sink | None = None
        self._early: list[bytes] = []
        self._data = asyncio.Event()
        self._drained = asyncio.Event()  # set when our peer asked for more data
        self._unread = 0  # bytes sent to us that our reader has not asked for yet
        self._eof = False
        self._lost = False
        self._crashed = False  # our host vanished without a word (see MemoryNetwork.crash)
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- reading -------------------------------------------------------------------------------

    def attach(self, sink: Sink) -> None:
        self._sink = sink
        for data in self._early:
            sink(memoryview(data))
        self._early.clear()
        if self._eof:
            sink(memoryview(b""))

    async def wait_for_data(self) -> bool:
        self._unread = 0
        if self._peer is not None:
            self._peer._drained.set()
        await self._data.wait()
        self._data.clear()
        return not self._eof

    def _deliver(self, data: bytes) -> None:
        if self._eof:
            return
        if self._sink is not None:
            self._sink(memoryview(data))
        else:
            self._early.append(data)
        self._data.set()

    def _end(self) -> None:
        """The connection is gone (closed by either side, or cut)."""
        if not self._eof:
            self._eof = True
            if self._sink is not None:
                self._sink(memoryview(b""))
            self._data.set()
        if not self._lost:
            self._lost = True
            self._network._streams.discard(self)
            self._drained.set()
            if not self._closed.done():
                self._closed.set_result(None)

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        peer = self._peer
        if self._lost or peer is None:
            raise ConnectionResetError("connection is closed")
        if peer._lost:
            if peer._crashed:
                return  # the other host is gone silently: bytes vanish, no error (yet)
            raise ConnectionResetError("connection is closed")
        chunk = bytes(data)  # the caller may reuse its buffer
        if not chunk:
            return  # as a transport does; an empty chunk would read as the end of the stream
        peer._unread += len(chunk)
        asyncio.get_running_loop().call_soon(peer._deliver, chunk)

    async def drain(self) -> None:
        while True:
            peer = self._peer
            if self._lost or peer is None or (peer._lost and not peer._crashed):
                raise ConnectionResetError("connection lost")
            if peer._crashed or peer._unread <= self._network.high_water:
                return
            self._drained.clear()
            await self._drained.wait()

    def close(self) -> None:
        if self._lost:
            return
        loop = asyncio.get_running_loop()
        peer = self._peer
        if peer is not None:
            loop.call_soon(peer._end)  # after the data already queued: an orderly close
        loop.call_soon(self._end)

    def abort(self) -> None:
        if self._lost:
            return
        self._end()
        if self._peer is not None:
            asyncio.get_running_loop().call_soon(self._peer._end)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def set_receive_buffer(self, size: int) -> None:
        """Nothing to size: bytes are handed over whole."""

    def write_buffer_size(self) -> int:
        peer = self._peer
        return 0 if self._lost or peer is None or peer._lost else peer._unread

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.remote
        if name == "sockname":
            return self.local
        if name == "ssl_object":
            return self._certificate
        return default

    def __repr__(self) -> str:
        return f"<MemoryStream {format_address(*self.local)} -> {format_address(*self.remote)}>"


class _MemoryListener:
    def __init__(
        self, network: MemoryNetwork, endpoint: Endpoint, cert: bytes, on_accept: AcceptCallback
    ) -> None:
        self._network = network
        self.endpoint = endpoint
        self._certificate_der = cert
        self.on_accept = on_accept

    @property
    def address(self) -> str:
        return format_address(*self.endpoint)

    @property
    def certificate_der(self) -> bytes:
        return self._certificate_der

    def close(self) -> None:
        if self._network._listeners.get(self.endpoint) is self:
            del self._network._listeners[self.endpoint]

    async def wait_closed(self) -> None:
        return None


class _MemoryIncoming:
    """An accepted in-memory connection before its (simulated) TLS handshake."""

    def __init__(
        self,
        network: MemoryNetwork,
        listener: _MemoryListener,
        source: Endpoint,
        *,
        idle: bool = False,
    ) -> None:
        self._network = network
        self._listener = listener
        self.source = source
        self._idle = idle
        loop = asyncio.get_running_loop()
        self.client: asyncio.Future[MemoryStream] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()  # the dialer gave up
        self.rejected = False

    @property
    def remote_host(self) -> str:
        return self.source[0]

    @property
    def remote_address(self) -> str:
        return format_address(*self.source)

    async def secure(self, timeout: float) -> Stream:
        if self.gone.done() or self.rejected:
            raise PeerUnavailable(f"{self.remote_address} went away before TLS")
        if self._idle:
            # A client that never sends its TLS hello: wait out the handshake timeout.
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self.gone)
            except TimeoutError:
                self.gone.cancel()
                raise PeerUnavailable(f"TLS with {self.remote_address} timed out") from None
            raise PeerUnavailable(f"{self.remote_address} went away before TLS")
        network = self._network
        server = MemoryStream(network, self._listener.endpoint, self.source, None)
        client = MemoryStream(
            network, self.source, self._listener.endpoint, self._listener.certificate_der
        )
        server._peer, client._peer = client, server
        network._streams.update((server, client))
        self.client.set_result(client)
        return server

    def reject(self) -> None:
        self.rejected = True
        if not self.client.done():
            self.client.set_exception(ConnectionResetError("connection closed by the listener"))
            # The dialer may have given up already; its absence is not an error to log.
            self.client.exception()
        if not self.gone.done():
            self.gone.set_result(None)


class IdleConnection:
    """A connection that was accepted (or refused) but never starts TLS: a flood's unit."""

    def __init__(self, incoming: _MemoryIncoming) -> None:
        self._incoming = incoming

    @property
    def rejected(self) -> bool:
        """Whether the listener closed it at once."""
        return self._incoming.rejected

    def close(self) -> None:
        if not self._incoming.gone.done():
            self._incoming.gone.set_result(None)


class MemoryNetwork:
    """Hosts and links of an in-memory network, shared by every node in a test or simulation.

    Args:
        high_water: Bytes a reader may have pending before its writer's ``drain()`` waits.
    """

    def __init__(self, *, high_water: int = HIGH_WATER) -> None:
        self.high_water = high_water
        self._listeners: dict[Endpoint, _MemoryListener] = {}
        self._next_port: dict[str, int] = {}
        self._unreachable: set[str] = set()
        self._streams: set[MemoryStream] = set()
        #: Dials attempted through this network (for tests that count them).
        self.connects = 0

    def interface(self, host: str) -> MemoryBackend:
        """The backend of a node on ``host`` (it listens there and dials from there)."""
        return MemoryBackend(self, host)

    def set_unreachable(self, host: str, unreachable: bool = True) -> None:
        """Make dials to ``host`` hang until their timeout (as a host that dropped off)."""
        if unreachable:
            self._unreachable.add(host)
        else:
            self._unreachable.discard(host)

    def disconnect(self, host: str) -> int:
        """Cut every open connection of ``host`` at once (both ends see it); how many."""
        cut = [s for s in self._streams if host in (s.local[0], s.remote[0])]
        for stream in cut:
            stream.abort()
        return len(cut)

    def crash(self, host: str) -> int:
        """``host`` loses every connection silently: its own ends see the end, the other ends
        hear nothing (as after a power cut) until their own liveness checks notice. Its
        listeners stay. How many connections it had."""
        ends = [s for s in self._streams if s.local[0] == host]
        for stream in ends:
            stream._crashed = True
            stream._end()
        return len(ends)

    def open_streams(self, host: str | None = None) -> int:
        """Open connection ends (of ``host``'s, or all)."""
        if host is None:
            return len(self._streams)
        return sum(1 for s in self._streams if s.local[0] == host)

    def open_idle(self, from_host: str, address: str) -> IdleConnection:
        """Open a connection to ``address`` that never starts TLS (a flood test's client)."""
        listener = self._listener_for(address)
        if listener is None:
            raise PeerUnavailable(f"nothing listens on {address}")
        incoming = _MemoryIncoming(
            self, listener, (from_host, self._ephemeral(from_host)), idle=True
        )
        listener.on_accept(incoming)
        return IdleConnection(incoming)

    def _listener_for(self, address: str) -> _MemoryListener | None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        return self._listeners.get((host, int(port))) if port.isdigit() else None

    def _ephemeral(self, host: str) -> int:
        port = self._next_port.get(host, FIRST_EPHEMERAL_PORT)
        while (host, port) in self._listeners:
            port += 1
        self._next_port[host] = port + 1
        return port


class MemoryBackend:
    """One node's view of a :class:`MemoryNetwork`: a ``NetworkBackend`` on ``host``."""

    def __init__(self, network: MemoryNetwork, host: str) -> None:
        self.network = network
        self.host = host

    async def listen(
        self, host: str, port: int, *, identity: Identity, on_accept: AcceptCallback
    ) -> Listener:
        if host != self.host:
            raise ConfigError(
                f"cannot listen on {format_address(host, port)}: this interface is {self.host}"
            )
        network = self.network
        if port == 0:
            port = network._ephemeral(host)
        endpoint = (host, port)
        if endpoint in network._listeners:
            raise AddressInUse(
                f"cannot listen on {format_address(host, port)}: address already in use"
            )
        listener = _MemoryListener(network, endpoint, identity.certificate_der(), on_accept)
        network._listeners[endpoint] = listener
        return listener

    async def connect(self, host: str, port: int, *, timeout: float) -> Stream:
        network = self.network
        network.connects += 1
        address = format_address(host, port)
        incoming: _MemoryIncoming | None = None
        try:
            async with asyncio.timeout(timeout):
                if host in network._unreachable:
                    await asyncio.get_running_loop().create_future()  # never answered
                listener = network._listeners.get((host, port))
                if listener is None:
                    raise PeerUnavailable(f"cannot reach {address}: connection refused")
                incoming = _MemoryIncoming(
                    network, listener, (self.host, network._ephemeral(self.host))
                )
                listener.on_accept(incoming)
                return await asyncio.shield(incoming.client)
        except TimeoutError as exc:
            raise PeerUnavailable(f"cannot reach {address}: timed out") from exc
        except ConnectionError as exc:
            raise PeerUnavailable(f"cannot reach {address}: {exc}") from exc
        finally:
            if incoming is not None and not incoming.client.done():
                incoming.client.cancel()
                if not incoming.gone.done():
                    incoming.gone.set_result(None)
