"""Whole nodes (store, catalog, runtime) over the in-memory network, on virtual time.

What the runtime adds to the manager: bootstrap and remembered peers at start, peer exchange
when a peer comes up (every address vetted, capped per telling peer), the catalog rows of
peers (only vetted addresses; removed when a peer is forgotten), and `shoal peers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal import Node
from shoal.clock import VirtualClock, run_virtual
from shoal.ids import encode_id
from shoal.node.runtime import RuntimeOptions
from shoal.node.types import PeerState
from shoal.protocol import PeerAddress
from shoal.store import Catalog
from shoal.transport import Identity, MemoryNetwork, TransportLimits
from tests.unit.transport.sim import Sim, peers_handler, wait_for


class Nodes:
    """Nodes on one in-memory network; each on its own host."""

    def __init__(self, root: Path, clock: VirtualClock, stack: contextlib.AsyncExitStack) -> None:
        self.root = root
        self.clock = clock
        self.network = MemoryNetwork()
        self._stack = stack
        self._stops: dict[str, contextlib.AsyncExitStack] = {}

    def options(self, host: str, **changes: object) -> RuntimeOptions:
        return dataclasses.replace(
            RuntimeOptions(
                listen=f"{host}:7000",
                clock=self.clock,
                backend=self.network.interface(host),
                ping_interval=5.0,
                ping_timeout=5.0,
            ),
            **changes,  # type: ignore[arg-type]
        )

    async def add(
        self, name: str, host: str, *, peers: tuple[str, ...] = (), **changes: object
    ) -> Node:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        node = await stack.enter_async_context(
            Node.start(
                self.root / name,
                # The open network: strangers (the rogues here) may connect, the hard case.
                open_network=True,
                listen=f"{host}:7000",
                options=self.options(host, peers=peers, **changes),
            )
        )
        self._stops[node.node_id] = stack
        self._stack.push_async_callback(stack.aclose)
        return node

    async def stop(self, node: Node) -> None:
        await self._stops.pop(node.node_id).aclose()


@contextlib.asynccontextmanager
async def nodes(root: Path, clock: VirtualClock) -> AsyncIterator[Nodes]:
    async with contextlib.AsyncExitStack() as stack:
        yield Nodes(root, clock, stack)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


def test_peer_exchange_joins_a_node_to_everyone_through_one_address(tmp_path: Path) -> None:
    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a = await net.add("a", "10.0.0.1")
            b = await net.add("b", "10.0.0.2", peers=("10.0.0.1:7000",))
            c = await net.add("c", "10.0.0.3", peers=("10.0.0.2:7000",))
            await c.wait_for_peers(2, timeout=60)
            await a.wait_for_peers(2, timeout=60)
            peers = c.peers()
            assert sorted(p.node_id for p in peers) == sorted([a.node_id, b.node_id])
            assert {p.state for p in peers} == {PeerState.UP}
            assert {p.address for p in peers} == {"10.0.0.1:7000", "10.0.0.2:7000"}
            assert all(p.last_seen is not None for p in peers)

    run_virtual(main)


def test_a_rogue_peer_exchange_answer_is_vetted_and_capped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shoal")
    limits = TransportLimits(max_learnt_per_peer=8, forget_after=600)
    bad = ["garbage-no-port", "10.9.9.9:99999", "a" * 240 + ":7000", "127.0.0.1:7000"]

    def entries() -> list[PeerAddress]:
        fake = [
            PeerAddress(node_id=Identity.generate().node_id, addrs=(f"10.7.{n}.1:7000", *bad[:2]))
            for n in range(255)
        ]
        return [PeerAddress(node_id=Identity.generate().node_id, addrs=tuple(bad)), *fake]

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a = await net.add("a", "10.0.0.1", limits=limits)
            # The rogue is a bare manager whose GET_PEERS answer is made up.
            sim = Sim(clock)
            sim.network = net.network
            async with sim:
                rogue = await sim.node("10.0.0.66", handler=peers_handler(entries), port=7000)
                rogue.add_bootstrap(a.listen_address)
                rt = a._rt
                await wait_for(lambda: len(rt.manager.records()) == 1 + 8)
                await asyncio.sleep(60)
                records = rt.manager.records()
                assert len(records) == 1 + 8  # the rogue, and 8 of the peers it named
                addresses = [a for r in records for a in r.addresses]
                assert len(addresses) == 1 + 8  # one good address each; the bad ones refused
                assert all(a.startswith(("10.7.", "10.0.0.66:")) for a in addresses)
                # Only peers we reached are remembered in the catalog.
                rows = await rt.io(rt.catalog.peers)
                assert [r[0] for r in rows] == [encode_id(rogue.node_id)]
            # The rogue is gone: after forget_after, everything it told us is forgotten.
            await asyncio.sleep(limits.forget_after + 120)
            assert rt.manager.records() == []
            assert rt.manager.dialing() == set()
            assert await rt.io(rt.catalog.peers) == []
        debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any("ignoring address garbage-no-port" in m for m in debug)
        assert any("loopback" in m for m in debug)

    run_virtual(main)
    no_tracebacks(caplog)


def test_garbage_in_the_catalog_is_skipped_quietly_at_every_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shoal")
    good = Identity.generate().node_id

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a = await net.add("a", "10.0.0.1")
            await net.stop(a)
            with Catalog(tmp_path / "a" / "shoal.db") as catalog:
                for n, address in enumerate(
                    ["garbage-no-port", "10.0.0.9:99999", "h" * 240 + ":1"]
                ):
                    catalog.upsert_peer(encode_id(Identity.generate().node_id), [address], n)
                catalog.upsert_peer("not-a-node-id", ["10.0.0.9:7000"], 0)
                catalog.upsert_peer(encode_id(good), ["10.0.0.9:7000", "0.0.0.0:7000"], 0)
            for _ in range(2):
                a = await net.add("a", "10.0.0.1")
                await asyncio.sleep(30)
                assert [(r.node_id, r.addresses) for r in a._rt.manager.records()] == [
                    (good, ["10.0.0.9:7000"])
                ]
                await net.stop(a)

    run_virtual(main)
    no_tracebacks(caplog)


def test_a_forgotten_peer_leaves_the_catalog(tmp_path: Path) -> None:
    limits = TransportLimits(forget_after=300)

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a = await net.add("a", "10.0.0.1", limits=limits)
            b = await net.add("b", "10.0.0.2", peers=("10.0.0.1:7000",))
            await a.wait_for_peers(1, timeout=60)
            rt = a._rt
            await asyncio.sleep(1)
            assert [r[0] for r in await rt.io(rt.catalog.peers)] == [b.node_id]
            await net.stop(b)
            await asyncio.sleep(200)
            assert [p.state for p in a.peers()] == [PeerState.DOWN]  # down, not forgotten
            await asyncio.sleep(300)
            assert a.peers() == []
            assert await rt.io(rt.catalog.peers) == []

    run_virtual(main)


def test_a_node_never_dials_its_own_addresses(tmp_path: Path) -> None:
    api = "10.0.0.1:8080"

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a = await net.add("a", "10.0.0.1")
            a._rt.add_own_address(api)
            own = [api, a.listen_address]

            def entries() -> list[PeerAddress]:
                return [PeerAddress(node_id=Identity.generate().node_id, addrs=tuple(own))]

            sim = Sim(clock)
            sim.network = net.network
            async with sim:
                rogue = await sim.node("10.0.0.66", handler=peers_handler(entries))
                # The rogue also claims our addresses in its own HELLO.
                assert rogue._local is not None
                rogue._local = dataclasses.replace(rogue._local, listen_addrs=tuple(own))
                rogue.add_bootstrap(a.listen_address)
                await a.wait_for_peers(1, timeout=60)
                await asyncio.sleep(60)
                records = a._rt.manager.records()
                assert [(r.node_id, r.addresses) for r in records] == [(rogue.node_id, [])]
                assert net.network.connects == 1  # only the rogue's dial of us

    run_virtual(main)


def test_throwaway_identities_do_not_come_back_at_every_restart(tmp_path: Path) -> None:
    """500 throwaway identities used to leave 500 catalog rows and 2,000 dial loops that came
    back at every start. Now: dial loops only for the peers the routing wants (capped), and
    unreachable peers are forgotten, rows included."""

    async def main(clock: VirtualClock) -> None:
        async with nodes(tmp_path, clock) as net:
            a = await net.add("a", "10.0.0.1")
            sim = Sim(clock)
            sim.network = net.network
            async with sim:
                for n in range(30):
                    visitor = await sim.node(f"10.0.3.{n}", port=7000, mesh=False)
                    await visitor.dial(a.listen_address)
                    await wait_for(
                        lambda v=visitor: a._rt.manager.connection(v.node_id) is not None
                    )
                    await sim.stop(visitor)
            await asyncio.sleep(1)
            assert len(await a._rt.io(a._rt.catalog.peers)) == 30
            await net.stop(a)
            limits = TransportLimits(max_connections=8, forget_after=600)
            a = await net.add("a", "10.0.0.1", limits=limits, routing="mesh")
            manager = a._rt.manager
            await asyncio.sleep(1)
            assert len(manager.records()) == 30
            assert len(manager.dialing()) == 8  # what the full mesh wants, not every row
            await asyncio.sleep(limits.forget_after + 120)
            assert manager.records() == []
            assert manager.dialing() == set()
            assert await a._rt.io(a._rt.catalog.peers) == []

    run_virtual(main)
