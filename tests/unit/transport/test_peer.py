"""PeerConnection over real loopback TCP (FrameStream, no TLS): requests, limits, stalls.

Each test builds real sockets on 127.0.0.1 port 0 and real sans-I/O connections; "rogue"
peers speak the protocol with our own modules over a plain asyncio stream and then misbehave
(never read, flood, freeze). Waits are for conditions, with timeouts; nothing sleeps a fixed
time and nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.errors import (
    NotFound,
    PeerUnavailable,
    RequestTimeout,
    TransportError,
)
from shoal.ids import short_id
from shoal.protocol import (
    NEED_DATA,
    BlockData,
    GetBlock,
    GetPeers,
    HandshakeComplete,
    Message,
    Peers,
    Ping,
    PutBlock,
    PutBlockOk,
    ResponseReceived,
)
from shoal.transport.peer import MAX_DOWNLOADS, MAX_UPLOADS, Handler, PeerConnection
from shoal.transport.stream import (
    MAX_UNCONSUMED,
    RECEIVE_BUFFER_SIZE,
    SMALL_RECEIVE_BUFFER_SIZE,
    FrameStream,
)
from tests.unit.protocol.helpers import make_local, make_pair

BLOCK = bytes(range(256)) * 4096 * 4  # 4 MiB, the largest block a frame carries
ID = bytes(range(32))


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, checking every few milliseconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@dataclass
class Node:
    """What a test node answers, and what it saw."""

    blocks: dict[bytes, bytes] = field(default_factory=lambda: {ID: b"block data"})
    seen: list[Message] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, handlers wait for it
    calls: int = 0

    async def __call__(self, peer: PeerConnection, message: Message) -> Message:
        assert not isinstance(message, Ping)  # the protocol answers PING itself
        self.calls += 1
        self.seen.append(message)
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(message, GetBlock):
            if message.block_id not in self.blocks:
                raise NotFound("no such block")
            return BlockData(message.block_id, self.blocks[message.block_id])
        if isinstance(message, PutBlock):
            return PutBlockOk(message.block_id)
        if isinstance(message, GetPeers):
            return Peers(())
        raise AssertionError(f"unexpected {type(message).__name__}")


@dataclass
class Pair:
    dialer: PeerConnection
    listener: PeerConnection
    dialer_stream: FrameStream
    listener_stream: FrameStream


@contextlib.asynccontextmanager
async def listening(
    handler: Handler, **limits: Any
) -> AsyncIterator[tuple[int, asyncio.Queue[PeerConnection]]]:
    """A server whose connections are served by PeerConnections: (port, their queue)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[PeerConnection] = asyncio.Queue()
    conns: list[PeerConnection] = []

    async def serve(stream: FrameStream) -> None:
        _, conn = make_pair()
        peer = PeerConnection(
            stream, conn, dialed=False, local_id=make_local(2).node_id, handler=handler, **limits
        )
        conns.append(peer)
        await peer.handshake(5)
        await accepted.put(peer)
        await peer.run()

    tasks: set[asyncio.Task[None]] = set()

    def factory() -> FrameStream:
        stream = FrameStream()
        stream.on_connected = lambda s: tasks.add(loop.create_task(serve(s)))
        return stream

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        for conn in conns:
            await conn.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def pair(
    listener_handler: Handler, dialer_handler: Handler | None = None, **limits: Any
) -> AsyncIterator[Pair]:
    """Two PeerConnections over loopback TCP, handshaken and running."""
    loop = asyncio.get_running_loop()
    async with listening(listener_handler, **limits) as (port, accepted):
        _, stream = await loop.create_connection(FrameStream, "127.0.0.1", port)
        conn, _ = make_pair()
        dialer = PeerConnection(
            stream,
            conn,
            dialed=True,
            local_id=make_local(1).node_id,
            handler=dialer_handler or Node(),
            **limits,
        )
        await dialer.handshake(5)
        listener = await accepted.get()
        run = loop.create_task(dialer.run())
        try:
            yield Pair(dialer, listener, stream, listener._stream)  # type: ignore[arg-type]
        finally:
            await dialer.close()
            await run


