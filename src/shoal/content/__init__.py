"""Pure content layer: chunking, encryption, manifests and capability strings.

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
    ChildKey,
    ChildRef,
    FileInfo,
    Manifest,
    Redundancy,
    SealedPart,
    load_manifest,
    manifest_key,
    open_manifest,
)
from shoal.content.tree import (
    ManifestBuilder,
    TreeReader,
    iter_tree,
    open_child,
    open_root,
    walk_blocks,
)

__all__ = [
    "CHUNK_SIZE",
    "KEY_SIZE",
    "MANIFEST_VERSION",
    "PROFILE",
    "TAG_SIZE",
    "ChildKey",
    "ChildRef",
    "Chunker",
    "FileInfo",
    "Manifest",
    "ManifestBuilder",
    "ReadCap",
    "Redundancy",
    "SealedChunk",
    "SealedPart",
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
    "open_child",
    "open_chunk",
    "open_manifest",
    "open_root",
    "parse_cap",
    "seal_chunk",
    "walk_blocks",
]
