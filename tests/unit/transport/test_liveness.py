"""An idle connection whose peer vanished without a word is noticed by the liveness PINGs.

Regression: ``PeerConnection.last_seen`` was computed from two clocks read at two instants on
every call, so it never returned the same value twice; the manager's monitor, which PINGs only
a connection from which nothing arrived since its last look, took that as "bytes arrived" and
never PINGed an idle connection. A peer behind a cut cable stayed "up" for good.
"""

from __future__ import annotations

from shoal.clock import VirtualClock, run_virtual
from tests.unit.transport.sim import Sim, connected, wait_for


def test_an_idle_peer_that_vanished_is_marked_down_by_the_ping_of_the_monitor() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1", ping_interval=5.0, ping_timeout=5.0)
            b = await sim.node("10.0.0.2", ping_interval=5.0, ping_timeout=5.0)
            b.add_bootstrap(a.listen_address)
            await wait_for(lambda: connected(a, b))
            # b drops off the network: its connection ends without a word reaching a, and
            # neither can dial the other again. Nothing is pending on a's side: only a PING
            # can tell.
            sim.network.set_unreachable("10.0.0.1")
            sim.network.set_unreachable("10.0.0.2")
            assert sim.network.crash("10.0.0.2") == 1
            start = clock.monotonic()
            await wait_for(lambda: a.connection(b.node_id) is None, 120)
            # Quiet for a ping interval (1.5 of them on the listening side), then the PING
            # times out.
            assert clock.monotonic() - start <= 5.0 * 1.5 + 5.0 + 1.0
            record = a.record(b.node_id)
            assert record is not None
            assert not record.up

    run_virtual(main)
