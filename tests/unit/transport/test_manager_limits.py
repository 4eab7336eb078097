"""Floods past each limit of the connection manager, over the in-memory network on virtual time.

Each test checks three things: the limit held (counted in the manager's own numbers), the node
still serves a well-behaved peer, and one WARNING line (not one per event) said so.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.protocol import GetPeers, PeerAddress, Peers, Ping, Pong
from shoal.transport import ConnectionManager, Identity, PeerSource, TransportLimits
from tests.unit.transport.sim import RecordingBackend, Sim, connected, peers_handler, wait_for


async def still_serves(sim: Sim, node: ConnectionManager, host: str = "10.0.9.9") -> None:
    """A well-behaved peer can still connect to ``node`` and get answers."""
    good = await sim.node(host, mesh=False)
    conn = await good.dial(node.listen_address)
    assert isinstance(await conn.request(Ping(), timeout=5), Pong)
    await sim.stop(good)


def limit_lines(caplog: pytest.LogCaptureFixture, limit: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith(f"limit {limit}:")
    )


def test_connections_being_set_up_are_capped_in_total_and_per_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    limits = TransportLimits(max_pending=16, max_pending_per_address=4, handshake_timeout=10)

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", limits=limits)
            # 2,000 connections that never start TLS, from 100 addresses.
            idle = [
                sim.network.open_idle(f"10.1.{n % 100}.1", a.listen_address) for n in range(2000)
            ]
            admitted = [c for c in idle if not c.rejected]
            assert len(admitted) == 16
            assert a.pending() == 16
            assert a.stats.rejected == 2000 - 16
            # One address alone gets 4 slots, however many connections it opens.
            one = [sim.network.open_idle("10.2.0.1", a.listen_address) for _ in range(10)]
            assert all(c.rejected for c in one)  # the 16 slots are still taken
            await asyncio.sleep(limits.handshake_timeout + 1)  # the idle ones time out
            assert a.pending() == 0
            one = [sim.network.open_idle("10.2.0.1", a.listen_address) for _ in range(10)]
            assert sum(not c.rejected for c in one) == 4
            for c in one:
                c.close()
            await asyncio.sleep(0)
            await still_serves(sim, a)

    run_virtual(main)
    assert limit_lines(caplog, "max_pending") == 1
    assert limit_lines(caplog, "max_pending_per_address") == 1


def test_open_connections_are_capped_and_the_node_keeps_serving_its_peers() -> None:
    limits = TransportLimits(max_connections=3)

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", limits=limits, mesh=False)
            others = [await sim.node(f"10.0.1.{n}", mesh=False) for n in range(6)]
            results = await asyncio.gather(
                *(o.dial(a.listen_address) for o in others), return_exceptions=True
            )
            await asyncio.sleep(1)
            assert len(a.live_ids()) == 3
            assert sum(1 for o in others if o.connection(a.node_id) is not None) == 3
            assert a.limit_hits.get("max_connections", 0) >= 3
            served = [
                r for r in results if not isinstance(r, BaseException) and not r.closed.is_set()
            ]
            for conn in served:
                assert isinstance(await conn.request(Ping(), timeout=5), Pong)
            # A slot that frees is taken by the next peer.
            await sim.stop(others[0] if others[0].connection(a.node_id) else others[1])
            await wait_for(lambda: len(a.live_ids()) < 3)
            late = await sim.node("10.0.2.1", mesh=False)
            conn = await late.dial(a.listen_address)
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)

    run_virtual(main)


def test_inbound_connections_from_one_address_are_capped() -> None:
    limits = TransportLimits(max_connections_per_address=2)

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", limits=limits, mesh=False)
            crowd = [await sim.node("10.0.5.5", mesh=False) for _ in range(5)]  # one host
            await asyncio.gather(*(c.dial(a.listen_address) for c in crowd), return_exceptions=True)
            await asyncio.sleep(1)
            assert len(a.live_ids()) == 2
            await still_serves(sim, a)  # another address is not affected

    run_virtual(main)


def test_dial_storm_from_peer_exchange_is_rate_limited_and_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """4 rogue peers each announce 256 fake peers with 4 addresses (the protocol maximum)."""
    caplog.set_level(logging.WARNING)
    limits = TransportLimits(max_learnt_per_peer=32, forget_after=600)

    def fake_peers(seed: int) -> list[PeerAddress]:
        return [
            PeerAddress(
                node_id=Identity.generate().node_id,
                addrs=tuple(f"10.{seed}.{n}.{k}:7000" for k in range(4)),
            )
            for n in range(256)
        ]

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", limits=limits, backend=recorder)
            rogues = []
            for seed in range(4):
                entries = fake_peers(100 + seed)
                rogue = await sim.node(f"10.0.8.{seed}", handler=peers_handler(lambda e=entries: e))
                rogues.append(rogue)
                conn = await a.dial(rogue.listen_address)
                answer = await conn.request(GetPeers(), timeout=5)
                assert isinstance(answer, Peers)
                for entry in answer.peers:  # what the runtime's peer exchange does
                    a.learn(entry.node_id, entry.addrs, source=PeerSource.EXCHANGE, via=conn)
            # Each rogue could make us remember 32 peers, with at most 4 addresses each.
            assert len(a.records()) == 4 + 4 * 32
            assert all(len(r.addresses) <= 4 for r in a.records())
            start = clock.monotonic()
            first = len(recorder.dials)
            await asyncio.sleep(60)
            # The dials the manager made itself (not the test's dials of the rogues).
            dials = [t for t, to in recorder.dials if t >= start and not to.startswith("10.0.8.")]
            # Never more than the bucket allows: 20 at once, then 10 a second.
            assert len(dials) <= 20 + 10 * 60
            for n in range(len(dials) - 30):
                assert dials[n + 30] - dials[n] >= 1.0 - 1e-6  # 30 dials take >= 1 s
            assert first + len(dials) < 16_580 / 10  # the storm measured before the limits
            # The rogues leave; what they told us is forgotten and no loop is left.
            for rogue in rogues:
                await sim.stop(rogue)
            await asyncio.sleep(limits.forget_after + 120)
            assert a.records() == []
            assert a.dialing() == set()
            count = len(recorder.dials)
            await asyncio.sleep(600)
            assert len(recorder.dials) == count
            await still_serves(sim, a)

    run_virtual(main)
    assert limit_lines(caplog, "max_learnt_per_peer") == 1
    assert limit_lines(caplog, "dial_rate") >= 1


def test_the_peer_book_is_capped_in_total() -> None:
    limits = TransportLimits(max_known_peers=50)

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", limits=limits, mesh=False)
            for n in range(500):
                a.learn(
                    Identity.generate().node_id,
                    [f"10.3.{n // 200}.{n % 200}:7000"],
                    source=PeerSource.CATALOG,
                )
            assert len(a.records()) == 50
            assert a.limit_hits["max_known_peers"] == 450
            # A peer that connects still gets in: the longest-unreachable one makes room.
            b = await sim.node("10.0.0.2", mesh=False)
            await b.dial(a.listen_address)
            await wait_for(lambda: a.connection(b.node_id) is not None)
            assert len(a.records()) == 50

    run_virtual(main)


def test_one_key_used_by_two_running_nodes_keeps_one_connection_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    twin = Identity.generate()

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            b = await sim.node("10.0.0.2")
            a1 = await sim.node("10.0.0.1", identity=twin)
            a2 = await sim.node("10.0.0.3", identity=twin)
            a1.add_bootstrap(b.listen_address)
            a2.add_bootstrap(b.listen_address)
            b.learn(twin.node_id, [a1.listen_address, a2.listen_address], source=PeerSource.CATALOG)
            await asyncio.sleep(5)
            before = b.stats.registered
            await asyncio.sleep(300)
            # Today: tens of thousands of replacements in 30 s. With backoff: a handful.
            assert b.stats.registered - before <= 30
            assert b.stats.replaced <= 30
            conn = b.connection(twin.node_id)
            assert conn is not None
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)
            await still_serves(sim, b)

    run_virtual(main)
    assert limit_lines(caplog, "duplicate_node_id") >= 1
    assert limit_lines(caplog, "duplicate_node_id") <= 6  # one a minute at most


def test_a_reconnect_while_the_old_connection_is_stale_gets_through_after_a_ping() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", ping_interval=5.0, ping_timeout=5.0)
            b = await sim.node("10.0.0.2")
            b.add_bootstrap(a.listen_address)
            await wait_for(lambda: connected(a, b))
            stale = a.connection(b.node_id)
            assert stale is not None
            # b's links vanish without a word (as after a reboot): a still holds its end, so
            # b's reconnect arrives as a second connection dialed by the same side.
            assert sim.network.crash("10.0.0.2") == 1
            await wait_for(lambda: connected(a, b) and a.connection(b.node_id) is not stale, 60)
            assert stale.closed.is_set()
            assert a.stats.duplicates_closed >= 1

    run_virtual(main)
