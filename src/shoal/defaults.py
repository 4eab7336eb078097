"""Every default a user can change, in one place.

A leaf module: every layer may import it. Formats fix some values for good (the chunk size is
recorded in each file's manifest; the fanout bounds what readers accept); the values here are
what a node uses when nobody said otherwise.
"""

from __future__ import annotations

from typing import Final

#: Copies of each block a put places.
REPLICAS: Final = 3
#: The name of the one public network (``shoal init --open``).
OPEN_NETWORK: Final = "shoal"
#: Plaintext bytes per chunk (1 MiB).
CHUNK_SIZE: Final = 1 << 20
#: Children per manifest when a file needs a tree.
MANIFEST_FANOUT: Final = 16384
#: Chunks in flight per put or get: bounds a transfer's memory to about 2 * WINDOW MiB.
WINDOW: Final = 12
#: Seconds a request to a peer may take before it counts as failed.
REQUEST_TIMEOUT: Final = 30.0
#: Seconds between liveness checks of an idle connection, and how long a PING may take.
PING_INTERVAL: Final = 5.0
PING_TIMEOUT: Final = 10.0
#: Reconnect backoff: the first delay and the largest one, in seconds.
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 30.0
#: Where a node listens when neither config.toml nor a flag says.
LISTEN: Final = "127.0.0.1:0"

# -- transport limits (see docs/decisions/0004-transport-limits.md) -------------------------
#: Open node-to-node connections, in and out (``--max-connections``).
MAX_CONNECTIONS: Final = 64
#: Connections being set up (TCP accepted, TLS and HELLO/AUTH not finished yet), in total.
MAX_PENDING_CONNECTIONS: Final = 16
#: Connections being set up from one source IP address.
MAX_PENDING_PER_ADDRESS: Final = 8
#: Open inbound connections from one source IP address.
MAX_CONNECTIONS_PER_ADDRESS: Final = 16
#: Seconds a connection must have been idle (no request either way) before the connection
#: limit may close it to make room for another one (least recently used first).
IDLE_GRACE: Final = 0.5
#: The same for an inbound connection at the cap: any connection with no request open.
INBOUND_IDLE_GRACE: Final = 0.0
#: Seconds an inbound connection may take from TCP accept to a finished HELLO/AUTH.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds a dial may take to connect and finish TLS.
CONNECT_TIMEOUT: Final = 5.0
#: Peers this node remembers (with their addresses), in total.
MAX_KNOWN_PEERS: Final = 1024
#: Addresses remembered per peer.
MAX_ADDRESSES_PER_PEER: Final = 4
#: Peers one peer may tell us about (peer exchange) that we have not reached ourselves yet.
MAX_LEARNT_PER_PEER: Final = 32
#: Dials per second, all peers together, and the burst allowed above that rate.
DIAL_RATE: Final = 10.0
DIAL_BURST: Final = 20
#: Dials on demand per second (a put, get, lookup, repair or handoff needs a peer that is not
#: connected) and their burst: a budget of their own, so a busy put never waits behind the
#: background dial loops (or they behind it), and large enough that the connection cap,
#: not this rate, is what a put at a small cap meets (about 25 dials per MiB put at 8
#: connections among 50 nodes).
DEMAND_DIAL_RATE: Final = 100.0
DEMAND_DIAL_BURST: Final = 100
#: Seconds after which a peer that could not be reached all that time is forgotten (24 h).
FORGET_AFTER: Final = 24 * 3600.0

# -- per-connection limits (transport/peer.py) ------------------------------------------------
#: PUT_BLOCK payloads held in service per connection (each up to 4 MiB).
MAX_UPLOADS_PER_CONNECTION: Final = 4
#: Answers carrying data (GET_BLOCK) produced at once per connection, each only once the
#: previous ones have drained to the peer.
MAX_DOWNLOADS_PER_CONNECTION: Final = 2
#: Other requests queued per connection before reading from it pauses.
MAX_QUEUED_REQUESTS_PER_CONNECTION: Final = 64
#: Bytes of small answers written but not yet read by the peer, per connection.
MAX_UNFLUSHED_ANSWERS: Final = 256 * 1024
#: Seconds of silence, with requests pending, before a peer is asked whether it is alive, and
#: seconds it then has to answer before it counts as frozen (its requests fail at once).
STALL_TIMEOUT: Final = 2.0
STALL_PING_TIMEOUT: Final = 2.0

