"""The transport over real TLS sockets: authentication, one connection per peer, errors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import socket
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shoal import AddressInUse, HandshakeError, Node, PeerUnavailable, RequestTimeout
from shoal.protocol import BlockData, GetBlock, Message, Ping, Pong
from shoal.transport import (
    ConnectionManager,
    Identity,
    PeerConnection,
    TransportLimits,
    parse_address,
)
from tests.integration.conftest import FAST, Cluster


async def echo_handler(peer: PeerConnection, message: Message) -> Message:
    if isinstance(message, GetBlock):  # a block whose bytes say which block was asked for
        return BlockData(block_id=message.block_id, data=b"block " + message.block_id)
    return Pong()


async def round_trip(conn: PeerConnection) -> None:
    """A real request and its answer over ``conn`` (what every get relies on)."""
    block_id = secrets.token_bytes(32)
    answer = await conn.request(GetBlock(block_id=block_id), timeout=5)
    assert isinstance(answer, BlockData)
    assert answer.data == b"block " + block_id


@contextlib.asynccontextmanager
async def manager(tmp_path: Path, name: str, **kwargs: object) -> AsyncIterator[ConnectionManager]:
    directory = tmp_path / name
    directory.mkdir()
    identity = Identity.generate()
    identity.save(directory / "node.key")
    mgr = ConnectionManager(
        identity,
        directory,
        listen="127.0.0.1:0",
        handler=echo_handler,
        ping_interval=0.5,
        ping_timeout=2.0,
        **kwargs,  # type: ignore[arg-type]
    )
    await mgr.start()
    try:
        yield mgr
    finally:
        await mgr.aclose()


async def test_connection_is_tls13_and_peers_know_each_other_by_key(tmp_path: Path) -> None:
    async with manager(tmp_path, "a") as a, manager(tmp_path, "b") as b:
        conn = await b.dial(a.listen_address)
        assert conn.peer_id == a.node_id
        ssl_object = conn._stream.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.version() == "TLSv1.3"
        await a.wait_until(lambda: a.connection(b.node_id) is not None, 10)
        await round_trip(conn)


async def test_simultaneous_dials_leave_one_connection_on_both_sides(tmp_path: Path) -> None:
    async with manager(tmp_path, "a") as a, manager(tmp_path, "b") as b:
        results = await asyncio.gather(
            a.dial(b.listen_address), b.dial(a.listen_address), return_exceptions=True
        )
        assert not [r for r in results if isinstance(r, BaseException)]

        def settled() -> bool:
            ca, cb = a.connection(b.node_id), b.connection(a.node_id)
            return ca is not None and cb is not None and ca.dialer_id == cb.dialer_id

        await a.wait_until(settled, 10)
        await b.wait_until(settled, 10)
        winner = min(a.node_id, b.node_id)
        ca, cb = a.connection(b.node_id), b.connection(a.node_id)
        assert ca is not None
        assert cb is not None
        assert ca.dialer_id == cb.dialer_id == winner
        # The surviving connection works both ways.
        await round_trip(ca)
        await round_trip(cb)


async def test_dialing_a_known_id_that_presents_another_key_is_refused(tmp_path: Path) -> None:
    async with manager(tmp_path, "a") as a, manager(tmp_path, "b") as b:
        impostor_expected = Identity.generate().node_id
        with pytest.raises(HandshakeError) as info:
            await b.dial(a.listen_address, expected_id=impostor_expected)
        assert info.value.code == "wrong-peer"
        assert b.connection(a.node_id) is None


async def test_wrong_network_is_refused_on_both_sides(tmp_path: Path) -> None:
    async with (
        manager(tmp_path, "a", network="alpha") as a,
        manager(tmp_path, "b", network="beta") as b,
    ):
        with pytest.raises(HandshakeError) as info:
            await b.dial(a.listen_address)
        assert "network" in str(info.value)
        assert a.live_ids() == []
        assert b.live_ids() == []


async def test_network_secret_mismatch_is_refused(tmp_path: Path) -> None:
    async with (
        manager(tmp_path, "a", network_secret=b"s" * 32) as a,
        manager(tmp_path, "b", network_secret=b"t" * 32) as b,
        manager(tmp_path, "c", network_secret=b"s" * 32) as c,
    ):
        with pytest.raises(HandshakeError):
            await b.dial(a.listen_address)
        conn = await c.dial(a.listen_address)  # same secret: accepted
        assert conn.peer_id == a.node_id


async def test_request_without_answer_times_out(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def silent(peer: PeerConnection, message: Message) -> Message:
        await never.wait()
        return Pong()

    async with manager(tmp_path, "a") as a, manager(tmp_path, "b") as b:
        a._handler = silent
        conn = await b.dial(a.listen_address)
        from shoal.protocol import GetPeers

        with pytest.raises(RequestTimeout):
            await conn.request(GetPeers(), timeout=0.2)
        assert await conn.request(Ping(), timeout=5)  # the connection survives a timeout


async def test_unreachable_address_is_peer_unavailable(tmp_path: Path) -> None:
    async with manager(tmp_path, "a") as a:
        port = a.listen_address.rsplit(":", 1)[1]
    async with manager(tmp_path, "b") as b:
        with pytest.raises(PeerUnavailable) as info:
            await b.dial(f"127.0.0.1:{port}")
        assert f"127.0.0.1:{port}" in str(info.value)


async def test_address_in_use_names_the_address(cluster: Cluster, tmp_path: Path) -> None:
    a = await cluster.add("a")
    with pytest.raises(AddressInUse) as info:
        async with Node.start(tmp_path / "b", listen=a.listen_address, options=FAST):
            pass
    assert a.listen_address in str(info.value)
    assert "\n" not in str(info.value)


async def test_peer_is_marked_down_when_pings_go_unanswered(cluster: Cluster) -> None:
    options = dataclasses.replace(FAST, ping_interval=0.2, ping_timeout=0.5)
    a = await cluster.add("a", options=options)
    b = await cluster.add("b", peers=[a.listen_address], options=options)
    await b.wait_for_peers(1, timeout=15)
    conn = b._rt.manager.connection(a._rt.node_id)
    assert conn is not None
    # Freeze a's side: stop reading from the socket, so pings go unanswered.
    a_conn = a._rt.manager.connection(b._rt.node_id)
    assert a_conn is not None
    assert a_conn._stream.transport is not None
    a_conn._stream.transport.pause_reading()
    await conn.closed.wait()  # b's liveness check closed the dead connection


async def poll(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_connections_over_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    # A long grace: no connection here counts as idle enough to make room.
    limits = TransportLimits(max_connections=2, idle_grace=3600, inbound_idle_grace=3600)
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(manager(tmp_path, "a", limits=limits))
        others = [await stack.enter_async_context(manager(tmp_path, f"o{n}")) for n in range(4)]
        kept = [await others[0].dial(a.listen_address), await others[1].dial(a.listen_address)]
        await poll(lambda: len(a.live_ids()) == 2, 10)
        for late in others[2:]:
            with pytest.raises(PeerUnavailable):
                await late.dial(a.listen_address)
        assert len(a.live_ids()) == 2
        assert a.stats.rejected == 2
        assert a.limit_hits == {"max_connections": 2}
        for conn in kept:  # the peers it has are served as before
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)
        # A slot that frees is taken by the next peer.
        await kept[0].close()
        await poll(lambda: len(a.live_ids()) == 1, 10)
        conn = await others[2].dial(a.listen_address)
        assert isinstance(await conn.request(Ping(), timeout=5), Pong)


async def test_a_flood_of_idle_connections_allocates_no_tls_buffers(tmp_path: Path) -> None:
    """2,000 idle TCP connections used to cost ~580 MiB (two 256 KiB buffers each, before
    TLS even started). Now they are closed at the accept, and only the few admitted to the
    handshake get buffers."""
    limits = TransportLimits(max_pending=16, max_pending_per_address=8, handshake_timeout=5)
    async with manager(tmp_path, "a", limits=limits) as a:
        host, port = parse_address(a.listen_address)
        loop = asyncio.get_running_loop()
        sockets: list[socket.socket] = []
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(2000):
                sock = socket.socket()
                sock.setblocking(False)
                sockets.append(sock)
                await loop.sock_connect(sock, (host, port))
            await poll(lambda: a.stats.accepted + a.stats.rejected >= 2000, 30)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
            for sock in sockets:
                sock.close()
        assert a.stats.rejected >= 1900
        assert a.pending() <= 8
        assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
        # The node still answers a real peer at once.
        async with manager(tmp_path, "b") as b:
            await poll(lambda: a.pending() == 0, 15)
            conn = await b.dial(a.listen_address)
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)
