from __future__ import annotations

from contextlib import nullcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content.caps import ReadCap
from shoal.content.crypto import TAG_SIZE, seal_chunk
from shoal.content.manifest import (
    MAX_CHILDREN,
    MAX_CHUNK_SIZE,
    Manifest,
    Redundancy,
    load_manifest,
    open_sealed,
)
from shoal.content.tree import ManifestBuilder, TreeReader, iter_tree, walk_blocks
from shoal.errors import IntegrityError, InvalidCapability, NotFound
from shoal.ids import sha256

from .helpers import OTHER_SECRET, SECRET, CountingFetch, fetcher, get, put


def depth_of(cap_cid: bytes, store: dict[bytes, bytes]) -> int:
    return Manifest.decode(store[cap_cid]).depth


@pytest.mark.parametrize(
    ("chunks", "fanout", "depth"),
    [
        (0, 2, 0),
        (1, 2, 0),
        (2, 2, 0),  # exactly fanout: single root
        (3, 2, 1),
        (4, 2, 1),  # exactly fanout**2
        (5, 2, 2),
        (8, 2, 2),  # exactly fanout**3
        (9, 2, 3),
        (3, 3, 0),
        (9, 3, 1),
        (10, 3, 2),
        (27, 3, 2),
        (28, 3, 3),
    ],
)
def test_round_trip_and_depth(chunks: int, fanout: int, depth: int) -> None:
    data = bytes(range(256)) * 2
    data = (data * 4)[: chunks * 4 - (1 if chunks else 0)]  # last chunk 3 bytes
    store, emitted, cap = put(data, chunk_size=4, fanout=fanout)
    assert emitted[-1][0] == cap.cid
    assert depth_of(cap.cid, store) == depth
    assert get(cap, store) == (len(data), data)
    refs = list(iter_tree(cap, fetcher(store)))
    assert len(refs) == chunks
    assert [r.offset for r in refs] == list(range(0, len(data), 4))
    assert [r.plaintext_size for r in refs] == [4] * (chunks - 1) + [3] * (chunks > 0)


def test_empty_file_has_depth0_root_without_children() -> None:
    store, emitted, cap = put(b"")
    assert len(emitted) == 1
    root = Manifest.decode(store[cap.cid])
    assert (root.depth, root.child_count) == (0, 0)
    assert open_sealed(root, cap.key, root=True).size == 0
    assert get(cap, store) == (0, b"")


def test_tree_shape_and_only_root_has_the_size() -> None:
    # 67 chunks, fanout 3: 23 + 8 + 3 + 1 manifests, depth 3.
    store, emitted, cap = put(bytes(range(200)), chunk_size=3, fanout=3)
    root = Manifest.decode(store[cap.cid])
    assert root.depth == 3
    assert root.child_count >= 2
    opened = 0
    stack = [(cap.cid, cap.key)]
    while stack:
        bid, key = stack.pop()
        manifest = Manifest.decode(store[bid])
        part = open_sealed(manifest, key, root=bid == cap.cid)
        opened += 1
        assert (part.size is not None) == (bid == cap.cid)
        assert (manifest.chunk_size, manifest.fanout) == (3, 3)
        assert 1 <= manifest.child_count <= 3
        if manifest.depth > 0:
            stack.extend((manifest.child_id(i), part.key(i)) for i in range(manifest.child_count))
    assert opened == 23 + 8 + 3 + 1
    assert len(emitted) == 67 + opened


@settings(max_examples=40)
@given(
    st.binary(max_size=120),
    st.integers(1, 9),
    st.integers(2, 4),
    st.integers(1, 7),
)
def test_any_file_round_trips_and_is_deterministic(
    data: bytes, chunk_size: int, fanout: int, pieces: int
) -> None:
    store, emitted, cap = put(data, chunk_size=chunk_size, fanout=fanout, pieces=pieces)
    assert get(cap, store) == (len(data), data)
    _, again_emitted, again_cap = put(data, chunk_size=chunk_size, fanout=fanout)
    assert again_cap == cap
    assert again_emitted == emitted
    # Every emitted block is addressed by its hash.
    assert all(sha256(blob) == bid for bid, blob in emitted)


