"""Frame codec: the byte layer of the Shoal wire protocol (sans-I/O).

How it works: every message travels in one frame::

    u32 length | u8 type | u32 request id | u16 header length | header | payload

big-endian, where ``length`` counts every byte after the length field itself. The header is a
msgpack map with str keys (small metadata); the payload is raw bytes (block data) that is never
put through msgpack, so a 1 MiB block is copied once on receive and not at all on send.

``FrameDecoder`` keeps one ``bytearray`` and a read offset. Incoming pieces are appended; a frame
is sliced out only once it is complete, and consumed bytes are dropped only when they outweigh
the unread rest, so data arriving in many small pieces (16 KiB TLS records) costs linear time.
The length prefix is checked as soon as its 4 bytes are there: an oversize frame is refused
before any of its body is buffered, so after ``next_frame()`` returns ``None`` the decoder holds
less than one maximum frame plus its prefix.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from shoal.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "FRAME_OVERHEAD",
    "LENGTH_PREFIX_SIZE",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "encode_frame",
]

#: Largest allowed value of the ``length`` field: a 4 MiB block plus room for its header.
DEFAULT_MAX_FRAME_SIZE: Final = 4 * 1024 * 1024 + 64 * 1024
#: Largest allowed header. The u16 header length field caps it at 65535 bytes in any case.
DEFAULT_MAX_HEADER_SIZE: Final = 64 * 1024

_PREFIX = struct.Struct(">IBIH")  # length, type, request id, header length
_LENGTH = struct.Struct(">I")
#: Bytes of the length field.
LENGTH_PREFIX_SIZE: Final = _LENGTH.size
#: Fixed bytes counted by ``length``: type, request id, header length.
FRAME_OVERHEAD: Final = _PREFIX.size - _LENGTH.size
_MAX_U16: Final = 0xFFFF
_MAX_U32: Final = 0xFFFFFFFF


class FrameType(enum.IntEnum):
    """The ``type`` byte of a frame: one value per message type."""

    HELLO = 1
    AUTH = 2
    ERROR = 3
    PING = 4
    PONG = 5
    GET_PEERS = 6
    PEERS = 7
    PUT_BLOCK = 16
    PUT_BLOCK_OK = 17
    GET_BLOCK = 18
    BLOCK_DATA = 19
    HAS_BLOCKS = 20
    HAVE_BLOCKS = 21


_KNOWN_TYPES: Final = frozenset(int(t) for t in FrameType)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    Attributes:
        type: The frame (message) type.
        request_id: 0 for connection-level frames, else the id a response echoes.
        header: The decoded msgpack header (a map with str keys).
        payload: The raw payload bytes (empty for messages without data).
    """

    type: FrameType
    request_id: int
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


def _check_limits(max_frame_size: int, max_header_size: int) -> None:
    # The smallest frame has the fixed fields and a 1-byte header (an empty msgpack map).
    if max_header_size < 1 or max_frame_size < FRAME_OVERHEAD + 1:
        raise LocalProtocolError(
            f"invalid frame limits: max_frame_size={max_frame_size}, "
            f"max_header_size={max_header_size}"
        )
    if max_frame_size > _MAX_U32:
        raise LocalProtocolError(f"max_frame_size {max_frame_size} does not fit the u32 length")


def encode_frame(
    type: FrameType,
    request_id: int,
    header: dict[str, Any],
    payload: bytes | bytearray | memoryview = b"",
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> list[bytes | memoryview]:
    """Encode one frame without copying its payload.

    Args:
        type: The frame type.
        request_id: 0 to 2**32 - 1.
        header: A map with str keys, encoded with msgpack.
        payload: Raw bytes sent as they are (a bytearray is wrapped in a memoryview).
        max_frame_size: Refuse frames whose ``length`` field would exceed this.
        max_header_size: Refuse headers larger than this (and than 65535 bytes).

    Returns:
        ``[prefix_and_header, payload]``, ready for ``writelines``.

    Raises:
        LocalProtocolError: Unknown type, bad request id, header not encodable or too large,
            frame too large.
    """
    if not isinstance(type, FrameType):
        raise LocalProtocolError(f"unknown frame type {type!r}")
    if not isinstance(request_id, int) or not 0 <= request_id <= _MAX_U32:
        raise LocalProtocolError(f"request id {request_id!r} is not a u32")
    if not isinstance(header, dict) or not all(isinstance(k, str) for k in header):
        raise LocalProtocolError("frame header must be a dict with str keys")
    try:
        header_bytes = msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type.name} header: {exc}") from exc
    header_limit = min(max_header_size, _MAX_U16)
    if len(header_bytes) > header_limit:
        raise LocalProtocolError(
            f"{type.name} header is {len(header_bytes)} bytes, the limit is {header_limit}"
        )
    body: bytes | memoryview
    if isinstance(payload, bytes):
        body, payload_size = payload, len(payload)
    else:
        body = payload if isinstance(payload, memoryview) else memoryview(payload)
        if not body.c_contiguous:
            raise LocalProtocolError("frame payload must be a contiguous buffer")
        payload_size = body.nbytes
        if body.format != "B" or body.ndim != 1:
            body = body.cast("B")
    length = FRAME_OVERHEAD + len(header_bytes) + payload_size
    if length > max_frame_size:
        raise LocalProtocolError(
            f"{type.name} frame would be {length} bytes, the limit is {max_frame_size}"
        )
    prefix = _PREFIX.pack(length, type, request_id, len(header_bytes))
    return [prefix + header_bytes, body]


