"""Drive the content layer like the node's put/get pipelines, with a dict as block store."""

from __future__ import annotations

from collections.abc import Callable

from shoal.content import (
    Chunker,
    FileInfo,
    ManifestBuilder,
    ReadCap,
    Redundancy,
    TreeReader,
    open_chunk,
    seal_chunk,
)
from shoal.errors import NotFound

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


def make_info(name: str, size: int) -> FileInfo:
    return FileInfo(name, size, "application/octet-stream", 1700000000.5, 1700000100.25)


def put(
    data: bytes,
    *,
    secret: bytes = SECRET,
    chunk_size: int = 4,
    fanout: int = 2,
    pieces: int = 1,
    name: str = "f.bin",
    redundancy: Redundancy | None = None,
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]], ReadCap]:
    """Store ``data``; return (block store, blocks in emission order, read cap)."""
    chunker = Chunker(chunk_size)
    builder = ManifestBuilder(secret, redundancy=redundancy, fanout=fanout)
    emitted: list[tuple[bytes, bytes]] = []

    def add(chunk: bytes) -> None:
        sealed = seal_chunk(secret, chunk)
        emitted.append((sealed.block_id, sealed.data))
        emitted.extend(
            builder.add(sealed.block_id, len(sealed.data), sealed.key, sealed.plaintext_size)
        )

    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        for chunk in chunker.feed(data[start : start + step]):
            add(chunk)
    tail = chunker.finish()
    if tail is not None:
        add(tail)
    blocks, cap = builder.finish(make_info(name, len(data)))
    emitted.extend(blocks)
    return dict(emitted), emitted, cap


def fetcher(store: dict[bytes, bytes]) -> Callable[[bytes], bytes]:
    def fetch(block_id: bytes) -> bytes:
        try:
            return store[block_id]
        except KeyError:
            raise NotFound(f"no block {block_id.hex()}") from None

    return fetch


def get(cap: ReadCap, store: dict[bytes, bytes]) -> tuple[FileInfo, bytes]:
    """Read a whole file back, checking every block."""
    fetch = fetcher(store)
    reader = TreeReader(cap, fetch)
    parts = [
        open_chunk(key.key, ref.block_id, fetch(ref.block_id), plaintext_size=key.plaintext_size)
        for ref, key in reader
    ]
    return reader.info, b"".join(parts)
