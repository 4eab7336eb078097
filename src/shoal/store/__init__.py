"""Local storage: blocks as files (``BlockStore``) and the SQLite catalog (``Catalog``).

Both are synchronous and thread-safe; the node layer calls them from worker threads.
"""

from __future__ import annotations

from shoal.store.blocks import BlockStore
from shoal.store.catalog import Catalog, CatalogEntry, cid_of_cap
from shoal.store.files import AtomicFile, write_file_atomic

__all__ = [
    "AtomicFile",
    "BlockStore",
    "Catalog",
    "CatalogEntry",
    "cid_of_cap",
    "write_file_atomic",
]
