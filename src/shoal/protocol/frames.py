"""Frame codec: the byte layer of the Shoal wire protocol (sans-I/O).

How it works: every message travels in one frame::

    u32 length | u8 type | u32 request id | u16 header length | header | payload

big-endian, where ``length`` counts every byte after the length field itself. This layer only
cuts frames: the header (a msgpack map) is handed on as bytes and decoded by the message layer,
which knows the schema and the limits of each message type (``messages.py``). The payload is
raw bytes (block data) that is never put through msgpack, so a 1 MiB block is copied once on
receive and not at all on send.

``FrameDecoder`` keeps one ``bytearray`` and a read offset. Incoming pieces are appended; a frame
is sliced out only once it is complete, and consumed bytes are dropped only when they outweigh
the unread rest, so data arriving in many small pieces (16 KiB TLS records) costs linear time.
The length prefix is checked as soon as its 4 bytes are there, and the type as soon as its byte
is there: an oversize frame or an unknown type is refused before any of its body is buffered,
so after ``next_frame()`` returns ``None`` the decoder holds less than one maximum frame plus
its prefix.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from shoal.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "FRAME_OVERHEAD",
    "LENGTH_PREFIX_SIZE",
    "MAX_U16",
    "MAX_U32",
    "Frame",
    "FrameDecoder",
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
MAX_U16: Final = 0xFFFF
MAX_U32: Final = 0xFFFFFFFF
_MAX_TYPE: Final = 0xFF


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame, cut from the stream but not interpreted.

    Attributes:
        type: The frame (message) type code, 0 to 255.
        request_id: 0 for connection-level frames, else the id a response echoes.
        header: The header bytes (a msgpack map; decoded by the message layer).
        payload: The raw payload bytes (empty for messages without data).
    """

    type: int
    request_id: int
    header: bytes
    payload: bytes = b""


def _check_limits(max_frame_size: int, max_header_size: int) -> None:
    # The smallest frame has the fixed fields and a 1-byte header (an empty msgpack map).
    if max_header_size < 1 or max_frame_size < FRAME_OVERHEAD + 1:
        raise LocalProtocolError(
            f"invalid frame limits: max_frame_size={max_frame_size}, "
            f"max_header_size={max_header_size}"
        )
    if max_frame_size > MAX_U32:
        raise LocalProtocolError(f"max_frame_size {max_frame_size} does not fit the u32 length")


def encode_frame(
    type: int,
    request_id: int,
    header: bytes,
    payload: bytes | bytearray | memoryview = b"",
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> list[bytes | memoryview]:
    """Encode one frame without copying its payload.

    Args:
        type: The frame type code, 0 to 255.
        request_id: 0 to 2**32 - 1.
        header: The encoded header (at least one byte).
        payload: Raw bytes sent as they are (a bytearray is wrapped in a memoryview).
        max_frame_size: Refuse frames whose ``length`` field would exceed this.
        max_header_size: Refuse headers larger than this (and than 65535 bytes).

    Returns:
        ``[prefix_and_header, payload]``, ready for ``writelines``.

    Raises:
        LocalProtocolError: Bad type or request id, empty or oversize header, frame too large.
    """
    if not isinstance(type, int) or isinstance(type, bool) or not 0 <= type <= _MAX_TYPE:
        raise LocalProtocolError("frame type must be an integer from 0 to 255")
    if not isinstance(request_id, int) or not 0 <= request_id <= MAX_U32:
        raise LocalProtocolError("request id must be an integer from 0 to 2**32 - 1")
    if not isinstance(header, bytes) or not header:
        raise LocalProtocolError("frame header must be non-empty bytes")
    header_limit = min(max_header_size, MAX_U16)
    if len(header) > header_limit:
        raise LocalProtocolError(
            f"frame header is {len(header)} bytes, the limit is {header_limit}"
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
    length = FRAME_OVERHEAD + len(header) + payload_size
    if length > max_frame_size:
        raise LocalProtocolError(f"frame would be {length} bytes, the limit is {max_frame_size}")
    prefix = _PREFIX.pack(length, type, request_id, len(header))
    return [prefix + header, body]


class FrameDecoder:
    """Incremental frame decoder: feed bytes with ``receive_data``, pull ``next_frame``.

    Args:
        max_frame_size: Largest accepted ``length`` field (bytes after the length prefix).
        max_header_size: Largest accepted header.
        frame_types: The type codes to accept (others are ``unknown-frame-type``); ``None``
            accepts every code and leaves the check to the message layer.

    After the first error the decoder is broken: ``next_frame`` raises again and incoming
    data is dropped, so a hostile peer cannot make it grow.
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        *,
        frame_types: Collection[int] | None = None,
    ) -> None:
        _check_limits(max_frame_size, max_header_size)
        self.max_frame_size = max_frame_size
        self.max_header_size = min(max_header_size, MAX_U16)
        self._types = None if frame_types is None else frozenset(frame_types)
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

    def discard(self) -> None:
        """Drop what is buffered and everything received from now on (the connection failed)."""
        if self._error is None:
            self._error = RemoteProtocolError("the connection has failed", code="discarded")
        self._buf = bytearray()
        self._pos = 0

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more data is needed.

        Raises:
            RemoteProtocolError: Oversize or malformed frame, unknown type.
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
        if available > LENGTH_PREFIX_SIZE:
            type_code = buf[pos + LENGTH_PREFIX_SIZE]
            if self._types is not None and type_code not in self._types:
                raise RemoteProtocolError(
                    f"unknown frame type {type_code}", code="unknown-frame-type"
                )
        end = pos + LENGTH_PREFIX_SIZE + length
        if len(buf) < end:
            return None
        _, type_code, request_id, header_size = _PREFIX.unpack_from(buf, pos)
        if header_size > length - FRAME_OVERHEAD:
            raise RemoteProtocolError(
                f"frame type {type_code}: header length {header_size} exceeds the frame",
                code="malformed-frame",
            )
        if header_size > self.max_header_size:
            raise RemoteProtocolError(
                f"frame type {type_code}: header of {header_size} bytes exceeds the limit of "
                f"{self.max_header_size} bytes",
                code="header-too-large",
            )
        header_start = pos + _PREFIX.size
        payload_start = header_start + header_size
        with memoryview(buf) as view:
            header = bytes(view[header_start:payload_start])
            # The one copy of the payload: out of the shared buffer into its own bytes.
            payload = bytes(view[payload_start:end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return Frame(type_code, request_id, header, payload)
