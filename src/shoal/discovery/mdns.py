"""LAN discovery: announce this node with mDNS and hand the nodes found to the manager as hints.

How it works:
- :func:`shoal.discovery.announce.plan_mdns` picks the interfaces (those the node listens on
  and advertises an address of) and the addresses to announce. A node on loopback, an
  in-memory network, or mDNS turned off (``--no-mdns``, ``node.mdns = false``): no mDNS at all,
  not even a socket.
- Otherwise one task opens the mDNS sockets on those interfaces (zeroconf, through the
  :class:`MdnsTransport` seam), browses ``_shoal._tcp.local.`` first and then announces this
  node (which takes zeroconf about 1.5 s of probing), so a node that starts hears the nodes
  already there before they hear it.
- Every service instance seen (added or changed) is queued once; a few workers resolve the
  queued names (bounded by a timeout each), at most ``learn_rate`` a second (a token bucket),
  check each announcement (:func:`read_announcement`; a malformed one is one DEBUG line) and
  pass the node ID and addresses of a node of *this* network to
  ``learner.learn(node_id, addresses, source=PeerSource.MDNS)``. Nodes of other networks are
  ignored quietly (DEBUG): never learnt, so never dialed. What happens to a learnt peer
  (dialing it, or only keeping it in a routing table) is the manager's and the routing's
  business: an announcement is a hint, and the handshake still authenticates the node by its
  key.
- Bounded: at most ``max_peers`` nodes found by mDNS are kept while they are announced (an
  instance that goes away frees its place), at most ``max_queued`` names wait to be resolved;
  hitting either limit, or the rate, is one WARNING a minute (``limit mdns_...``).

Resource handling: :class:`MdnsDiscovery` owns its tasks (a ``TaskSet``) and the transport;
``aclose`` cancels the tasks, then withdraws the announcement and closes the sockets, bounded by
a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from shoal.clock import SYSTEM_CLOCK, Clock
from shoal.discovery.announce import (
    MalformedAnnouncement,
    MdnsPlan,
    ServiceRecord,
    announcement_record,
    instance_name,
    plan_mdns,
    read_announcement,
)
from shoal.errors import TransportError
from shoal.ids import short_id
from shoal.transport.addresses import printable
from shoal.transport.book import PeerSource
from shoal.transport.interfaces import interface_addresses
from shoal.transport.limits import LimitLog, TokenBucket
from shoal.transport.tasks import TaskSet

__all__ = ["Learner", "MdnsDiscovery", "MdnsTransport", "TransportFactory"]

log = logging.getLogger(__name__)

#: Most nodes found by mDNS that are kept while they are announced.
MAX_PEERS: Final = 64
#: Announcements resolved and learnt per second on average, and at once.
LEARN_RATE: Final = 4.0
LEARN_BURST: Final = 32
#: Service names waiting to be resolved.
MAX_QUEUED: Final = 128
#: Names resolved at once, and how long one may take.
WORKERS: Final = 4
RESOLVE_TIMEOUT: Final = 3.0
#: How long closing (the goodbye packets) may take.
CLOSE_TIMEOUT: Final = 5.0

ChangeCallback = Callable[[str, bool], None]


class Learner(Protocol):
    """Where found nodes go: the connection manager."""

    def learn(self, node_id: bytes, addresses: Iterable[str], *, source: PeerSource) -> list[str]:
        """Remember ``node_id`` at the good ones of ``addresses``; those newly remembered."""
        ...


class MdnsTransport(Protocol):
    """The mDNS sockets on the chosen interfaces (zeroconf; an in-memory LAN in tests).

    Creating one opens the sockets (``TransportError`` if it cannot).
    """

    async def start(self, on_change: ChangeCallback) -> None:
        """Browse ``_shoal._tcp.local.``: ``on_change(name, present)`` for every instance that
        appears or changes (``present`` True) or goes away (False). Called on the event loop."""
        ...

    async def announce(self, record: ServiceRecord) -> None:
        """Announce ``record`` until closed (``TransportError`` if it cannot)."""
        ...

    async def resolve(self, name: str, *, timeout: float) -> ServiceRecord | None:
        """The instance ``name`` as last announced; None if nothing answered in ``timeout``."""
        ...

    async def aclose(self) -> None:
        """Withdraw the announcement (goodbye packets), stop browsing, close the sockets."""
        ...


TransportFactory = Callable[[Sequence[str]], MdnsTransport]


def _zeroconf_transport(interfaces: Sequence[str]) -> MdnsTransport:
    # Imported here: a node that runs no mDNS never even loads zeroconf.
    from shoal.discovery.zeroconf_transport import ZeroconfTransport

    return ZeroconfTransport(interfaces)


class MdnsDiscovery:
    """Announces this node on its LAN and learns the nodes of its network found there.

    Args:
        learner: Gets every node found (``learn(..., source=PeerSource.MDNS)``).
        node_id: This node's ID (its own announcement is not a peer).
        network: This node's network name; announcements of other networks are ignored.
        plan: Where to run and what to announce (:func:`plan_mdns`); a plan that is off
            makes ``start`` log why and do nothing else.
        transport_factory: Opens the mDNS sockets on the plan's interfaces (zeroconf).
        clock: Time, for the rate limit and the limit log lines.
        max_peers, learn_rate, learn_burst, max_queued, workers, resolve_timeout: Bounds
            (see the module docstring).
    """

    def __init__(
        self,
        learner: Learner,
        *,
        node_id: bytes,
        network: str,
        plan: MdnsPlan,
        transport_factory: TransportFactory = _zeroconf_transport,
        clock: Clock = SYSTEM_CLOCK,
        max_peers: int = MAX_PEERS,
        learn_rate: float = LEARN_RATE,
        learn_burst: int = LEARN_BURST,
        max_queued: int = MAX_QUEUED,
        workers: int = WORKERS,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        self._learner = learner
        self._node_id = node_id
        self._network = network
        self.plan = plan
        self._factory = transport_factory
        self._max_peers = max_peers
        self._max_queued = max_queued
        self._workers = workers
        self._resolve_timeout = resolve_timeout
        self._learn_rate = learn_rate
        self._bucket = TokenBucket(learn_rate, learn_burst, clock=clock)
        self._limit_log = LimitLog(log, clock=clock)
        self._tasks = TaskSet("mDNS")
        self._task_prefix = f"mDNS {short_id(node_id)}"
        self._transport: MdnsTransport | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._found: dict[str, bytes] = {}  # instance name -> node ID, while announced
        self._own_name = instance_name(node_id)
        self._announced = asyncio.Event()
        self._stopped = asyncio.Event()

    @classmethod
    def for_node(
        cls,
        manager: ManagerView,
        *,
        network: str,
        enabled: bool = True,
        real_network: bool = True,
        clock: Clock = SYSTEM_CLOCK,
        interfaces: Callable[[], Iterable[str]] = interface_addresses,
    ) -> MdnsDiscovery:
        """The discovery of a started node: its bound listen address and what it advertises
        decide the plan (off when ``enabled`` is False or the network is not real TCP)."""
        if not enabled:
            plan = MdnsPlan.off("turned off (--no-mdns or node.mdns = false)")
        elif not real_network:
            plan = MdnsPlan.off("the node is on an in-memory network")
        else:
            plan = plan_mdns(manager.listen_address, manager.advertised_addresses, interfaces())
        return cls(manager, node_id=manager.node_id, network=network, plan=plan, clock=clock)

    # -- state, for status and tests -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the mDNS sockets are open."""
        return self._transport is not None and not self._stopped.is_set()

    @property
    def found(self) -> dict[bytes, str]:
        """Nodes of this network found by mDNS and still announced: node ID -> instance name."""
        return {node_id: name for name, node_id in self._found.items()}

    @property
    def queued(self) -> int:
        """Service names waiting to be resolved."""
        return len(self._queued)

    @property
    def limit_hits(self) -> dict[str, int]:
        """How often each limit (``mdns_queue``, ``mdns_rate``, ``mdns_peers``) was hit."""
        return dict(self._limit_log.counts)

    async def wait_announced(self, timeout: float) -> None:
        """Wait until this node's announcement is out (``TimeoutError`` after ``timeout``)."""
        async with asyncio.timeout(timeout):
            await self._announced.wait()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start announcing and browsing in the background (or log why mDNS is off)."""
        if not self.plan.enabled:
            log.info("mDNS is off: %s", self.plan.off_reason)
            return
        self._tasks.spawn(self._run(), name=self._task_prefix)

    async def aclose(self) -> None:
        """Stop: cancel the tasks, then withdraw the announcement and close the sockets."""
        await self._tasks.aclose()
        transport, self._transport = self._transport, None
        self._stopped.set()
        if transport is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await transport.aclose()
            except (TimeoutError, TransportError, OSError) as exc:
                log.debug("closing mDNS: %s", exc or "timed out")

    async def _run(self) -> None:
        plan = self.plan
        try:
            self._transport = transport = self._factory(plan.interfaces)
            await transport.start(self._on_change)
        except TransportError as exc:
            log.warning("mDNS is off: %s", exc)
            return
        for i in range(self._workers):
            self._tasks.spawn(self._work(), name=f"{self._task_prefix} resolve {i}")
        record = announcement_record(self._node_id, self._network, plan.addresses)
        try:
            await transport.announce(record)
        except TransportError as exc:
            # Still listening: this node finds others, and they find it when it dials them.
            log.warning("mDNS: cannot announce this node (%s); still looking for others", exc)
            return
        self._announced.set()
        log.info(
            "mDNS: announcing this node at %s on the local network (interfaces %s)",
            ", ".join(plan.addresses),
            ", ".join(plan.interfaces),
        )

    # -- what the network says ------------------------------------------------------------------

    def _on_change(self, name: str, present: bool) -> None:
        if not present:
            self._found.pop(name, None)  # frees its place among max_peers
            return
        if name == self._own_name or name in self._queued:
            return
        if len(self._queued) >= self._max_queued:
            self._limit_log.hit(
                "mdns_queue",
                "%d mDNS announcements are waiting to be read; ignoring new ones",
                self._max_queued,
            )
            return
        self._queued.add(name)
        self._queue.put_nowait(name)

    async def _work(self) -> None:
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            if await self._bucket.acquire():
                self._limit_log.hit(
                    "mdns_rate",
                    "more mDNS announcements than %g a second; reading them more slowly",
                    self._learn_rate,
                )
            await self._read(name)

    async def _read(self, name: str) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            record = await transport.resolve(name, timeout=self._resolve_timeout)
        except TransportError as exc:
            log.debug("mDNS: cannot resolve %s: %s", printable(name), exc)
            return
        if record is None:
            log.debug("mDNS: no answer for %s", printable(name))
            return
        try:
            found = read_announcement(record)
        except MalformedAnnouncement as exc:
            log.debug("mDNS: ignoring a malformed announcement %s: %s", printable(name), exc)
            return
        if found.node_id == self._node_id:
            return
        if found.network != self._network:
            log.debug("mDNS: ignoring node %s of another network", short_id(found.node_id))
            return
        if name not in self._found and len(self._found) >= self._max_peers:
            self._limit_log.hit(
                "mdns_peers",
                "%d nodes found by mDNS are announced on the local network; ignoring more",
                self._max_peers,
            )
            return
        newly = self._found.get(name) != found.node_id
        self._found[name] = found.node_id
        self._learner.learn(found.node_id, found.addresses, source=PeerSource.MDNS)
        if newly:  # once per appearance, not at every refresh of its records
            log.info(
                "mDNS: found node %s on the local network at %s",
                short_id(found.node_id),
                ", ".join(found.addresses),
            )


class ManagerView(Learner, Protocol):
    """What :meth:`MdnsDiscovery.for_node` reads of a started connection manager."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def listen_address(self) -> str: ...

    @property
    def advertised_addresses(self) -> tuple[str, ...]: ...
