"""Transport: identity, connections over a network backend, the connection manager, routing."""

from shoal.transport.addresses import AddressError, normalize_address, parse_address
from shoal.transport.backend import NetworkBackend, Stream, TcpTlsBackend
from shoal.transport.book import PeerRecord, PeerSource
from shoal.transport.identity import Identity
from shoal.transport.limits import Backoff, TransportLimits
from shoal.transport.manager import ConnectionManager, DialPolicy, TransportStats
from shoal.transport.memory import MemoryBackend, MemoryNetwork
from shoal.transport.peer import PeerConnection

__all__ = [
    "AddressError",
    "Backoff",
    "ConnectionManager",
    "DialPolicy",
    "Identity",
    "MemoryBackend",
    "MemoryNetwork",
    "NetworkBackend",
    "PeerConnection",
    "PeerRecord",
    "PeerSource",
    "Stream",
    "TcpTlsBackend",
    "TransportLimits",
    "TransportStats",
    "normalize_address",
    "parse_address",
]
