"""One authenticated connection to one peer: the thin async shell over ``protocol.Connection``.

How it works: ``handshake()`` pumps bytes between the TLS stream and the sans-I/O connection until
HELLO/AUTH complete. ``run()`` is the read loop: requests from the peer are handed to the node's
handler in tasks this connection owns (bounded in number); responses resolve the future of the
request that carries the same id. ``request()`` sends a message and waits, with a timeout, for
the answer. Any protocol error queues an ERROR frame, flushes it and closes this connection only.

Resource handling: the stream (a ``FrameStream``) is closed in ``close()``, which also cancels
and awaits the handler tasks and fails every pending request with ``PeerUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from shoal.errors import (
    Busy,
    IntegrityError,
    NotFound,
    PeerUnavailable,
    ProtocolError,
    RemoteProtocolError,
    RequestTimeout,
    ShoalError,
    StorageError,
    StorageFull,
    TransportError,
    error_class_for_code,
)
from shoal.ids import short_id
from shoal.protocol import (
    NEED_DATA,
    REQUEST_TYPES,
    RESPONSE_FOR,
    Connection,
    ConnectionClosed,
    Error,
    HandshakeComplete,
    Hello,
    Message,
    MessageReceived,
    Ping,
    Pong,
)
from shoal.transport.stream import FrameStream
from shoal.transport.tasks import TaskSet

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
MAX_CONCURRENT_REQUESTS = 32

# What a peer may tell us went wrong with one request. Any other code (including codes that
# would mean something to our own caller, such as a bad cap) is the peer's failure, nothing more.
_REMOTE_ERRORS: tuple[type[ShoalError], ...] = (NotFound, IntegrityError, StorageError, Busy)

Handler = Callable[["PeerConnection", Message], Awaitable[Message]]


def error_for(exc: BaseException) -> Error:
    """The ERROR message that answers a request which failed with ``exc``.

    Disk errors are answered with a fixed text: their messages name local paths, which are none
    of a peer's business.
    """
    if isinstance(exc, StorageFull):
        return Error(code=exc.code, message="this node's storage limit is reached")
    if isinstance(exc, StorageError):
        return Error(code=exc.code, message="this node's disk failed")
    if isinstance(exc, ShoalError):
        return Error(code=exc.code, message=str(exc)[:1000])
    return Error(code="internal", message="internal error")


def remote_error(code: str, text: str) -> ShoalError:
    """The exception for a peer's ERROR answer to one of our requests."""
    cls = error_class_for_code(code)
    if cls is not None and issubclass(cls, _REMOTE_ERRORS):
        return cls(text)
    return TransportError(text)