def test_the_cap_depends_on_the_bytes_and_the_settings_only() -> None:
    data = bytes(range(50))
    _, _, cap = put(data)
    assert put(data, pieces=7)[2] == cap
    assert put(data, secret=OTHER_SECRET)[2] != cap
    assert put(data, chunk_size=5)[2] != cap
    assert put(data, fanout=3)[2] != cap
    assert put(data, redundancy=Redundancy("replicate", 2))[2].cid != cap.cid
    # Replicas are in the verify part only: the key (from the sealed part) does not change.
    assert put(data, redundancy=Redundancy("replicate", 2))[2].key == cap.key


def test_different_secret_gives_different_blocks() -> None:
    data = bytes(range(50))
    store_a, _, _ = put(data)
    store_b, _, _ = put(data, secret=OTHER_SECRET)
    assert not set(store_a) & set(store_b)


def test_every_byte_of_every_block_is_protected() -> None:
    # 9 chunks, fanout 2: depth-3 tree with 5 + 3 + 2 + 1 manifests and 9 data blocks.
    data = bytes(range(33))
    store, _, cap = put(data, chunk_size=4, fanout=2)
    assert depth_of(cap.cid, store) == 3
    assert len(store) == 20
    for bid, blob in store.items():
        for pos in range(len(blob)):
            bad = bytearray(blob)
            bad[pos] ^= 0x01
            tampered = {**store, bid: bytes(bad)}
            with pytest.raises(IntegrityError):
                get(cap, tampered)


def test_wrong_root_key_is_an_invalid_cap() -> None:
    store, _, cap = put(b"some data")
    _, _, other = put(b"other data")
    # The root is intact: a key that does not open it is the cap's fault, not the block's.
    with pytest.raises(InvalidCapability, match="key does not open this file"):
        TreeReader(ReadCap(cap.cid, other.key), fetcher(store))


def test_inner_manifest_used_as_root_is_refused() -> None:
    store, _, cap = put(bytes(20), chunk_size=4, fanout=2)
    root = Manifest.decode(store[cap.cid])
    child_key = open_sealed(root, cap.key, root=True).key(0)
    with pytest.raises(IntegrityError, match="not a file's root"):
        TreeReader(ReadCap(root.child_id(0), child_key), fetcher(store))


def test_missing_block_raises_not_found() -> None:
    store, emitted, cap = put(bytes(range(20)), chunk_size=4, fanout=2)
    inner = emitted[2][0]  # the first manifest, emitted after two chunks
    del store[inner]
    with pytest.raises(NotFound):
        get(cap, store)


def test_walk_blocks_lists_every_block_once_without_keys() -> None:
    store, emitted, cap = put(bytes(range(37)), chunk_size=4, fanout=2)
    fetch = CountingFetch(store)
    refs = list(walk_blocks(cap.cid, fetch))
    assert refs[0].block_id == cap.cid
    assert refs[0].manifest
    assert sorted(r.block_id for r in refs) == sorted(bid for bid, _ in emitted)
    assert all(r.stored_size == len(store[r.block_id]) for r in refs)
    manifests = {r.block_id for r in refs if r.manifest}
    assert all(Manifest.decode(store[b]) for b in manifests)
    assert fetch.calls == len(manifests)  # data blocks are listed, not fetched
    bad = {**store, cap.cid: store[cap.cid][:-1]}
    with pytest.raises(IntegrityError):
        list(walk_blocks(cap.cid, fetcher(bad)))


