"""Erasure-coded trees: building, reading from any k shares, keyless walks, lies refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content import (
    BlockRef,
    BlockWalk,
    Chunker,
    DataRef,
    ManifestBuilder,
    NeedManifest,
    ReadCap,
    Redundancy,
    Stripe,
    StripeRef,
    TreeReader,
    seal_chunk,
    walk_blocks,
)
from shoal.content.erasure import encode_shares, share_size
from shoal.content.manifest import Manifest, load_manifest
from shoal.errors import IntegrityError, NotFound
from shoal.ids import sha256

from .helpers import SECRET, CountingFetch

ERASURE = Redundancy.erasure(3, 5)


def put_erasure(
    data: bytes, *, chunk_size: int = 10, fanout: int = 2, redundancy: Redundancy = ERASURE
) -> tuple[dict[bytes, bytes], ReadCap]:
    """Store ``data`` erasure-coded into a dict; return (blocks, cap)."""
    builder = ManifestBuilder(SECRET, chunk_size=chunk_size, fanout=fanout, redundancy=redundancy)
    store: dict[bytes, bytes] = {}
    chunker = Chunker(chunk_size)

    def add(chunk: bytes) -> None:
        sealed = seal_chunk(SECRET, chunk)
        shares = encode_shares(sealed.data, redundancy.k, redundancy.n)
        ids = [sha256(s) for s in shares]
        store.update(zip(ids, shares, strict=True))
        size = share_size(len(sealed.data), redundancy.k)
        store.update(builder.add_stripe(b"".join(ids), size, sealed.key, len(chunk)))

    for chunk in chunker.feed(data):
        add(chunk)
    if (tail := chunker.finish()) is not None:
        add(tail)
    blocks, cap = builder.finish()
    store.update(blocks)
    return store, cap


def read(cap: ReadCap, store: dict[bytes, bytes], lost: set[int] = frozenset()) -> bytes:  # type: ignore[assignment]
    """Read a file back from the shares not in ``lost`` (share indices lost in every stripe)."""
    fetch = CountingFetch(store)
    out = []
    for ref in TreeReader(cap, fetch):
        assert isinstance(ref, StripeRef)
        stripe = ref.stripe
        shares = {}
        for index in range(stripe.n):
            if index in lost:
                continue
            data = fetch(stripe.share_id(index))
            stripe.check_share(index, data)
            shares[index] = data
        out.append(ref.open(shares))
    return b"".join(out)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200), st.sets(st.integers(0, 4), max_size=2))
def test_any_three_of_five_read_the_file_back(data: bytes, lost: set[int]) -> None:
    store, cap = put_erasure(data)
    assert read(cap, store, lost) == data


def test_fewer_than_k_shares_fail_clearly() -> None:
    store, cap = put_erasure(b"x" * 25)
    with pytest.raises(NotFound, match="only 2 of the 3 shares"):
        read(cap, store, {0, 1, 4})


def test_the_tree_records_the_scheme_and_replicates_only_manifests() -> None:
    store, cap = put_erasure(bytes(range(45)))  # 5 chunks of 10: a depth-2 tree, fanout 2
    root = load_manifest(cap.cid, store[cap.cid])
    assert root.redundancy == ERASURE
    assert root.redundancy.replicas == 3  # manifests: n - k + 1 copies
    assert root.depth == 2
    assert not root.stripes
    refs = list(walk_blocks(cap.cid, CountingFetch(store)))
    stripes = [r for r in refs if isinstance(r, Stripe)]
    manifests = [r for r in refs if isinstance(r, BlockRef)]
    assert all(r.manifest for r in manifests)
    assert len(stripes) == 5
    assert {s.share_size for s in stripes} == {share_size(26, 3), share_size(21, 3)}
    every_share = {sid for s in stripes for sid in s.ids}
    assert every_share | {m.block_id for m in manifests} == set(store)


def test_equal_chunks_give_equal_stripes() -> None:
    store, cap = put_erasure(b"z" * 30)  # depth-0 manifests [z, z] and [z]
    stripes = [r for r in walk_blocks(cap.cid, CountingFetch(store)) if isinstance(r, Stripe)]
    assert len(stripes) == 2  # one per depth-0 manifest: repeats within one are not repeated
    assert stripes[0] == stripes[1]


def test_a_stripe_rebuilds_its_missing_shares_without_a_key() -> None:
    store, cap = put_erasure(b"some file bytes" * 3)
    for ref in walk_blocks(cap.cid, CountingFetch(store)):
        if isinstance(ref, Stripe):
            for kept in itertools.combinations(range(5), 3):
                have = {i: store[ref.share_id(i)] for i in kept}
                missing = [i for i in range(5) if i not in kept]
                rebuilt = ref.rebuild(have, missing)
                assert rebuilt == {i: store[ref.share_id(i)] for i in missing}


def test_a_stripe_whose_shares_do_not_belong_together_is_refused() -> None:
    store, cap = put_erasure(b"a" * 10 + b"b" * 10)
    one, two = [r for r in walk_blocks(cap.cid, CountingFetch(store)) if isinstance(r, Stripe)]
    mixed = {0: store[one.share_id(0)], 1: store[two.share_id(1)], 2: store[two.share_id(2)]}
    with pytest.raises(IntegrityError, match="does not match its ID"):
        one.rebuild(mixed, [3])


def test_a_lying_share_size_is_caught_by_the_keyed_walk() -> None:
    # A last chunk of 1 byte and one of 3 bytes give the same share size with k = 3 (17 and 19
    # stored bytes: 6 + 4 each); the keyless shape cannot tell, the decoded length can.
    store, cap = put_erasure(b"q" * 11)
    root = load_manifest(cap.cid, store[cap.cid])
    child = root.child_id(1)
    last_ref = None
    for ref in TreeReader(cap, CountingFetch(store)):
        assert isinstance(ref, StripeRef)
        last_ref = ref
    assert last_ref is not None
    assert child == last_ref.stripe.share_ids
    liar = StripeRef(last_ref.stripe, last_ref.key, last_ref.plaintext_size + 1, 10)
    shares = {i: store[last_ref.stripe.share_id(i)] for i in range(3)}
    with pytest.raises(IntegrityError, match="decodes to 17 bytes, its manifest says 18"):
        liar.open(shares)


def test_a_child_with_another_redundancy_does_not_fit_its_parent() -> None:
    replicated_store, replicated_cap = put_erasure_mixed()
    with pytest.raises(IntegrityError, match="redundancy 3 replicas, expected 3-of-5"):
        list(TreeReader(replicated_cap, CountingFetch(replicated_store)))
    with pytest.raises(IntegrityError, match="redundancy"):
        list(walk_blocks(replicated_cap.cid, CountingFetch(replicated_store)))


def put_erasure_mixed() -> tuple[dict[bytes, bytes], ReadCap]:
    """An erasure-coded root over a replicated depth-0 manifest (a forged tree)."""
    from shoal.content.crypto import encrypt
    from shoal.content.manifest import ChildRef, encode_sealed, manifest_key

    store: dict[bytes, bytes] = {}
    keys, refs = [], []
    for part in (b"a" * 20, b"b" * 5):
        builder = ManifestBuilder(SECRET, chunk_size=10, fanout=2, redundancy=Redundancy())
        for start in range(0, len(part), 10):
            sealed = seal_chunk(SECRET, part[start : start + 10])
            store[sealed.block_id] = sealed.data
            store.update(builder.add(sealed.block_id, len(sealed.data), sealed.key,
                                     sealed.plaintext_size))  # fmt: skip
        blocks, cap = builder.finish()
        store.update(blocks)
        refs.append(ChildRef(cap.cid, len(store[cap.cid])))
        keys.append(cap.key)
    plaintext = encode_sealed(keys, 25)
    key = manifest_key(SECRET, plaintext)
    root = Manifest.build(1, 10, 2, ERASURE, refs, encrypt(key, plaintext)).encode()
    store[sha256(root)] = root
    return store, ReadCap(sha256(root), key)


def test_a_large_fanout_is_lowered_for_many_shares() -> None:
    redundancy = Redundancy.erasure(1, 32)
    builder = ManifestBuilder(SECRET, chunk_size=10, fanout=32768, redundancy=redundancy)
    sealed = seal_chunk(SECRET, b"x")
    builder.add_stripe(bytes(32 * 32), share_size(len(sealed.data), 1), sealed.key, 1)
    (root_block,), _cap = builder.finish()
    assert Manifest.decode(root_block[1]).fanout == redundancy.max_fanout == 3930


def test_the_builder_refuses_mismatched_entries() -> None:
    builder = ManifestBuilder(SECRET, chunk_size=10, fanout=2, redundancy=ERASURE)
    sealed = seal_chunk(SECRET, b"x" * 10)
    with pytest.raises(ValueError, match="add_stripe"):
        builder.add(sealed.block_id, len(sealed.data), sealed.key, 10)
    with pytest.raises(ValueError, match="5 share ids"):
        builder.add_stripe(bytes(32 * 4), share_size(26, 3), sealed.key, 10)
    with pytest.raises(ValueError, match="stored size"):
        builder.add_stripe(bytes(32 * 5), 26, sealed.key, 10)
    replicated = ManifestBuilder(SECRET, chunk_size=10, fanout=2)
    with pytest.raises(ValueError, match="for erasure-coded files"):
        replicated.add_stripe(bytes(32 * 5), share_size(26, 3), sealed.key, 10)


def test_a_block_walk_is_driven_step_by_step_with_stripes() -> None:
    store, cap = put_erasure(b"w" * 15)
    walk = BlockWalk(cap.cid)
    kinds = []
    while (step := walk.next()) is not None:
        if isinstance(step, NeedManifest):
            walk.feed(step.open(store[step.block_id]))
        else:
            kinds.append(type(step).__name__)
    assert kinds == ["BlockRef", "Stripe", "Stripe"]
    assert not any(isinstance(step, DataRef) for step in ())
