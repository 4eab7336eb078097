"""Frame codec: layout, limits, malformed input, incremental decoding.

The frame layer cuts frames and checks lengths and types; headers are bytes here (the message
layer decodes them, see test_messages.py and test_schema.py)."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol import MESSAGES
from shoal.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    Frame,
    FrameDecoder,
    encode_frame,
)

PING, PUT_BLOCK, BLOCK_DATA, HELLO, ERROR = 4, 16, 19, 1, 3


def raw_frame(
    type_byte: int, request_id: int, header: bytes, payload: bytes = b"", length: int | None = None
) -> bytes:
    """Build a frame by hand, bypassing encode_frame's checks."""
    if length is None:
        length = 7 + len(header) + len(payload)
    return struct.pack(">IBIH", length, type_byte, request_id, len(header)) + header + payload


def decode_all(data: bytes, decoder: FrameDecoder | None = None) -> list[Frame]:
    decoder = decoder or FrameDecoder(frame_types=MESSAGES.codes)
    decoder.receive_data(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


EMPTY_MAP = msgpack.packb({})


def test_layout_is_big_endian_with_length_after_prefix() -> None:
    header = msgpack.packb({"a": 1})
    parts = encode_frame(PUT_BLOCK, 0x01020304, header, b"xyz")
    assert len(parts) == 2
    head, payload = parts
    assert payload == b"xyz"
    assert head == struct.pack(">IBIH", 7 + len(header) + 3, 16, 0x01020304, len(header)) + header


def test_payload_is_not_copied() -> None:
    data = bytes(1024 * 1024)
    assert encode_frame(BLOCK_DATA, 1, EMPTY_MAP, data)[1] is data
    buf = bytearray(b"abc")
    view = encode_frame(BLOCK_DATA, 1, EMPTY_MAP, buf)[1]
    assert isinstance(view, memoryview)
    assert view.obj is buf
    mv = memoryview(b"hello")
    assert encode_frame(BLOCK_DATA, 1, EMPTY_MAP, mv)[1] is mv


def test_non_byte_memoryview_payload_counts_bytes() -> None:
    ints = memoryview(struct.pack(">4I", 1, 2, 3, 4)).cast("I")
    frame = decode_all(b"".join(encode_frame(BLOCK_DATA, 1, EMPTY_MAP, ints)))[0]
    assert frame.payload == struct.pack(">4I", 1, 2, 3, 4)


@pytest.mark.parametrize(
    ("type_", "request_id", "header", "payload"),
    [
        (PING, 0, EMPTY_MAP, b""),
        (PING, 2**32 - 1, EMPTY_MAP, b""),
        (HELLO, 0, msgpack.packb({"version": 1, "nested": {"a": [1, 2, b"x"]}}), b""),
        (PUT_BLOCK, 7, msgpack.packb({"block_id": b"\x00" * 32}), b"\x00\xff" * 1000),
        (BLOCK_DATA, 9, msgpack.packb({"unicode": "h\u00e9llo \u2603"}), b"data"),
        (ERROR, 0, msgpack.packb({"code": "x", "message": "y" * 1000}), b""),
        (PING, 1, b"\xc1 any bytes: the frame layer does not read the header", b""),
    ],
)
def test_round_trip(type_: int, request_id: int, header: bytes, payload: bytes) -> None:
    data = b"".join(encode_frame(type_, request_id, header, payload))
    assert decode_all(data) == [Frame(type_, request_id, header, payload)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(raw_frame(99, 0, EMPTY_MAP), "unknown-frame-type", id="unknown-type"),
        pytest.param(raw_frame(0, 0, EMPTY_MAP), "unknown-frame-type", id="type-zero"),
        pytest.param(struct.pack(">I", 3) + b"\x04\x00\x00", "malformed-frame", id="too-short"),
        pytest.param(
            struct.pack(">IBIH", 8, 4, 0, 5) + b"\x80", "malformed-frame", id="header-past-end"
        ),
    ],
)
def test_malformed_frames(data: bytes, code: str) -> None:
    decoder = FrameDecoder(frame_types=MESSAGES.codes)
    decoder.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == code
    # The decoder stays broken and drops further input.
    decoder.receive_data(b"\x00" * 100)
    assert decoder.buffered == 0
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_oversize_rejected_from_prefix_alone() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">I", DEFAULT_MAX_FRAME_SIZE + 1))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "frame-too-large"


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    payload = b"p" * (1000 - 7 - 1)
    frames = decode_all(raw_frame(19, 1, EMPTY_MAP, payload), decoder)
    assert frames[0].payload == payload
    decoder.receive_data(raw_frame(19, 1, EMPTY_MAP, payload + b"!")[:4])
    with pytest.raises(RemoteProtocolError, match="1001 bytes"):
        decoder.next_frame()


