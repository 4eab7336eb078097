"""TCP + TLS 1.3 transport: identity, connections, the connection manager."""

from shoal.transport.identity import Identity
from shoal.transport.manager import Backoff, ConnectionManager, PeerRecord, parse_address
from shoal.transport.peer import PeerConnection

__all__ = [
    "Backoff",
    "ConnectionManager",
    "Identity",
    "PeerConnection",
    "PeerRecord",
    "parse_address",
]
