"""An in-memory LAN for mDNS tests: the :class:`~shoal.discovery.mdns.MdnsTransport` seam without
sockets.

Every transport made by one :class:`FakeLan` sees every record announced on it: announcing
tells every other browsing transport ``(name, True)``, closing (goodbye) ``(name, False)``.
Tests can also :meth:`FakeLan.publish` records nobody owns (a neighbour that lies, a flood).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shoal.discovery.announce import ServiceRecord
from shoal.discovery.mdns import ChangeCallback
from shoal.errors import TransportError


class FakeLan:
    """The records on one LAN and the transports attached to it."""

    def __init__(self) -> None:
        self.records: dict[str, ServiceRecord] = {}
        self.transports: list[FakeTransport] = []
        self.opened: list[tuple[str, ...]] = []  # the interfaces of every transport made
        self.resolves = 0
        self.fail_open = False
        #: While clear, every resolve waits (a neighbour that never answers).
        self.answering = asyncio.Event()
        self.answering.set()

    def transport(self, interfaces: Sequence[str]) -> FakeTransport:
        """What ``MdnsDiscovery`` gets from its transport factory."""
        if self.fail_open:
            raise TransportError("cannot open mDNS sockets (test)")
        self.opened.append(tuple(interfaces))
        transport = FakeTransport(self)
        self.transports.append(transport)
        return transport

    def publish(self, record: ServiceRecord, *, by: FakeTransport | None = None) -> None:
        """Put ``record`` on the LAN; every browsing transport but ``by`` hears of it."""
        self.records[record.name] = record
        for transport in self.transports:
            if transport is not by:
                transport.tell(record.name, True)

    def withdraw(self, name: str, *, by: FakeTransport | None = None) -> None:
        """Take record ``name`` off the LAN (its goodbye)."""
        if self.records.pop(name, None) is not None:
            for transport in self.transports:
                if transport is not by:
                    transport.tell(name, False)


class FakeTransport:
    """One node's mDNS sockets on a :class:`FakeLan`."""

    def __init__(self, lan: FakeLan) -> None:
        self._lan = lan
        self._on_change: ChangeCallback | None = None
        self.announced: list[ServiceRecord] = []
        self.closed = False

    def tell(self, name: str, present: bool) -> None:
        if self._on_change is not None and not self.closed:
            self._on_change(name, present)

    async def start(self, on_change: ChangeCallback) -> None:
        self._on_change = on_change
        for name in list(self._lan.records):  # what is on the LAN already
            on_change(name, True)

    async def announce(self, record: ServiceRecord) -> None:
        self.announced.append(record)
        self._lan.publish(record, by=self)

    async def resolve(self, name: str, *, timeout: float) -> ServiceRecord | None:
        self._lan.resolves += 1
        try:
            async with asyncio.timeout(timeout):
                await self._lan.answering.wait()
        except TimeoutError:
            return None
        return self._lan.records.get(name)

    async def aclose(self) -> None:
        self.closed = True
        self._lan.transports.remove(self)
        for record in self.announced:
            self._lan.withdraw(record.name, by=self)
