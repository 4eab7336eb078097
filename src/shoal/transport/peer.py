"""One authenticated connection to one peer: the thin async shell over ``protocol.Connection``.

How it works: ``handshake()`` pumps bytes between the stream and the sans-I/O connection until
HELLO/AUTH complete. ``run()`` is the read loop: it maps the connection's events to futures
and tasks, and nothing more (pairing requests with responses, and answering PING, are the
protocol's job). A ``ResponseReceived`` resolves the future of the request with that id; a
``RequestReceived`` is served by the node's handler in a task this connection owns.
``request()`` sends a message and waits, with a timeout, for its answer.

Memory per connection is bounded whatever the peer does (defaults in brackets, all
constructor arguments):

- at most ``max_uploads`` [4] requests that carry bulk data (PUT_BLOCK, HAS_BLOCKS) are in
  service; the next one stops the read loop until one finishes, so TCP holds the peer back.
  Their handlers never wait for the peer to read, so this wait cannot deadlock;
- at most ``max_queued_requests`` [64] other requests (GET_BLOCK, GET_PEERS: small requests
  whose answers may be large) are admitted; the next one stops the read loop. Of these, at
  most ``max_downloads`` [2] are served at once, and each waits until the write buffer has
  drained (the peer read what we sent) before its handler starts and again after its answer
  is written. So answers are produced only as fast as the peer reads them;
- the small answers written without waiting (PONG, PUT_BLOCK_OK, HAVE_BLOCKS, ERROR) are
  counted; past ``max_unflushed_answers`` [256 KiB] since the write buffer last drained, the
  read loop waits for the drain: a peer that sends requests and never reads the answers is
  held back by TCP.

A limit that is reached is logged once a minute per connection. Two peers that both flood
each other with more than ``max_queued_requests`` GET_BLOCKs while neither reads can stall
each other; stall detection (below) then closes the connection.

Stall detection: while requests of ours are pending and no byte arrives from the peer for
``stall_timeout`` [2 s] (time when our own read loop is held back by the limits above does
not count), a PING is sent outside any limit. If still no byte arrives within
``stall_ping_timeout`` [2 s], the peer is declared dead: every pending request fails at once
with ``PeerUnavailable`` and the connection closes (the manager reconnects with backoff). A
peer that is slow but alive answers the PING and is kept; a peer that holds us back because
its own limits are full (its disk is slow) cannot read our PING, so it sends a PING of its
own every ``stall_timeout / 2`` while it holds us back (up to 240 of them, about 4 minutes at
the defaults), and its bytes keep it alive for us.

Resource handling: ``close()`` fails every pending request with ``PeerUnavailable``, closes the
stream, cancels and awaits the handler tasks and the stall watcher. Error messages name the
peer by its short ID and address only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from shoal import defaults
from shoal.errors import (
    Busy,
    IntegrityError,
    LocalProtocolError,
    NotFound,
    PeerUnavailable,
    ProtocolError,
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
    Connection,
    ConnectionClosed,
    Error,
    HandshakeComplete,
    Hello,
    Message,
    Ping,
    Pong,
    RequestReceived,
    ResponseReceived,
    State,
)
from shoal.protocol.schema import safe_text
from shoal.transport.stream import RECEIVE_BUFFER_SIZE, ByteStream
from shoal.transport.tasks import TaskSet

__all__ = [
    "CLOSE_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "Handler",
    "PeerConnection",
    "error_for",
    "remote_error",
]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 2.0
#: Defaults of the per-connection limits (see the module docstring).
MAX_UPLOADS: Final = defaults.MAX_UPLOADS_PER_CONNECTION
MAX_DOWNLOADS: Final = defaults.MAX_DOWNLOADS_PER_CONNECTION
MAX_QUEUED_REQUESTS: Final = defaults.MAX_QUEUED_REQUESTS_PER_CONNECTION
MAX_UNFLUSHED_ANSWERS: Final = defaults.MAX_UNFLUSHED_ANSWERS
STALL_TIMEOUT: Final = defaults.STALL_TIMEOUT
STALL_PING_TIMEOUT: Final = defaults.STALL_PING_TIMEOUT
#: Seconds between two log lines about the same limit on the same connection.
_LIMIT_LOG_INTERVAL: Final = 60.0
#: PINGs sent to a peer during one stretch of holding it back (about 4 minutes at the default
#: stall timeout); their PONGs are only read afterwards, and the protocol remembers 1024
#: abandoned requests by default.
_MAX_KEEPALIVES: Final = 240

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
    """A connection to one peer; established once ``handshake`` returned.

    Args:
        stream: The byte stream (``FrameStream`` over TLS, or an in-memory stream).
        conn: The sans-I/O protocol connection for this side.
        dialed: Whether this node dialed the connection.
        local_id: This node's ID.
        handler: Answers the peer's requests.
        max_uploads: Bulk-carrying requests of the peer in service at once.
        max_downloads: Requests of the peer whose answers are being produced at once.
        max_queued_requests: Other requests of the peer admitted at once.
        max_unflushed_answers: Bytes of small answers written since the write buffer last
            drained before the read loop waits for it.
        stall_timeout: Seconds without a byte from the peer, while requests are pending,
            before a PING is sent.
        stall_ping_timeout: Seconds to wait for any byte after that PING before the peer is
            declared dead.
    """

    def __init__(
        self,
        stream: ByteStream,
        conn: Connection,
        *,
        dialed: bool,
        local_id: bytes,
        handler: Handler,
        max_uploads: int = MAX_UPLOADS,
        max_downloads: int = MAX_DOWNLOADS,
        max_queued_requests: int = MAX_QUEUED_REQUESTS,
        max_unflushed_answers: int = MAX_UNFLUSHED_ANSWERS,
        stall_timeout: float = STALL_TIMEOUT,
        stall_ping_timeout: float = STALL_PING_TIMEOUT,
    ) -> None:
        if min(max_uploads, max_downloads, max_queued_requests) < 1:
            raise ValueError("per-connection request limits must be at least 1")
        if min(stall_timeout, stall_ping_timeout) <= 0:
            raise ValueError("stall timeouts must be positive")
        self._loop = asyncio.get_running_loop()
        self._stream = stream
        self._conn = conn
        self.dialed = dialed
        self.local_id = local_id
        self._handler = handler
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._tasks = TaskSet("peer requests")
        self._upload_slots = asyncio.Semaphore(max_uploads)
        self._request_slots = asyncio.Semaphore(max_queued_requests)
        self._download_slots = asyncio.Semaphore(max_downloads)
        self._limits = {
            "upload": max_uploads,
            "request": max_queued_requests,
            "answer-backlog": max_unflushed_answers,
        }
        self._max_unflushed = max_unflushed_answers
        self._unflushed = 0
        self._stall_timeout = stall_timeout
        self._stall_ping_timeout = stall_ping_timeout
        self._last_byte = self._loop.time()
        # Wall time minus loop time, read once: ``last_seen`` then changes only when a byte
        # arrives (two clocks read anew on each call never gave the same value twice).
        self._wall_offset = time.time() - self._last_byte
        self._quiet_since = self._last_byte  # start of the current stretch without bytes
        self._last_used = self._last_byte  # a request sent, or one of the peer's served
        self._reader_blocked = False
        self._requests_pending = asyncio.Event()
        self._ended = asyncio.Event()  # the stream ended or close() was called
        self._limit_logged: dict[str, float] = {}
        self._close_reason: str | None = None
        self.closed = asyncio.Event()
        self.peer: Hello | None = None
        peername = stream.get_extra_info("peername")
        self.remote_address = f"{peername[0]}:{peername[1]}" if peername else "?"
        stream.attach(self._on_bytes)

    # -- identity ----------------------------------------------------------------------------

    @property
    def peer_id(self) -> bytes:
        """The peer's node ID (after the handshake)."""
        if self.peer is None:
            raise RuntimeError("handshake not complete")
        return self.peer.node_id

    @property
    def dialer_id(self) -> bytes:
        """Node ID of the side that dialed this connection (for simultaneous-dial ties)."""
        return self.local_id if self.dialed else self.peer_id

    @property
    def last_seen(self) -> float:
        """Wall-clock time (``time.time()``) when the last byte arrived from the peer."""
        return self._wall_offset + self._last_byte

    def idle_for(self) -> float:
        """Seconds since a request was last sent or served on this connection (PINGs do not
        count); 0 while a request either way is open. What the connection limit's LRU
        eviction of idle connections ranks by."""
        if self._pending or self._conn.open_peer_requests:
            return 0.0
        return max(0.0, self._loop.time() - self._last_used)

    def describe(self) -> str:
        """The peer as error messages and logs name it: short ID and address."""
        if self.peer is None:
            return f"peer at {self.remote_address}"
        return f"peer {short_id(self.peer.node_id)} at {self.remote_address}"

    def __repr__(self) -> str:  # for debugging only; messages use describe()
        who = short_id(self.peer.node_id) if self.peer else "?"
        return f"<PeerConnection {who} {self.remote_address} {'out' if self.dialed else 'in'}>"

    # -- byte pumping --------------------------------------------------------------------------

    def _on_bytes(self, data: memoryview) -> None:
        self._conn.receive_data(data)
        if data:
            self._last_byte = self._quiet_since = self._loop.time()
        else:
            self._ended.set()  # the end of the stream

    def _flush(self) -> int:
        """Write what the connection queued; return the byte count."""
        written = 0
        for buf in self._conn.data_to_send():
            self._stream.write(buf)
            written += len(buf)
        return written

    async def _drain(self) -> None:
        await self._stream.drain()
        self._unflushed = 0  # the write buffer is below its high-water mark again

    async def handshake(self, timeout: float = HANDSHAKE_TIMEOUT) -> Hello:
        """Run HELLO/AUTH to completion; return the peer's HELLO.

        Raises:
            PeerUnavailable: Timeout, or the stream closed or failed.
            HandshakeError: The peer failed the handshake (an ERROR was sent to it).
        """
        try:
            async with asyncio.timeout(timeout):
                self._conn.start()
                self._flush()
                while True:
                    event = self._conn.next_event()
                    self._flush()
                    if event is NEED_DATA:
                        await self._stream.drain()
                        await self._stream.wait_for_data()
                        continue
                    if isinstance(event, HandshakeComplete):
                        self.peer = event.peer
                        self._stream.set_receive_buffer(RECEIVE_BUFFER_SIZE)
                        await self._stream.drain()
                        return event.peer
                    if isinstance(event, ConnectionClosed):
                        raise PeerUnavailable(
                            f"{self.describe()} closed the connection during the handshake"
                        )
                    raise LocalProtocolError(
                        f"{type(event).__name__} before the handshake completed"
                    )
        except TimeoutError as exc:
            await self.close()
            raise PeerUnavailable(f"handshake with {self.describe()} timed out") from exc
        except ProtocolError:
            with contextlib.suppress(ConnectionError, OSError):
                self._flush()
            await self.close()
            raise
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise PeerUnavailable(
                f"handshake with {self.describe()} failed: {type(exc).__name__}"
            ) from exc
        except BaseException:
            await self.close()
            raise

    async def run(self) -> None:
        """Read loop: serve requests, resolve responses, until the connection ends."""
        watcher = self._loop.create_task(self._watch_stalls(), name="stall watcher")
        write_watcher = self._loop.create_task(self._watch_writes(), name="write watcher")
        try:
            while True:
                event = self._conn.next_event()
                if event is NEED_DATA:
                    self._unflushed += self._flush()  # PONGs queued by the connection
                    if self._unflushed > self._max_unflushed:
                        await self._held_back("answer-backlog", self._drain())
                    await self._stream.wait_for_data()
                elif isinstance(event, ResponseReceived):
                    future = self._pending.get(event.request_id)
                    if future is not None and not future.done():
                        future.set_result(event.message)
                elif isinstance(event, RequestReceived):
                    await self._admit(event.request_id, event.message)
                elif isinstance(event, ConnectionClosed):
                    return
        except ProtocolError as exc:
            log.warning("protocol error from %s: %s", self.describe(), exc)
            with contextlib.suppress(ConnectionError, OSError):
                self._flush()
        except (TransportError, ConnectionError, OSError) as exc:
            log.info("connection to %s ended: %s", self.describe(), type(exc).__name__)
        finally:
            for task in (watcher, write_watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.close()

    # -- serving the peer's requests -------------------------------------------------------

    async def _admit(self, request_id: int, message: Message) -> None:
        bulk = type(message).carries_bulk()
        slots = self._upload_slots if bulk else self._request_slots
        if slots.locked():
            await self._held_back("upload" if bulk else "request", slots.acquire())
        else:
            await slots.acquire()
        if self.closed.is_set():  # closed while we waited for a slot: nothing to serve
            slots.release()
            raise ConnectionResetError("the connection ended")
        self._tasks.spawn(self._serve(request_id, message, slots, bulk=bulk), name="serve")

    async def _held_back(self, limit: str, wait: Awaitable[object]) -> None:
        """Wait for ``wait`` with the read loop stopped: TCP then holds the peer back.

        Meanwhile a PING goes out every ``stall_timeout / 2``: the peer, whose requests we
        are not reading, sees bytes from us and so does not take us for a frozen node.
        """
        now = self._loop.time()
        if now - self._limit_logged.get(limit, -_LIMIT_LOG_INTERVAL) >= _LIMIT_LOG_INTERVAL:
            self._limit_logged[limit] = now
            log.info(
                "%s reached the per-connection %s limit (%d); reading from it pauses until "
                "its earlier requests are served",
                self.describe(),
                limit,
                self._limits[limit],
            )
        self._reader_blocked = True
        waiting = asyncio.ensure_future(wait)
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            for sent in itertools.count():
                done, _ = await asyncio.wait(
                    {waiting, ended},
                    timeout=self._stall_timeout / 2,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if ended in done:  # first: closing also frees what we were waiting for
                    raise ConnectionResetError("the connection ended")
                if waiting in done:
                    waiting.result()
                    return
                if sent < _MAX_KEEPALIVES:  # past that, their PONGs would pile up unread
                    log.debug(
                        "holding %s back; sending a PING so it knows we are alive",
                        self.describe(),
                    )
                    self._send_ping()
        finally:
            waiting.cancel()
            ended.cancel()
            self._reader_blocked = False
            self._quiet_since = self._loop.time()  # our own pause is not the peer's silence

    def _send_ping(self) -> bool:
        """Send a PING outside every limit and forget it (its PONG is dropped by the
        protocol); whether it could be sent."""
        try:
            self._conn.cancel_request(self._conn.send_request(Ping()))
            self._flush()
        except (LocalProtocolError, ConnectionError, OSError):
            return False  # the connection is ending anyway
        return True

    async def _serve(
        self, request_id: int, message: Message, slots: asyncio.Semaphore, *, bulk: bool
    ) -> None:
        """Answer one request; releases the admission slot taken by ``_admit`` at the end."""
        try:
            if bulk:
                # Storing a block or looking up ids never waits for the peer to read, so a
                # full set of these slots can stop the read loop without a deadlock.
                self._answer(request_id, await self._call_handler(message), small=True)
                return
            async with self._download_slots:
                await self._drain()  # produce an answer only once the last one was read
                self._answer(request_id, await self._call_handler(message), small=False)
                await self._drain()
        except (TransportError, ConnectionError, OSError):
            # Closing here would cancel this very task; closing the stream ends the read
            # loop, which closes the connection properly.
            self._stream.close()
        finally:
            slots.release()

    async def _call_handler(self, message: Message) -> Message:
        if not isinstance(message, Ping):  # liveness checks do not make a connection used
            self._last_used = self._loop.time()
        try:
            return await self._handler(self, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, ShoalError):
                log.exception("handler failed on %s from %s", type(message).NAME, self.describe())
            return error_for(exc)

    def _answer(self, request_id: int, response: Message, *, small: bool) -> None:
        if not isinstance(response, Pong):
            self._last_used = self._loop.time()
        if self.closed.is_set() or self._conn.state is not State.ESTABLISHED:
            return
        try:
            self._conn.send_response(request_id, response)
        except LocalProtocolError as exc:
            log.error("cannot answer a request from %s: %s", self.describe(), exc)
            self._conn.send_response(request_id, Error(code="internal", message="internal error"))
        written = self._flush()
        if small:
            self._unflushed += written

    # -- our requests ------------------------------------------------------------------------

    async def request(self, message: Message, *, timeout: float) -> Message:
        """Send ``message`` and return the peer's answer of the expected type.

        Raises:
            RequestTimeout: No answer within ``timeout`` seconds.
            PeerUnavailable: The connection is or becomes closed, or the peer stopped
                responding (stall detection).
            NotFound, IntegrityError, StorageError, Busy: The peer answered with that error.
            TransportError: The peer answered with another error.
        """
        if self.closed.is_set():
            raise PeerUnavailable(self._closed_text())
        try:
            request_id = self._conn.send_request(message)
        except LocalProtocolError:
            if self._conn.state is not State.ESTABLISHED:
                raise PeerUnavailable(self._closed_text()) from None
            raise
        future: asyncio.Future[Message] = self._loop.create_future()
        # A PING checks liveness: it must not keep an idle connection from being closed (nor
        # reorder the least recently used ones) when the connection limit needs room.
        counts_as_use = not isinstance(message, Ping)
        if counts_as_use:
            self._last_used = self._loop.time()
        if not self._pending:
            self._quiet_since = self._loop.time()  # the stall clock starts with a request
        self._pending[request_id] = future
        self._requests_pending.set()
        try:
            async with asyncio.timeout(timeout):
                try:
                    self._flush()
                    await self._drain()
                except (ConnectionError, OSError) as exc:
                    if self.closed.is_set():
                        raise PeerUnavailable(self._closed_text()) from exc
                    self._stream.close()  # the read loop sees the end and closes
                    raise PeerUnavailable(
                        f"sending {type(message).NAME} to {self.describe()} failed: "
                        f"{type(exc).__name__}"
                    ) from exc
                answer = await future
        except TimeoutError:
            raise RequestTimeout(
                f"{type(message).NAME} to {self.describe()} got no answer within {timeout:g} s"
            ) from None
        finally:
            if counts_as_use:
                self._last_used = self._loop.time()
            self._pending.pop(request_id, None)
            if not self._pending:
                self._requests_pending.clear()
            if future.done():
                if not future.cancelled():
                    future.exception()  # retrieved here, whatever path we leave by
            else:
                future.cancel()
                self._conn.cancel_request(request_id)  # a late answer is dropped quietly
        if isinstance(answer, Error):
            raise remote_error(
                answer.code,
                f"{self.describe()} answered {type(message).NAME} with an error: "
                f"{safe_text(answer.message)}",
            )
        return answer

    async def ping(self, timeout: float) -> float:
        """Round-trip time of a PING, in seconds."""
        start = self._loop.time()
        await self.request(Ping(), timeout=timeout)
        return self._loop.time() - start

    # -- stall detection ---------------------------------------------------------------------

    async def _watch_stalls(self) -> None:
        while True:
            if not self._pending:
                await self._requests_pending.wait()
                continue
            if self._reader_blocked:  # our own pause; the clock restarts when it ends
                await asyncio.sleep(self._stall_timeout)
                continue
            quiet = self._loop.time() - self._quiet_since
            if quiet < self._stall_timeout:
                await asyncio.sleep(self._stall_timeout - quiet)
                continue
            log.debug("%s silent for %.1f s; sending a PING", self.describe(), quiet)
            probe_sent = self._loop.time()
            if not self._send_ping():  # its PONG (any byte, in fact) proves life
                return
            await asyncio.sleep(self._stall_ping_timeout)
            if self._quiet_since >= probe_sent or self._reader_blocked or not self._pending:
                continue
            quiet = self._loop.time() - self._quiet_since
            self._close_reason = (
                f"{self.describe()} stopped responding: nothing received for {quiet:.1f} s, "
                "not even an answer to a PING"
            )
            log.warning("%s; closing the connection", self._close_reason)
            self._fail_pending()
            self._stream.abort()
            return

    async def _watch_writes(self) -> None:
        """Declare the peer gone once it has taken none of our bytes and sent none of its own
        for ``stall_timeout + stall_ping_timeout``.

        This catches what the silence check above cannot see: a peer that floods us with
        requests and never reads the answers (we hold it back, so we stop reading it; it has
        nothing pending of ours). A live peer that holds us back sends PINGs (see
        ``_held_back``), and a slow link still takes bytes, so neither is mistaken for it.
        """
        limit = self._stall_timeout + self._stall_ping_timeout
        stuck_since: float | None = None
        last_size = 0
        while True:
            await asyncio.sleep(self._stall_timeout / 2)
            size = self._stream.write_buffer_size()
            now = self._loop.time()
            if size == 0 or size < last_size:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = now
            last_size = size
            if stuck_since is None or now - stuck_since < limit or now - self._last_byte < limit:
                continue
            self._close_reason = (
                f"{self.describe()} stopped reading: {size} bytes sent to it were not taken, "
                f"and nothing came from it, for {now - stuck_since:.1f} s"
            )
            log.warning("%s; closing the connection", self._close_reason)
            self._fail_pending()
            self._stream.abort()
            return

    # -- closing -----------------------------------------------------------------------------

    def _closed_text(self) -> str:
        return self._close_reason or f"the connection to {self.describe()} is closed"

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable(self._closed_text()))

    async def close(self) -> None:
        """Close the stream, stop handler tasks and fail pending requests. Idempotent."""
        if self.closed.is_set():
            return
        self.closed.set()
        self._ended.set()
        self._fail_pending()
        with contextlib.suppress(Exception):
            self._stream.close()
        await self._tasks.aclose()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._stream.wait_closed()
        except TimeoutError:
            # A peer that stopped reading never completes the TLS shutdown: drop the socket.
            self._stream.abort()
