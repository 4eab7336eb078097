"""Kademlia: the pure routing table and lookup (``table``, ``lookup``), and the asyncio service
that runs them over the transport (``service``, ``routing``, ``handoff``).

Only the pure parts are imported here, so a simulation can use them without the transport.
"""

from shoal.dht.lookup import Candidate, CandidateState, Lookup
from shoal.dht.table import (
    Contact,
    Observed,
    RoutingTable,
    bucket_index,
    distance,
    random_id_in_bucket,
    subnet_of,
)

__all__ = [
    "Candidate",
    "CandidateState",
    "Contact",
    "Lookup",
    "Observed",
    "RoutingTable",
    "bucket_index",
    "distance",
    "random_id_in_bucket",
    "subnet_of",
]