class PeerConnection:
    """An established (after ``handshake``) connection to one peer."""

    def __init__(
        self,
        stream: FrameStream,
        conn: Connection,
        *,
        dialed: bool,
        local_id: bytes,
        handler: Handler,
    ) -> None:
        self._stream = stream
        self._conn = conn
        stream.attach(conn.receive_data)
        self.dialed = dialed
        self.local_id = local_id
        self._handler = handler
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._tasks = TaskSet("peer requests")
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self.closed = asyncio.Event()
        self.peer: Hello | None = None
        self.last_seen = time.time()
        peername = stream.get_extra_info("peername")
        self.remote_address = f"{peername[0]}:{peername[1]}" if peername else "?"

    # -- identity ----------------------------------------------------------------------------

    @property
    def peer_id(self) -> bytes:
        if self.peer is None:
            raise RuntimeError("handshake not complete")
        return self.peer.node_id

    @property
    def dialer_id(self) -> bytes:
        """Node ID of the side that dialed this connection (for simultaneous-dial ties)."""
        return self.local_id if self.dialed else self.peer_id

    def __repr__(self) -> str:
        who = short_id(self.peer.node_id) if self.peer else "?"
        return f"<PeerConnection {who} {self.remote_address} {'out' if self.dialed else 'in'}>"

    # -- byte pumping --------------------------------------------------------------------------

    def _flush(self) -> None:
        for buf in self._conn.data_to_send():
            self._stream.write(buf)

    async def _feed(self) -> bool:
        """Wait until more bytes reached the connection; False at EOF."""
        more = await self._stream.wait_for_data()
        if more:
            self.last_seen = time.time()
        return more

    async def handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> Hello:
        """Run HELLO/AUTH to completion; return the peer's HELLO."""
        try:
            async with asyncio.timeout(timeout):
                self._conn.start()
                self._flush()
                while True:
                    event = self._conn.next_event()
                    self._flush()
                    if event is NEED_DATA:
                        await self._stream.drain()
                        await self._feed()
                        continue
                    if isinstance(event, HandshakeComplete):
                        self.peer = event.peer
                        await self._stream.drain()
                        return event.peer
                    if isinstance(event, ConnectionClosed):
                        raise PeerUnavailable(
                            f"{self.remote_address} closed the connection during the handshake"
                        )
                    raise RemoteProtocolError(f"unexpected event during handshake: {event!r}")
        except TimeoutError as exc:
            await self.close()
            raise PeerUnavailable(f"handshake with {self.remote_address} timed out") from exc
        except ProtocolError:
            self._flush()
            await self.close()
            raise
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise PeerUnavailable(f"handshake with {self.remote_address} failed: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def run(self) -> None:
        """Read loop: dispatch requests, resolve responses, until the connection ends."""
        try:
            while True:
                event = self._conn.next_event()
                if event is NEED_DATA:
                    self._flush()
                    if not await self._feed():
                        continue  # EOF was fed: next_event reports ConnectionClosed
                    continue
                if isinstance(event, ConnectionClosed):
                    return
                if isinstance(event, MessageReceived):
                    await self._dispatch(event.request_id, event.message)
        except ProtocolError as exc:
            log.warning("protocol error from %r: %s", self, exc)
            with contextlib.suppress(Exception):
                self._flush()
        except (TransportError, ConnectionError, OSError) as exc:
            log.info("connection %r ended: %s", self, exc)
        finally:
            await self.close()

    async def _dispatch(self, request_id: int, message: Message) -> None:
        if isinstance(message, Ping):
            self._send(request_id, Pong())
            return
        if type(message) in REQUEST_TYPES:
            # Waiting for a slot here stops reading from the socket: a peer that sends requests
            # faster than we serve them is held back by TCP instead of filling our memory.
            await self._slots.acquire()
            self._tasks.spawn(self._serve(request_id, message), name="serve request")
            return
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(message)
        # else: the answer to a request that already timed out; dropping it is correct.

    async def _serve(self, request_id: int, message: Message) -> None:
        """Answer one request; holds the slot taken by ``_dispatch`` until the answer is sent."""
        try:
            try:
                response = await self._handler(self, message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, ShoalError):
                    log.exception("handler failed on %s from %r", type(message).__name__, self)
                response = error_for(exc)
            if self.closed.is_set():
                return
            try:
                self._send(request_id, response)
                await self._stream.drain()
            except (TransportError, ConnectionError, OSError):
                # Closing here would cancel this very task; closing the stream ends the read
                # loop, which closes the connection properly.
                self._stream.close()
        finally:
            self._slots.release()

    def _send(self, request_id: int, message: Message) -> None:
        if self.closed.is_set():
            raise PeerUnavailable(f"connection to {self!r} is closed")
        self._conn.send(request_id, message)
        self._flush()

    # -- requests ------------------------------------------------------------------------------

    async def request(self, message: Message, *, timeout: float) -> Message:
        """Send ``message`` and return the peer's answer of the expected type.

        Raises:
            RequestTimeout: no answer within ``timeout`` seconds.
            PeerUnavailable: the connection is or becomes closed.
            NotFound, IntegrityError, StorageError: the peer answered with that error.
        """
        expected = RESPONSE_FOR[type(message)]
        request_id = self._conn.next_request_id()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                try:
                    self._send(request_id, message)
                    await self._stream.drain()
                except (ConnectionError, OSError) as exc:
                    await self.close()
                    raise PeerUnavailable(f"sending to {self!r} failed: {exc}") from exc
                answer = await future
        except TimeoutError as exc:
            raise RequestTimeout(
                f"{type(message).__name__} to peer {short_id(self.peer_id)} got no answer "
                f"within {timeout:g} s"
            ) from exc
        finally:
            self._pending.pop(request_id, None)
        if isinstance(answer, Error):
            raise remote_error(answer.code, f"peer {short_id(self.peer_id)}: {answer.message}")
        if not isinstance(answer, expected):
            raise RemoteProtocolError(
                f"peer answered {type(message).__name__} with {type(answer).__name__}"
            )
        return answer

    async def ping(self, timeout: float) -> float:
        """Round-trip time of a PING, in seconds."""
        start = time.monotonic()
        await self.request(Ping(), timeout=timeout)
        return time.monotonic() - start

    async def close(self) -> None:
        """Close the stream, stop handler tasks and fail pending requests. Idempotent."""
        if self.closed.is_set():
            return
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable(f"connection to {self!r} closed"))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._stream.close()
        await self._tasks.aclose()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._stream.wait_closed()
        except TimeoutError:
            # A peer that stopped reading never completes the TLS shutdown: drop the socket.
            self._stream.abort()
