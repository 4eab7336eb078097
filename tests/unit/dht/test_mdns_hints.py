"""A node found by mDNS is dialed until reached once, even when the routing table already has
entries (a LAN node that got an inbound connection first must still meet the others), and
no longer after ``MDNS_HINT_DIALS`` failed dials."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.dht.routing import MDNS_HINT_DIALS
from shoal.ids import decode_id
from shoal.transport import Identity
from shoal.transport.book import PeerSource
from tests.unit.node.test_runtime_network import no_tracebacks, nodes
from tests.unit.transport.sim import wait_for


def test_a_node_found_by_mdns_is_dialed_though_the_table_has_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            hub = await net.add("hub", "10.0.0.1")
            a = await net.add("a", "10.0.0.2", peers=("10.0.0.1:7000",))
            lone = await net.add("lone", "10.0.0.3")  # no --peer: only mDNS can bring it in
            dht = a._rt.dht
            assert dht is not None
            await wait_for(lambda: decode_id(hub.node_id) in dht.table)
            lone_id = decode_id(lone.node_id)
            # An unreachable announcement too: dialed a few times, then left to lookups.
            ghost = Identity.generate().node_id
            manager = a._rt.manager
            manager.learn(ghost, ["10.0.0.9:7000"], source=PeerSource.MDNS)
            manager.learn(lone_id, ["10.0.0.3:7000"], source=PeerSource.MDNS)
            await wait_for(lambda: manager.connection(lone_id) is not None, timeout=60)
            await wait_for(lambda: lone_id in dht.table, timeout=60)
            # The hub still counts: nothing was closed to reach the hinted node.
            assert manager.connection(decode_id(hub.node_id)) is not None

            def ghost_given_up() -> bool:
                record = next((r for r in manager.records() if r.node_id == ghost), None)
                return record is None or record.failures >= MDNS_HINT_DIALS

            await wait_for(ghost_given_up, timeout=3600)
            await wait_for(lambda: ghost not in manager.dialing(), timeout=60)

    run_virtual(main)
    no_tracebacks(caplog)