#: Stall timeouts long enough that a test of held-back peers is never cut short by them.
PATIENT: dict[str, Any] = {"stall_timeout": 600.0, "stall_ping_timeout": 600.0}


class Rogue:
    """A peer that speaks the protocol with our own modules, then misbehaves."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn, _ = make_pair()

    @classmethod
    async def connect(cls, port: int) -> Rogue:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        rogue = cls(reader, writer)
        rogue.conn.start()
        rogue.flush()
        async with asyncio.timeout(5):
            while True:
                event = rogue.conn.next_event()
                rogue.flush()
                if isinstance(event, HandshakeComplete):
                    rogue.flush()
                    return rogue
                if event is NEED_DATA:
                    rogue.conn.receive_data(await reader.read(65536))

    def flush(self) -> None:
        # write() per buffer, not writelines(): Python 3.13.0's socket transport does not pause
        # its protocol in writelines(), so drain() would return with megabytes still queued.
        for buf in self.conn.data_to_send():
            self.writer.write(buf)

    def send(self, message: Message) -> int:
        request_id = self.conn.send_request(message)
        self.flush()
        return request_id

    async def close(self) -> None:
        self.writer.transport.abort()


@pytest.fixture
async def loop_errors() -> Any:
    """Everything the event loop reports to its exception handler during the test."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    yield reported
    loop.set_exception_handler(previous)


# -- requests -------------------------------------------------------------------------------


async def test_request_and_error_answers() -> None:
    node = Node()
    async with pair(node) as p:
        answer = await p.dialer.request(GetBlock(ID), timeout=5)
        assert answer == BlockData(ID, b"block data")
        with pytest.raises(NotFound, match="no such block") as info:
            await p.dialer.request(GetBlock(bytes(32)), timeout=5)
        assert short_id(p.listener.local_id) in str(info.value)
        assert await p.dialer.ping(timeout=5) > 0
        assert await p.listener.ping(timeout=5) > 0
        assert node.seen == [GetBlock(ID), GetBlock(bytes(32))]  # no PING reached it


