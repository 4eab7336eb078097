"""A byte stream for one TLS connection, as an ``asyncio.BufferedProtocol``.

Why not ``asyncio.StreamReader``: it copies every byte into its own buffer, then again into the
``bytes`` that ``read()`` returns, and shifts its buffer on every read. Here the TLS layer
decrypts straight into one reused buffer (``get_buffer``), and ``buffer_updated`` hands that view
to the sans-I/O connection, whose decoder makes the only copy. Over 1 MiB blocks that is the
difference between the transport being allocation-bound and not.

Memory: the receive buffer starts small (16 KiB, one TLS record) so that a connection that has
not authenticated yet costs little; the owner grows it with ``set_receive_buffer`` once the
handshake is done.

Flow control both ways:
- reading: once more than ``max_unconsumed`` bytes (about one maximum frame) arrived since the
  reader last asked for data, reading from the socket pauses until it asks again, so a peer
  that sends faster than we process is held back by TCP;
- writing: ``drain()`` waits while the transport's write buffer is above its high-water mark
  (until it is back under the low-water mark).

``ByteStream`` is what ``PeerConnection`` needs from a stream: ``FrameStream`` here, and any
in-memory stream used by tests and simulations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, Protocol

from shoal.protocol.frames import DEFAULT_MAX_FRAME_SIZE, LENGTH_PREFIX_SIZE

__all__ = [
    "MAX_UNCONSUMED",
    "RECEIVE_BUFFER_SIZE",
    "SMALL_RECEIVE_BUFFER_SIZE",
    "ByteStream",
    "FrameStream",
    "Sink",
]

#: Receive buffer of a connection whose handshake is not done: one TLS record.
SMALL_RECEIVE_BUFFER_SIZE: Final = 16 * 1024
#: Receive buffer of an established connection (fewer, larger reads of block data).
RECEIVE_BUFFER_SIZE: Final = 256 * 1024
#: Bytes received without the reader asking before reading pauses: one maximum frame.
MAX_UNCONSUMED: Final = DEFAULT_MAX_FRAME_SIZE + LENGTH_PREFIX_SIZE

Sink = Callable[[memoryview], None]


class ByteStream(Protocol):
    """The stream a ``PeerConnection`` runs over (``FrameStream``, or an in-memory stream).

    Received bytes are pushed to one ``sink`` (an empty view means end of stream); the reader
    waits with ``wait_for_data``, which also tells the stream the reader is keeping up.
    """

    def attach(self, sink: Sink) -> None:
        """Send every byte received (and those that arrived before) to ``sink``."""
        ...

    async def wait_for_data(self) -> bool:
        """Wait until bytes (or the end) reached the sink; False at the end of the stream."""
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes; raise ``ConnectionResetError`` if the stream is closed."""
        ...

    async def drain(self) -> None:
        """Wait while the write buffer is above its high-water mark; raise if closed."""
        ...

    def close(self) -> None:
        """Close after flushing what was written."""
        ...

    def abort(self) -> None:
        """Close at once, dropping unsent bytes."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the stream is closed."""
        ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport details (``peername``, ``ssl_object``)."""
        ...

    def set_receive_buffer(self, size: int) -> None:
        """Use a receive buffer of ``size`` bytes from now on (a no-op where meaningless).

        ``PeerConnection`` calls it once the handshake is done.
        """
        ...

    def write_buffer_size(self) -> int:
        """Bytes written that the peer has not taken yet (0 when closed)."""
        ...


class FrameStream(asyncio.BufferedProtocol):
    """The protocol object of one connection; a ``sink`` receives every chunk of bytes.

    Args:
        max_unconsumed: Bytes received without the reader asking before reading pauses.
        receive_buffer: Initial receive buffer size (see ``set_receive_buffer``).
    """

    def __init__(
        self,
        *,
        max_unconsumed: int = MAX_UNCONSUMED,
        receive_buffer: int = SMALL_RECEIVE_BUFFER_SIZE,
    ) -> None:
        self._buffer = memoryview(bytearray(receive_buffer))
        self._max_unconsumed = max_unconsumed
        self._unconsumed = 0
        self._sink: Sink | None = None
        self._early: list[bytes] = []  # bytes that arrived before a sink was attached
        self._data = asyncio.Event()
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.on_connected: Callable[[FrameStream], None] | None = None

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.on_connected is not None:
            self.on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        chunk = self._buffer[:nbytes]
        if self._sink is not None:
            self._sink(chunk)
        else:
            self._early.append(bytes(chunk))
        self._unconsumed += nbytes
        self._data.set()
        if self._unconsumed > self._max_unconsumed and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._set_eof()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_eof()
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- the reader's side ---------------------------------------------------------------------

    def attach(self, sink: Sink) -> None:
        """Send every byte received (and those that arrived before) to ``sink``."""
        self._sink = sink
        for data in self._early:
            sink(memoryview(data))
        self._early.clear()
        if self._eof:
            sink(memoryview(b""))

    def write_buffer_size(self) -> int:
        if self.transport is None or self.transport.is_closing():
            return 0
        return self.transport.get_write_buffer_size()

    def set_receive_buffer(self, size: int) -> None:
        """Use a receive buffer of ``size`` bytes for the following reads.

        asyncio asks for the buffer, reads into it and reports the count in one callback, so
        swapping it between callbacks is safe.
        """
        if size != len(self._buffer):
            self._buffer = memoryview(bytearray(size))

    def _set_eof(self) -> None:
        if self._eof:
            return
        self._eof = True
        if self._sink is not None:
            self._sink(memoryview(b""))
        self._data.set()

    async def wait_for_data(self) -> bool:
        """Wait until bytes (or the end of the stream) reached the sink; False at the end."""
        self._unconsumed = 0
        if self._reading_paused and self.transport is not None and not self._eof:
            self._reading_paused = False
            self.transport.resume_reading()
        await self._data.wait()
        self._data.clear()
        return not self._eof

    # -- the writer's side ---------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full."""
        if self._closed.done():
            raise ConnectionResetError("connection lost")
        if not self._writing_paused:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)
