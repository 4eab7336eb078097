"""LAN discovery over an in-memory LAN (:mod:`tests.unit.discovery.fake_lan`) and real
connection managers on the in-memory network, on virtual time.

The fake LAN stands in for zeroconf's sockets only; the discovery, the manager, the peer book,
the dialer and the handshake are the real ones (the real sockets are in
``tests/e2e/test_hosts.py``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import pytest

from shoal.clock import VirtualClock, run_virtual
from shoal.discovery.announce import MdnsPlan, announcement_record, instance_name, plan_mdns
from shoal.discovery.mdns import MdnsDiscovery
from shoal.ids import short_id
from shoal.transport import ConnectionManager, TransportLimits
from shoal.transport.addresses import host_of
from shoal.transport.book import PeerSource
from tests.unit.discovery.fake_lan import FakeLan
from tests.unit.transport.sim import RecordingBackend, Sim, connected, wait_for

NET = "net-a"


def discovery(
    manager: ConnectionManager,
    lan: FakeLan,
    clock: VirtualClock,
    *,
    network: str = NET,
    **bounds: Any,
) -> MdnsDiscovery:
    """An mDNS discovery for ``manager`` on ``lan``, planned from its real listen address."""
    plan = plan_mdns(
        manager.listen_address,
        manager.advertised_addresses,
        [host_of(manager.listen_address)],
    )
    assert plan.enabled, plan
    return MdnsDiscovery(
        manager,
        node_id=manager.node_id,
        network=network,
        plan=plan,
        transport_factory=lan.transport,
        clock=clock,
        **bounds,
    )


def fake_record(i: int, network: str = NET) -> Any:
    """An announcement of a node that does not exist, at an address where nobody listens."""
    address = f"10.9.{i // 250}.{i % 250 + 1}:4000"
    return announcement_record(secrets.token_bytes(32), network, [address])


def test_two_nodes_find_each_other_and_connect() -> None:
    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            b = await sim.node("10.0.0.2")
            da, db = discovery(a, lan, clock), discovery(b, lan, clock)
            try:
                da.start()
                db.start()
                await wait_for(lambda: connected(a, b), 30)
                await da.wait_announced(30)
                await db.wait_announced(30)
                # Only mDNS named them: each learnt the other from it (or from its dial).
                record = a.record(b.node_id)
                assert record is not None
                assert b.listen_address in record.addresses
                assert {a.record(b.node_id).source, b.record(a.node_id).source} & {  # type: ignore[union-attr]
                    PeerSource.MDNS
                }
                await wait_for(lambda: b.node_id in da.found and a.node_id in db.found, 30)
                assert lan.opened == [("10.0.0.1",), ("10.0.0.2",)]
            finally:
                await da.aclose()
                await db.aclose()

    run_virtual(main)


def test_nodes_of_another_network_are_never_learnt_nor_dialed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="shoal.discovery")

    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            dials = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", backend=dials)
            b = await sim.node("10.0.0.2")
            stranger = await sim.node("10.0.0.3")
            found = [
                discovery(a, lan, clock),
                discovery(b, lan, clock),
                discovery(stranger, lan, clock, network="net-b"),
            ]
            try:
                for d in found:
                    d.start()
                await wait_for(lambda: connected(a, b), 30)
                await wait_for(lambda: "of another network" in caplog.text, 30)
                for d in found:
                    await d.wait_announced(30)
                await asyncio.sleep(30)  # virtual: time enough for any dial to happen
                assert a.record(stranger.node_id) is None
                assert b.record(stranger.node_id) is None
                assert stranger.records() == []
                assert not any(host_of(address) == "10.0.0.3" for _, address in dials.dials)
                assert stranger.node_id not in found[0].found
                assert found[2].found == {}
            finally:
                for d in found:
                    await d.aclose()

    run_virtual(main)


def test_an_announcement_is_only_a_hint_the_handshake_checks_the_key() -> None:
    """A neighbour announcing node b's ID at its own address is dialed, refused by the key
    check, and never taken for b."""

    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            impostor = await sim.node("10.0.0.3")
            b_id = secrets.token_bytes(32)  # b itself is not on the LAN
            lan.publish(announcement_record(b_id, NET, [impostor.listen_address]))
            da = discovery(a, lan, clock)
            try:
                da.start()
                await wait_for(lambda: b_id in da.found, 30)
                record = a.record(b_id)
                assert record is not None
                assert record.source is PeerSource.MDNS
                # The dial reaches the impostor, whose key is not b's: the address is dropped.
                await wait_for(lambda: not record.addresses, 60)
                assert a.connection(b_id) is None
                assert a.connection(impostor.node_id) is None
                assert a.live_ids() == []
            finally:
                await da.aclose()

    run_virtual(main)


def test_a_flood_of_announcements_stays_within_the_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    limits = TransportLimits(max_known_peers=40, dial_rate=2.0, dial_burst=4)
    flood = 5000

    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            dials = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            a = await sim.node("10.0.0.1", backend=dials, limits=limits)
            da = discovery(a, lan, clock, max_peers=64, max_queued=128)
            try:
                da.start()
                await da.wait_announced(30)
                start = clock.monotonic()
                for i in range(flood):
                    lan.publish(fake_record(i))
                    if i % 100 == 0:
                        await asyncio.sleep(0)
                for _ in range(60):  # a minute of the flood, checked every second
                    await asyncio.sleep(1)
                    assert len(da.found) <= 64
                    assert da.queued <= 128
                    assert len(a.records()) <= limits.max_known_peers
                    elapsed = clock.monotonic() - start
                    assert len(dials.dials) <= limits.dial_burst + limits.dial_rate * elapsed + 1
                # Resolving was rate-limited too: far fewer than the flood were even read.
                assert lan.resolves <= 32 + 4 * (clock.monotonic() - start) + 4
                assert len(da.found) == 64
                hits = {**da.limit_hits, **a.limit_hits}
                for limit in ("mdns_queue", "mdns_rate", "mdns_peers", "max_known_peers"):
                    assert hits.get(limit, 0) > 0, hits
                    assert f"limit {limit}:" in caplog.text
                assert "limit dial_rate:" in caplog.text

                # The flood ends (goodbyes); a real node appears: found, and connected.
                for name in list(lan.records):
                    if name != instance_name(a.node_id):
                        lan.withdraw(name)
                assert da.found == {}
                b = await sim.node("10.0.0.2")
                db = discovery(b, lan, clock)
                try:
                    db.start()
                    await wait_for(lambda: connected(a, b), 120)
                    await wait_for(lambda: b.node_id in da.found, 120)
                finally:
                    await db.aclose()
            finally:
                await da.aclose()

    run_virtual(main)


def test_an_announcement_that_goes_away_frees_its_place() -> None:
    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            da = discovery(a, lan, clock, max_peers=2)
            try:
                da.start()
                first = [fake_record(i) for i in range(3)]
                for record in first:
                    lan.publish(record)
                await wait_for(lambda: lan.resolves >= 3, 30)
                await asyncio.sleep(5)
                assert len(da.found) == 2
                assert da.limit_hits.get("mdns_peers") == 1
                gone = next(r for r in first if r.name in set(da.found.values()))
                lan.withdraw(gone.name)
                assert len(da.found) == 1
                late = fake_record(10)
                lan.publish(late)
                await wait_for(lambda: late.name in set(da.found.values()), 30)
                assert len(da.found) == 2
            finally:
                await da.aclose()

    run_virtual(main)


def test_stop_cancels_every_task_and_withdraws_the_announcement() -> None:
    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            b = await sim.node("10.0.0.2")
            da, db = discovery(a, lan, clock), discovery(b, lan, clock)
            try:
                da.start()
                db.start()
                await da.wait_announced(30)
                await db.wait_announced(30)
                await wait_for(lambda: a.node_id in db.found, 30)
                # a's workers are now stuck resolving names nobody answers.
                lan.answering.clear()
                for i in range(10):
                    lan.publish(fake_record(i))
                await asyncio.sleep(0.5)
                assert da.running
                await da.aclose()
                assert not da.running
                # a's tasks all ended (b's, named after b, run on).
                names = [t.get_name() for t in asyncio.all_tasks()]
                assert not [n for n in names if n.startswith(f"mDNS {short_id(a.node_id)}")]
                assert [n for n in names if n.startswith(f"mDNS {short_id(b.node_id)}")]
                assert instance_name(a.node_id) not in lan.records  # the goodbye went out
                assert a.node_id not in db.found
                await da.aclose()  # twice is fine
            finally:
                await da.aclose()
                await db.aclose()
            assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mDNS")]

    run_virtual(main)


def test_a_plan_that_is_off_opens_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shoal.discovery")

    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        async with Sim(clock) as sim:
            a = await sim.node("127.0.0.1")
            plan = plan_mdns(a.listen_address, a.advertised_addresses, ["127.0.0.1", "10.0.0.1"])
            da = MdnsDiscovery(
                a, node_id=a.node_id, network=NET, plan=plan, transport_factory=lan.transport
            )
            da.start()
            await asyncio.sleep(10)
            assert lan.opened == []
            assert not da.running
            assert "mDNS is off: this node listens on loopback" in caplog.text
            await da.aclose()

    run_virtual(main)


def test_for_node_plans_from_the_started_manager() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            on = MdnsDiscovery.for_node(a, network=NET, interfaces=lambda: ["10.0.0.1"])
            assert on.plan.interfaces == ("10.0.0.1",)
            assert on.plan.addresses == (a.listen_address,)
            off = MdnsDiscovery.for_node(a, network=NET, enabled=False)
            assert off.plan.off_reason is not None
            assert "--no-mdns" in off.plan.off_reason
            memory = MdnsDiscovery.for_node(a, network=NET, real_network=False)
            assert not memory.plan.enabled

    run_virtual(main)


def test_mdns_sockets_that_cannot_open_leave_the_node_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main(clock: VirtualClock) -> None:
        lan = FakeLan()
        lan.fail_open = True
        async with Sim(clock) as sim:
            a = await sim.node("10.0.0.1")
            b = await sim.node("10.0.0.2")
            da = discovery(a, lan, clock)
            da.start()
            await asyncio.sleep(1)
            assert "mDNS is off: cannot open mDNS sockets" in caplog.text
            assert not da.running
            b.add_bootstrap(a.listen_address)  # the node itself works on
            await wait_for(lambda: connected(a, b), 30)
            await da.aclose()

    run_virtual(main)


def test_a_plan_must_be_enabled_to_run() -> None:
    assert not MdnsPlan.off("why").enabled
    assert MdnsPlan(interfaces=("10.0.0.1",), addresses=("10.0.0.1:1",)).enabled
