"""Local storage: blocks as files (``BlockStore``), the SQLite catalog (``Catalog``) and the
data dir lock (``DataDirLock``). See ``docs/storage.md`` for the layout and the limits.

All are synchronous; ``BlockStore`` and ``Catalog`` are thread-safe (the node layer calls them
from worker threads).
"""

from __future__ import annotations

from shoal.store.blocks import BlockStore
from shoal.store.catalog import Catalog, CatalogEntry, PeerRecord, cid_of_cap
from shoal.store.files import AtomicFile, write_file_atomic
from shoal.store.lock import DataDirLock

__all__ = [
    "AtomicFile",
    "BlockStore",
    "Catalog",
    "CatalogEntry",
    "DataDirLock",
    "PeerRecord",
    "cid_of_cap",
    "write_file_atomic",
]
