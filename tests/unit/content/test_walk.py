"""The tree walks check the tree's arithmetic, and hostile trees cannot hang or exhaust them.

Every tree here is made of intact blocks (right hashes, right keys) that lie about the file:
what a stranger can craft and share as a cap. Each lie must be an IntegrityError at the first
block that shows it, after a bounded number of fetches and in bounded memory.
"""

from __future__ import annotations

import itertools
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from shoal.content import (
    MAX_CHILDREN,
    MAX_FILE_SIZE,
    BlockWalk,
    DataRef,
    FileWalk,
    Manifest,
    NeedManifest,
    ReadCap,
    TreeReader,
    encrypt,
    walk_blocks,
)
from shoal.content.manifest import encode_sealed
from shoal.errors import CorruptBlock, IntegrityError, InvalidCapability
from shoal.ids import sha256

from .forge import Ref, cap_of, chunk, forge
from .helpers import CountingFetch, get

MiB = 1 << 20


def peak_memory(work: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes allocated by ``work`` (tracemalloc: every thread, no timing involved)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            result: Any = work()
        except Exception as exc:  # the caller asserts on it
            result = exc
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


# -- a small honest tree and its lies ---------------------------------------------------------


def small_tree(
    root_size: int = 10, *, m1: list[Ref] | None = None, **overrides: Any
) -> tuple[dict[bytes, bytes], ReadCap]:
    """'abcdefghij', chunk size 4, fanout 2: root (depth 1) -> M0 [4, 4], M1 [2]."""
    store: dict[bytes, bytes] = {}
    c0, c1, c2 = (chunk(store, p) for p in (b"abcd", b"efgh", b"ij"))
    m0 = forge(store, 0, 4, 2, [c0, c1])
    m1_ref = forge(store, overrides.get("m1_depth", 0), overrides.get("m1_chunk", 4),
                   overrides.get("m1_fanout", 2), m1 if m1 is not None else [c2])  # fmt: skip
    children = overrides.get("root_children", [m0, m1_ref])
    root = forge(store, overrides.get("root_depth", 1), 4, 2, children, root_size)
    return store, cap_of(root)


def read_all(cap: ReadCap, fetch: CountingFetch) -> bytes:
    """Read a file through ``fetch``, manifests and data alike (``get`` fetches data apart)."""
    return b"".join(ref.open(fetch(ref.block_id)) for ref in TreeReader(cap, fetch))


def test_the_small_tree_is_honest() -> None:
    store, cap = small_tree()
    assert get(cap, store) == (10, b"abcdefghij")


@pytest.mark.parametrize(
    ("tree", "message", "fetches"),
    [
        (lambda: small_tree(17), "lists 2 children where the 17 bytes below it need 3", 1),
        (lambda: small_tree(0), "lists 2 children where the 0 bytes below it need 0", 1),
        (lambda: small_tree(8), "lists 2 children where the 8 bytes below it need 1", 1),
        (lambda: small_tree(9), "last data block is 18 bytes where the file's size needs 17", 5),
        (lambda: small_tree(11), "last data block is 18 bytes where the file's size needs 19", 5),
        (lambda: small_tree(m1_depth=1), "does not fit its parent: depth 1", 5),
        (lambda: small_tree(m1_chunk=5), "does not fit its parent: depth 0, chunk size 5", 5),
        (lambda: small_tree(m1_fanout=3), "fanout 3", 5),
        (lambda: small_tree(root_depth=2), "lists 2 children where the 10 bytes", 1),
    ],
)
def test_each_lie_is_caught_at_the_first_block_that_shows_it(
    tree: Callable[[], tuple[dict[bytes, bytes], ReadCap]], message: str, fetches: int
) -> None:
    store, cap = tree()
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match=message):
        read_all(cap, fetch)
    assert fetch.calls == fetches  # 5: the root, M0 and its two chunks, then M1


def test_an_inner_node_listing_more_children_than_its_bytes_need() -> None:
    store: dict[bytes, bytes] = {}
    c0, c2 = chunk(store, b"abcd"), chunk(store, b"ij")
    store_, cap = small_tree(m1=[c0, c2])
    store_.update(store)
    with pytest.raises(IntegrityError, match="lists 2 children where the 2 bytes below it need 1"):
        get(cap, store_)


def test_a_root_deeper_than_its_size_needs() -> None:
    store: dict[bytes, bytes] = {}
    leaf = forge(store, 0, 4, 2, [chunk(store, b"ab")])
    root = forge(store, 1, 4, 2, [leaf], 2)
    with pytest.raises(IntegrityError, match="root of depth 1 with one child"):
        TreeReader(cap_of(root), CountingFetch(store))
    with pytest.raises(IntegrityError, match="root of depth 1 with one child"):
        list(walk_blocks(root[0], CountingFetch(store)))