def test_header_limit() -> None:
    decoder = FrameDecoder(max_frame_size=10_000, max_header_size=100)
    header = msgpack.packb({"k": "v" * 200})
    decoder.receive_data(raw_frame(4, 0, header))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "header-too-large"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((PING, -1, EMPTY_MAP), {}),
        ((PING, 2**32, EMPTY_MAP), {}),
        ((256, 0, EMPTY_MAP), {}),
        ((-1, 0, EMPTY_MAP), {}),
        ((True, 0, EMPTY_MAP), {}),
        ((PING, 0, b""), {}),
        ((PING, 0, {"x": 1}), {}),
        ((PING, 0, b"y" * 70_000), {}),
        ((PING, 0, b"y" * 200), {"max_header_size": 100}),
        ((BLOCK_DATA, 1, EMPTY_MAP, b"x" * 100), {"max_frame_size": 100}),
        ((BLOCK_DATA, 1, EMPTY_MAP, memoryview(bytes(8))[::2]), {}),
    ],
)
def test_encode_refuses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(*args, **kwargs)


def test_bad_limits() -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_frame_size=7)
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_header_size=0)
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_frame_size=2**32)


def test_byte_by_byte_and_many_frames() -> None:
    frames = [Frame(PUT_BLOCK, i, msgpack.packb({"i": i}), bytes([i]) * i) for i in range(1, 30)]
    data = b"".join(
        b"".join(encode_frame(f.type, f.request_id, f.header, f.payload)) for f in frames
    )
    decoder = FrameDecoder()
    out = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == frames
    assert decoder.buffered == 0
    # All at once too.
    assert decode_all(data) == frames


class CountingBuffer(bytearray):
    """A bytearray that counts the bytes shifted when a prefix is deleted."""

    moved = 0

    def __delitem__(self, key: Any) -> None:
        if isinstance(key, slice) and key.start is None:
            CountingBuffer.moved += len(self) - (key.stop or 0)
        super().__delitem__(key)


def test_large_payload_in_small_pieces_is_linear() -> None:
    """64 MiB of 1 MiB frames in 16 KB pieces: the decoder shifts each byte a bounded number of
    times (quadratic buffering would shift gigabytes)."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    one = b"".join(encode_frame(BLOCK_DATA, 1, msgpack.packb({"n": 1}), payload))
    # Misalign pieces with frame boundaries on purpose.
    stream = one * 64
    decoder = FrameDecoder()
    decoder._buf = CountingBuffer()
    CountingBuffer.moved = 0
    count = 0
    view = memoryview(stream)
    for start in range(0, len(stream), 16_000):
        decoder.receive_data(view[start : start + 16_000])
        while (frame := decoder.next_frame()) is not None:
            assert len(frame.payload) == len(payload)
            count += 1
        assert decoder.buffered < DEFAULT_MAX_FRAME_SIZE + 4
    assert count == 64
    assert isinstance(decoder._buf, CountingBuffer)  # the same buffer all along
    assert CountingBuffer.moved <= len(stream)


def test_buffer_stays_bounded_across_frames() -> None:
    """Consumed bytes are dropped: the internal buffer never holds much more than unread data."""
    one = b"".join(encode_frame(BLOCK_DATA, 1, EMPTY_MAP, bytes(100_000)))
    decoder = FrameDecoder()
    for _ in range(200):
        decoder.receive_data(one[:50_000])
        decoder.receive_data(one[50_000:])
        assert decoder.next_frame() is not None
        assert decoder.next_frame() is None
        assert len(decoder._buf) <= 2 * len(one)


def test_unknown_type_refused_before_the_body_arrives() -> None:
    """Five bytes (length + type) are enough to refuse a type: nothing more is buffered."""
    decoder = FrameDecoder(frame_types=MESSAGES.codes)
    decoder.receive_data(struct.pack(">IB", 4_000_000, 99))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "unknown-frame-type"
    assert decoder.buffered == 0


def test_without_a_type_set_every_type_is_cut() -> None:
    """The type check belongs to whoever knows the types (the connection passes the registry)."""
    assert decode_all(raw_frame(99, 0, EMPTY_MAP), FrameDecoder()) == [Frame(99, 0, EMPTY_MAP)]
