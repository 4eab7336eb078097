from __future__ import annotations

from contextlib import nullcontext

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content.caps import ReadCap
from shoal.content.crypto import TAG_SIZE, encrypt, seal_chunk
from shoal.content.manifest import (
    MAX_CHILDREN,
    Manifest,
    Redundancy,
    load_manifest,
    manifest_key,
    open_manifest,
)
from shoal.content.tree import ManifestBuilder, TreeReader, iter_tree, walk_blocks
from shoal.errors import IntegrityError, InvalidCapability, NotFound
from shoal.ids import sha256

from .helpers import OTHER_SECRET, SECRET, fetcher, get, make_info, put


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
        (8, 2, 2),  # exactly fanout**3 chunks would need depth 2
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
    info, back = get(cap, store)
    assert back == data
    assert info == make_info("f.bin", len(data))
    assert len([ref for ref, _ in iter_tree(cap, fetcher(store))]) == chunks


def test_empty_file_has_depth0_root_without_children() -> None:
    store, emitted, cap = put(b"")
    assert len(emitted) == 1
    root = Manifest.decode(store[cap.cid])
    assert (root.depth, root.children) == (0, ())
    assert open_manifest(root, cap.key).info == make_info("f.bin", 0)
    assert get(cap, store) == (make_info("f.bin", 0), b"")


def test_tree_shape_and_only_root_has_info() -> None:
    # 67 chunks, fanout 3: 23 + 8 + 3 + 1 manifests, depth 3.
    store, emitted, cap = put(bytes(range(200)), chunk_size=3, fanout=3)
    root = Manifest.decode(store[cap.cid])
    assert root.depth == 3
    assert len(root.children) >= 2
    opened = 0
    stack = [(cap.cid, cap.key)]
    while stack:
        bid, key = stack.pop()
        manifest = Manifest.decode(store[bid])
        part = open_manifest(manifest, key)
        opened += 1
        assert (part.info is not None) == (bid == cap.cid)
        assert 1 <= len(manifest.children) <= 3
        if manifest.depth > 0:
            stack.extend(
                (ref.block_id, k.key) for ref, k in zip(manifest.children, part.keys, strict=True)
            )
    assert opened == 23 + 8 + 3 + 1
    assert len(emitted) == 67 + opened


@settings(max_examples=40, deadline=None)
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
    assert get(cap, store)[1] == data
    _, again_emitted, again_cap = put(data, chunk_size=chunk_size, fanout=fanout)
    assert again_cap == cap
    assert again_emitted == emitted
    # Every emitted block is addressed by its hash.
    assert all(sha256(blob) == bid for bid, blob in emitted)


def test_different_secret_gives_different_blocks_and_cap() -> None:
    data = bytes(range(50))
    store_a, _, cap_a = put(data)
    store_b, _, cap_b = put(data, secret=OTHER_SECRET)
    assert cap_a != cap_b
    assert not set(store_a) & set(store_b)


def test_same_content_dedupes_data_blocks_across_names() -> None:
    data = bytes(range(50))
    store_a, _, cap_a = put(data, name="a")
    store_b, _, cap_b = put(data, name="b")
    assert cap_a.cid != cap_b.cid  # the root holds the name
    shared = set(store_a) & set(store_b)
    assert len(shared) == len(store_a) - 1  # every block but the root


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


def test_wrong_root_key_is_detected() -> None:
    store, _, cap = put(b"some data")
    _, _, other = put(b"other data")
    # The root is intact: a key that does not open it is the cap's fault, not the block's.
    with pytest.raises(InvalidCapability, match="key does not open this file"):
        TreeReader(ReadCap(cap.cid, other.key), fetcher(store))


def test_inner_manifest_used_as_root_is_refused() -> None:
    store, _, cap = put(bytes(20), chunk_size=4, fanout=2)
    root = Manifest.decode(store[cap.cid])
    child_ref = root.children[0]
    child_key = open_manifest(root, cap.key).keys[0]
    with pytest.raises(IntegrityError, match="no file info"):
        TreeReader(ReadCap(child_ref.block_id, child_key.key), fetcher(store))


def test_missing_block_raises_not_found() -> None:
    store, emitted, cap = put(bytes(range(20)), chunk_size=4, fanout=2)
    inner = emitted[2][0]  # the first manifest, emitted after two chunks
    del store[inner]
    with pytest.raises(NotFound):
        get(cap, store)


