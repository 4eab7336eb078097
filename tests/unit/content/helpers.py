"""Drive the content layer like the node's put/get pipelines, with a dict as block store."""

from __future__ import annotations

from collections.abc import Callable

from shoal.content import (
    Chunker,
    ManifestBuilder,
    ReadCap,
    Redundancy,
    TreeReader,
    seal_chunk,
)
from shoal.errors import NotFound

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


def put(
    data: bytes,
    *,
    secret: bytes = SECRET,
    chunk_size: int = 4,
    fanout: int = 2,
    pieces: int = 1,
    redundancy: Redundancy | None = None,
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]], ReadCap]:
    """Store ``data``; return (block store, blocks in emission order, read cap)."""
    chunker = Chunker(chunk_size)
    builder = ManifestBuilder(secret, chunk_size=chunk_size, fanout=fanout, redundancy=redundancy)
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
    blocks, cap = builder.finish()
    emitted.extend(blocks)
    return dict(emitted), emitted, cap


class CountingFetch:
    """A fetch over a dict that counts what it was asked for."""

    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store
        self.calls = 0

    def __call__(self, block_id: bytes) -> bytes:
        self.calls += 1
        try:
            return self.store[block_id]
        except KeyError:
            raise NotFound(f"no block {block_id.hex()}") from None


def fetcher(store: dict[bytes, bytes]) -> Callable[[bytes], bytes]:
    return CountingFetch(store)


def get(cap: ReadCap, store: dict[bytes, bytes]) -> tuple[int, bytes]:
    """Read a whole file back, checking every block; return (size from the root, bytes)."""
    fetch = fetcher(store)
    reader = TreeReader(cap, fetch)
    parts = [ref.open(fetch(ref.block_id)) for ref in reader]
    return reader.info.size, b"".join(parts)
