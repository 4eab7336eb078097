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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cap": self.cap,
            "size": self.size,
            "media_type": self.media_type,
            "created": self.created,
        }


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A peer as this node sees it."""

    node_id: str
    address: str | None
    state: PeerState
    last_seen: float | None
    source: str | None = None  # how it was first learnt, as `shoal peers` names it

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "state": self.state.value,
            "last_seen": self.last_seen,
            "source": self.source,
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

    @property
    def under_replicated(self) -> bool:
        """True when fewer nodes were up than the configured replication factor."""
        return self.replicas < self.replicas_wanted