def test_walk_blocks_lists_every_block_without_keys() -> None:
    store, emitted, cap = put(bytes(range(37)), chunk_size=4, fanout=2)
    refs = list(walk_blocks(cap.cid, fetcher(store)))
    assert refs[0].block_id == cap.cid
    assert sorted(r.block_id for r in refs) == sorted(bid for bid, _ in emitted)
    assert all(r.stored_size == len(store[r.block_id]) for r in refs)
    bad = {**store, cap.cid: store[cap.cid][:-1]}
    with pytest.raises(IntegrityError):
        list(walk_blocks(cap.cid, fetcher(bad)))


def test_replicas_are_recorded_everywhere() -> None:
    store, _, cap = put(bytes(30), redundancy=Redundancy("replicate", 5))
    data_ids = {ref.block_id for ref, _ in iter_tree(cap, fetcher(store))}
    manifest_ids = {ref.block_id for ref in walk_blocks(cap.cid, fetcher(store))} - data_ids
    assert len(manifest_ids) > 1
    for bid in manifest_ids:
        assert load_manifest(bid, store[bid]).redundancy == Redundancy("replicate", 5)


def test_builder_argument_checks() -> None:
    with pytest.raises(ValueError, match="fanout"):
        ManifestBuilder(SECRET, fanout=1)
    with pytest.raises(ValueError, match="fanout"):
        ManifestBuilder(SECRET, fanout=MAX_CHILDREN + 1)
    with pytest.raises(ValueError, match="secret"):
        ManifestBuilder(bytes(16))
    builder = ManifestBuilder(SECRET)
    chunk = seal_chunk(SECRET, b"abc")
    with pytest.raises(ValueError, match="32 bytes"):
        builder.add(chunk.block_id[:5], len(chunk.data), chunk.key, 3)
    with pytest.raises(ValueError, match="tag"):
        builder.add(chunk.block_id, 3, chunk.key, 3)
    builder.add(chunk.block_id, 3 + TAG_SIZE, chunk.key, 3)
    with pytest.raises(ValueError, match=r"info\.size"):
        builder.finish(make_info("x", 4))
    builder.finish(make_info("x", 3))
    with pytest.raises(ValueError, match="twice"):
        builder.finish(make_info("x", 3))
    with pytest.raises(ValueError, match="after finish"):
        builder.add(chunk.block_id, 3 + TAG_SIZE, chunk.key, 3)


@pytest.mark.parametrize(("chunks", "fits"), [(2**9, True), (2**9 + 1, False)])
def test_depth_limit(chunks: int, fits: bool) -> None:
    # Fanout 2 and depth at most 8: a root holds at most 2**9 data blocks.
    builder = ManifestBuilder(SECRET, fanout=2)
    chunk = seal_chunk(SECRET, b"x")
    with pytest.raises(ValueError, match="deeper than 8") if not fits else nullcontext():
        for _ in range(chunks):
            builder.add(chunk.block_id, len(chunk.data), chunk.key, 1)
        blocks, _ = builder.finish(make_info("deep", chunks))
        assert Manifest.decode(blocks[-1][1]).depth == 8


def test_subtree_sizes_are_checked() -> None:
    # Re-seal a consistent root (sizes add up to FileInfo.size) that claims one byte more for
    # its first subtree than that subtree holds: the walk must notice when it opens the child.
    store, _, cap = put(bytes(range(16)), chunk_size=4, fanout=2)
    root = Manifest.decode(store[cap.cid])
    assert root.depth == 1
    part = open_manifest(root, cap.key)
    sealed = {
        "k": [[k.key, k.plaintext_size + (i == 0)] for i, k in enumerate(part.keys)],
        "f": {"n": "f.bin", "z": 17, "m": "x", "t": None, "c": 0.0},
    }
    plain = msgpack.packb(sealed, use_bin_type=True)
    key = manifest_key(SECRET, plain)
    forged = Manifest(1, 1, root.redundancy, root.children, encrypt(key, plain)).encode()
    store[sha256(forged)] = forged
    reader = TreeReader(ReadCap(sha256(forged), key), fetcher(store))
    assert reader.info.size == 17
    with pytest.raises(IntegrityError, match="do not add up"):
        list(reader)