# -- storage (store/) ---------------------------------------------------------------------------
#: Default free-disk reserve: this share of the file system, at most RESERVE_MAX bytes.
RESERVE_FRACTION: Final = 0.05
RESERVE_MAX: Final = 1 << 30
#: Seconds between two log lines about the same storage limit while it stays hit.
STORAGE_LIMIT_LOG_INTERVAL: Final = 300.0
#: Corrupt block files kept as evidence in blocks/corrupt/ (the oldest go first).
CORRUPT_MAX_FILES: Final = 64
CORRUPT_MAX_BYTES: Final = 64 << 20
#: Peers remembered in the catalog (the most recently seen are kept).
CATALOG_MAX_PEERS: Final = 1000

# -- the DHT (shoal.dht; see docs/dht.md) -------------------------------------------------------
#: Kademlia's bucket size and answer size, and lookup parallelism.
DHT_K: Final = 20
DHT_ALPHA: Final = 3
#: Seconds between refreshes of a bucket that saw no lookup (libp2p: 10 minutes).
DHT_REFRESH_INTERVAL: Final = 600.0
#: Seconds one FIND_NODE may take (dial included) before the lookup moves on.
DHT_QUERY_TIMEOUT: Final = 5.0
#: Seconds after which a lookup ends with the closest nodes that answered so far.
DHT_LOOKUP_TIMEOUT: Final = 30.0
#: Routing-table entries of one bucket that may share a public /24 (IPv4) or /48 (IPv6).
DHT_MAX_PER_SUBNET: Final = 2
#: FIND_NODE requests one peer may send per second on average, and at once (token bucket);
#: above that it is answered ``busy``.
FIND_NODE_RATE: Final = 20.0
FIND_NODE_BURST: Final = 60
#: Seconds a lookup's closest set is reused for nearby IDs (placement amortized).
DHT_CACHE_TTL: Final = 60.0
#: Seconds between two handoff passes (every stored block pushed to its current closest nodes
#: that lack it), and the delay after a routing-table change before an early pass.
HANDOFF_INTERVAL: Final = 600.0
HANDOFF_SETTLE: Final = 10.0

# -- repair (shoal.node.repair; see docs/repair.md) --------------------------------------------
#: Seconds a node must be unreachable before its copies count as lost and are made again
#: elsewhere (one hour: a reboot does not trigger repair). A block down to its last copy is
#: copied at once.
REPAIR_DELAY: Final = 3600.0
#: Seconds between two full background passes over the files a node keeps and holds.
REPAIR_INTERVAL: Final = 3600.0
#: Bytes per second background repair may move (copies and the reads they need).
REPAIR_RATE: Final = 16 << 20
#: Seconds after a node went away (or a restart cut a pass short) before a pass.
REPAIR_SETTLE: Final = 10.0
# -- leases and garbage collection (shoal.node.leases, shoal.node.gc; docs/leases.md) ----------
#: Seconds a lease lasts (31 days): the longest lease a node grants, whoever asks.
LEASE_DURATION: Final = 31 * 24 * 3600.0
#: Seconds between two renewals of the leases of every file in the catalog (weekly), and the
#: delay of the first renewal after start.
LEASE_RENEW_INTERVAL: Final = 7 * 24 * 3600.0
LEASE_RENEW_FIRST: Final = 60.0
#: Seconds a put's pending lease lasts (PUT_BLOCK or HAS_BLOCKS "yes" during a put): the put
#: turns it into a long lease when it succeeds.
PENDING_LEASE: Final = 3600.0
#: Seconds a block with no live lease is kept before GC frees it (``--gc-grace``, 24 h).
GC_GRACE: Final = 24 * 3600.0
#: Seconds between two background GC passes, and blocks deleted per pass at most.
GC_INTERVAL: Final = 3600.0
GC_MAX_DELETES: Final = 10000
#: Lease rows charged to one node (the owner, or the node that transferred them), and in all.
MAX_LEASES_PER_OWNER: Final = 1 << 21
MAX_LEASES: Final = 1 << 23
#: Bytes per second a handoff pass may send (rebalancing: blocks moving to the nodes now
#: closest to them); a burst of one maximal block goes at once.
HANDOFF_RATE: Final = 10 << 20

# -- scrub (node/scrub.py; see docs/scrub.md) ---------------------------------------------------
#: Seconds between two scrub passes of one node (every local block re-hashed): about a month,
#: randomized per node (times U(0.75, 1.25); the first pass of a new node after U(0, 1) of it)
#: so the nodes of a network do not scrub in step.
SCRUB_INTERVAL: Final = 30 * 24 * 3600.0
#: Bytes per second a scrub pass reads: about 10% of a hard disk's sequential bandwidth
#: (~100 MiB/s), still 25 TiB a month; a small share of any SSD's.
SCRUB_RATE: Final = 10 << 20