class FrameDecoder:
    """Incremental frame decoder: feed bytes with ``receive_data``, pull ``next_frame``.

    Args:
        max_frame_size: Largest accepted ``length`` field (bytes after the length prefix).
        max_header_size: Largest accepted header.

    After the first error the decoder is broken: ``next_frame`` raises again and incoming
    data is dropped, so a hostile peer cannot make it grow.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        _check_limits(max_frame_size, max_header_size)
        self.max_frame_size = max_frame_size
        self.max_header_size = min(max_header_size, _MAX_U16)
        self._buf = bytearray()
        self._pos = 0  # start of the unread bytes in _buf
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (dropped if the decoder already failed)."""
        if self._error is not None:
            return
        remaining = len(self._buf) - self._pos
        # Drop consumed bytes only when they outweigh what is left: each byte is then moved
        # at most a bounded number of times, whatever the size of the pieces.
        if self._pos and self._pos >= remaining:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more data is needed.

        Raises:
            RemoteProtocolError: Oversize or malformed frame, unknown type, bad header.
        """
        if self._error is not None:
            raise RemoteProtocolError(str(self._error), code=self._error.code)
        try:
            return self._next_frame()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            self._pos = 0
            raise

    def _next_frame(self) -> Frame | None:
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < LENGTH_PREFIX_SIZE:
            return None
        (length,) = _LENGTH.unpack_from(buf, pos)
        if length > self.max_frame_size:
            raise RemoteProtocolError(
                f"frame of {length} bytes exceeds the limit of {self.max_frame_size} bytes",
                code="frame-too-large",
            )
        if length < FRAME_OVERHEAD:
            raise RemoteProtocolError(
                f"frame length {length} is shorter than the fixed frame fields",
                code="malformed-frame",
            )
        end = pos + LENGTH_PREFIX_SIZE + length
        if len(buf) < end:
            return None
        _, type_byte, request_id, header_size = _PREFIX.unpack_from(buf, pos)
        if type_byte not in _KNOWN_TYPES:
            raise RemoteProtocolError(f"unknown frame type {type_byte}", code="unknown-frame-type")
        frame_type = FrameType(type_byte)
        if header_size > length - FRAME_OVERHEAD:
            raise RemoteProtocolError(
                f"{frame_type.name} header length {header_size} exceeds the frame",
                code="malformed-frame",
            )
        if header_size > self.max_header_size:
            raise RemoteProtocolError(
                f"{frame_type.name} header of {header_size} bytes exceeds the limit of "
                f"{self.max_header_size} bytes",
                code="header-too-large",
            )
        header_start = pos + _PREFIX.size
        payload_start = header_start + header_size
        with memoryview(buf) as view:
            header = _decode_header(frame_type, view[header_start:payload_start])
            # The one copy of the payload: out of the shared buffer into its own bytes.
            payload = bytes(view[payload_start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return Frame(frame_type, request_id, header, payload)


def _decode_header(frame_type: FrameType, raw: memoryview) -> dict[str, Any]:
    size = len(raw)
    try:
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size,
            max_ext_len=size,
        )
    except Exception as exc:  # msgpack documents that "other exceptions" may escape
        raise RemoteProtocolError(
            f"{frame_type.name} header is not valid msgpack: {exc}", code="malformed-header"
        ) from exc
    finally:
        raw.release()
    if not isinstance(header, dict):
        raise RemoteProtocolError(
            f"{frame_type.name} header is a {type(header).__name__}, not a map",
            code="malformed-header",
        )
    if not all(isinstance(key, str) for key in header):
        raise RemoteProtocolError(
            f"{frame_type.name} header has a non-string key", code="malformed-header"
        )
    return header