def test_equal_chunks_dedupe_and_are_walked_once() -> None:
    # 16 equal chunks, fanout 2: every manifest of a level is the same block.
    data = b"abcd" * 16
    store, _, cap = put(data, chunk_size=4, fanout=2)
    assert len(store) == 1 + 4  # one data block, one manifest per depth 0..3
    assert get(cap, store) == (64, data)
    fetch = CountingFetch(store)
    refs = list(walk_blocks(cap.cid, fetch))
    assert len(refs) == 5
    assert fetch.calls == 4
    # The file-order walk decodes each repeated manifest once (its cache), yet yields all 16.
    reader_fetch = CountingFetch(store)
    assert len(list(iter_tree(cap, reader_fetch))) == 16
    assert reader_fetch.calls == 4


def test_replicas_are_recorded_everywhere() -> None:
    store, _, cap = put(bytes(30), redundancy=Redundancy("replicate", 5))
    manifest_ids = {r.block_id for r in walk_blocks(cap.cid, fetcher(store)) if r.manifest}
    assert len(manifest_ids) > 1
    for bid in manifest_ids:
        assert load_manifest(bid, store[bid]).redundancy == Redundancy("replicate", 5)


def test_builder_argument_checks() -> None:
    with pytest.raises(ValueError, match="fanout"):
        ManifestBuilder(SECRET, fanout=1)
    with pytest.raises(ValueError, match="fanout"):
        ManifestBuilder(SECRET, fanout=MAX_CHILDREN + 1)
    with pytest.raises(ValueError, match="chunk_size"):
        ManifestBuilder(SECRET, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        ManifestBuilder(SECRET, chunk_size=MAX_CHUNK_SIZE + 1)
    with pytest.raises(ValueError, match="secret"):
        ManifestBuilder(bytes(16))
    builder = ManifestBuilder(SECRET, chunk_size=3)
    chunk = seal_chunk(SECRET, b"abc")
    short = seal_chunk(SECRET, b"ab")
    empty = seal_chunk(SECRET, b"")
    with pytest.raises(ValueError, match="32 bytes"):
        builder.add(chunk.block_id[:5], len(chunk.data), chunk.key, 3)
    with pytest.raises(ValueError, match="tag"):
        builder.add(chunk.block_id, 3, chunk.key, 3)
    with pytest.raises(ValueError, match=r"1\.\.3 bytes"):
        builder.add(empty.block_id, TAG_SIZE, empty.key, 0)
    with pytest.raises(ValueError, match=r"1\.\.3 bytes"):
        builder.add(chunk.block_id, 4 + TAG_SIZE, chunk.key, 4)
    builder.add(chunk.block_id, 3 + TAG_SIZE, chunk.key, 3)
    builder.add(short.block_id, 2 + TAG_SIZE, short.key, 2)
    with pytest.raises(ValueError, match="only the last chunk"):
        builder.add(chunk.block_id, 3 + TAG_SIZE, chunk.key, 3)
    assert builder.size == 5
    builder.finish()
    with pytest.raises(ValueError, match="twice"):
        builder.finish()
    with pytest.raises(ValueError, match="after finish"):
        builder.add(chunk.block_id, 3 + TAG_SIZE, chunk.key, 3)


@pytest.mark.parametrize(("chunks", "fits"), [(2**9, True), (2**9 + 1, False)])
def test_depth_limit(chunks: int, fits: bool) -> None:
    # Fanout 2 and depth at most 8: a root holds at most 2**9 data blocks.
    builder = ManifestBuilder(SECRET, chunk_size=1, fanout=2)
    chunk = seal_chunk(SECRET, b"x")
    with pytest.raises(ValueError, match="deeper than 8") if not fits else nullcontext():
        for _ in range(chunks):
            builder.add(chunk.block_id, len(chunk.data), chunk.key, 1)
        blocks, cap = builder.finish()
        assert Manifest.decode(blocks[-1][1]).depth == 8
        store = dict(blocks)
        store[chunk.block_id] = chunk.data
        assert get(cap, store) == (chunks, b"x" * chunks)
