"""Message types of the Shoal wire protocol and their mapping to frames (sans-I/O).

How it works: each message is a frozen dataclass whose ``TYPE`` names its frame type. Encoding
checks every field, turns the message into a header map (msgpack) plus a payload (raw block
data, or the packed id list of HAS_BLOCKS) and calls ``encode_frame``. Decoding reads the
known header keys, ignores unknown ones (so later versions may add keys), builds the dataclass
and runs the same checks. A field check failure is a ``LocalProtocolError`` when sending and a
``RemoteProtocolError`` (code ``malformed-message``) when receiving. Byte layouts:
``docs/wire-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    Frame,
    FrameType,
    encode_frame,
)

__all__ = [
    "ID_SIZE",
    "MAC_SIZE",
    "MAX_ADDRS",
    "MAX_ADDR_LENGTH",
    "MAX_BLOCK_IDS",
    "MAX_ERROR_CODE_LENGTH",
    "MAX_ERROR_MESSAGE_LENGTH",
    "MAX_NETWORK_LENGTH",
    "MAX_PEERS",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "RESPONSE_FOR",
    "SIGNATURE_SIZE",
    "Auth",
    "BlockData",
    "Error",
    "GetBlock",
    "GetPeers",
    "HasBlocks",
    "HaveBlocks",
    "Hello",
    "Message",
    "PeerAddress",
    "Peers",
    "Ping",
    "Pong",
    "PutBlock",
    "PutBlockOk",
    "decode_message",
    "encode_message",
]

PROTOCOL_VERSION: Final = 1
ID_SIZE: Final = 32  # node ids, block ids, public keys, nonces
SIGNATURE_SIZE: Final = 64
MAC_SIZE: Final = 32
MAX_ADDRS: Final = 16  # listen addresses per node
MAX_ADDR_LENGTH: Final = 255
MAX_NETWORK_LENGTH: Final = 64
MAX_ERROR_CODE_LENGTH: Final = 64
MAX_ERROR_MESSAGE_LENGTH: Final = 1024
MAX_PEERS: Final = 256
MAX_BLOCK_IDS: Final = 4096


class _FieldError(ValueError):
    """A field has the wrong type or size; mapped to Local/RemoteProtocolError by the caller."""


def _describe(value: object) -> str:
    if isinstance(value, bytes | str | list | tuple):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _check_bytes(value: object, name: str, size: int) -> None:
    if type(value) is not bytes or len(value) != size:
        raise _FieldError(f"{name} must be {size} bytes, got {_describe(value)}")


def _check_str(value: object, name: str, max_length: int, *, min_length: int = 0) -> None:
    if type(value) is not str:
        raise _FieldError(f"{name} must be a string, got {_describe(value)}")
    if not min_length <= len(value) <= max_length:
        raise _FieldError(
            f"{name} must be {min_length} to {max_length} characters, got {len(value)}"
        )


def _check_tuple(value: object, name: str, max_items: int) -> tuple[object, ...]:
    if type(value) is not tuple:
        raise _FieldError(f"{name} must be a tuple, got {_describe(value)}")
    if len(value) > max_items:
        raise _FieldError(f"{name} has {len(value)} entries, the limit is {max_items}")
    return value


def _check_addrs(value: object, name: str) -> None:
    for addr in _check_tuple(value, name, MAX_ADDRS):
        _check_str(addr, f"{name} entry", MAX_ADDR_LENGTH)


def _get(header: dict[str, Any], key: str) -> Any:
    try:
        return header[key]
    except KeyError:
        raise _FieldError(f"missing header key {key!r}") from None


def _as_tuple(value: Any, name: str) -> Any:
    """Wire arrays arrive as lists; anything else is left for the field check to refuse."""
    if type(value) is list:
        return tuple(value)
    raise _FieldError(f"{name} must be an array, got {_describe(value)}")


def _no_payload(payload: bytes, name: str) -> None:
    if payload:
        raise _FieldError(f"{name} carries no payload, got {len(payload)} bytes")


class _Base:
    """Behaviour shared by all messages; each subclass overrides what it carries."""

    __slots__ = ()
    TYPE: ClassVar[FrameType]

    def _check(self) -> None:
        """Raise ``_FieldError`` if a field is invalid."""

    def _header(self) -> dict[str, Any]:
        return {}

    def _payload(self) -> bytes:
        return b""

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Any:
        _no_payload(payload, cls.__name__)
        return cls()


@dataclass(frozen=True, slots=True)
class Hello(_Base):
    """First message of each side: who I am and how to reach me (request id 0)."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    version: int
    node_id: bytes
    public_key: bytes
    listen_addrs: tuple[str, ...]
    network: str
    nonce: bytes

    def _check(self) -> None:
        if type(self.version) is not int or self.version < 0:
            raise _FieldError(f"version must be a non-negative integer, got {self.version!r}")
        _check_bytes(self.node_id, "node_id", ID_SIZE)
        _check_bytes(self.public_key, "public_key", ID_SIZE)
        _check_addrs(self.listen_addrs, "listen_addrs")
        _check_str(self.network, "network", MAX_NETWORK_LENGTH, min_length=1)
        _check_bytes(self.nonce, "nonce", ID_SIZE)

    def _header(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "node_id": self.node_id,
            "public_key": self.public_key,
            "listen_addrs": list(self.listen_addrs),
            "network": self.network,
            "nonce": self.nonce,
        }

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Hello:
        _no_payload(payload, cls.__name__)
        return cls(
            version=_get(header, "version"),
            node_id=_get(header, "node_id"),
            public_key=_get(header, "public_key"),
            listen_addrs=_as_tuple(_get(header, "listen_addrs"), "listen_addrs"),
            network=_get(header, "network"),
            nonce=_get(header, "nonce"),
        )


