"""Messages: round trips through the frame codec and field validation."""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol import (
    DEFAULT_MAX_HEADER_SIZE,
    MESSAGES,
    REQUEST_TYPES,
    RESPONSE_FOR,
    Auth,
    BlockData,
    Error,
    FindNode,
    Frame,
    FrameDecoder,
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
    Registry,
    Release,
    Released,
    decode_message,
    encode_message,
)
from shoal.protocol.messages import MAX_BLOCK_IDS, MAX_NODE_ADDRS, MAX_NODES
from shoal.protocol.schema import Bin, Field

from .strategies import messages

ID = hashlib.sha256(b"id").digest()
HELLO_HEADER: dict[str, Any] = {
    "version": 1,
    "node_id": ID,
    "public_key": ID,
    "listen_addrs": ["127.0.0.1:1"],
    "network": "shoal",
    "nonce": ID,
}


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Frame]:
    decoder = FrameDecoder()
    frames = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        decoder.receive_data(data[start:end])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert decoder.buffered == 0
    return frames


@settings(max_examples=150, deadline=timedelta(milliseconds=500))
@given(
    batch=st.lists(st.tuples(st.integers(0, 2**32 - 1), messages), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_round_trip_in_random_pieces(batch: list[tuple[int, Message]], cuts: list[int]) -> None:
    data = b"".join(b"".join(encode_message(rid, msg)) for rid, msg in batch)
    frames = feed_in_pieces(data, cuts)
    assert [(f.request_id, decode_message(f)) for f in frames] == batch


def test_registry_is_the_one_table() -> None:
    """Codes, names and the request/response table all come from the registered classes."""
    classes = MESSAGES.classes
    assert [c.CODE for c in classes] == [
        *(1, 2, 3, 4, 5, 6, 7, 8, 9),
        *(16, 17, 18, 19, 20, 21, 22, 23, 24, 25),
    ]
    assert MESSAGES.codes == {c.CODE for c in classes}
    assert len({c.NAME for c in classes}) == len(classes)
    assert all(MESSAGES.get(c.CODE) is c for c in classes)
    assert MESSAGES.get(0) is None
    assert MESSAGES.get(99) is None
    # Which requests carry bulk data and whose answers do: the transport's service classes.
    assert {c for c in REQUEST_TYPES if c.carries_bulk()} == {PutBlock, HasBlocks, Lease}
    assert {c for c in REQUEST_TYPES if c.answer_carries_bulk()} == {GetBlock}


def test_request_response_table() -> None:
    assert {
        Ping: Pong,
        GetPeers: Peers,
        FindNode: Nodes,
        PutBlock: PutBlockOk,
        GetBlock: BlockData,
        HasBlocks: HaveBlocks,
        Lease: Leased,
        Release: Released,
    } == RESPONSE_FOR
    assert frozenset(RESPONSE_FOR) == REQUEST_TYPES


def test_block_payload_is_raw_and_not_copied() -> None:
    data = bytes(range(256)) * 4096
    parts = encode_message(5, PutBlock(ID, data))
    assert parts[1] is data
    header = msgpack.unpackb(parts[0][11:])
    assert header == {"block_id": ID}


def test_has_blocks_packs_ids_in_payload() -> None:
    ids = tuple(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(MAX_BLOCK_IDS))
    parts = encode_message(1, HasBlocks(ids))
    assert bytes(parts[1]) == b"".join(ids)
    frame = feed_in_pieces(b"".join(parts), [])[0]
    assert decode_message(frame) == HasBlocks(ids)
    reply = HaveBlocks(tuple(i % 3 == 0 for i in range(MAX_BLOCK_IDS)))
    assert decode_message(feed_in_pieces(b"".join(encode_message(1, reply)), [])[0]) == reply


def test_lease_round_trip_and_answer_check() -> None:
    ids = tuple(hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(3))
    for msg in (Lease(ID, 60, ids), Lease(ID, 60, ids, owner=ID), Release(ID), Released(7)):
        assert decode_message(feed_in_pieces(b"".join(encode_message(1, msg)), [])[0]) == msg
    check = Lease(ID, 60, ids).answer_check()
    assert check(Leased((True, False, True))) is None
    assert check(Leased((True,))) is not None
    # The optional lease flag is absent from the header unless set.
    assert msgpack.unpackb(encode_message(1, HasBlocks(ids))[0][11:]) == {}
    assert msgpack.unpackb(encode_message(1, HasBlocks(ids, lease=True))[0][11:]) == {"lease": True}


def frame(type_: int, header: dict[str, Any], payload: bytes = b"") -> Frame:
    return Frame(type_, 0, msgpack.packb(header), payload)


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            del out[key]
        else:
            out[key] = value
    return out


_DROP = object()
BAD_FRAMES = [
    ("hello-missing-nonce", frame(Hello.CODE, with_(HELLO_HEADER, nonce=_DROP))),
    ("hello-short-id", frame(Hello.CODE, with_(HELLO_HEADER, node_id=ID[:31]))),
    ("hello-long-key", frame(Hello.CODE, with_(HELLO_HEADER, public_key=ID + b"x"))),
    ("hello-str-nonce", frame(Hello.CODE, with_(HELLO_HEADER, nonce="x" * 32))),
    ("hello-neg-version", frame(Hello.CODE, with_(HELLO_HEADER, version=-1))),
    ("hello-bool-version", frame(Hello.CODE, with_(HELLO_HEADER, version=True))),
    ("hello-float-version", frame(Hello.CODE, with_(HELLO_HEADER, version=1.0))),
    ("hello-17-addrs", frame(Hello.CODE, with_(HELLO_HEADER, listen_addrs=["a"] * 17))),
    ("hello-long-addr", frame(Hello.CODE, with_(HELLO_HEADER, listen_addrs=["a" * 256]))),
    ("hello-int-addr", frame(Hello.CODE, with_(HELLO_HEADER, listen_addrs=[1]))),
    ("hello-addrs-str", frame(Hello.CODE, with_(HELLO_HEADER, listen_addrs="a"))),
    ("hello-long-network", frame(Hello.CODE, with_(HELLO_HEADER, network="n" * 65))),
    ("hello-empty-network", frame(Hello.CODE, with_(HELLO_HEADER, network=""))),
    ("hello-payload", frame(Hello.CODE, HELLO_HEADER, b"x")),
    ("auth-short-sig", frame(Auth.CODE, {"signature": bytes(63)})),
    ("auth-no-sig", frame(Auth.CODE, {})),
    ("auth-nil-mac", frame(Auth.CODE, {"signature": bytes(64), "mac": None})),
    ("auth-short-mac", frame(Auth.CODE, {"signature": bytes(64), "mac": bytes(31)})),
    ("error-empty-code", frame(Error.CODE, {"code": "", "message": ""})),
    ("error-long-code", frame(Error.CODE, {"code": "c" * 65, "message": ""})),
    ("error-long-message", frame(Error.CODE, {"code": "c", "message": "m" * 1025})),
    ("error-bytes-message", frame(Error.CODE, {"code": "c", "message": b"m"})),
    ("ping-payload", frame(Ping.CODE, {}, b"x")),
    ("peers-257", frame(Peers.CODE, {"peers": [{"node_id": ID, "addrs": []}] * 257})),
    ("peers-not-map", frame(Peers.CODE, {"peers": [[ID, []]]})),
    ("peers-short-id", frame(Peers.CODE, {"peers": [{"node_id": ID[:5], "addrs": []}]})),
    ("peers-17-addrs", frame(Peers.CODE, {"peers": [{"node_id": ID, "addrs": ["a"] * 17}]})),
    ("peers-missing", frame(Peers.CODE, {})),
    ("put-no-id", frame(PutBlock.CODE, {}, b"data")),
    ("put-short-id", frame(PutBlock.CODE, {"block_id": ID[:16]}, b"data")),
    ("get-payload", frame(GetBlock.CODE, {"block_id": ID}, b"x")),
    ("ok-str-id", frame(PutBlockOk.CODE, {"block_id": "x" * 32})),
    ("has-ragged", frame(HasBlocks.CODE, {}, bytes(33))),
    ("has-too-many", frame(HasBlocks.CODE, {}, bytes(32 * (MAX_BLOCK_IDS + 1)))),
    ("have-int", frame(HaveBlocks.CODE, {"present": [1]})),
    ("have-too-many", frame(HaveBlocks.CODE, {"present": [True] * (MAX_BLOCK_IDS + 1)})),
    ("have-payload", frame(HaveBlocks.CODE, {"present": []}, b"x")),
    ("put-lease-int", frame(PutBlock.CODE, {"block_id": ID, "lease": 1}, b"data")),
    ("has-lease-nil", frame(HasBlocks.CODE, {"lease": None}, bytes(32))),
    ("lease-no-root", frame(Lease.CODE, {"seconds": 1}, bytes(32))),
    ("lease-negative", frame(Lease.CODE, {"root": ID, "seconds": -1}, bytes(32))),
    ("lease-too-long", frame(Lease.CODE, {"root": ID, "seconds": 366 * 86400 + 1}, b"")),
    ("lease-float", frame(Lease.CODE, {"root": ID, "seconds": 1.5}, b"")),
    ("lease-short-owner", frame(Lease.CODE, {"root": ID, "seconds": 1, "owner": ID[:31]})),
    ("lease-ragged", frame(Lease.CODE, {"root": ID, "seconds": 1}, bytes(33))),
    ("lease-too-many", frame(Lease.CODE, {"root": ID, "seconds": 1}, bytes(32 * 4097))),
    ("lease-extra-key", frame(Lease.CODE, {"root": ID, "seconds": 1, "x": 1})),
    ("leased-int", frame(Leased.CODE, {"held": [1]})),
    ("release-payload", frame(Release.CODE, {"root": ID}, b"x")),
    ("release-short", frame(Release.CODE, {"root": ID[:8]})),
    ("released-negative", frame(Released.CODE, {"count": -1})),
]


@pytest.mark.parametrize("bad", [f for _, f in BAD_FRAMES], ids=[n for n, _ in BAD_FRAMES])
def test_decode_refuses(bad: Frame) -> None:
    """Refused by the schema, or earlier by the limits derived from it (the bounded decoder
    stops at the first string, bin or array longer than any valid one)."""
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(bad)
    assert info.value.code in ("malformed-message", "malformed-header")


@pytest.mark.parametrize(
    "bad",
    [
        frame(Hello.CODE, with_(HELLO_HEADER, future={"x": [1]})),
        frame(Ping.CODE, {"extra": 1}),
        frame(Peers.CODE, {"peers": [{"node_id": ID, "addrs": ["a"], "rtt": 3}]}),
        frame(Auth.CODE, {"signature": bytes(64), "MAC": bytes(32)}),
    ],
    ids=["hello", "ping", "nested-peer", "auth-case"],
)
def test_unknown_keys_are_refused(bad: Frame) -> None:
    """A key this version does not know is refused, also inside nested maps."""
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(bad)
    assert info.value.code in ("malformed-message", "malformed-header", "header-too-large")


def test_registering_a_bad_declaration_fails_at_import() -> None:
    """The registry checks a class's declaration when it is registered."""
    registry = Registry()
    registry.register(Pong)

    @dataclass(frozen=True, slots=True)
    class Undeclared(Message):
        CODE: ClassVar[int] = 40
        NAME: ClassVar[str] = "UNDECLARED"
        block_id: bytes  # not named in HEADER

    with pytest.raises(LocalProtocolError, match="name every field"):
        registry.register(Undeclared)

    @dataclass(frozen=True, slots=True)
    class Clash(Message):
        CODE: ClassVar[int] = Pong.CODE
        NAME: ClassVar[str] = "CLASH"

    with pytest.raises(LocalProtocolError, match="taken"):
        registry.register(Clash)

    @dataclass(frozen=True, slots=True)
    class Orphan(Message):
        CODE: ClassVar[int] = 41
        NAME: ClassVar[str] = "ORPHAN"
        HEADER: ClassVar[tuple[Field, ...]] = (Field("block_id", Bin(32)),)
        RESPONSE: ClassVar[type[Message] | None] = Peers  # not in this registry
        block_id: bytes

    with pytest.raises(LocalProtocolError, match="response type first"):
        registry.register(Orphan)
    assert registry.codes == {Pong.CODE}


@pytest.mark.parametrize(
    "msg",
    [
        Hello(1, ID[:31], ID, (), "n", ID),
        Hello(1, ID, ID, ["a"], "n", ID),  # type: ignore[arg-type]
        Hello(-1, ID, ID, (), "n", ID),
        Hello(1, ID, ID, ("a",) * 17, "n", ID),
        Auth(bytes(64), bytes(5)),
        Error("", "m"),
        Error("c", "m" * 1025),
        PutBlock(ID, bytearray(b"x")),  # type: ignore[arg-type]
        GetBlock(b""),
        HasBlocks((ID,) * (MAX_BLOCK_IDS + 1)),
        HaveBlocks((1,)),  # type: ignore[arg-type]
        Lease(ID, 1, (ID,) * (MAX_BLOCK_IDS + 1)),
        Lease(ID, -1, ()),
        Lease(ID, 1, (), owner=ID[:3]),
        Release(b""),
        Released(-1),
        Peers((PeerAddress(ID, ("a",) * 17),)),
        Peers(((ID, ()),)),  # type: ignore[arg-type]
        "not a message",
    ],
)
def test_encode_refuses(msg: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(1, msg)


def test_peers_too_large_for_header_is_a_local_error() -> None:
    big = Peers(tuple(PeerAddress(ID, ("a" * 255,) * 16) for _ in range(256)))
    with pytest.raises(LocalProtocolError, match="header"):
        encode_message(1, big)


def frame_of(message: Message) -> Frame:
    [frame] = feed_in_pieces(b"".join(encode_message(2, message)), [])
    return frame


def test_every_valid_nodes_answer_fits_the_header_limit() -> None:
    """NODES is bounded by its schema (24 nodes, 2 addresses of 255 characters each), so an
    answer never needs cutting and a peer cannot make one that is refused for size alone."""
    assert Nodes.schema.limits.max_size <= DEFAULT_MAX_HEADER_SIZE
    worst = Nodes(
        tuple(PeerAddress(bytes([n]) * 32, ("\U0010ffff" * 255,) * 2) for n in range(MAX_NODES))
    )
    decoded = decode_message(frame_of(worst))
    assert decoded == worst
    with pytest.raises(LocalProtocolError):
        encode_message(1, Nodes(worst.nodes + worst.nodes[:1]))
    with pytest.raises(LocalProtocolError):
        encode_message(1, Nodes((PeerAddress(ID, ("a:1",) * (MAX_NODE_ADDRS + 1)),)))


def test_hello_wire_layout() -> None:
    hello = Hello(1, ID, ID, ("127.0.0.1:1",), "shoal", ID)
    head = encode_message(0, hello)[0]
    length, type_, rid, hlen = struct.unpack(">IBIH", head[:11])
    assert (type_, rid, length) == (1, 0, 7 + hlen)
    assert msgpack.unpackb(head[11:]) == HELLO_HEADER