def test_a_parent_lying_about_a_child_size_or_key() -> None:
    store: dict[bytes, bytes] = {}
    c0, c1, c2 = (chunk(store, p) for p in (b"abcd", b"efgh", b"ij"))
    m0 = forge(store, 0, 4, 2, [c0, c1])
    m1 = forge(store, 0, 4, 2, [c2])
    for lie, message in [
        ((m1[0], m1[1] + 1, m1[2]), "is .* bytes, its parent says"),
        ((m1[0], m1[1], m0[2]), "intact but the key its parent gives does not open it"),
    ]:
        root = forge(store, 1, 4, 2, [m0, lie], 10)
        with pytest.raises(IntegrityError, match=message) as info:
            get(cap_of(root), store)
        assert not isinstance(info.value, (CorruptBlock, InvalidCapability))
    # A data block whose key or size in the manifest is wrong: intact, so not CorruptBlock.
    for lie, message in [
        ((c2[0], c2[1], c0[2]), "intact but its manifest's key does not open it"),
        ((c2[0], c2[1] + 1, c2[2]), "is 18 bytes, its manifest says 19"),
    ]:
        leaf = forge(store, 0, 4, 2, [lie])
        size = lie[1] - 16 + 8
        root = forge(store, 1, 4, 2, [m0, leaf], size)
        with pytest.raises(IntegrityError, match=message) as info:
            get(cap_of(root), store)
        assert not isinstance(info.value, CorruptBlock)


def test_the_declared_size_is_bounded() -> None:
    store: dict[bytes, bytes] = {}
    too_big = msgpack.packb({"t": "file", "z": MAX_FILE_SIZE + 1, "k": []}, use_bin_type=True)
    root = forge(store, 0, 4, 2, [], sealed_plain=too_big)
    with pytest.raises(IntegrityError, match=r"file size: .* out of range"):
        TreeReader(cap_of(root), CountingFetch(store))


def test_offsets_and_sizes_add_up_to_the_file() -> None:
    store, cap = small_tree()
    refs = list(TreeReader(cap, CountingFetch(store)))
    assert [(r.offset, r.plaintext_size, r.stored_size) for r in refs] == [
        (0, 4, 20),
        (4, 4, 20),
        (8, 2, 18),
    ]


def test_a_walk_is_driven_one_step_at_a_time() -> None:
    store, cap = small_tree()
    walk = FileWalk(cap)
    need = walk.next()
    assert isinstance(need, NeedManifest)
    assert need.block_id == cap.cid
    assert walk.next() is need  # until fed, the same need
    with pytest.raises(ValueError, match="feed"):
        walk.feed(FileWalk(cap).next().open(store[cap.cid]))  # type: ignore[union-attr]
    walk.feed(need.open(store[cap.cid]))
    assert walk.info is not None
    assert walk.info.size == 10
    steps: list[object] = []
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            with pytest.raises(CorruptBlock):
                step.open(store[step.block_id] + b"x")  # a hash mismatch, checked first
            walk.feed(step.open(store[step.block_id]))
        steps.append(type(step))
    assert steps == [NeedManifest, DataRef, DataRef, NeedManifest, DataRef]


# -- attack (a): a 10-block tree that never finishes --------------------------------------------


Levels = tuple[dict[bytes, bytes], Ref]


def tower_levels(plaintext: bytes, chunk_size: int) -> Levels:
    """The issue's tree below its root: 8 manifests (depths 0..7) of 32,768 children, each
    listing the level below 32,768 times, over one chunk."""
    store: dict[bytes, bytes] = {}
    ref = chunk(store, plaintext)
    for depth in range(8):
        ref = forge(store, depth, chunk_size, MAX_CHILDREN, [ref] * MAX_CHILDREN)
    return store, ref


def tower(levels: Levels, claimed: int) -> tuple[dict[bytes, bytes], Ref]:
    """The whole tower: a depth-8 root over the levels, claiming ``claimed`` bytes (10 blocks,
    32768**9 leaves)."""
    store, below = levels
    store = dict(store)
    root = forge(store, 8, 1, MAX_CHILDREN, [below] * MAX_CHILDREN, claimed)
    return store, root


@pytest.fixture(scope="module")
def empty_levels() -> Levels:
    return tower_levels(b"", 1)


@pytest.fixture(scope="module")
def byte_levels() -> Levels:
    return tower_levels(b"x", 1)


