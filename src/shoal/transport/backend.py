"""The network under the connection manager: an interface, and the real TCP + TLS 1.3 backend.

The manager never touches sockets itself; it asks a :class:`NetworkBackend` to listen and to
connect (as httpcore's ``network_backend=``). Two implementations:

- :class:`TcpTlsBackend` (this module): real TCP with TLS 1.3, the default;
- ``shoal.transport.memory.MemoryNetwork``: in-memory links for tests and simulations of many
  nodes in one process (as Tahoe's no-network grid).

Both hand out :class:`Stream` objects, the byte-stream surface ``PeerConnection`` runs over
(``FrameStream`` is the real one), so the handshake and the protocol run unchanged on either.

Accepting is two steps, so that a flood of connections costs next to nothing: the backend
reports a raw :class:`Incoming` connection (TCP only, reading paused, no buffer allocated);
the manager checks its limits and either ``reject()``s it (closed at once) or calls
``secure()``, which only then runs the TLS handshake (``loop.start_tls``, with its 256 KiB
buffers) under a timeout.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from shoal.errors import AddressInUse, ConfigError, PeerUnavailable
from shoal.transport.addresses import format_address
from shoal.transport.identity import Identity
from shoal.transport.stream import ByteStream, FrameStream
from shoal.transport.tls import client_context, server_context

__all__ = [
    "AcceptCallback",
    "Incoming",
    "Listener",
    "NetworkBackend",
    "Stream",
    "TcpTlsBackend",
]

log = logging.getLogger(__name__)


Stream = ByteStream
"""A secured byte stream to one peer: the surface ``PeerConnection`` uses (``stream.py``)."""


class Incoming(Protocol):
    """A connection just accepted: TCP only, nothing read and nothing allocated yet."""

    @property
    def remote_host(self) -> str:
        """The source IP address (IPv4-mapped IPv6 addresses as plain IPv4)."""
        ...

    @property
    def remote_address(self) -> str:
        """``host:port`` of the source, for logs."""
        ...

    async def secure(self, timeout: float) -> Stream:
        """Run the server side of TLS; the secured stream.

        Raises:
            PeerUnavailable: The handshake failed, or took longer than ``timeout``.
        """
        ...

    def reject(self) -> None:
        """Close the connection at once."""
        ...


AcceptCallback = Callable[[Incoming], None]


class Listener(Protocol):
    """A listening endpoint."""

    @property
    def address(self) -> str:
        """The ``host:port`` actually bound (port 0 resolved)."""
        ...

    @property
    def certificate_der(self) -> bytes:
        """The certificate presented to dialers (its hash is bound into the handshake)."""
        ...

    def close(self) -> None:
        """Stop accepting."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the listener is closed."""
        ...


class NetworkBackend(Protocol):
    """Listening and dialing, over a real or a simulated network."""

    async def listen(
        self, host: str, port: int, *, identity: Identity, on_accept: AcceptCallback
    ) -> Listener:
        """Listen on ``host:port``, presenting ``identity``'s certificate.

        ``on_accept`` is called (synchronously, on the event loop) for every raw connection;
        it must ``reject()`` it or arrange for ``secure()`` to be called.

        Raises:
            AddressInUse: The address is taken.
            ConfigError: The address cannot be listened on.
        """
        ...

    async def connect(self, host: str, port: int, *, timeout: float) -> Stream:
        """Connect to ``host:port`` and finish TLS within ``timeout`` seconds.

        Raises:
            PeerUnavailable: Refused, unreachable, timed out, or TLS failed.
        """
        ...


def plain_ip(host: str) -> str:
    """``host`` with an IPv4-mapped IPv6 address written as IPv4 (one key per source)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# -- the real backend ----------------------------------------------------------------------


class _RawConnection(asyncio.Protocol):
    """An accepted TCP connection before TLS: reads nothing, allocates nothing."""

    def __init__(self, context: ssl.SSLContext, on_accept: AcceptCallback) -> None:
        self._context = context
        self._on_accept = on_accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        try:
            self._on_accept(_TcpIncoming(transport, self._context))
        except Exception:
            log.exception("accepting a connection failed")
            transport.abort()

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass


class _TcpIncoming:
    def __init__(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        self._transport = transport
        self._context = context
        peername = transport.get_extra_info("peername")
        host, port = (str(peername[0]), int(peername[1])) if peername else ("?", 0)
        self._host = plain_ip(host)
        self._address = format_address(self._host, port)

    @property
    def remote_host(self) -> str:
        return self._host

    @property
    def remote_address(self) -> str:
        return self._address

    async def secure(self, timeout: float) -> Stream:
        loop = asyncio.get_running_loop()
        stream = FrameStream()
        try:
            # start_tls has its own handshake timeout; the outer one also bounds a peer that
            # stops in the middle of it.
            async with asyncio.timeout(timeout + 1.0):
                transport = await loop.start_tls(
                    self._transport,
                    stream,
                    self._context,
                    server_side=True,
                    ssl_handshake_timeout=timeout,
                )
        except (OSError, TimeoutError) as exc:
            self._transport.abort()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or "failed"
            raise PeerUnavailable(f"TLS with {self._address} failed: {reason}") from exc
        if transport is None:  # pragma: no cover - start_tls returns None only when closed
            self._transport.abort()
            raise PeerUnavailable(f"TLS with {self._address} failed: connection closed")
        # start_tls does not call connection_made on the protocol it was given.
        stream.connection_made(transport)
        return stream

    def reject(self) -> None:
        self._transport.abort()


class _TcpListener:
    def __init__(self, server: asyncio.Server, address: str, certificate_der: bytes) -> None:
        self._server = server
        self._address = address
        self._certificate_der = certificate_der

    @property
    def address(self) -> str:
        return self._address

    @property
    def certificate_der(self) -> bytes:
        return self._certificate_der

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


class TcpTlsBackend:
    """Real TCP + TLS 1.3.

    Args:
        tls_dir: Where the certificate and key files for the TLS stack are written (Python's
            ``ssl`` module loads them from files); the node's data dir.
    """

    def __init__(self, tls_dir: Path) -> None:
        self._tls_dir = tls_dir
        self._client_context: ssl.SSLContext | None = None

    async def listen(
        self, host: str, port: int, *, identity: Identity, on_accept: AcceptCallback
    ) -> Listener:
        cert_path, key_path, cert_der = identity.write_tls_files(self._tls_dir)
        context = server_context(cert_path, key_path)
        loop = asyncio.get_running_loop()
        address = format_address(host, port)
        try:
            server = await loop.create_server(
                lambda: _RawConnection(context, on_accept), host, port
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"cannot listen on {address}: address already in use "
                    "(another node or program has it; choose another --listen port)"
                ) from exc
            raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
        sock_host, sock_port = server.sockets[0].getsockname()[:2]
        return _TcpListener(server, format_address(sock_host, sock_port), cert_der)

    async def connect(self, host: str, port: int, *, timeout: float) -> Stream:
        if self._client_context is None:
            self._client_context = client_context()
        loop = asyncio.get_running_loop()
        address = format_address(host, port)
        try:
            async with asyncio.timeout(timeout):
                _, stream = await loop.create_connection(
                    FrameStream,
                    host,
                    port,
                    ssl=self._client_context,
                    ssl_handshake_timeout=timeout,
                )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc.strerror or exc)
            raise PeerUnavailable(f"cannot reach {address}: {reason}") from exc
        return stream
