"""Directory listings: canonical encoding, the strict decoder (fuzzed), the restore plan."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.content import ManifestBuilder, ReadCap, TreeReader, seal_chunk
from shoal.content.directory import (
    MAX_ENTRIES,
    MAX_NAME_BYTES,
    DirEntry,
    EnterDir,
    EntryKind,
    FolderWalk,
    LeaveDir,
    NeedListing,
    PutFile,
    decode_listing,
    encode_listing,
    entry_name_problem,
    split_relative_path,
)
from shoal.content.manifest import KIND_DIRECTORY
from shoal.errors import ConfigError, IntegrityError

from .helpers import SECRET


def cap(n: int) -> ReadCap:
    return ReadCap(bytes([n]) * 32, bytes([n + 1]) * 32)


def entry(name: str, kind: EntryKind = EntryKind.FILE, n: int = 1, **kw: Any) -> DirEntry:
    values = {"size": 5, "mtime_ns": 1_700_000_000_123_456_789, "mode": 0o644} | kw
    return DirEntry(name, kind, values["size"], values["mtime_ns"], values["mode"], cap(n))


def raw_entry(name: Any = "a", **kw: Any) -> dict[str, Any]:
    base = {"n": name, "t": "file", "z": 5, "m": 7, "p": 0o644, "i": bytes(32), "k": bytes(32)}
    return base | kw


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def test_round_trip_is_sorted_by_utf8_bytes_and_canonical() -> None:
    entries = [entry("zeta"), entry("Émile"), entry("a" * MAX_NAME_BYTES), entry("b", n=3)]
    data = encode_listing(entries)
    decoded = decode_listing(data)
    assert [e.name for e in decoded] == sorted((e.name for e in entries), key=str.encode)
    assert set(decoded) == set(entries)
    assert encode_listing(reversed(entries)) == data  # order of input does not matter


def test_negative_and_large_times_round_trip() -> None:
    for mtime in (-1, -33, -129, -40_000, -(2**40), -(2**63), 0, 2**63 - 1):
        assert decode_listing(encode_listing([entry("a", mtime_ns=mtime)]))[0].mtime_ns == mtime


def test_directory_entries_round_trip() -> None:
    listing = [entry("d", EntryKind.DIRECTORY, size=10**15, mode=0o700)]
    assert decode_listing(encode_listing(listing)) == tuple(listing)


def test_encoder_refuses_duplicates_bad_names_and_modes() -> None:
    with pytest.raises(ValueError, match="same name"):
        encode_listing([entry("a"), entry("a", n=2)])
    with pytest.raises(ValueError, match="invalid name"):
        encode_listing([entry("a/b")])
    with pytest.raises(ValueError, match="mode"):
        encode_listing([entry("a", mode=0o4755)])


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        (".", "'.'"),
        ("..", "'..'"),
        ("a/b", "slash"),
        ("/", "slash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("\u202e", "bidirectional"),
        ("\udcff", "not UTF-8"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_bad_entry_names(name: str, problem: str) -> None:
    reason = entry_name_problem(name)
    assert reason is not None
    assert problem in reason
    assert entry_name_problem("...") is None
    assert entry_name_problem("a b.txt") is None


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ({"v": 1, "e": [raw_entry(".")]}, "the name has the name '.'"),
        ({"v": 1, "e": [raw_entry("..")]}, "the name has the name '..'"),
        ({"v": 1, "e": [raw_entry("a/b")]}, "slash"),
        ({"v": 1, "e": [raw_entry("a\x00")]}, "control character"),
        ({"v": 1, "e": [raw_entry("b"), raw_entry("a")]}, "strictly increasing"),
        ({"v": 1, "e": [raw_entry("a"), raw_entry("a")]}, "strictly increasing"),
        ({"v": 1, "e": [raw_entry("")]}, "0 bytes"),
        ({"v": 1, "e": [raw_entry(b"\xff")]}, "expected a string"),
        ({"v": 1, "e": [raw_entry("x" * 256)]}, "expected a string of at most 255"),
        ({"v": 2, "e": []}, "listing version 2"),
        ({"e": [], "v": 1}, "expected the field 'v'"),
        ({"v": 1, "e": [raw_entry(t="link")]}, "unknown entry type"),
        ({"v": 1, "e": [raw_entry(p=0o1777)]}, "mode: 1023 at byte .* out of range"),
        ({"v": 1, "e": [raw_entry(z=-1)]}, "size: expected an unsigned integer"),
        ({"v": 1, "e": [raw_entry(m=1.5)]}, "time: expected an integer"),
        ({"v": 1, "e": [raw_entry(i=bytes(31))]}, "cid: 31 bytes"),
        ({"v": 1, "e": [raw_entry(k="k" * 40)]}, "key: expected a byte string"),
        ({"v": 1, "e": [raw_entry() | {"x": 1}]}, "expected 7 fields"),
        ({"v": 1, "e": [[b"x" * 90]]}, "expected a small map"),
    ],
)
def test_decoder_refuses_malformed_listings(listing: dict[str, Any], message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        decode_listing(pack(listing))


def test_decoder_refuses_non_canonical_forms_and_trailing_bytes() -> None:
    good = pack({"v": 1, "e": [raw_entry()]})
    with pytest.raises(IntegrityError, match="after the end"):
        decode_listing(good + b"\x00")
    # The time 7 written as int64: a longer form than msgpack writes.
    long_time = good.replace(b"\xa1m\x07", b"\xa1m\xd3" + (7).to_bytes(8, "big"))
    with pytest.raises(IntegrityError, match="time: integer at byte"):
        decode_listing(long_time)
    # -1 written as int8 instead of a negative fixint.
    small = pack({"v": 1, "e": [raw_entry(m=-1)]}).replace(b"\xa1m\xff", b"\xa1m\xd0\xff")
    with pytest.raises(IntegrityError, match="shortest form"):
        decode_listing(small)
    # A 3-byte name in str8 form (msgpack writes fixstr).
    long_name = good.replace(b"\xa1n\xa1a", b"\xa1n\xd9\x01a")
    with pytest.raises(IntegrityError, match="shortest form"):
        decode_listing(long_name)


def test_decoder_bounds_counts_before_allocating() -> None:
    # An array32 header that claims 2**32 - 1 entries in a tiny buffer.
    claim = b"\x82\xa1v\x01\xa1e\xdd\xff\xff\xff\xff"
    with pytest.raises(IntegrityError, match="at most 65536 allowed"):
        decode_listing(claim)
    claim = b"\x82\xa1v\x01\xa1e\xdc\x01\x00"  # 256 entries claimed, none there
    with pytest.raises(IntegrityError, match="cannot fit"):
        decode_listing(claim)
    assert MAX_ENTRIES == 65_536


def test_minimal_entry_fits_the_size_bound() -> None:
    # The decoder's per-entry minimum must never refuse a real listing.
    smallest = pack({"v": 1, "e": [raw_entry("a", t="dir", z=0, m=0, p=0)]})
    assert decode_listing(smallest)[0].name == "a"


# -- fuzzing ---------------------------------------------------------------------------------

names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
    min_size=1,
    max_size=20,
).filter(lambda n: entry_name_problem(n) is None)

entries_st = st.builds(
    DirEntry,
    names,
    st.sampled_from(list(EntryKind)),
    st.integers(0, 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 0o777),
    st.builds(ReadCap, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
)


@given(st.lists(entries_st, max_size=8, unique_by=lambda e: e.name))
def test_any_valid_listing_round_trips(entries: list[DirEntry]) -> None:
    data = encode_listing(entries)
    assert decode_listing(data) == tuple(sorted(entries, key=lambda e: e.name.encode()))
    assert encode_listing(decode_listing(data)) == data


@given(
    st.lists(entries_st, min_size=1, max_size=4, unique_by=lambda e: e.name),
    st.data(),
)
def test_mutated_listings_fail_only_with_integrity_errors(
    entries: list[DirEntry], data: st.DataObject
) -> None:
    good = bytearray(encode_listing(entries))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(0, len(good) - 1)))
        if op == "flip" and good:
            good[at] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            good[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del good[at : at + data.draw(st.integers(1, 9))]
        else:
            del good[at:]
    try:
        decoded = decode_listing(bytes(good))
    except IntegrityError:
        return
    # Whatever was accepted is canonical and valid: it encodes back to the same bytes.
    assert encode_listing(decoded) == bytes(good)


@given(st.binary(max_size=200))
def test_random_bytes_fail_only_with_integrity_errors(data: bytes) -> None:
    try:
        decode_listing(b"\x82\xa1v\x01\xa1e" + data)
    except IntegrityError:
        pass


# -- relative paths of uploads -----------------------------------------------------------------


def test_split_relative_path() -> None:
    assert split_relative_path("a/b/c.txt") == ("a", "b", "c.txt")
    assert split_relative_path("a/b/") == ("a", "b")
    for bad in ("/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "", "a\x00"):
        with pytest.raises(ConfigError):
            split_relative_path(bad)
    with pytest.raises(ConfigError, match="at most 64 parts"):
        split_relative_path("/".join(["d"] * 65))


# -- the restore plan ------------------------------------------------------------------------


def run_walk(walk: FolderWalk, listings: dict[bytes, list[DirEntry]]) -> list[Any]:
    steps: list[Any] = []
    while (step := walk.next()) is not None:
        if isinstance(step, NeedListing):
            walk.feed(step, listings[step.cap.cid])
        else:
            steps.append(step)
    return steps


def test_walk_enters_writes_and_leaves_in_order() -> None:
    sub = entry("sub", EntryKind.DIRECTORY, n=10)
    listings = {cap(1).cid: [entry("a", n=20), sub], cap(10).cid: [entry("b", n=21)]}
    walk = FolderWalk(cap(1))
    steps = run_walk(walk, listings)
    assert [(type(s).__name__, s.path) for s in steps] == [
        ("EnterDir", ()),
        ("PutFile", ("a",)),
        ("EnterDir", ("sub",)),
        ("PutFile", ("sub", "b")),
        ("LeaveDir", ("sub",)),
        ("LeaveDir", ()),
    ]
    assert isinstance(steps[2], EnterDir)
    assert steps[2].entry == sub
    assert isinstance(steps[-1], LeaveDir)
    assert isinstance(steps[1], PutFile)
    assert walk.total_size == 10


def test_walk_refuses_a_directory_that_lists_its_ancestor() -> None:
    loop = entry("again", EntryKind.DIRECTORY, n=1)  # the root's own cap
    with pytest.raises(IntegrityError, match="its own parent"):
        run_walk(FolderWalk(cap(1)), {cap(1).cid: [loop]})


def test_walk_allows_one_subtree_twice_but_bounds_the_total() -> None:
    shared = [entry(f"f{i}", n=30) for i in range(10)]
    root = [entry(f"d{i}", EntryKind.DIRECTORY, n=10) for i in range(5)]
    listings = {cap(1).cid: root, cap(10).cid: shared}
    files = [s for s in run_walk(FolderWalk(cap(1)), listings) if isinstance(s, PutFile)]
    assert len(files) == 50
    with pytest.raises(IntegrityError, match="more than 40 entries"):
        run_walk(FolderWalk(cap(1), max_entries=40), listings)


def test_walk_refuses_a_tree_deeper_than_the_limit() -> None:
    listings = {cap(i).cid: [entry("d", EntryKind.DIRECTORY, n=i + 2)] for i in range(1, 40, 2)}
    listings[cap(41).cid] = []
    with pytest.raises(IntegrityError, match="deeper than 5"):
        run_walk(FolderWalk(cap(1), max_depth=5), listings)


def test_a_directory_root_is_not_a_file_and_the_other_way_round() -> None:
    listing = encode_listing([entry("a")])
    store: dict[bytes, bytes] = {}

    def build(kind: str) -> ReadCap:
        builder = ManifestBuilder(SECRET, chunk_size=64, fanout=4, kind=kind)
        for start in range(0, len(listing), 64):
            sealed = seal_chunk(SECRET, listing[start : start + 64])
            store[sealed.block_id] = sealed.data
            for block_id, data in builder.add(
                sealed.block_id, len(sealed.data), sealed.key, sealed.plaintext_size
            ):
                store[block_id] = data
        blocks, root = builder.finish()
        store.update(blocks)
        return root

    dir_cap = build(KIND_DIRECTORY)
    file_cap = build("file")
    assert dir_cap != file_cap  # the kind is sealed in the root
    with pytest.raises(IntegrityError, match="names a directory"):
        TreeReader(dir_cap, store.__getitem__)
    from shoal.content.walk import FileWalk

    walk = FileWalk(file_cap, kind=KIND_DIRECTORY)
    need = walk.next()
    assert need is not None
    assert not isinstance(need, PutFile)
    with pytest.raises(IntegrityError, match="names a file, not a directory"):
        need.open(store[file_cap.cid])  # type: ignore[union-attr]
    opened = FileWalk(dir_cap, kind=KIND_DIRECTORY)
    step = opened.next()
    opened.feed(step.open(store[dir_cap.cid]))  # type: ignore[union-attr]
    assert opened.info is not None
    assert opened.info.size == len(listing)


@st.composite
def folder_graphs(draw: st.DrawFn) -> dict[bytes, list[DirEntry]]:
    """Random directory graphs over caps 1..n: shared subtrees, self and ancestor links."""
    count = draw(st.integers(1, 6))
    listings: dict[bytes, list[DirEntry]] = {}
    for n in range(1, count + 1):
        names = draw(st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=5))
        entries = []
        for name in names:
            if draw(st.booleans()):
                entries.append(entry(name, EntryKind.FILE, n=100))
            else:
                entries.append(entry(name, EntryKind.DIRECTORY, n=draw(st.integers(1, count))))
        listings[cap(n).cid] = entries
    return listings


@given(folder_graphs(), st.integers(1, 8), st.integers(0, 60))
def test_any_folder_graph_walks_within_its_bounds(
    listings: dict[bytes, list[DirEntry]], max_depth: int, max_entries: int
) -> None:
    walk = FolderWalk(cap(1), max_depth=max_depth, max_entries=max_entries)
    open_dirs: list[tuple[str, ...]] = []
    created = 0
    try:
        while (step := walk.next()) is not None:
            if isinstance(step, NeedListing):
                walk.feed(step, listings[step.cap.cid])
                continue
            if isinstance(step, EnterDir):
                assert step.path[:-1] == (open_dirs[-1] if open_dirs else ())
                open_dirs.append(step.path)
            elif isinstance(step, LeaveDir):
                assert open_dirs.pop() == step.path
            else:
                assert isinstance(step, PutFile)
                assert step.path[:-1] == open_dirs[-1]
            created += 1
            assert len(step.path) <= max_depth + isinstance(step, PutFile)
    except IntegrityError:
        return
    assert not open_dirs  # every directory entered was left
    assert walk.next() is None
    assert created <= 2 * max_entries + 2