def test_a_zero_byte_file_of_endless_zero_byte_chunks_fails_at_once(
    empty_levels: Levels,
) -> None:
    store, root = tower(empty_levels, 0)
    assert len(store) == 10
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match="lists 32768 children where the 0 bytes"):
        TreeReader(cap_of(root), fetch)
    assert fetch.calls == 1
    # Without the size, the keyless walk sees a root too wide for any file.
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match="larger than"):
        list(walk_blocks(root[0], fetch))
    assert fetch.calls == 1


def test_a_small_tower_of_zero_byte_chunks_fails_at_its_bottom() -> None:
    # Narrow enough to pass the root's size bound: the keyless walk descends, once per level.
    store: dict[bytes, bytes] = {}
    ref = chunk(store, b"")
    for depth in range(3):
        ref = forge(store, depth, 4, 2, [ref, ref], 0 if depth == 2 else None)
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match="a data block of 0 bytes"):
        list(walk_blocks(ref[0], fetch))
    assert fetch.calls == 3
    with pytest.raises(IntegrityError, match="lists 2 children where the 0 bytes"):
        TreeReader(cap_of(ref), CountingFetch(store))


@pytest.mark.parametrize("claimed", [1, 32768, 2**40, MAX_FILE_SIZE])
def test_no_size_makes_the_tower_readable(byte_levels: Levels, claimed: int) -> None:
    store, root = tower(byte_levels, claimed)
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match="lists 32768 children where the"):
        TreeReader(cap_of(root), fetch)
    assert fetch.calls == 1
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match="larger than"):
        list(walk_blocks(root[0], fetch))
    assert fetch.calls == 1


# -- attack (b): one 2.5 MB manifest listed 32,768 times ---------------------------------------


@pytest.fixture(scope="module")
def wide_tree() -> tuple[dict[bytes, bytes], Ref]:
    """A depth-1 root listing one full 32,768-child depth-0 manifest 32,768 times (1 PiB)."""
    store: dict[bytes, bytes] = {}
    chunk_size = 1 << 20
    leaves = [(os.urandom(32), chunk_size + 16, os.urandom(32)) for _ in range(MAX_CHILDREN)]
    leaf = forge(store, 0, chunk_size, MAX_CHILDREN, leaves)
    assert leaf[1] > 2_400_000
    root = forge(store, 1, chunk_size, MAX_CHILDREN, [leaf] * MAX_CHILDREN, MAX_FILE_SIZE)
    return store, root


def test_a_block_walk_of_a_repeated_child_decodes_it_once_in_bounded_memory(
    wide_tree: tuple[dict[bytes, bytes], Ref],
) -> None:
    store, root = wide_tree
    fetch = CountingFetch(store)
    count = 0

    def walk() -> None:
        nonlocal count
        for _ in walk_blocks(root[0], fetch):
            count += 1

    peak, error = peak_memory(walk)
    assert error is None
    assert count == 2 + MAX_CHILDREN  # root, the child once, its distinct data blocks
    assert fetch.calls == 2
    assert peak < 64 * MiB, peak


def test_a_file_walk_of_a_repeated_child_decodes_it_once_in_bounded_memory(
    wide_tree: tuple[dict[bytes, bytes], Ref],
) -> None:
    store, root = wide_tree
    fetch = CountingFetch(store)
    leaves = 3 * MAX_CHILDREN + 5
    last: list[DataRef] = []

    def walk() -> None:
        reader = TreeReader(cap_of(root), fetch)
        assert reader.info.size == MAX_FILE_SIZE
        last.extend(itertools.islice(reader, leaves - 1, leaves))

    peak, error = peak_memory(walk)
    assert error is None
    assert last[0].offset == (leaves - 1) << 20
    assert fetch.calls == 2  # the root, and the repeated child once
    assert peak < 64 * MiB, peak


# -- attack (c): msgpack bombs of at most 4 MiB -------------------------------------------------

HEAD = b"\x87\xa1v\x02\xa1d"  # a manifest's first fields, up to the depth's value
BOMB_SIZE = 4 * MiB - 64


