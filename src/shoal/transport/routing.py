"""The routing seam: "which nodes are closest to this ID" and "a connection to node X".

Everything above the transport (placement, fetching, later repair) asks these two questions and
nothing else about the network, so the way they are answered can change without touching the
pipelines. The first answer is the full mesh (:class:`FullMeshRouting`): every node keeps a
connection to every node it knows, and the closest nodes are found among the connected ones.
The discovery issue answers them with a Kademlia DHT (lookups over the whole network, dialing
on demand, a bounded number of connections).
"""

from __future__ import annotations

from typing import Protocol

from shoal.errors import PeerUnavailable
from shoal.ids import short_id
from shoal.transport.manager import ConnectionManager
from shoal.transport.peer import PeerConnection

__all__ = ["FullMeshRouting", "Routing", "by_distance"]


def by_distance(target: bytes, node_ids: list[bytes]) -> list[bytes]:
    """``node_ids`` without duplicates, XOR-closest to ``target`` first (Kademlia distance)."""
    key = int.from_bytes(target, "big")
    return sorted(set(node_ids), key=lambda n: int.from_bytes(n, "big") ^ key)


class Routing(Protocol):
    """How the node layer finds nodes and talks to them."""

    @property
    def node_id(self) -> bytes:
        """This node's ID."""
        ...

    async def closest(self, target: bytes, count: int) -> list[bytes]:
        """Up to ``count`` reachable node IDs closest to ``target``, closest first.

        This node is included when it is among the closest. Every node asking about the same
        ID in a settled network gets the same order, so every node agrees where a block
        belongs.
        """
        ...

    async def connect(self, node_id: bytes) -> PeerConnection:
        """An authenticated connection to ``node_id``, dialed now if there is none.

        Raises:
            PeerUnavailable: The node cannot be reached (unknown, down, or refusing).
        """
        ...


class FullMeshRouting:
    """Routing over a full mesh: the closest nodes among this node and its connected peers."""

    def __init__(self, manager: ConnectionManager) -> None:
        self._manager = manager

    @property
    def node_id(self) -> bytes:
        return self._manager.node_id

    async def closest(self, target: bytes, count: int) -> list[bytes]:
        return by_distance(target, [self.node_id, *self._manager.live_ids()])[:count]

    async def connect(self, node_id: bytes) -> PeerConnection:
        conn = self._manager.connection(node_id)
        if conn is None:
            raise PeerUnavailable(f"peer {short_id(node_id)} is not connected")
        return conn
