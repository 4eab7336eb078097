"""Plain records the node layer hands to the layers above (client, api, cli)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class PeerState(enum.Enum):
    """Liveness of a known peer."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One name in a node's catalog."""

    name: str
    cap: str
    size: int
    media_type: str
    created: float
    #: How it is kept (``StoreResult.redundancy``'s form); None if unknown (stored by an
    #: older Shoal).
    redundancy: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cap": self.cap,
            "size": self.size,
            "media_type": self.media_type,
            "created": self.created,
            "redundancy": self.redundancy,
        }


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A peer as this node sees it."""

    node_id: str
    address: str | None
    state: PeerState
    last_seen: float | None
    #: Whether a connection to it is open now (a routing-table entry need not be).
    connected: bool = False
    #: How it was learnt: ``bootstrap``, ``mdns``, ``dht``, ``exchange`` or ``inbound``.
    source: str = "inbound"

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "state": self.state.value,
            "connected": self.connected,
            "source": self.source,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True)
class StorageStatus:
    """What this node's block store holds and may still take.

    Attributes:
        blocks: Blocks kept.
        used: Their bytes.
        free: Bytes more it may take (free disk less the reserve, within ``max_storage``).
        max_storage: Its limit in bytes, or None (no limit but the disk and the reserve).
    """

    blocks: int
    used: int
    free: int
    max_storage: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "used": self.used,
            "free": self.free,
            "max_storage": self.max_storage,
        }


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """One finished scrub pass (``docs/scrub.md``).

    Attributes:
        pass_number: Passes this node has begun, this one included.
        started: When it began (Unix seconds).
        finished: When it ended.
        checked: Blocks read and hashed.
        bytes: Their bytes.
        corrupt: Blocks whose bytes failed their hash (moved to ``corrupt/``).
        replaced: Blocks fetched again from a holder and stored intact (also those moved aside
            earlier by a read).
        unreplaced: Blocks found corrupt or missing that no holder could supply yet (retried
            at the next pass).
    """

    pass_number: int
    started: float
    finished: float
    checked: int
    bytes: int
    corrupt: int
    replaced: int
    unreplaced: int

    def to_json(self) -> dict[str, Any]:
        return {
            "pass": self.pass_number,
            "started": self.started,
            "finished": self.finished,
            "checked": self.checked,
            "bytes": self.bytes,
            "corrupt": self.corrupt,
            "replaced": self.replaced,
            "unreplaced": self.unreplaced,
        }


@dataclass(frozen=True, slots=True)
class ScrubStatus:
    """The scrub of one node: the pass under way (if any), the last one, the next.

    Attributes:
        running: A pass is under way (the counts below are its progress so far).
        pass_number: The pass under way, else the last one begun (0: none yet).
        started: When the pass under way began, or None.
        checked, bytes, corrupt, replaced: Progress of the pass under way.
        blocks: Blocks stored when it began (``checked`` of about this many means done).
        next_pass: When the next pass is due (Unix seconds), or None while one runs.
        rate: The read budget in bytes per second.
        last: The last finished pass, or None.
    """

    running: bool
    pass_number: int
    started: float | None
    checked: int
    bytes: int
    corrupt: int
    replaced: int
    blocks: int
    next_pass: float | None
    rate: int
    last: ScrubReport | None

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "pass": self.pass_number,
            "started": self.started,
            "checked": self.checked,
            "bytes": self.bytes,
            "corrupt": self.corrupt,
            "replaced": self.replaced,
            "blocks": self.blocks,
            "next_pass": self.next_pass,
            "rate": self.rate,
            "last": self.last.to_json() if self.last is not None else None,
        }


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``shoal status`` shows: who the node is, its peers and what it stores."""

    node_id: str
    listen: str
    advertise: list[str]
    data_dir: str
    network: str
    replicas: int
    peers_up: int
    peers_known: int
    uptime: float
    blocks: int
    bytes: int
    files: int
    #: Nodes in the DHT routing table, open connections and their limit.
    routing_table: int = 0
    #: The DHT's effective k (bucket and answer size) and alpha (lookup parallelism); 0 when
    #: the node runs no DHT (mesh routing).
    dht_k: int = 0
    dht_alpha: int = 0
    connections: int = 0
    max_connections: int = 0
    #: DHT lookups run and FIND_NODE messages sent since start (placement's cost).
    lookups: int = 0
    lookup_messages: int = 0
    #: Repair (``docs/repair.md``): the catalog's files by their last check, files waiting
    #: to be checked, and what background and asked-for passes copied since start.
    files_healthy: int = 0
    files_degraded: int = 0
    files_lost: int = 0
    files_unchecked: int = 0
    repair_queue: int = 0
    repair_copied: int = 0
    repair_bytes: int = 0
    repair_passes: int = 0
    #: Bytes of blocks held here only for other owners (no live lease of this node's own).
    bytes_for_others: int = 0
    #: The scrub (``docs/scrub.md``); None when the node runs none.
    scrub: ScrubStatus | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "listen": self.listen,
            "advertise": self.advertise,
            "data_dir": self.data_dir,
            "network": self.network,
            "replicas": self.replicas,
            "peers_up": self.peers_up,
            "peers_known": self.peers_known,
            "uptime": self.uptime,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "files": self.files,
            "routing_table": self.routing_table,
            "dht_k": self.dht_k,
            "dht_alpha": self.dht_alpha,
            "connections": self.connections,
            "max_connections": self.max_connections,
            "lookups": self.lookups,
            "bytes_for_others": self.bytes_for_others,
            "lookup_messages": self.lookup_messages,
            "files_healthy": self.files_healthy,
            "files_degraded": self.files_degraded,
            "files_lost": self.files_lost,
            "files_unchecked": self.files_unchecked,
            "repair_queue": self.repair_queue,
            "repair_copied": self.repair_copied,
            "repair_bytes": self.repair_bytes,
            "repair_passes": self.repair_passes,
            "scrub": self.scrub.to_json() if self.scrub is not None else None,
        }


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What a successful put produced."""

    name: str
    cap: str
    size: int
    blocks: int
    replicas: int
    replicas_wanted: int
    #: How the file is kept: ``{"kind": "replicate", "replicas": R}`` or ``{"kind":
    #: "erasure", "k": K, "n": N, "replicas": N - K + 1}`` (then ``replicas`` and
    #: ``replicas_wanted`` above count shares); None if unknown.
    redundancy: dict[str, Any] | None = None

    @property
    def under_replicated(self) -> bool:
        """True when fewer nodes were up than the configured replication factor."""
        return self.replicas < self.replicas_wanted
