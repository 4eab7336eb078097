"""Hypothesis strategies: valid messages, and structure-aware frames for fuzzing.

``messages`` builds valid messages of every type. ``frame_cases`` builds well-formed frames
(right length prefix, a known frame type) whose headers are generated from each message's
schema: per key a valid value, a value of another type, a "bomb" (a 1,000-deep list, 20,000
empty maps, a string or bin just past its limit, a count just past its limit), or nothing;
plus unknown and duplicate keys and wrong map counts. Most of these get past the frame layer
and into message decoding, which is what the fuzz tests are after. Big values are built from
a drawn size, not drawn element by element, so generating them stays cheap.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import event
from hypothesis import strategies as st

from shoal.protocol import (
    MESSAGES,
    Auth,
    BlockData,
    Error,
    FindNode,
    GetBlock,
    GetPeers,
    HasBlocks,
    HaveBlocks,
    Hello,
    Lease,
    Leased,
    Message,
    Nodes,
    PeerAddress,
    Peers,
    Ping,
    Pong,
    PutBlock,
    PutBlockOk,
    Release,
    Released,
)
from shoal.protocol.messages import MAX_LEASE_SECONDS
from shoal.protocol.registry import IdListPayload, RawPayload
from shoal.protocol.schema import Array, Bin, Bool, Field, Kind, Record, Text, UInt

ids = st.binary(min_size=32, max_size=32)
addr = st.text(max_size=40)
addrs = st.lists(addr, max_size=16).map(tuple)

hellos = st.builds(
    Hello,
    version=st.integers(min_value=0, max_value=2**64 - 1),
    node_id=ids,
    public_key=ids,
    listen_addrs=addrs,
    network=st.text(min_size=1, max_size=64),
    nonce=ids,
)
auths = st.builds(Auth, signature=st.binary(min_size=64, max_size=64), mac=st.none() | ids)
errors = st.builds(Error, code=st.text(min_size=1, max_size=64), message=st.text(max_size=1024))
peers = st.builds(
    Peers,
    peers=st.lists(
        st.builds(PeerAddress, node_id=ids, addrs=st.lists(addr, max_size=3).map(tuple)),
        max_size=40,
    ).map(tuple),
)
nodes = st.builds(
    Nodes,
    nodes=st.lists(
        st.builds(PeerAddress, node_id=ids, addrs=st.lists(addr, max_size=2).map(tuple)),
        max_size=24,
    ).map(tuple),
)
data = st.binary(max_size=70_000)

messages: st.SearchStrategy[Message] = st.one_of(
    hellos,
    auths,
    errors,
    st.just(Ping()),
    st.just(Pong()),
    st.just(GetPeers()),
    peers,
    st.builds(FindNode, target=ids),
    nodes,
    st.builds(PutBlock, block_id=ids, data=data, lease=st.none() | st.booleans()),
    st.builds(PutBlockOk, block_id=ids),
    st.builds(GetBlock, block_id=ids),
    st.builds(BlockData, block_id=ids, data=data),
    st.builds(
        HasBlocks,
        block_ids=st.lists(ids, max_size=200).map(tuple),
        lease=st.none() | st.booleans(),
    ),
    st.builds(
        Lease,
        root=ids,
        seconds=st.integers(0, MAX_LEASE_SECONDS),
        block_ids=st.lists(ids, max_size=200).map(tuple),
        owner=st.none() | ids,
    ),
    st.builds(Leased, held=st.lists(st.booleans(), max_size=4096).map(tuple)),
    st.builds(Release, root=ids),
    st.builds(Released, count=st.integers(0, 2**64 - 1)),
    st.builds(HaveBlocks, present=st.lists(st.booleans(), max_size=4096).map(tuple)),
)

# -- arbitrary msgpack values ---------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
#: Any msgpack value with str keys (small): the "wrong type" of a field.
msgpack_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

# -- raw msgpack building blocks (bytes, so nesting and counts are not limited by packb) ----


def _array_prefix(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 2**16:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def _map_prefix(count: int) -> bytes:
    if count < 16:
        return bytes([0x80 | count])
    if count < 2**16:
        return b"\xde" + struct.pack(">H", count)
    return b"\xdf" + struct.pack(">I", count)


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


_BOMBS = ("deep-list", "deep-map", "empty-maps", "empty-lists", "many-ints")


def _bomb(kind: str, size: int) -> bytes:
    """A value that is cheap to write and costly to decode naively."""
    if kind == "deep-list":
        return b"\x91" * size + b"\xc0"
    if kind == "deep-map":
        return b"\x81\xa1k" * size + b"\xc0"
    if kind == "empty-maps":
        return _array_prefix(size) + b"\x80" * size
    if kind == "empty-lists":
        return _array_prefix(size) + b"\x90" * size
    return _array_prefix(size) + b"\x01" * size


def _valid_wire(kind: Kind) -> st.SearchStrategy[Any]:
    """A valid wire value of ``kind``; counts up to the limit, built from a drawn size."""
    if isinstance(kind, Bin):
        return st.binary(min_size=kind.size, max_size=kind.size)
    if isinstance(kind, Text):
        low, high = kind.min_chars, kind.max_chars
        return st.text(min_size=low, max_size=min(high, 24)) | st.just("\u00e9" * high)
    if isinstance(kind, UInt):
        # Mostly 1, the protocol version, so HELLO's later checks are reached too.
        return st.just(1) | st.just(1) | st.integers(min_value=0, max_value=kind.max_value)
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, Array):
        item = _valid_wire(kind.item)
        few = st.lists(item, max_size=min(kind.max_items, 4))
        many = st.tuples(st.integers(0, kind.max_items), item).map(lambda t: [t[1]] * t[0])
        return few | many
    if isinstance(kind, Record):
        return st.fixed_dictionaries({f.name: _valid_wire(f.kind) for f in kind.fields})
    raise AssertionError(f"no strategy for {kind}")


def _past_limit(kind: Kind) -> st.SearchStrategy[bytes]:
    """The encoding of a value just past ``kind``'s limit (or of the wrong size)."""
    if isinstance(kind, Bin):
        return st.sampled_from([kind.size - 1, kind.size + 1, 0]).map(lambda n: _pack(bytes(n)))
    if isinstance(kind, Text):
        return st.just(_pack("x" * (kind.max_chars + 1)))
    if isinstance(kind, Array):
        return st.just(_array_prefix(kind.max_items + 1) + b"\xc0" * (kind.max_items + 1))
    if isinstance(kind, UInt):
        return st.just(_pack(-1))
    return st.just(_pack(None))


