"""Dials on demand (a put, get or lookup needs a peer that is not connected) have a budget of
their own: they never wait behind the background dial loops' ``dial_rate`` (a wait that
outlasted the dial's timeout failed puts with "could not be reached"), and a flood of them
is held to ``demand_dial_rate`` with one WARNING line. And liveness PINGs do not count as
use, so the least recently used idle connection is the one closed to make room."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.protocol import GetPeers, Peers, Ping, Pong
from shoal.transport import PeerSource, TransportLimits
from tests.unit.transport.sim import RecordingBackend, Sim
from tests.unit.transport.test_manager_limits import limit_lines, still_serves


def test_dials_on_demand_do_not_wait_for_the_background_budget_and_have_their_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    # The background budget is all but empty: one dial, then one every 1,000 s.
    limits = TransportLimits(
        dial_rate=0.001, dial_burst=1, demand_dial_rate=5.0, demand_dial_burst=5
    )

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", limits=limits, backend=recorder, mesh=False)
            peers = [await sim.node(f"10.0.1.{n}", mesh=False) for n in range(30)]
            for peer in peers:
                a.learn(peer.node_id, [peer.listen_address], source=PeerSource.EXCHANGE)
            # Spend the background budget: the dial loops would now wait ~1,000 s per dial.
            await a._dialer._budget.acquire()
            start = clock.monotonic()
            conns = await asyncio.gather(
                *(a.connect(p.node_id, timeout=a.limits.connect_timeout + 10) for p in peers)
            )
            elapsed = clock.monotonic() - start
            assert [c.peer_id for c in conns] == [p.node_id for p in peers]
            for conn in conns:
                assert isinstance(await conn.request(Ping(), timeout=5), Pong)
            # 5 at once, then 5 a second: 30 dials in about 5 s, never faster.
            times = sorted(t for t, _ in recorder.dials if t >= start)
            assert len(times) == 30
            for n in range(len(times) - 10):
                assert times[n + 10] - times[n] >= 1.0 - 1e-6
            assert elapsed < 1000  # not the background budget's pace
            await still_serves(sim, a)

    run_virtual(main)
    assert limit_lines(caplog, "demand_dial_rate") == 1
    assert limit_lines(caplog, "dial_rate") == 0


def test_pings_do_not_make_a_connection_used() -> None:
    """Liveness PINGs (every few seconds on every connection) leave ``idle_for`` growing on
    both sides, so the connection limit can still close the least recently used one; a real
    request resets it."""

    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", mesh=False)
            b = await sim.node("10.0.0.2", mesh=False)
            conn = await a.dial(b.listen_address)
            back = b.connection(a.node_id)
            assert back is not None
            for _ in range(6):
                await asyncio.sleep(5)
                await conn.ping(5)
            # Between the manager's own liveness pings (every 5 s): an open request of any
            # kind, a PING too, makes a connection busy (0) while it lasts.
            await asyncio.sleep(2.5)
            assert conn.idle_for() >= 30
            assert back.idle_for() >= 30
            assert isinstance(await conn.request(GetPeers(), timeout=5), Peers)
            assert conn.idle_for() < 1
            assert back.idle_for() < 1

    run_virtual(main)
