"""Pure content layer: chunking, encryption, manifests, tree walks and capability strings.

No I/O, no clocks, no randomness: every input is passed in. Format: ``docs/content-format.md``.
"""

from __future__ import annotations

from shoal.content.caps import ReadCap, VerifyCap, looks_like_cap, parse_cap
from shoal.content.chunker import Chunker
from shoal.content.crypto import (
    CHUNK_SIZE,
    KEY_SIZE,
    PROFILE,
    TAG_SIZE,
    SealedChunk,
    block_id,
    chunk_key,
    decrypt,
    encrypt,
    open_chunk,
    seal_chunk,
)
from shoal.content.manifest import (
    MANIFEST_VERSION,
    MAX_BLOCK_SIZE,
    MAX_CHILDREN,
    MAX_CHUNK_SIZE,
    MAX_DEPTH,
    MAX_FILE_SIZE,
    ChildRef,
    Manifest,
    Redundancy,
    SealedPart,
    load_manifest,
    manifest_key,
    open_sealed,
)
from shoal.content.tree import ManifestBuilder, TreeReader, iter_tree, walk_blocks
from shoal.content.walk import (
    BlockRef,
    BlockWalk,
    DataRef,
    FileInfo,
    FileWalk,
    NeedManifest,
    OpenedManifest,
    Stripe,
    StripeRef,
)

__all__ = [
    "CHUNK_SIZE",
    "KEY_SIZE",
    "MANIFEST_VERSION",
    "MAX_BLOCK_SIZE",
    "MAX_CHILDREN",
    "MAX_CHUNK_SIZE",
    "MAX_DEPTH",
    "MAX_FILE_SIZE",
    "PROFILE",
    "TAG_SIZE",
    "BlockRef",
    "BlockWalk",
    "ChildRef",
    "Chunker",
    "DataRef",
    "FileInfo",
    "FileWalk",
    "Manifest",
    "ManifestBuilder",
    "NeedManifest",
    "OpenedManifest",
    "ReadCap",
    "Redundancy",
    "SealedChunk",
    "SealedPart",
    "Stripe",
    "StripeRef",
    "TreeReader",
    "VerifyCap",
    "block_id",
    "chunk_key",
    "decrypt",
    "encrypt",
    "iter_tree",
    "load_manifest",
    "looks_like_cap",
    "manifest_key",
    "open_chunk",
    "open_sealed",
    "parse_cap",
    "seal_chunk",
    "walk_blocks",
]