@st.composite
def _value_bytes(draw: st.DrawFn, field: Field) -> bytes | None:
    """The encoded value of one key, or None to leave the key out."""
    choice = draw(st.sampled_from(["valid"] * 5 + ["wrong", "bomb", "limit", "missing"]))
    event(f"value: {choice}")
    if choice == "valid":
        return _pack(draw(_valid_wire(field.kind)))
    if choice == "wrong":
        return _pack(draw(msgpack_values))
    if choice == "bomb":
        kind = draw(st.sampled_from(_BOMBS))
        size = draw(st.integers(1, 1100) if kind.startswith("deep") else st.integers(1, 20_000))
        return _bomb(kind, size)
    if choice == "limit":
        return draw(_past_limit(field.kind))
    return None


@st.composite
def header_bytes(draw: st.DrawFn, cls: type[Message]) -> bytes:
    """A msgpack header for ``cls`` built key by key (see the module docstring)."""
    entries: list[tuple[bytes, bytes]] = []
    for field in cls.HEADER:
        value = draw(_value_bytes(field))
        if value is not None:
            entries.append((_pack(field.name), value))
    for _ in range(draw(st.integers(0, 2) if draw(st.integers(0, 9)) == 0 else st.just(0))):
        names = [f.name for f in cls.HEADER] or ["x"]
        key = draw(st.sampled_from(names) | st.text(max_size=6))  # duplicate or unknown
        event("header: extra key")
        entries.append((_pack(key), _pack(draw(msgpack_values))))
    count = len(entries)
    if draw(st.integers(0, 19)) == 0:
        event("header: wrong map count")
        count += draw(st.sampled_from([-1, 1]))
    body = b"".join(k + v for k, v in entries)
    header = _map_prefix(max(count, 0)) + body
    if len(header) > 0xFFFF:
        event("header: truncated to 65535 bytes")
        header = header[:0xFFFF]
    return header