@dataclass(frozen=True, slots=True)
class Auth(_Base):
    """Proof of key ownership over the handshake transcript (request id 0)."""

    TYPE: ClassVar[FrameType] = FrameType.AUTH
    signature: bytes
    mac: bytes | None = None

    def _check(self) -> None:
        _check_bytes(self.signature, "signature", SIGNATURE_SIZE)
        if self.mac is not None:
            _check_bytes(self.mac, "mac", MAC_SIZE)

    def _header(self) -> dict[str, Any]:
        header: dict[str, Any] = {"signature": self.signature}
        if self.mac is not None:
            header["mac"] = self.mac
        return header

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Auth:
        _no_payload(payload, cls.__name__)
        if "mac" in header:
            # Present means present: a nil mac is refused by the field check.
            mac = header["mac"]
            _check_bytes(mac, "mac", MAC_SIZE)
        else:
            mac = None
        return cls(signature=_get(header, "signature"), mac=mac)


@dataclass(frozen=True, slots=True)
class Error(_Base):
    """A failure: with request id 0 about the whole connection, else the answer to a request."""

    TYPE: ClassVar[FrameType] = FrameType.ERROR
    code: str
    message: str

    def _check(self) -> None:
        _check_str(self.code, "code", MAX_ERROR_CODE_LENGTH, min_length=1)
        _check_str(self.message, "message", MAX_ERROR_MESSAGE_LENGTH)

    def _header(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Error:
        _no_payload(payload, cls.__name__)
        return cls(code=_get(header, "code"), message=_get(header, "message"))


@dataclass(frozen=True, slots=True)
class Ping(_Base):
    """Liveness probe; answered by ``Pong``."""

    TYPE: ClassVar[FrameType] = FrameType.PING


@dataclass(frozen=True, slots=True)
class Pong(_Base):
    """Answer to ``Ping``."""

    TYPE: ClassVar[FrameType] = FrameType.PONG


@dataclass(frozen=True, slots=True)
class GetPeers(_Base):
    """Ask for the peers the other node knows (peer exchange); answered by ``Peers``."""

    TYPE: ClassVar[FrameType] = FrameType.GET_PEERS


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A node and the addresses it listens on (``host:port`` strings)."""

    node_id: bytes
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Peers(_Base):
    """Answer to ``GetPeers``: up to 256 known peers (the header must fit 64 KiB)."""

    TYPE: ClassVar[FrameType] = FrameType.PEERS
    peers: tuple[PeerAddress, ...]

    def _check(self) -> None:
        for entry in _check_tuple(self.peers, "peers", MAX_PEERS):
            if type(entry) is not PeerAddress:
                raise _FieldError(f"peers entry must be a PeerAddress, got {_describe(entry)}")
            _check_bytes(entry.node_id, "peers node_id", ID_SIZE)
            _check_addrs(entry.addrs, "peers addrs")

    def _header(self) -> dict[str, Any]:
        return {"peers": [{"node_id": p.node_id, "addrs": list(p.addrs)} for p in self.peers]}

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Peers:
        _no_payload(payload, cls.__name__)
        entries = _get(header, "peers")
        if type(entries) is not list or len(entries) > MAX_PEERS:
            raise _FieldError(f"peers must be an array of at most {MAX_PEERS} entries")
        peers = []
        for entry in entries:
            if type(entry) is not dict:
                raise _FieldError(f"peers entry must be a map, got {_describe(entry)}")
            addrs = _as_tuple(_get(entry, "addrs"), "peers addrs")
            peers.append(PeerAddress(node_id=_get(entry, "node_id"), addrs=addrs))
        return cls(peers=tuple(peers))


@dataclass(frozen=True, slots=True)
class _BlockIdOnly(_Base):
    block_id: bytes

    def _check(self) -> None:
        _check_bytes(self.block_id, "block_id", ID_SIZE)

    def _header(self) -> dict[str, Any]:
        return {"block_id": self.block_id}

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Any:
        _no_payload(payload, cls.__name__)
        return cls(block_id=_get(header, "block_id"))


@dataclass(frozen=True, slots=True)
class _BlockWithData(_Base):
    block_id: bytes
    data: bytes

    def _check(self) -> None:
        _check_bytes(self.block_id, "block_id", ID_SIZE)
        if type(self.data) is not bytes:
            raise _FieldError(f"data must be bytes, got {_describe(self.data)}")

    def _header(self) -> dict[str, Any]:
        return {"block_id": self.block_id}

    def _payload(self) -> bytes:
        return self.data

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> Any:
        return cls(block_id=_get(header, "block_id"), data=payload)


@dataclass(frozen=True, slots=True)
class PutBlock(_BlockWithData):
    """Store a block; ``data`` travels as the raw payload. Answered by ``PutBlockOk``.

    The receiver, not the protocol layer, checks that ``block_id`` is SHA-256 of ``data``.
    """

    TYPE: ClassVar[FrameType] = FrameType.PUT_BLOCK


@dataclass(frozen=True, slots=True)
class PutBlockOk(_BlockIdOnly):
    """The block is stored durably (after fsync)."""

    TYPE: ClassVar[FrameType] = FrameType.PUT_BLOCK_OK


@dataclass(frozen=True, slots=True)
class GetBlock(_BlockIdOnly):
    """Fetch a block; answered by ``BlockData`` or ``Error`` (code ``not-found``)."""

    TYPE: ClassVar[FrameType] = FrameType.GET_BLOCK


@dataclass(frozen=True, slots=True)
class BlockData(_BlockWithData):
    """A block's bytes as the raw payload. The receiver checks the hash."""

    TYPE: ClassVar[FrameType] = FrameType.BLOCK_DATA


@dataclass(frozen=True, slots=True)
class HasBlocks(_Base):
    """Which of these blocks do you hold? Answered by ``HaveBlocks``.

    The ids travel packed in the payload (32 bytes each): 4096 of them would not fit the
    64 KiB header.
    """

    TYPE: ClassVar[FrameType] = FrameType.HAS_BLOCKS
    block_ids: tuple[bytes, ...]

    def _check(self) -> None:
        for block_id in _check_tuple(self.block_ids, "block_ids", MAX_BLOCK_IDS):
            _check_bytes(block_id, "block_ids entry", ID_SIZE)

    def _payload(self) -> bytes:
        return b"".join(self.block_ids)

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> HasBlocks:
        if len(payload) % ID_SIZE or len(payload) > MAX_BLOCK_IDS * ID_SIZE:
            raise _FieldError(
                f"block id list of {len(payload)} bytes is not a multiple of {ID_SIZE} "
                f"up to {MAX_BLOCK_IDS} ids"
            )
        ids = tuple(payload[i : i + ID_SIZE] for i in range(0, len(payload), ID_SIZE))
        return cls(block_ids=ids)


@dataclass(frozen=True, slots=True)
class HaveBlocks(_Base):
    """Answer to ``HasBlocks``: ``present[i]`` tells whether ``block_ids[i]`` is held."""

    TYPE: ClassVar[FrameType] = FrameType.HAVE_BLOCKS
    present: tuple[bool, ...]

    def _check(self) -> None:
        for flag in _check_tuple(self.present, "present", MAX_BLOCK_IDS):
            if type(flag) is not bool:
                raise _FieldError(f"present entries must be booleans, got {_describe(flag)}")

    def _header(self) -> dict[str, Any]:
        return {"present": list(self.present)}

    @classmethod
    def _from_wire(cls, header: dict[str, Any], payload: bytes) -> HaveBlocks:
        _no_payload(payload, cls.__name__)
        return cls(present=_as_tuple(_get(header, "present"), "present"))


Message: TypeAlias = (
    Hello
    | Auth
    | Error
    | Ping
    | Pong
    | GetPeers
    | Peers
    | PutBlock
    | PutBlockOk
    | GetBlock
    | BlockData
    | HasBlocks
    | HaveBlocks
)

_MESSAGE_CLASSES: Final[tuple[type[Message], ...]] = (
    Hello,
    Auth,
    Error,
    Ping,
    Pong,
    GetPeers,
    Peers,
    PutBlock,
    PutBlockOk,
    GetBlock,
    BlockData,
    HasBlocks,
    HaveBlocks,
)
_BY_TYPE: Final[dict[FrameType, type[Message]]] = {cls.TYPE: cls for cls in _MESSAGE_CLASSES}

#: Each request type and the response it expects (``Error`` may answer any request).
RESPONSE_FOR: Final[dict[type[Message], type[Message]]] = {
    Ping: Pong,
    GetPeers: Peers,
    PutBlock: PutBlockOk,
    GetBlock: BlockData,
    HasBlocks: HaveBlocks,
}
#: Messages that open a request (they carry a fresh request id from ``next_request_id``).
REQUEST_TYPES: Final[frozenset[type[Message]]] = frozenset(RESPONSE_FOR)


def encode_message(
    request_id: int,
    message: Message,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> list[bytes | memoryview]:
    """Check ``message`` and encode it as one frame (payload not copied).

    Raises:
        LocalProtocolError: A field is invalid, or the frame exceeds the limits.
    """
    if type(message) not in _BY_TYPE.values():
        raise LocalProtocolError(f"not a protocol message: {type(message).__name__}")
    try:
        message._check()
    except _FieldError as exc:
        raise LocalProtocolError(
            f"invalid {type(message).__name__} message: {exc}", code="malformed-message"
        ) from exc
    return encode_frame(
        message.TYPE,
        request_id,
        message._header(),
        message._payload(),
        max_frame_size=max_frame_size,
        max_header_size=max_header_size,
    )


def decode_message(frame: Frame) -> Message:
    """Build and check the message a frame carries.

    Raises:
        RemoteProtocolError: Missing key, wrong type or size, unexpected payload
            (code ``malformed-message``).
    """
    cls = _BY_TYPE[frame.type]
    try:
        message: Message = cls._from_wire(frame.header, frame.payload)
        message._check()
    except _FieldError as exc:
        raise RemoteProtocolError(
            f"invalid {cls.__name__} message: {exc}", code="malformed-message"
        ) from exc
    return message
