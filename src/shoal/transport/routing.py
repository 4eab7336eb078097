"""The routing seam: "which nodes are closest to this ID", "a connection to node X", and which
peers to keep connected.

Everything above the transport (placement, fetching, later repair) asks the two questions of
:class:`Routing` and nothing else about the network, so the way they are answered can change
without touching the pipelines. Below, the routing implementation is also the connection
manager's :class:`~shoal.transport.manager.DialPolicy`: it names the peers the manager keeps
dial loops for, and the manager ends the loop of a peer that is no longer named.

The first implementation is the full mesh (:class:`FullMeshRouting`): keep a connection to every
known peer (bootstrap peers first, up to ``max_peers``), and find the closest nodes among the
connected ones. The discovery issue answers the same questions with a Kademlia DHT (lookups over
the whole network, dialing on demand, a bounded number of connections).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shoal.transport.manager import ConnectionManager, DialPolicy, PeerRecord
from shoal.transport.peer import PeerConnection

__all__ = ["DialPolicy", "FullMeshRouting", "Routing", "by_distance"]


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
            PeerUnavailable: The node cannot be reached (unknown, down, or refusing) within
                the routing's connect timeout.
        """
        ...


class FullMeshRouting:
    """Routing over a full mesh: the closest nodes among this node and its connected peers.

    Installs itself as the manager's dial policy: every known peer is wanted, up to
    ``max_peers``, preferring connected peers, then bootstrap peers, then peers reached before,
    then those that failed least.

    Args:
        manager: The connection manager.
        max_peers: Peers to keep dialing (default: the manager's ``max_connections``).
        connect_timeout: How long ``connect`` may dial a peer that is not connected (default:
            the manager's ``connect_timeout``).
    """

    def __init__(
        self,
        manager: ConnectionManager,
        *,
        max_peers: int | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._manager = manager
        self._max_peers = max_peers if max_peers is not None else manager.limits.max_connections
        self._connect_timeout = (
            connect_timeout if connect_timeout is not None else manager.limits.connect_timeout
        )
        manager.set_dial_policy(self)

    @property
    def node_id(self) -> bytes:
        return self._manager.node_id

    async def closest(self, target: bytes, count: int) -> list[bytes]:
        return by_distance(target, [self.node_id, *self._manager.live_ids()])[:count]

    async def connect(self, node_id: bytes) -> PeerConnection:
        return await self._manager.connect(node_id, timeout=self._connect_timeout)

    def wanted_peers(self, known: Sequence[PeerRecord]) -> list[bytes]:
        ranked = sorted(
            known,
            key=lambda r: (not r.up, not r.bootstrap, not r.verified, r.failures),
        )
        return [r.node_id for r in ranked[: self._max_peers]]