@st.composite
def payload_for(draw: st.DrawFn, cls: type[Message]) -> bytes:
    """A payload: usually fitting the class, sometimes not."""
    if isinstance(cls.PAYLOAD, IdListPayload):
        count = draw(st.integers(0, cls.PAYLOAD.max_items + 1))
        extra = draw(st.sampled_from([0] * 8 + [1, 31]))
        return bytes(count * cls.PAYLOAD.item_size + extra)
    if isinstance(cls.PAYLOAD, RawPayload):
        return draw(st.binary(max_size=300))
    return draw(st.sampled_from([b""] * 9 + [b"x"]))


@dataclass(frozen=True)
class FrameCase:
    """A generated frame and what it was meant to be."""

    cls: type[Message]
    request_id: int
    header: bytes
    payload: bytes

    def encode(self) -> bytes:
        length = 7 + len(self.header) + len(self.payload)
        prefix = struct.pack(">IBIH", length, self.cls.CODE, self.request_id, len(self.header))
        return prefix + self.header + self.payload


IdsFor = Callable[[type[Message]], st.SearchStrategy[int]]


def any_id(cls: type[Message]) -> st.SearchStrategy[int]:
    return st.integers(0, 2**32 - 1)


@st.composite
def frame_cases(
    draw: st.DrawFn,
    classes: tuple[type[Message], ...] = MESSAGES.classes,
    request_ids: IdsFor = any_id,
) -> FrameCase:
    """A well-formed frame of a known type with a generated header and payload.

    ``request_ids`` gives the ids to draw for each message type (so that a test can make
    most frames plausible for the connection that receives them).
    """
    cls = draw(st.sampled_from(classes))
    event(f"type: {cls.NAME}")
    return FrameCase(cls, draw(request_ids(cls)), draw(header_bytes(cls)), draw(payload_for(cls)))


_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(min_value=0),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    """Apply byte-level mutations (flip a bit, set, insert, delete, truncate)."""
    buf = bytearray(data)
    for op, pos, value in ops:
        if not buf:
            break
        i = pos % len(buf)
        if op == "flip":
            buf[i] ^= 1 << (value % 8)
        elif op == "set":
            buf[i] = value
        elif op == "insert":
            buf[i:i] = bytes([value]) * (1 + value % 4)
        elif op == "delete":
            del buf[i : i + 1 + value % 8]
        else:
            del buf[i:]
    return bytes(buf)


mutations = _MUTATIONS


@st.composite
def mutated_cases(draw: st.DrawFn, request_ids: IdsFor = any_id) -> FrameCase:
    """A valid message whose header (or payload) bytes are mutated, in a well-formed frame."""
    message = draw(messages)
    cls = type(message)
    header = cls.schema.encode(message)
    payload = (
        b"" if cls.PAYLOAD is None else cls.PAYLOAD.to_wire(getattr(message, cls.PAYLOAD.field))
    )
    ops = draw(mutations)
    if payload and draw(st.booleans()):
        payload = mutate(payload, ops)
        event("mutated: payload")
    else:
        header = mutate(header, ops) or b"\x80"
        event("mutated: header")
    return FrameCase(cls, draw(request_ids(cls)), header[:0xFFFF], payload)