def _array32(count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big")


BOMBS = {
    "empty maps": _array32(BOMB_SIZE) + b"\x80" * BOMB_SIZE,
    "empty maps as the depth": HEAD + _array32(BOMB_SIZE) + b"\x80" * BOMB_SIZE,
    "nested array claims": _array32(32768) * (BOMB_SIZE // 5),
    "nested claims as the depth": HEAD + _array32(32768) * (BOMB_SIZE // 5),
    "1000-deep list as the version": b"\x87\xa1v" + b"\x91" * 1000 + b"\x00",
    "a 4 GiB string claim": HEAD + b"\xdb\xff\xff\xff\xff" + b"a" * 100,
    "a 4 GiB child count": HEAD + b"\x00\xa1z\x04\xa1f\x04\xa1r\x82\xa1t\xa9replicate\xa1r\x03"
    b"\xa1c" + _array32(2**32 - 1),
    "tiny ints as children": HEAD + b"\x00\xa1z\x04\xa1f\xcd\x80\x00\xa1r\x82\xa1t\xa9replicate"
    b"\xa1r\x03\xa1c" + _array32(32768) + b"\x01" * 32768 + b"\x00" * (BOMB_SIZE - 32768),
}


def test_the_bombs_are_bombs_for_a_general_decoder() -> None:
    # A quarter of the bomb costs a general decoder about 70 MiB (the whole, about 280 MiB as
    # the issue measured): the test inputs are real bombs.
    quarter = BOMB_SIZE // 4
    peak, _ = peak_memory(lambda: msgpack.unpackb(_array32(quarter) + b"\x80" * quarter))
    assert peak > 50 * MiB


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_msgpack_bombs_are_refused_in_bounded_memory(name: str) -> None:
    data = BOMBS[name]
    assert len(data) <= 4 * MiB
    peak, error = peak_memory(lambda: Manifest.decode(data))
    assert isinstance(error, IntegrityError), error
    assert peak < 4 * MiB, peak
    assert len(str(error)) < 200


@pytest.mark.parametrize("name", ["empty maps", "nested array claims"])
def test_bombs_in_a_sealed_part_are_refused_in_bounded_memory(name: str) -> None:
    store: dict[bytes, bytes] = {}
    plain = b"\x83\xa1t\xa4file\xa1z\x00\xa1k" + BOMBS[name][:BOMB_SIZE]
    root = forge(store, 0, 4, 2, [], sealed_plain=plain)
    block = store[root[0]]
    peak, error = peak_memory(lambda: TreeReader(cap_of(root), store.__getitem__))
    assert isinstance(error, IntegrityError), error
    # The decrypted plaintext itself (4 MiB) is the only large allocation.
    assert peak < len(block) + 4 * MiB, peak


# -- (d): deep nesting anywhere is an IntegrityError, never a RecursionError -------------------


def test_deep_nesting_in_a_root_is_an_integrity_error() -> None:
    deep = b"\x91" * 1000 + b"\x00"
    store: dict[bytes, bytes] = {}
    for plain in [b"\x83\xa1t" + deep, b"\x83\xa1t\xa4file\xa1z" + deep, b"\x81\xa1k" + deep]:
        root = forge(store, 0, 4, 2, [], sealed_plain=plain)
        with pytest.raises(IntegrityError) as info:
            TreeReader(cap_of(root), store.__getitem__)
        assert len(str(info.value)) < 200
    nested_block = HEAD + deep
    bid = sha256(nested_block)
    store[bid] = nested_block
    with pytest.raises(IntegrityError, match="found an array"):
        TreeReader(ReadCap(bid, bytes(32)), store.__getitem__)
    with pytest.raises(IntegrityError, match="found an array"):
        list(walk_blocks(bid, store.__getitem__))


def test_a_block_walk_checks_shape_without_keys() -> None:
    store: dict[bytes, bytes] = {}
    c0, c1, c2 = (chunk(store, p) for p in (b"abcd", b"efgh", b"ij"))
    partial = forge(store, 0, 4, 2, [c2])
    full = forge(store, 0, 4, 2, [c0, c1])
    # A partial node before a full one: the keyless walk refuses it, as the keyed walk does.
    root = forge(store, 1, 4, 2, [partial, full], 10)
    with pytest.raises(IntegrityError, match="not full"):
        list(walk_blocks(root[0], CountingFetch(store)))
    with pytest.raises(IntegrityError):
        get(cap_of(root), store)
    # The same partial node listed as a last child and again earlier: caught without a re-walk.
    deeper = forge(store, 1, 4, 2, [full, partial])
    root = forge(store, 2, 4, 2, [deeper, deeper], 20)
    fetch = CountingFetch(store)
    with pytest.raises(IntegrityError, match="not full"):
        list(walk_blocks(root[0], fetch))
    assert fetch.calls == 4  # root, deeper, full, partial: each once
    walk = BlockWalk(root[0])
    assert isinstance(walk.next(), NeedManifest)


def test_sealed_plaintexts_are_encrypted_before_a_walk_can_read_them() -> None:
    # A sanity check of the helpers: forge() encrypts what it is given.
    store: dict[bytes, bytes] = {}
    root = forge(store, 0, 4, 2, [], 0)
    sealed = Manifest.decode(store[root[0]]).sealed
    assert sealed != encode_sealed([], 0)
    assert sealed == encrypt(root[2], encode_sealed([], 0))
