"""Shoal: a peer-to-peer, end-to-end encrypted, content-addressed file store.

The public API is what this module exports: ``Node`` (asyncio, runs a node in-process),
``Client`` (blocking, talks to a running node's local HTTP API) and the errors.
"""

from shoal.client.http import Client
from shoal.content.directory import DirEntry, EntryKind
from shoal.content.manifest import Redundancy
from shoal.errors import (
    AddressInUse,
    ConfigError,
    HandshakeError,
    IntegrityError,
    InvalidCapability,
    NotFound,
    PeerUnavailable,
    ProtocolError,
    QuorumNotMet,
    RequestTimeout,
    ShoalError,
    StorageError,
    TransportError,
)
from shoal.node.folders import FolderItem, FolderResult, RestoreResult
from shoal.node.service import FileReader, Node
from shoal.node.types import FileEntry, NodeStatus, PeerState, PeerStatus, StoreResult

__version__ = "0.1.0"

__all__ = [
    "AddressInUse",
    "Client",
    "ConfigError",
    "DirEntry",
    "EntryKind",
    "FileEntry",
    "FileReader",
    "FolderItem",
    "FolderResult",
    "HandshakeError",
    "IntegrityError",
    "InvalidCapability",
    "Node",
    "NodeStatus",
    "NotFound",
    "PeerState",
    "PeerStatus",
    "PeerUnavailable",
    "ProtocolError",
    "QuorumNotMet",
    "Redundancy",
    "RequestTimeout",
    "RestoreResult",
    "ShoalError",
    "StorageError",
    "StoreResult",
    "TransportError",
    "__version__",
]