async def test_handler_failures_become_error_answers(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(peer: PeerConnection, message: Message) -> Message:
        if isinstance(message, GetPeers):
            return PutBlockOk(ID)  # the wrong answer type: a bug on our side
        raise ZeroDivisionError("bug")

    async with pair(broken) as p:
        for message in (GetPeers(), GetBlock(ID)):
            with pytest.raises(TransportError, match="internal error"):
                await p.dialer.request(message, timeout=5)
        assert await p.dialer.ping(timeout=5) > 0  # the connection survives
    assert "handler failed on GET_BLOCK" in caplog.text


async def test_timeout_then_late_answer_is_dropped() -> None:
    node = Node(gate=asyncio.Event())
    async with pair(node) as p:
        with pytest.raises(RequestTimeout) as info:
            await p.dialer.request(GetBlock(ID), timeout=0.05)
        text = str(info.value)
        assert f"peer {short_id(p.listener.local_id)} at 127.0.0.1:" in text
        assert "<" not in text
        node.gate.set()  # the late answer arrives and is dropped by the protocol
        assert await p.dialer.request(GetBlock(ID), timeout=5) == BlockData(ID, b"block data")
        assert not p.dialer.closed.is_set()


async def test_closing_with_pending_requests_leaves_no_unretrieved_future(
    loop_errors: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: requests waiting in drain() when the connection closes.

    The old code set an exception on each pending future in ``close()``; a request that was
    still in ``drain()`` then raised its own error and never awaited its future, and asyncio
    logged "Future exception was never retrieved" once the future was collected.
    """
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    futures: list[asyncio.Future[Any]] = []
    create_future = loop.create_future

    def recording_create_future() -> asyncio.Future[Any]:
        future = create_future()
        futures.append(future)
        return future

    node = Node(gate=asyncio.Event())
    async with pair(node) as p:
        assert p.listener_stream.transport is not None
        p.listener_stream.transport.pause_reading()  # the peer stops reading: drain() blocks
        monkeypatch.setattr(loop, "create_future", recording_create_future)
        requests = [
            asyncio.create_task(p.dialer.request(PutBlock(ID, BLOCK), timeout=30)) for _ in range(8)
        ]
        await eventually(lambda: p.dialer_stream._writing_paused)
        await p.dialer.close()
        results = await asyncio.gather(*requests, return_exceptions=True)
        monkeypatch.undo()
        assert all(isinstance(r, PeerUnavailable) for r in results), results
        assert {str(r) for r in results} == {
            f"the connection to peer {short_id(p.listener.local_id)} at "
            f"{p.dialer.remote_address} is closed"
        }
    assert len(futures) >= 8
    unretrieved = [f for f in futures if f.done() and f._log_traceback]  # type: ignore[attr-defined]
    assert unretrieved == []
    del requests, results, unretrieved
    futures.clear()
    gc.collect()
    assert [c.get("message") for c in loop_errors] == []


async def test_request_on_a_closed_connection_names_the_peer() -> None:
    async with pair(Node()) as p:
        await p.listener.close()
        await p.dialer.closed.wait()
        with pytest.raises(PeerUnavailable) as info:
            await p.dialer.request(GetPeers(), timeout=5)
        assert str(info.value) == (
            f"the connection to peer {short_id(p.listener.local_id)} at "
            f"{p.dialer.remote_address} is closed"
        )


# -- the receive buffer ---------------------------------------------------------------------


async def test_receive_buffer_is_small_until_the_handshake_is_done() -> None:
    loop = asyncio.get_running_loop()
    async with listening(Node()) as (port, accepted):
        _, stream = await loop.create_connection(FrameStream, "127.0.0.1", port)
        assert len(stream._buffer) == SMALL_RECEIVE_BUFFER_SIZE
        assert stream._max_unconsumed == MAX_UNCONSUMED < 5 * 1024 * 1024
        conn, _ = make_pair()
        peer = PeerConnection(stream, conn, dialed=True, local_id=ID, handler=Node())
        await peer.handshake(5)
        assert len(stream._buffer) == RECEIVE_BUFFER_SIZE
        served = await accepted.get()
        assert len(served._stream._buffer) == RECEIVE_BUFFER_SIZE  # type: ignore[attr-defined]
        await peer.close()


# -- memory bounds --------------------------------------------------------------------------


async def test_peer_that_never_reads_gets_at_most_a_few_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 GET_BLOCKs of 4 MiB and no reading: the node's memory for that connection stays
    at a few frames, and another connection to the same node keeps working."""
    caplog.set_level(logging.INFO, logger="shoal.transport.peer")
    node = Node(blocks={ID: BLOCK})
    tracemalloc.start()
    try:
        # Long stall timeouts: this test watches the held-back connection, not its end.
        async with listening(node, **PATIENT) as (port, accepted):
            rogue = await Rogue.connect(port)
            served = await accepted.get()
            transport = served._stream.transport  # type: ignore[attr-defined]
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for _ in range(200):
                rogue.send(GetBlock(ID))
            await eventually(lambda: "per-connection request limit" in caplog.text)
            await eventually(lambda: served._stream._writing_paused and node.calls >= 1)
            for _ in range(200):  # let every task that could still run do so
                await asyncio.sleep(0)
            write_buffer = transport.get_write_buffer_size()
            peak = tracemalloc.get_traced_memory()[1] - before
            # The answers produced: MAX_DOWNLOADS in the write buffer, plus those the kernel's
            # socket buffers (a few MiB on loopback) took off our hands.
            assert node.calls <= MAX_DOWNLOADS + 3
            assert write_buffer <= MAX_DOWNLOADS * len(BLOCK) + 1024 * 1024
            assert peak < 40 * 1024 * 1024, peak  # the old code held about 300 MiB here
            # Another connection to the same node is served meanwhile.
            loop = asyncio.get_running_loop()
            _, stream = await loop.create_connection(FrameStream, "127.0.0.1", port)
            conn, _ = make_pair()
            other = PeerConnection(stream, conn, dialed=True, local_id=ID, handler=Node())
            await other.handshake(5)
            runner = asyncio.create_task(other.run())
            node.blocks[bytes(32)] = b"small"
            answer = await other.request(GetBlock(bytes(32)), timeout=5)
            assert answer == BlockData(bytes(32), b"small")
            await other.close()
            await runner
            await rogue.close()
    finally:
        tracemalloc.stop()
    limit_lines = [r for r in caplog.records if "per-connection request limit" in r.message]
    assert len(limit_lines) == 1  # rate-limited


async def test_a_peer_that_floods_requests_and_never_reads_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It has nothing of ours pending and we stop reading it, so only the write side shows it
    is gone: nothing taken and nothing sent for the stall timeouts closes the connection."""
    caplog.set_level(logging.INFO, logger="shoal.transport.peer")
    node = Node(blocks={ID: BLOCK})
    async with listening(node, stall_timeout=0.2, stall_ping_timeout=0.2) as (port, accepted):
        rogue = await Rogue.connect(port)
        served = await accepted.get()
        for _ in range(200):
            rogue.send(GetBlock(ID))
        async with asyncio.timeout(30):
            await served.closed.wait()
        assert "stopped reading" in caplog.text
        assert "Traceback" not in caplog.text
        await rogue.close()


async def test_put_block_flood_holds_at_most_max_uploads(caplog: pytest.LogCaptureFixture) -> None:
    """PUT_BLOCKs whose handlers do not finish: MAX_UPLOADS in service, then reading stops."""
    caplog.set_level(logging.INFO, logger="shoal.transport.peer")
    node = Node(gate=asyncio.Event())
    async with listening(node, **PATIENT) as (port, accepted):
        rogue = await Rogue.connect(port)
        await accepted.get()
        ids = [rogue.send(PutBlock(ID, BLOCK)) for _ in range(12)]
        writing = asyncio.create_task(rogue.writer.drain())
        await eventually(lambda: "per-connection upload limit" in caplog.text)
        assert node.calls == MAX_UPLOADS
        assert not writing.done()  # TCP holds the rogue back: it cannot even send them all
        node.gate.set()
        answered: set[int] = set()
        async with asyncio.timeout(10):
            while len(answered) < len(ids):
                rogue.conn.receive_data(await rogue.reader.read(65536))
                while (event := rogue.conn.next_event()) is not NEED_DATA:
                    assert isinstance(event, ResponseReceived)
                    assert event.message == PutBlockOk(ID)
                    answered.add(event.request_id)
                rogue.flush()
        assert answered == set(ids)
        await writing
        await rogue.close()


async def test_ping_flood_without_reading_is_held_back(caplog: pytest.LogCaptureFixture) -> None:
    """PONGs are answered without a handler; a peer that never reads them is stopped too."""
    caplog.set_level(logging.INFO, logger="shoal.transport.peer")
    async with listening(Node(), max_unflushed_answers=64 * 1024, **PATIENT) as (port, accepted):
        rogue = await Rogue.connect(port)
        served = await accepted.get()
        transport = served._stream.transport  # type: ignore[attr-defined]
        one_batch = b"".join(b"".join(rogue.conn._encode(2 * i + 1, Ping())) for i in range(50_000))
        rogue.writer.write(one_batch)  # 600 KB of PINGs, never reading the PONGs
        await eventually(lambda: "answer-backlog limit" in caplog.text)
        assert transport.get_write_buffer_size() < 1024 * 1024
        await rogue.close()


# -- stalls ---------------------------------------------------------------------------------


async def test_frozen_peer_fails_pending_requests_fast() -> None:
    """A peer that stops reading and writing (as under SIGSTOP): every pending request fails
    with PeerUnavailable after the stall timeouts, long before the request timeout."""
    async with pair(Node(), stall_timeout=0.2, stall_ping_timeout=0.2) as p:
        assert p.listener_stream.transport is not None
        p.listener_stream.transport.pause_reading()  # frozen: reads nothing, answers nothing
        requests = [
            asyncio.create_task(p.dialer.request(GetBlock(ID), timeout=60)) for _ in range(5)
        ]
        async with asyncio.timeout(10):  # the request timeout (60 s) would fail this
            results = await asyncio.gather(*requests, return_exceptions=True)
        assert all(isinstance(r, PeerUnavailable) for r in results), results
        text = str(results[0])
        assert text.startswith(
            f"peer {short_id(p.listener.local_id)} at {p.dialer.remote_address} stopped "
            "responding: nothing received for"
        )
        assert "<" not in text
        await p.dialer.closed.wait()  # the connection is closed: the manager reconnects


async def test_slow_but_alive_peer_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    """A handler that takes longer than the stall timeouts (a big fsync): the peer answers the
    stall PINGs, so its connection and the request survive."""
    caplog.set_level(logging.DEBUG, logger="shoal.transport.peer")
    node = Node(gate=asyncio.Event())
    async with pair(node, stall_timeout=0.1, stall_ping_timeout=0.1) as p:
        request = asyncio.create_task(p.dialer.request(GetBlock(ID), timeout=60))
        await eventually(lambda: caplog.text.count("sending a PING") >= 3)
        assert not request.done()
        node.gate.set()
        assert await request == BlockData(ID, b"block data")
        assert not p.dialer.closed.is_set()
        assert "stopped responding" not in caplog.text


async def test_a_node_that_holds_its_peer_back_is_not_taken_for_dead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dialer's upload slot is busy (a slow disk) so it stops reading; the listener's
    PUT_BLOCKs and its stall PINGs go unread. The dialer sends PINGs of its own meanwhile, so
    the listener does not declare it dead, and its own stall clock stops while it holds the
    listener back."""
    caplog.set_level(logging.DEBUG, logger="shoal.transport.peer")
    dialer_node = Node(gate=asyncio.Event())
    async with pair(
        Node(), dialer_node, stall_timeout=0.1, stall_ping_timeout=0.1, max_uploads=1
    ) as p:
        uploads = [
            asyncio.create_task(p.listener.request(PutBlock(ID, BLOCK), timeout=60))
            for _ in range(4)
        ]
        await eventually(lambda: "per-connection upload limit" in caplog.text)
        pending = asyncio.create_task(p.dialer.request(GetPeers(), timeout=60))
        # Well past both sides' stall timeouts (0.1 + 0.1 s) while the dialer is held up.
        await eventually(lambda: caplog.text.count("so it knows we are alive") >= 6)
        assert not pending.done()
        dialer_node.gate.set()
        assert await pending == Peers(())
        assert all(isinstance(r, PutBlockOk) for r in await asyncio.gather(*uploads))
        assert "stopped responding" not in caplog.text
        assert not p.dialer.closed.is_set()


async def test_connection_closes_while_its_read_loop_is_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read loop waiting for an upload slot (a hung disk) still notices the peer leaving:
    the connection closes and its pending requests fail at once."""
    caplog.set_level(logging.INFO, logger="shoal.transport.peer")
    stuck = Node(gate=asyncio.Event())  # never opened
    async with pair(stuck, max_uploads=1) as p:
        uploads = [
            asyncio.create_task(p.dialer.request(PutBlock(ID, b"x"), timeout=60)) for _ in range(3)
        ]
        await eventually(lambda: "per-connection upload limit" in caplog.text)
        pending = asyncio.create_task(p.listener.request(GetPeers(), timeout=60))
        await eventually(lambda: bool(p.listener._pending))
        await p.dialer.close()
        async with asyncio.timeout(10):  # the request timeout (60 s) would fail this
            with pytest.raises(PeerUnavailable):
                await pending
            await p.listener.closed.wait()
        results = await asyncio.gather(*uploads, return_exceptions=True)
        assert all(isinstance(r, PeerUnavailable) for r in results)


def test_limits_must_be_positive() -> None:
    async def build() -> None:
        conn, _ = make_pair()
        with pytest.raises(ValueError, match="positive"):
            PeerConnection(
                FrameStream(), conn, dialed=True, local_id=ID, handler=Node(), stall_timeout=0
            )
        with pytest.raises(ValueError, match="at least 1"):
            PeerConnection(
                FrameStream(), conn, dialed=True, local_id=ID, handler=Node(), max_uploads=0
            )

    asyncio.run(build())
