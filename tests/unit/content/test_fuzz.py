"""Structure-aware fuzzing of the content decoders and walks.

Random bytes almost never get past a decoder's first byte. These strategies build *valid*
manifests, sealed parts and whole trees, then mutate fields, counts, nesting, types and
encodings, so that most examples reach the deep checks (each test measures that). Whatever the
input, only IntegrityError (CorruptBlock included) or InvalidCapability may come out.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content import (
    MAX_FILE_SIZE,
    Manifest,
    ReadCap,
    Redundancy,
    TreeReader,
    encrypt,
    manifest_key,
    open_sealed,
    walk_blocks,
)
from shoal.content.manifest import encode_sealed
from shoal.errors import CorruptBlock, IntegrityError, InvalidCapability

from .forge import Ref, chunk, forge
from .helpers import SECRET, CountingFetch

# -- msgpack items as bytes, so that mutations can be any bytes (deep nesting, long forms) -----

Item = bytes  # one encoded msgpack item


def enc(value: object) -> Item:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def deep(levels: int) -> Item:
    return b"\x91" * levels + b"\x00"


def long_uint(value: int) -> Item:
    """A non-canonical (too long) encoding of a small unsigned integer."""
    return b"\xcf" + value.to_bytes(8, "big")


nasty_items: st.SearchStrategy[Item] = st.one_of(
    st.integers(-(2**63), 2**64 - 1).map(enc),
    st.floats(allow_nan=True).map(enc),
    st.text(max_size=40).map(enc),
    st.binary(max_size=40).map(enc),
    st.sampled_from([None, True, False, [], {}, "replicate", "file", "dir"]).map(enc),
    st.integers(1, 1200).map(deep),
    st.integers(0, 300).map(long_uint),
    st.lists(st.integers(0, 300), max_size=5).map(enc),
    st.dictionaries(st.sampled_from("vdzfrcstk"), st.integers(0, 9), max_size=4).map(enc),
    st.binary(min_size=1, max_size=6),  # raw garbage, possibly a truncated item
)


def map_bytes(fields: list[tuple[str, Item]], count: int | None = None) -> bytes:
    header = len(fields) if count is None else count
    return (
        enc({})[:0]
        + bytes([0x80 | min(header, 15)])
        + b"".join(enc(name) + value for name, value in fields)
    )


@st.composite
def mutated_fields(draw: st.DrawFn, fields: list[tuple[str, Item]]) -> list[tuple[str, Item]]:
    """1 to 3 mutations of an ordered field list: replace, drop, duplicate, swap, add."""
    fields = list(fields)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(fields) - 1)) if fields else 0
        op = draw(st.sampled_from(["replace"] * 6 + ["drop", "dup", "swap", "add"]))
        if not fields:
            op = "add"
        if op == "replace":
            fields[index] = (fields[index][0], draw(nasty_items))
        elif op == "drop":
            del fields[index]
        elif op == "dup":
            fields.insert(index, fields[index])
        elif op == "swap":
            other = draw(st.integers(0, len(fields) - 1))
            fields[index], fields[other] = fields[other], fields[index]
        else:
            fields.insert(index, (draw(st.sampled_from("vdzfrcstkx")), draw(nasty_items)))
    return fields


# -- manifests -----------------------------------------------------------------------------------


@st.composite
def valid_manifest_fields(draw: st.DrawFn) -> list[tuple[str, Item]]:
    depth = draw(st.integers(0, 2))
    chunk_size = draw(st.sampled_from([1, 4, 1000, 1 << 20]))
    fanout = draw(st.integers(2, 6))
    count = draw(st.integers(1 if depth else 0, fanout))
    ids = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=count, max_size=count))
    if depth == 0:
        last = draw(st.integers(17, chunk_size + 16))
        sizes = [chunk_size + 16] * (count - 1) + [last] * (count > 0)
    else:
        sizes = draw(st.lists(st.integers(1, 4 << 20), min_size=count, max_size=count))
    return [
        ("v", enc(2)),
        ("d", enc(depth)),
        ("z", enc(chunk_size)),
        ("f", enc(fanout)),
        ("r", enc({"t": "replicate", "r": draw(st.integers(1, 255))})),
        ("c", enc([[i, s] for i, s in zip(ids, sizes, strict=True)])),
        ("s", enc(draw(st.binary(min_size=16, max_size=64)))),
    ]


@st.composite
def children_mutation(draw: st.DrawFn, fields: list[tuple[str, Item]]) -> list[tuple[str, Item]]:
    """Mutate inside the children array: entries, counts, sizes, types, nesting."""
    obj = msgpack.unpackb(dict(fields)["c"], raw=False)
    entries: list[Any] = obj
    op = draw(st.sampled_from(["size", "id", "shape", "count", "nest", "item"]))
    index = draw(st.integers(0, max(0, len(entries) - 1)))
    raw_children: Item | None = None
    if not entries or op == "count":
        entries = entries + [[bytes(32), 20]] * draw(st.integers(1, 8))
    elif op == "size":
        entries[index] = [entries[index][0], draw(st.integers(-5, 1 << 33))]
    elif op == "id":
        entries[index] = [draw(st.binary(max_size=40)), entries[index][1]]
    elif op == "shape":
        entries[index] = draw(st.sampled_from([[], [bytes(32)], [bytes(32), 1, 2], {}, None]))
    elif op == "nest":
        body = b"".join(enc(e) for e in entries[:index]) + deep(draw(st.integers(2, 1100)))
        raw_children = bytes([0x90 | min(index + 1, 15)]) + body
    else:
        items = [enc(e) for e in entries]
        items[index] = draw(nasty_items)
        raw_children = bytes([0x90 | min(len(items), 15)]) + b"".join(items)
    value = enc(entries) if raw_children is None else raw_children
    return [(name, value if name == "c" else item) for name, item in fields]


@st.composite
def mutated_manifest(draw: st.DrawFn) -> bytes:
    fields = draw(valid_manifest_fields())
    kind = draw(st.sampled_from(["fields", "fields", "children", "children", "bytes"]))
    if kind == "fields":
        # Half the time the map header keeps its count, so a dropped or added field is found
        # where it is (deep) rather than by the count (shallow).
        return map_bytes(draw(mutated_fields(fields)), 7 if draw(st.booleans()) else None)
    if kind == "children":
        return map_bytes(draw(children_mutation(fields)))
    data = bytearray(map_bytes(fields))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


def _stage(message: str) -> str:
    shallow = ("manifest version", "fields, expected", "small map at byte 0", "'v'", "format ver")
    return "shallow" if any(s in message for s in shallow) else "deep"


def test_mutated_manifests_decode_or_raise_integrity_error() -> None:
    stages: Counter[str] = Counter()

    @settings(max_examples=400, database=None, derandomize=True)  # fixed counts below
    @given(mutated_manifest())
    def run(data: bytes) -> None:
        try:
            manifest = Manifest.decode(data)
        except IntegrityError as exc:
            message = str(exc)
            assert len(message) < 250
            stages[_stage(message)] += 1
            return
        # Canonical: whatever decodes has exactly one encoding, the one it came from.
        assert manifest.encode() == data
        stages["decoded"] += 1

    run()
    total = sum(stages.values())
    assert stages["deep"] + stages["decoded"] >= 0.55 * total, stages


# -- sealed parts --------------------------------------------------------------------------------


@st.composite
def mutated_sealed(draw: st.DrawFn) -> tuple[Manifest, bytes, bytes, bool]:
    """A manifest whose sealed part is a mutated (validly encrypted) map."""
    count = draw(st.integers(0, 4))
    keys = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=count, max_size=count))
    root = draw(st.booleans())
    fields: list[tuple[str, Item]] = [("k", enc(keys))]
    if root:
        fields = [("t", enc("file")), ("z", enc(draw(st.integers(0, 99)))), *fields]
    if draw(st.integers(0, 9)):
        fields = draw(mutated_fields(fields))
    plain = map_bytes(fields)
    key = manifest_key(SECRET, plain)
    ids = b"".join(bytes([i]) * 32 for i in range(count))
    manifest = Manifest(0, 4, 4, Redundancy(), ids, array("L", [20] * count), encrypt(key, plain))
    return manifest, key, plain, root


def test_mutated_sealed_parts_open_or_raise_integrity_error() -> None:
    stages: Counter[str] = Counter()

    @settings(max_examples=300, database=None, derandomize=True)  # fixed counts below
    @given(mutated_sealed())
    def run(example: tuple[Manifest, bytes, bytes, bool]) -> None:
        manifest, key, plain, root = example
        try:
            part = open_sealed(manifest, key, root=root)
        except IntegrityError as exc:
            refused: IntegrityError | None = exc
        else:
            refused = None
        if refused is not None:
            assert len(str(refused)) < 250
            stages["refused"] += 1
            return
        keys = [part.key(i) for i in range(manifest.child_count)]
        assert encode_sealed(keys, part.size) == plain
        stages["opened"] += 1

    run()
    assert stages["opened"] >= 10, stages  # valid ones, too, get through
    assert stages["refused"] >= 100, stages


# -- whole trees ---------------------------------------------------------------------------------


@dataclass
class Leaf:
    data: bytes
    stored_lie: int = 0
    key_lie: bool = False


@dataclass
class Node:
    depth: int
    chunk_size: int
    fanout: int
    children: list[Leaf | Node]
    size: int | None = None  # the root's
    stored_lie: int = 0
    key_lie: bool = False
    extra: dict[str, int] = field(default_factory=dict)


def model(data: bytes, chunk_size: int, fanout: int) -> Node:
    """The honest tree of ``data`` (batch construction, as the format says)."""
    level: list[Leaf | Node] = [
        Leaf(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)
    ]
    depth = 0
    while len(level) > fanout:
        level = [
            Node(depth, chunk_size, fanout, level[i : i + fanout])
            for i in range(0, len(level), fanout)
        ]
        depth += 1
    return Node(depth, chunk_size, fanout, level, size=len(data))


def nodes_of(node: Node) -> list[Node]:
    out = [node]
    for child in node.children:
        if isinstance(child, Node):
            out.extend(nodes_of(child))
    return out


def content_of(node: Node) -> bytes:
    return b"".join(c.data if isinstance(c, Leaf) else content_of(c) for c in node.children)


def serialize(node: Node, store: dict[bytes, bytes]) -> Ref:
    refs: list[Ref] = []
    for child in node.children:
        ref = chunk(store, child.data) if isinstance(child, Leaf) else serialize(child, store)
        key = hashlib.sha256(ref[2]).digest() if child.key_lie else ref[2]
        refs.append((ref[0], max(1, ref[1] + child.stored_lie), key))
    return forge(store, node.depth, node.chunk_size, node.fanout, refs, node.size)


TREE_MUTATIONS = [
    "depth",
    "chunk",
    "fanout",
    "size",
    "drop",
    "dup",
    "swap",
    "leaf",
    "stored",
    "key",
    "skip",
]


@st.composite
def mutated_tree(draw: st.DrawFn) -> tuple[Node, int]:
    data = draw(st.binary(max_size=48))
    chunk_size = draw(st.integers(1, 5))
    fanout = draw(st.integers(2, 4))
    root = model(data, chunk_size, fanout)
    mutations = draw(st.sampled_from([0, 1, 1, 2, 2, 3]))
    for _ in range(mutations):
        target = draw(st.sampled_from(nodes_of(root)))
        op = draw(st.sampled_from(TREE_MUTATIONS))
        children = target.children
        index = draw(st.integers(0, max(0, len(children) - 1)))
        if op == "depth":
            target.depth = max(0, target.depth + draw(st.sampled_from([-1, 1])))
        elif op == "chunk":
            target.chunk_size = max(1, target.chunk_size + draw(st.sampled_from([-1, 1])))
        elif op == "fanout":
            target.fanout = max(2, target.fanout + draw(st.sampled_from([-1, 1])))
        elif op == "size":
            size = root.size or 0
            root.size = draw(st.sampled_from([0, max(0, size - 1), size + 1, MAX_FILE_SIZE]))
        elif not children:
            children.append(Leaf(b"x"))
        elif op == "drop":
            del children[index]
        elif op == "dup":
            children.insert(index, children[index])
        elif op == "swap":
            other = draw(st.integers(0, len(children) - 1))
            children[index], children[other] = children[other], children[index]
        elif op == "leaf":
            leaf = children[index]
            if isinstance(leaf, Leaf):
                change = draw(st.sampled_from(["cut", "grow", "empty"]))
                data = {"cut": leaf.data[:-1], "grow": leaf.data + b"!", "empty": b""}[change]
                children[index] = replace(leaf, data=data)
        elif op == "stored":
            children[index] = replace(children[index], stored_lie=draw(st.sampled_from([-1, 1])))
        elif op == "key":
            children[index] = replace(children[index], key_lie=True)
        else:  # skip a level: a grandchild where a child belongs
            child = children[index]
            if isinstance(child, Node) and child.children:
                children[index] = child.children[0]
    return root, mutations


def test_mutated_trees_read_right_or_raise_integrity_errors() -> None:
    stages: Counter[str] = Counter()

    @settings(max_examples=300, database=None, derandomize=True)  # fixed counts below
    @given(mutated_tree())
    def run(example: tuple[Node, int]) -> None:
        root, mutations = example
        store: dict[bytes, bytes] = {}
        ref = serialize(root, store)
        cap = ReadCap(ref[0], ref[2])
        fetch = CountingFetch(store)
        bound = sum(1 + len(n.children) for n in nodes_of(root))
        out = bytearray()
        size: int | None = None
        refused: Exception | None = None
        opened = False
        try:
            reader = TreeReader(cap, fetch)
            opened = True
            size = reader.info.size
            for data_ref in reader:
                out += data_ref.open(fetch(data_ref.block_id))
                assert fetch.calls <= bound
        except (IntegrityError, InvalidCapability) as exc:
            refused = exc
        if refused is not None:
            # Every block is intact: a lie is never mistaken for corruption.
            assert not isinstance(refused, CorruptBlock), refused
            assert len(str(refused)) < 250
            # Deep: refused by the walk's checks, not by the root's decoder.
            shallow = not opened and "malformed" in str(refused)
            stages["refused early" if shallow else "refused deep"] += 1
        else:
            # A tree that reads reads as what its blocks say, and as long as its root says.
            assert bytes(out) == content_of(root)
            assert len(out) == size
            stages["read" if mutations else "honest"] += 1
        keyless = CountingFetch(store)
        refused = None
        try:
            for _ in walk_blocks(cap.cid, keyless):
                assert keyless.calls <= len(store)
        except IntegrityError as exc:
            refused = exc
        assert not isinstance(refused, CorruptBlock), refused

    run()
    total = sum(stages.values())
    assert stages["refused early"] <= 0.3 * total, stages  # most reach the walk's checks
    assert stages["refused deep"] >= 0.3 * total, stages
