"""The node: block store, catalog and connections wired together, and the block operations
that the put and get pipelines are made of.

Threads: hashing and AEAD run on a small CPU pool (they release the GIL, so two threads use
both cores); disk reads, writes and fsyncs run on an I/O pool, so a slow fsync never holds up
hashing and nothing blocking ever runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shoal import defaults
from shoal.clock import SYSTEM_CLOCK, Clock
from shoal.dht.routing import DhtOptions, KademliaRouting
from shoal.discovery import MdnsDiscovery
from shoal.errors import (
    RemoteProtocolError,
    ShoalError,
    StorageError,
    TransportError,
)
from shoal.ids import decode_id, encode_id, short_id
from shoal.node.datadir import DataDir
from shoal.node.gc import Collector
from shoal.node.handoff import Handoff
from shoal.node.leases import LeaseKeeper
from shoal.node.repair_loop import Repairer
from shoal.node.scrub import Scrub
from shoal.node.serve import RequestHandler
from shoal.protocol import (
    GetPeers,
    Peers,
)
from shoal.store import BlockStore, Catalog, DataDirLock
from shoal.store.leases import LeaseTable
from shoal.transport import (
    Backoff,
    ConnectionManager,
    NetworkBackend,
    PeerConnection,
    PeerSource,
    TransportLimits,
)
from shoal.transport.routing import FullMeshRouting, Routing

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RuntimeOptions:
    """Tunables; the defaults are what `shoal run` uses."""

    listen: str = defaults.LISTEN
    peers: tuple[str, ...] = ()
    replicas: int = defaults.REPLICAS
    #: Erasure coding ``(k, n)`` for new files by default instead of ``replicas`` copies;
    #: None: replicate (``docs/erasure.md``).
    erasure: tuple[int, int] | None = None
    #: The network to be in; None: the data dir's (its network.key, else the open network).
    network: str | None = None
    network_secret: bytes | None = None
    chunk_size: int = defaults.CHUNK_SIZE
    manifest_fanout: int = defaults.MANIFEST_FANOUT
    window: int = defaults.WINDOW
    request_timeout: float = defaults.REQUEST_TIMEOUT
    ping_interval: float = defaults.PING_INTERVAL
    ping_timeout: float = defaults.PING_TIMEOUT
    backoff: Backoff = field(default_factory=Backoff)
    cpu_threads: int = max(2, os.cpu_count() or 2)
    io_threads: int = 8
    #: Most bytes of blocks kept; None: config.toml's node.max_storage (default: no limit).
    max_storage: int | None = None
    #: Free disk never used; None: config.toml's node.reserved_space (default: 5% of the
    #: file system, at most 1 GiB); 0: no reserve.
    reserved_space: int | None = None
    #: Addresses peers should use to reach this node; empty: the listen address (or, on a
    #: wildcard listen address, the host's interface addresses).
    advertise: tuple[str, ...] = ()
    #: Connection, address and dialing limits (``docs/decisions/0004-transport-limits.md``).
    limits: TransportLimits = field(default_factory=TransportLimits)
    #: Time; a ``shoal.clock.VirtualClock`` (with its event loop) in simulations.
    clock: Clock = SYSTEM_CLOCK
    #: The network; None means real TCP + TLS (``shoal.transport.memory`` in tests).
    backend: NetworkBackend | None = None
    #: Find nodes on the local network (mDNS) and announce this one; only on the interfaces
    #: the node listens on (none on loopback). Off if config.toml says ``node.mdns = false``.
    mdns: bool = True
    #: How nodes are found: ``"dht"`` (Kademlia, connections on demand) or ``"mesh"`` (a
    #: connection to every known peer; small fixed networks and tests of the transport).
    routing: str = "dht"
    #: The DHT's k, alpha, intervals and limits (``docs/dht.md``).
    dht: DhtOptions = field(default_factory=DhtOptions)
    #: Seconds between handoff passes, and the delay of an early pass after a node left the
    #: routing table (``docs/decisions/0007-handoff.md``).
    handoff_interval: float = defaults.HANDOFF_INTERVAL
    handoff_settle: float = defaults.HANDOFF_SETTLE
    #: Repair (``docs/repair.md``): seconds a node must be unreachable before its copies
    #: count as lost (None: config.toml's node.repair_delay, default one hour); seconds
    #: between full passes; bytes per second background repair may move (0: no limit);
    #: seconds after a node went away before a pass.
    repair_delay: float | None = None
    repair_interval: float = defaults.REPAIR_INTERVAL
    repair_rate: float = defaults.REPAIR_RATE
    repair_settle: float = defaults.REPAIR_SETTLE
    #: Repair in the background (False: only when asked, ``shoal repair``).
    background_repair: bool = True
    #: The roots this node holds for others, given the Unix time (the lease table's
    #: ``roots_held``); None: none besides the catalog's.
    repair_held_roots: Callable[[float], Iterable[bytes]] | None = None
    #: Leases and garbage collection (``docs/leases.md``): how long a lease lasts, how often
    #: the catalog's leases are renewed (and when first), how long a put's pending lease
    #: lasts, how long a block with no live lease is kept (``--gc-grace``), and GC's pace.
    lease_duration: float = defaults.LEASE_DURATION
    lease_renew_interval: float = defaults.LEASE_RENEW_INTERVAL
    lease_renew_first: float = defaults.LEASE_RENEW_FIRST
    pending_lease: float = defaults.PENDING_LEASE
    gc_grace: float = defaults.GC_GRACE
    gc_interval: float = defaults.GC_INTERVAL
    gc_max_deletes: int = defaults.GC_MAX_DELETES
    max_leases_per_owner: int = defaults.MAX_LEASES_PER_OWNER
    max_leases: int = defaults.MAX_LEASES
    #: Bytes per second the handoff may send (rebalancing's throttle, ``docs/scrub.md``).
    handoff_rate: float = defaults.HANDOFF_RATE
    #: Mean seconds between scrub passes (randomized per node) and the bytes per second a
    #: pass may read (``docs/scrub.md``).
    scrub_interval: float = defaults.SCRUB_INTERVAL
    scrub_rate: float = defaults.SCRUB_RATE


class NodeRuntime:
    """Everything a running node owns. ``start()`` then ``aclose()``."""

    def __init__(self, data: DataDir, options: RuntimeOptions) -> None:
        # First of all: one node per data dir. Opening the block store clears its tmp/, which
        # would pull the floor from under another node still writing there.
        self._lock = DataDirLock(data.path)
        self._lock.acquire()
        try:
            self._open(data, options)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, data: DataDir, options: RuntimeOptions) -> None:
        self.data = data
        self.options = options
        self.node_id = data.identity.node_id
        # A flag (options) wins over config.toml, which wins over the store's default (None).
        self.blocks = BlockStore(
            data.blocks_path,
            max_bytes=(
                data.config.max_storage if options.max_storage is None else options.max_storage
            ),
            reserve_bytes=(
                data.config.reserved_space
                if options.reserved_space is None
                else options.reserved_space
            ),
        )
        self.catalog = Catalog(data.catalog_path)
        self.leases = LeaseTable(
            data.catalog_path,
            max_per_grantor=options.max_leases_per_owner,
            max_total=options.max_leases,
        )
        self.lease_keeper = LeaseKeeper(
            self, interval=options.lease_renew_interval, first=options.lease_renew_first
        )
        self.collector = Collector(self, interval=options.gc_interval)
        self._cpu = ThreadPoolExecutor(options.cpu_threads, thread_name_prefix="shoal-cpu")
        self._io = ThreadPoolExecutor(options.io_threads, thread_name_prefix="shoal-io")
        self.manager = ConnectionManager(
            data.identity,
            data.path,
            listen=options.listen,
            handler=RequestHandler(self),
            network=options.network or defaults.OPEN_NETWORK,
            network_secret=options.network_secret,
            on_peer_up=self._on_peer_up,
            on_peer_forgotten=self._on_peer_forgotten,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            backoff=options.backoff,
            clock=options.clock,
            backend=options.backend,
            limits=options.limits,
            advertise=options.advertise,
        )
        self.dht: KademliaRouting | None = None
        self.handoff: Handoff | None = None
        self.routing: Routing
        if options.routing == "mesh":
            self.routing = FullMeshRouting(self.manager)
        elif options.routing == "dht":
            self.dht = KademliaRouting(self.manager, options=options.dht)
            self.routing = self.dht
            self.handoff = Handoff(
                self,
                interval=options.handoff_interval,
                settle=options.handoff_settle,
                rate=options.handoff_rate,
            )
            self.dht.on_node_left(self.handoff.node_left)
        else:
            raise ValueError(f"unknown routing {options.routing!r}: use 'dht' or 'mesh'")
        self.repair = Repairer(
            self,
            delay=(
                data.config.repair_delay if options.repair_delay is None else options.repair_delay
            ),
            interval=options.repair_interval,
            rate=options.repair_rate or None,
            settle=options.repair_settle,
            background=options.background_repair,
            held_roots=options.repair_held_roots or self.leases.roots_held,
        )
        if self.dht is not None:
            self.dht.on_node_left(self.repair.node_left)
        self.mdns: MdnsDiscovery | None = None
        self.scrub = Scrub(self, interval=options.scrub_interval, rate=options.scrub_rate)
        self.started_at = options.clock.time()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then dial the bootstrap peers and the peers remembered in the catalog.

        Raises:
            AddressInUse: The listen address is taken.
            ConfigError: The listen address or a bootstrap address is invalid.
        """
        try:
            await self.io(self._adopt_existing_blocks)
            await self.manager.start()
            for address in self.options.peers:
                self.manager.add_bootstrap(address)
            self.mdns = MdnsDiscovery.for_node(
                self.manager,
                network=self.options.network or defaults.OPEN_NETWORK,
                enabled=self.options.mdns and self.data.config.mdns,
                real_network=self.options.backend is None,
                clock=self.options.clock,
            )
            self.mdns.start()
            remembered = await self.io(self.catalog.peers)
            if self.dht is not None:
                self.dht.start()
            if self.handoff is not None:
                self.handoff.start()
            await self.repair.start()
            self.lease_keeper.start()
            self.collector.start()
            await self.scrub.start()
        except BaseException:
            await self.aclose()
            raise
        for node_id_text, addresses, _last_seen in remembered:
            try:
                node_id = decode_id(node_id_text)
            except ValueError:
                log.debug("ignoring a malformed node ID in the catalog")
                continue
            self.manager.learn(node_id, addresses, source=PeerSource.CATALOG)

    def _adopt_existing_blocks(self) -> None:
        """At the first start with leases, lease every block already on disk to this node
        for a full lease length: upgrading never makes GC delete anything."""
        if self.leases.adopted():
            return
        now = self.options.clock.time()
        count = self.leases.adopt(
            self.node_id, self.blocks.ids(), now + self.options.lease_duration
        )
        if count:
            log.info("leased the %d block(s) already stored here to this node", count)

    def add_own_address(self, address: str) -> None:
        """Never dial ``address``: another service of this node (its HTTP API)."""
        self.manager.add_own_address(address)

    async def aclose(self) -> None:
        await self.collector.aclose()
        await self.lease_keeper.aclose()
        if self.mdns is not None:
            await self.mdns.aclose()
        await self.repair.aclose()
        await self.scrub.aclose()
        if self.handoff is not None:
            await self.handoff.aclose()
        if self.dht is not None:
            await self.dht.aclose()
        await self.manager.aclose()
        await self._close_resources()

    async def _close_resources(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._io.shutdown, wait=True)
        self.catalog.close()
        self.leases.close()
        self._lock.release()

    # -- threads -------------------------------------------------------------------------------

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (hashing, AEAD) on the CPU pool."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    async def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking disk or SQLite work on the I/O pool."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._io, call)

    # -- peers ---------------------------------------------------------------------------------

    async def _on_peer_up(self, conn: PeerConnection) -> None:
        peer = conn.peer
        if peer is None:
            return
        if self.dht is not None:
            self.dht.peer_up(conn)
        record = self.manager.record(peer.node_id)
        addresses = list(record.addresses) if record is not None else []
        if addresses:  # vetted by the manager; a peer we cannot dial is not worth a row
            with contextlib.suppress(StorageError):
                await self.io(
                    self.catalog.upsert_peer,
                    encode_id(peer.node_id),
                    addresses,
                    self.options.clock.time(),
                )
        # Peer exchange: learn who our new peer knows, so a node that bootstrapped from one
        # peer ends up connected to the whole (small) network. The manager vets every address
        # and caps what one peer can make us remember.
        try:
            answer = await conn.request(GetPeers(), timeout=self.options.request_timeout)
        except (TransportError, RemoteProtocolError, ShoalError) as exc:
            log.debug("peer exchange with %s failed: %s", short_id(peer.node_id), exc)
            return
        if not isinstance(answer, Peers):
            return
        for entry in answer.peers:
            self.manager.learn(entry.node_id, entry.addrs, source=PeerSource.EXCHANGE, via=conn)

    async def _on_peer_forgotten(self, node_id: bytes) -> None:
        if self.dht is not None:
            self.dht.forget(node_id)
        with contextlib.suppress(StorageError):
            await self.io(forget_peer_row, self.catalog, encode_id(node_id))


def forget_peer_row(catalog: Catalog, node_id_text: str) -> bool:
    """Remove a forgotten peer from the catalog (adapter over ``Catalog.forget_peer``)."""
    return catalog.forget_peer(node_id_text)
