"""The connection manager over the in-memory network, on virtual time.

The handshake, PeerConnection and the manager run unchanged; only sockets and time are
simulated, so a 30 s backoff takes microseconds and each test runs minutes of virtual time.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.errors import PeerUnavailable
from shoal.protocol import Ping, Pong
from shoal.transport import Backoff, Identity, PeerSource, TransportLimits
from shoal.transport.routing import FullMeshRouting
from tests.unit.transport.sim import (
    FAST_BACKOFF,
    RecordingBackend,
    Sim,
    WantSet,
    connected,
    wait_for,
)


def test_memory_streams_carry_the_real_handshake_and_requests() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", mesh=False)
            b = await sim.node("10.0.0.2", mesh=False)
            conn = await b.dial(a.listen_address)
            assert conn.peer_id == a.node_id
            assert conn.remote_address == a.listen_address
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)
            await wait_for(lambda: a.connection(b.node_id) is not None)
            back = a.connection(b.node_id)
            assert back is not None
            assert back.remote_address.startswith("10.0.0.2:")
            assert isinstance(await back.request(Ping(), timeout=5), Pong)

    run_virtual(main)


def test_simultaneous_dials_leave_one_connection_on_both_sides() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", mesh=False)
            b = await sim.node("10.0.0.2", mesh=False)
            results = await asyncio.gather(
                a.dial(b.listen_address), b.dial(a.listen_address), return_exceptions=True
            )
            assert not [r for r in results if isinstance(r, BaseException)]
            await wait_for(lambda: connected(a, b))
            winner = min(a.node_id, b.node_id)
            ca, cb = a.connection(b.node_id), b.connection(a.node_id)
            assert ca is not None
            assert cb is not None
            assert ca.dialer_id == cb.dialer_id == winner
            assert isinstance(await ca.request(Ping(), timeout=5), Pong)
            assert isinstance(await cb.request(Ping(), timeout=5), Pong)

    run_virtual(main)


def test_two_dial_loops_that_start_together_settle_on_one_connection() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            b = await sim.node("10.0.0.2")
            # Both learn the other at the same instant: both loops dial at once.
            a.learn(b.node_id, [b.listen_address], source=PeerSource.CATALOG)
            b.learn(a.node_id, [a.listen_address], source=PeerSource.CATALOG)
            await wait_for(lambda: connected(a, b))
            first = a.connection(b.node_id)
            await asyncio.sleep(120)  # two virtual minutes: nothing may flap
            assert a.connection(b.node_id) is first
            assert connected(a, b)
            assert a.stats.registered + b.stats.registered <= 4

    run_virtual(main)


def test_a_dropped_connection_is_redialed_at_once() -> None:
    downs: list[float] = []

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            b = await sim.node("10.0.0.2", on_peer_down=lambda _: downs.append(clock.monotonic()))
            b.add_bootstrap(a.listen_address)
            await wait_for(lambda: connected(a, b))
            await asyncio.sleep(30)
            old = a.connection(b.node_id)
            assert sim.network.disconnect("10.0.0.2") == 2  # both ends of the one link
            await wait_for(lambda: connected(a, b) and a.connection(b.node_id) is not old)
            assert len(downs) == 1
            # A connection that lasted is redialed without waiting out a backoff.
            assert clock.monotonic() - downs[0] < FAST_BACKOFF.base
            conn = b.connection(a.node_id)
            assert conn is not None
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)

    run_virtual(main)


def backoff_gaps(seed: int) -> list[float]:
    async def main(clock: VirtualClock) -> list[float]:
        async with Sim(clock, seed=seed) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", backend=recorder)
            # Known, wanted, and nobody listens there: refused at once, every time.
            a.learn(Identity.generate().node_id, ["10.0.0.9:7000"], source=PeerSource.CATALOG)
            await asyncio.sleep(600)
            times = [t for t, _ in recorder.dials]
            return [later - earlier for earlier, later in itertools.pairwise(times)]

    return run_virtual(main)


def test_backoff_between_dials_doubles_from_half_a_second_to_thirty_with_jitter() -> None:
    gaps = backoff_gaps(seed=7)
    assert len(gaps) >= 20
    for attempt, gap in enumerate(gaps):
        ceiling = min(FAST_BACKOFF.cap, FAST_BACKOFF.base * 2**attempt)
        assert ceiling / 2 - 1e-6 <= gap <= ceiling + 1e-6, (attempt, gap)
    late = gaps[8:]
    assert all(15.0 - 1e-6 <= g <= 30.0 + 1e-6 for g in late)
    assert max(late) - min(late) > 1.0  # jitter spreads the dials of many nodes
    # Seeded: the same seed gives the same schedule, another seed another one.
    assert backoff_gaps(seed=7) == gaps
    assert backoff_gaps(seed=8) != gaps


def test_a_connection_that_ends_at_once_counts_as_a_failed_dial() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", backend=recorder)
            b = await sim.node("10.0.0.2", mesh=False)
            a.learn(b.node_id, [b.listen_address], source=PeerSource.CATALOG)
            await wait_for(lambda: connected(a, b))
            # From now on b closes every connection right after the handshake.
            original = b._register

            def close_at_once(conn: object) -> bool:
                kept = original(conn)  # type: ignore[arg-type]
                asyncio.get_running_loop().create_task(conn.close())  # type: ignore[attr-defined]
                return kept

            b._register = close_at_once  # type: ignore[method-assign]
            sim.network.disconnect("10.0.0.2")
            start = len(recorder.dials)
            await asyncio.sleep(120)
            # Backoff, not a tight reconnect circle: ~10 dials in two minutes, not thousands.
            assert 3 <= len(recorder.dials) - start <= 12

    run_virtual(main)


def test_a_dial_loop_ends_when_its_peer_is_no_longer_wanted() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", backend=recorder, mesh=False)
            policy = WantSet()
            a.set_dial_policy(policy)
            gone = Identity.generate().node_id
            a.learn(gone, ["10.0.0.9:7000"], source=PeerSource.CATALOG)
            await asyncio.sleep(10)
            assert recorder.dials == []  # known but not wanted: never dialed
            assert a.dialing() == set()
            policy.ids.add(gone)
            a.refresh()
            await wait_for(lambda: len(recorder.dials) >= 3)
            assert a.dialing() == {gone}
            policy.ids.clear()
            a.refresh()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert a.dialing() == set()
            count = len(recorder.dials)
            await asyncio.sleep(300)
            assert len(recorder.dials) == count
            assert a.record(gone) is not None  # unwanted is not forgotten

    run_virtual(main)


def test_an_unreachable_peer_is_forgotten_and_its_loop_ends() -> None:
    forgotten: list[bytes] = []

    async def on_forgotten(node_id: bytes) -> None:
        forgotten.append(node_id)

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            limits = TransportLimits(forget_after=300)
            a = await sim.node(
                "10.0.0.1", backend=recorder, limits=limits, on_peer_forgotten=on_forgotten
            )
            b = await sim.node("10.0.0.2")
            b.add_bootstrap(a.listen_address)
            await wait_for(lambda: connected(a, b))
            gone = Identity.generate().node_id
            a.learn(gone, ["10.0.0.9:7000"], source=PeerSource.CATALOG)
            await wait_for(lambda: gone in a.dialing())
            await asyncio.sleep(299)
            assert a.record(gone) is not None  # not yet
            await wait_for(lambda: a.record(gone) is None, timeout=120)
            await wait_for(lambda: forgotten == [gone], timeout=1)
            assert gone not in a.dialing()
            assert a.stats.forgotten == 1
            dials = len(recorder.dials)
            await asyncio.sleep(600)
            assert len(recorder.dials) == dials
            # A connected peer is never forgotten, and still answers.
            assert a.record(b.node_id) is not None
            conn = a.connection(b.node_id)
            assert conn is not None
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)

    run_virtual(main)


def test_a_bootstrap_peer_is_kept_while_down() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            limits = TransportLimits(forget_after=60)
            a = await sim.node("10.0.0.1", limits=limits)
            b = await sim.node("10.0.0.2")
            a.add_bootstrap(b.listen_address)
            await wait_for(lambda: connected(a, b))
            await sim.stop(b)
            await asyncio.sleep(600)
            record = a.record(b.node_id)
            assert record is not None
            assert record.bootstrap
            assert not record.up
            assert b.node_id in a.dialing()

    run_virtual(main)


def test_a_peer_that_moves_behind_its_bootstrap_address_is_followed() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            old = await sim.node("10.0.0.2", port=7000)
            a.add_bootstrap("10.0.0.2:7000")
            await wait_for(lambda: connected(a, old))
            await sim.stop(old)
            new = await sim.node("10.0.0.2", port=7000)
            await wait_for(lambda: connected(a, new), timeout=120)
            assert a.record(new.node_id) is not None
            assert a.record(new.node_id).bootstrap  # type: ignore[union-attr]

    run_virtual(main)


def test_connect_dials_a_known_peer_on_demand_within_its_timeout() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", mesh=False)
            routing = FullMeshRouting(a, max_peers=0, connect_timeout=3.0)  # wants nobody
            b = await sim.node("10.0.0.2", mesh=False)
            a.learn(b.node_id, [b.listen_address], source=PeerSource.CATALOG)
            await asyncio.sleep(10)
            assert a.connection(b.node_id) is None
            conn = await routing.connect(b.node_id)
            assert conn.peer_id == b.node_id
            assert isinstance(await conn.request(Ping(), timeout=5), Pong)
            with pytest.raises(PeerUnavailable):
                await routing.connect(Identity.generate().node_id)  # unknown
            lost = Identity.generate().node_id
            a.learn(lost, ["10.0.0.3:7000"], source=PeerSource.CATALOG)
            sim.network.set_unreachable("10.0.0.3")
            start = clock.monotonic()
            with pytest.raises(PeerUnavailable):
                await routing.connect(lost)
            assert clock.monotonic() - start <= 3.0 + 1e-6

    run_virtual(main)


def test_an_hour_of_dial_loops_runs_on_virtual_time() -> None:
    async def main(clock: VirtualClock) -> int:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", backend=recorder)
            for n in range(20):
                peer = Identity.generate().node_id
                a.learn(peer, [f"10.0.1.{n}:7000"], source=PeerSource.CATALOG)
            await asyncio.sleep(3600)
            assert clock.monotonic() >= 3600
            return len(recorder.dials)

    dials = run_virtual(main)
    # Per loop: ~10 dials to reach the cap, then one every 15 to 30 s.
    assert 20 * (3600 // 30) <= dials <= 20 * (10 + 3600 // 15)


def test_many_nodes_in_one_process_form_a_full_mesh() -> None:
    count = 24

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            first = await sim.node("10.0.0.1")
            nodes = [first]
            for n in range(2, count + 1):
                node = await sim.node(f"10.0.0.{n}", rng=random.Random(n))
                node.add_bootstrap(first.listen_address)
                nodes.append(node)
            # Peer exchange is the runtime's job; here each node learns the others from one.
            for node in nodes:
                for other in nodes:
                    if other is not node:
                        node.learn(other.node_id, [other.listen_address], source=PeerSource.CATALOG)
            await wait_for(lambda: all(len(n.live_ids()) == count - 1 for n in nodes), 300)
            await asyncio.sleep(60)
            assert all(len(n.live_ids()) == count - 1 for n in nodes)
            assert sum(len(n.live_ids()) for n in nodes) == count * (count - 1)

    run_virtual(main)


def test_backoff_is_the_one_the_manager_was_given() -> None:
    # Guard for the tests above: FAST_BACKOFF is the production schedule.
    assert Backoff() == FAST_BACKOFF


def test_a_forgotten_bootstrap_peer_is_looked_up_again_at_its_address() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            b = await sim.node("10.0.0.2", mesh=False)  # b never dials a itself
            a.add_bootstrap(b.listen_address)
            await wait_for(lambda: connected(a, b))
            first = a.connection(b.node_id)
            a.forget(b.node_id)
            assert a.record(b.node_id) is None
            await wait_for(lambda: connected(a, b) and a.connection(b.node_id) is not first, 120)
            record = a.record(b.node_id)
            assert record is not None
            assert record.bootstrap

    run_virtual(main)
