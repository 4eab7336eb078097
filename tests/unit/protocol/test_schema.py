"""Header schemas: limits derived from each message, bounded decoding, safe error messages."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from shoal.errors import HandshakeError, RemoteProtocolError
from shoal.protocol import (
    MESSAGES,
    Auth,
    Error,
    FindNode,
    Frame,
    FrameDecoder,
    GetBlock,
    GetPeers,
    HasBlocks,
    Hello,
    Lease,
    Message,
    PeerAddress,
    Peers,
    Ping,
    PutBlock,
    Release,
    State,
    decode_message,
    encode_frame,
)
from shoal.protocol.messages import hello_version
from shoal.protocol.schema import HeaderLimits, peek_uint, safe_text

from .helpers import Link, drain, make_pair

ID = bytes(range(32))


def frame(cls: type[Message], header: bytes, payload: bytes = b"", request_id: int = 0) -> Frame:
    return Frame(cls.CODE, request_id, header, payload)


def array(count: int, item: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + item * count


def refused(f: Frame) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(f)
    return info.value


def peak_allocation(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while ``fn`` runs (tracemalloc), whatever it raises."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            fn()
        except RemoteProtocolError:
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# -- the limits -----------------------------------------------------------------------------


def test_limits_are_derived_from_each_schema() -> None:
    """The numbers docs/wire-format.md lists; a schema change shows up here."""
    limits = {cls.NAME: cls.schema.limits for cls in MESSAGES.classes}
    assert limits["PING"] == HeaderLimits(5, 0, 0, 0, 0, 1)
    assert limits["PONG"] == limits["GET_PEERS"] == limits["PING"]
    assert limits["HAS_BLOCKS"] == HeaderLimits(16, 5, 0, 0, 1, 1)
    assert limits["HELLO"] == HeaderLimits(16_869, 1020, 32, 16, 6, 2)
    assert limits["AUTH"] == HeaderLimits(133, 9, 64, 0, 2, 1)
    assert limits["ERROR"] == HeaderLimits(4_388, 4096, 0, 0, 2, 1)
    # PEERS could exceed 64 KiB on paper: the connection's header limit bounds it.
    assert limits["PEERS"] == HeaderLimits(4_216_084, 1020, 32, 256, 2, 514)
    assert limits["GET_BLOCK"] == HeaderLimits(55, 8, 32, 0, 1, 1)
    assert limits["PUT_BLOCK"] == HeaderLimits(77, 8, 32, 0, 3, 1)
    assert limits["PUT_BLOCK_OK"] == limits["BLOCK_DATA"] == limits["GET_BLOCK"]
    assert limits["LEASE"] == HeaderLimits(119, 7, 32, 0, 3, 1)
    assert limits["LEASED"] == HeaderLimits(4_115, 4, 0, 4096, 1, 2)
    assert limits["RELEASE"] == HeaderLimits(51, 4, 32, 0, 1, 1)
    assert limits["RELEASED"] == HeaderLimits(24, 5, 0, 0, 1, 1)
    assert limits["HAVE_BLOCKS"] == HeaderLimits(4_118, 7, 0, 4096, 1, 2)


def test_every_valid_header_fits_its_limits() -> None:
    """The largest valid message of a few types decodes (the limits are not too tight)."""
    hello = Hello(2**64 - 1, ID, ID, ("\U0001f600" * 255,) * 16, "\U0001f600" * 64, ID)
    peers = Peers(tuple(PeerAddress(ID, ("h" * 200,) * 1) for _ in range(256)))
    for message in (hello, peers, Error("c" * 64, "\U0001f600" * 1024)):
        header = type(message).schema.encode(message)
        assert len(header) <= type(message).schema.limits.max_size
        assert decode_message(frame(type(message), header)) == message


# -- bounded decoding -----------------------------------------------------------------------

EMPTY_MAPS_PING = b"\x81\xa1x" + array(65_535 - 8, b"\x80")  # the header of issue 5, part 1b


def test_ping_with_64_kib_of_empty_maps_is_refused_by_size_alone() -> None:
    assert len(EMPTY_MAPS_PING) == 65_535
    error = refused(frame(Ping, EMPTY_MAPS_PING, request_id=1))
    assert error.code == "header-too-large"
    assert "PING header of 65535 bytes exceeds the limit of 5 bytes" in str(error)
    assert peak_allocation(lambda: decode_message(frame(Ping, EMPTY_MAPS_PING))) < 16_384


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"\x81\xa5peers" + array(65_000, b"\x80"), "65000 exceeds max_array_len(256)"),
        (
            b"\x81\xa5peers\xdc\x01\x00" + (b"\xdc\x00\xf0" + b"\x80" * 240) * 256,
            "holds more than 514 arrays and maps",
        ),
        (b"\x81\xa5peers" + b"\x91" * 1_000 + b"\xc0", "holds more than 514 arrays and maps"),
        (b"\x81\xa5peers" + b"\x81\xa1k" * 1_000 + b"\xc0", "holds more than 514 arrays and maps"),
        (b"\x81\xa5peers" + b"\xdb\x00\x01\x00\x00" + b"x" * 65_536, "exceeds max_str_len(1020)"),
    ],
    ids=["flat", "nested-under-count", "deep-list", "deep-map", "long-str"],
)
def test_container_bombs_are_refused_before_objects_are_built(header: bytes, why: str) -> None:
    """PEERS has no size bound below 64 KiB: its counts and container budget stop these."""
    header = header[:65_535]
    error = refused(frame(Peers, header))
    assert error.code == "malformed-header"
    if len(header) < 65_535:
        assert why in str(error)
    # The old decoder built every one of these objects (about 4 MiB for 65,000 dicts).
    assert peak_allocation(lambda: decode_message(frame(Peers, header))) < 300_000


@pytest.mark.parametrize("field", [f.name for f in Hello.HEADER])
def test_thousand_deep_list_in_any_hello_field(field: str) -> None:
    """A HELLO with a 1,000-deep list anywhere: a HandshakeError and an ERROR frame queued,
    never a RecursionError."""
    valid = {
        "version": 1,
        "node_id": ID,
        "public_key": ID,
        "listen_addrs": [],
        "network": "shoal",
        "nonce": ID,
    }
    parts = [b"\x86"]
    for key, value in valid.items():
        parts.append(msgpack.packb(key))
        parts.append(b"\x91" * 1000 + b"\xc0" if key == field else msgpack.packb(value))
    header = b"".join(parts)
    _, listener = make_pair()
    listener.receive_data(b"".join(encode_frame(Hello.CODE, 0, header)))
    with pytest.raises(HandshakeError) as info:
        drain(listener)
    assert info.value.code == "malformed-header"
    assert listener.state is State.ERROR
    sent = FrameDecoder()
    sent.receive_data(b"".join(listener.data_to_send()))
    error_frame = sent.next_frame()
    assert error_frame is not None
    assert decode_message(error_frame) == Error("malformed-header", str(info.value))


REQUEST_FOR = {
    **{req.RESPONSE: req for req in MESSAGES.classes if req.RESPONSE is not None},
    Error: GetPeers,
}
EXAMPLE_REQUESTS: dict[type[Message], Message] = {
    GetPeers: GetPeers(),
    GetBlock: GetBlock(ID),
    PutBlock: PutBlock(ID, b"x"),
    HasBlocks: HasBlocks(()),
    Lease: Lease(ID, 60, ()),
    Release: Release(ID),
    Ping: Ping(),
    FindNode: FindNode(ID),
}


@pytest.mark.parametrize("cls", [c for c in MESSAGES.classes if c.HEADER])
def test_thousand_deep_list_in_any_established_message(cls: type[Message]) -> None:
    """Requests and answers (to a request we did send) with a 1,000-deep list: refused."""
    dialer, listener = make_pair()
    dialer.start()
    Link(dialer, listener).pump()
    request_id = 1
    if cls in REQUEST_FOR:
        request_id = listener.send_request(EXAMPLE_REQUESTS[REQUEST_FOR[cls]])
        listener.data_to_send()
    header = b"\x81" + msgpack.packb(cls.HEADER[0].name) + b"\x91" * 1000 + b"\xc0"
    listener.receive_data(b"".join(encode_frame(cls.CODE, request_id, header)))
    with pytest.raises(RemoteProtocolError) as info:
        drain(listener)
    expected = "malformed-header"
    if cls.schema.limits.max_size < len(header):
        expected = "header-too-large"
    if cls in (Hello, Auth):
        expected = "unexpected-message"  # refused before its header is read
    assert info.value.code == expected
    assert listener.state is State.ERROR
    assert listener.data_to_send()  # the ERROR frame


# -- error messages never show a received value ---------------------------------------------

MARKER = "MARKER-7f3a"
UNTRUSTED: list[Any] = [
    MARKER,
    MARKER.encode(),
    [MARKER],
    {MARKER: MARKER},
    [[[[[[[[MARKER]]]]]]]],
    2**63,
    -5,
    1.5,
    None,
    True,
]


@pytest.mark.parametrize("cls", [c for c in MESSAGES.classes if c.HEADER])
@pytest.mark.parametrize("value", UNTRUSTED, ids=[type(v).__name__ for v in UNTRUSTED])
def test_error_messages_never_format_a_received_value(cls: type[Message], value: Any) -> None:
    for field in cls.HEADER:
        header = msgpack.packb({field.name: value, MARKER: 1}, use_bin_type=True)
        for candidate in (header, msgpack.packb({field.name: value}, use_bin_type=True)):
            try:
                decode_message(frame(cls, candidate))
            except RemoteProtocolError as exc:
                text = str(exc)
                assert MARKER not in text
                assert "7f3a" not in text
                assert "[[" not in text
                assert len(text) < 300


# -- header shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b"", "is empty"),
        (msgpack.packb([]), "not a map"),
        (msgpack.packb(5), "not a map"),
        (b"\x81\xc4\x01k\xc0", "key"),  # a bin key
        (b"\x81\x01\xc0", "not valid msgpack"),  # an int key (msgpack's strict_map_key)
        (b"\x80\x00", "bytes after its map"),
        (b"\xc1", "not valid msgpack"),
        (b"\x81\xa1", "not valid msgpack"),
        (b"\x81\xa1k\xa2\xff\xfe", "not UTF-8"),
        (b"\x81\xa8block_id\xc4\x20" + ID + b"\xa8block_id", "bytes after its map"),
        (b"\x81\xa8block_id\xc7\x20\x01" + ID, "limits"),  # an ext value
    ],
)
def test_malformed_headers(header: bytes, fragment: str) -> None:
    error = refused(frame(GetBlock, header))
    assert error.code == "malformed-header"
    assert fragment in str(error)


def test_duplicate_keys_are_refused() -> None:
    header = b"\x82\xa4code\xa1a\xa4code\xa1b"
    error = refused(frame(Error, header))
    assert error.code == "malformed-header"
    assert "duplicate key" in str(error)


def test_valid_get_block_header_for_contrast() -> None:
    assert decode_message(frame(GetBlock, b"\x81\xa8block_id\xc4\x20" + ID)) == GetBlock(ID)


# -- the HELLO version peek -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "version"),
    [
        (msgpack.packb({"version": 7}), 7),
        (msgpack.packb({"a": [[1, {"b": 2}]], "nonce": b"x", "version": 3}), 3),
        (b"\x82\x01\x02\xa7version\x03", None),  # an int key first: give up
        (msgpack.packb({"version": -1}), None),
        (msgpack.packb({"version": "1"}), None),
        (msgpack.packb({"other": 1}), None),
        (msgpack.packb([1]), None),
        (b"\x81\xa1k" + b"\x91" * 3000 + b"\xc0", None),
        (b"", None),
        (b"\xc1", None),
    ],
)
def test_hello_version_peek(header: bytes, version: int | None) -> None:
    assert peek_uint(header, "version", max_size=65_535) == version
    assert hello_version(Frame(Hello.CODE, 0, header)) == version


def test_peek_ignores_oversize_headers() -> None:
    assert peek_uint(msgpack.packb({"version": 7}), "version", max_size=4) is None


def test_safe_text() -> None:
    assert safe_text("plain text") == "plain text"
    assert safe_text("a\nb\x1b[0m\u2028") == "a\\u000ab\\u001b[0m\\u2028"
    assert safe_text("x" * 10, 4) == "xxxx..."
