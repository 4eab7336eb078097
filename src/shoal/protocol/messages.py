"""Message types of the Shoal wire protocol and the registry that declares them (sans-I/O).

How it works: each message is a frozen dataclass registered with ``@MESSAGES.register``. The
class is the one place that says everything about its message:

- ``CODE``: its frame type byte; ``NAME``: its name in docs and error messages;
- ``HEADER``: the keys of its msgpack header and their kinds (``schema.py``), from which the
  header's checks and decode limits are computed;
- ``PAYLOAD``: which field travels as the raw payload (block data, packed id lists), if any;
- ``RESPONSE``: for a request, the class of the message that answers it (``Error`` may answer
  any request).

Decode dispatch, the set of known frame types, the request/response table and the service
classes the transport uses (does a request carry bulk data, does its answer) all come from the
registry, so adding a message type means adding one class here. Encoding checks every field
(``LocalProtocolError``); decoding is bounded by the header schema and refuses unknown keys
(``RemoteProtocolError``). Byte layouts: ``docs/wire-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    Frame,
    encode_frame,
)
from shoal.protocol.registry import (
    AnswerCheck,
    IdListPayload,
    Message,
    Payload,
    RawPayload,
    Registry,
)
from shoal.protocol.schema import (
    Array,
    Bin,
    Bool,
    Field,
    FieldError,
    Record,
    Text,
    UInt,
    peek_uint,
)

__all__ = [
    "ID_SIZE",
    "MAC_SIZE",
    "MAX_ADDRS",
    "MAX_ADDR_LENGTH",
    "MAX_BLOCK_IDS",
    "MAX_ERROR_CODE_LENGTH",
    "MAX_ERROR_MESSAGE_LENGTH",
    "MAX_LEASE_SECONDS",
    "MAX_NETWORK_LENGTH",
    "MAX_NODES",
    "MAX_NODE_ADDRS",
    "MAX_PEERS",
    "MESSAGES",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "RESPONSE_FOR",
    "SIGNATURE_SIZE",
    "Auth",
    "BlockData",
    "Error",
    "FindNode",
    "GetBlock",
    "GetPeers",
    "HasBlocks",
    "HaveBlocks",
    "Hello",
    "IdListPayload",
    "Lease",
    "Leased",
    "Message",
    "Nodes",
    "Payload",
    "PeerAddress",
    "Peers",
    "Ping",
    "Pong",
    "PutBlock",
    "PutBlockOk",
    "RawPayload",
    "Registry",
    "Release",
    "Released",
    "decode_message",
    "encode_message",
    "hello_version",
]

#: The bytes of version 1 have not changed since its first release; the receiver's rules were
#: tightened (unknown keys refused, per-type header limits) without changing what a correct
#: sender sends. A version that adds or changes keys must use a new number. FIND_NODE and NODES
#: (the DHT) were added within version 1 before any release: no node without them exists.
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
#: Nodes in one NODES answer (at least the DHT's k = 20), and addresses per node there: the
#: bounds keep every valid NODES header within the 64 KiB header limit (checked in tests).
MAX_NODES: Final = 24
MAX_NODE_ADDRS: Final = 2
#: The longest lease one LEASE may ask for (a receiver caps it further at its own longest).
MAX_LEASE_SECONDS: Final = 366 * 24 * 3600

_ID: Final = Bin(ID_SIZE)
_ADDRS: Final = Array(Text(MAX_ADDR_LENGTH), MAX_ADDRS)


#: The message types of this protocol version.
MESSAGES: Final = Registry()


# -- the messages ---------------------------------------------------------------------------


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message of each side: who I am and how to reach me (request id 0)."""

    CODE: ClassVar[int] = 1
    NAME: ClassVar[str] = "HELLO"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field("version", UInt()),
        Field("node_id", _ID),
        Field("public_key", _ID),
        Field("listen_addrs", _ADDRS),
        Field("network", Text(MAX_NETWORK_LENGTH, min_chars=1)),
        Field("nonce", _ID),
    )
    version: int
    node_id: bytes
    public_key: bytes
    listen_addrs: tuple[str, ...]
    network: str
    nonce: bytes


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Proof of key ownership over the handshake transcript (request id 0)."""

    CODE: ClassVar[int] = 2
    NAME: ClassVar[str] = "AUTH"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field("signature", Bin(SIGNATURE_SIZE)),
        Field("mac", Bin(MAC_SIZE), optional=True),
    )
    signature: bytes
    mac: bytes | None = None


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Error(Message):
    """A failure: with request id 0 about the whole connection, else the answer to a request."""

    CODE: ClassVar[int] = 3
    NAME: ClassVar[str] = "ERROR"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field("code", Text(MAX_ERROR_CODE_LENGTH, min_chars=1)),
        Field("message", Text(MAX_ERROR_MESSAGE_LENGTH)),
    )
    code: str
    message: str


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Pong(Message):
    """Answer to ``Ping`` (sent by the protocol ``Connection`` itself)."""

    CODE: ClassVar[int] = 5
    NAME: ClassVar[str] = "PONG"


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Liveness probe; the receiving ``Connection`` answers it with ``Pong`` by itself."""

    CODE: ClassVar[int] = 4
    NAME: ClassVar[str] = "PING"
    RESPONSE: ClassVar[type[Message] | None] = Pong


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A node and the addresses it listens on (``host:port`` strings)."""

    node_id: bytes
    addrs: tuple[str, ...]


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Peers(Message):
    """Answer to ``GetPeers``: up to 256 known peers (the header must fit 64 KiB)."""

    CODE: ClassVar[int] = 7
    NAME: ClassVar[str] = "PEERS"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field(
            "peers",
            Array(
                Record((Field("node_id", _ID), Field("addrs", _ADDRS)), PeerAddress),
                MAX_PEERS,
            ),
        ),
    )
    peers: tuple[PeerAddress, ...]


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class GetPeers(Message):
    """Ask for the peers the other node knows (peer exchange); answered by ``Peers``."""

    CODE: ClassVar[int] = 6
    NAME: ClassVar[str] = "GET_PEERS"
    RESPONSE: ClassVar[type[Message] | None] = Peers


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Nodes(Message):
    """Answer to ``FindNode``: up to 24 nodes closest to the target that the answerer knows,
    each with at most 2 addresses (so the header always fits its 64 KiB limit)."""

    CODE: ClassVar[int] = 9
    NAME: ClassVar[str] = "NODES"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field(
            "nodes",
            Array(
                Record(
                    (
                        Field("node_id", _ID),
                        Field("addrs", Array(Text(MAX_ADDR_LENGTH), MAX_NODE_ADDRS)),
                    ),
                    PeerAddress,
                ),
                MAX_NODES,
            ),
        ),
    )
    nodes: tuple[PeerAddress, ...]


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class FindNode(Message):
    """Kademlia FIND_NODE: which nodes do you know closest to ``target``? Answered by
    ``Nodes``, or by ``Error`` (code ``busy``) when the asker exceeds its rate limit."""

    CODE: ClassVar[int] = 8
    NAME: ClassVar[str] = "FIND_NODE"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("target", _ID),)
    RESPONSE: ClassVar[type[Message] | None] = Nodes
    target: bytes


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class PutBlockOk(Message):
    """The block is stored durably (after fsync)."""

    CODE: ClassVar[int] = 17
    NAME: ClassVar[str] = "PUT_BLOCK_OK"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("block_id", _ID),)
    block_id: bytes


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class PutBlock(Message):
    """Store a block; ``data`` travels as the raw payload. Answered by ``PutBlockOk``.

    The receiver, not the protocol layer, checks that ``block_id`` is SHA-256 of ``data``.
    """

    CODE: ClassVar[int] = 16
    NAME: ClassVar[str] = "PUT_BLOCK"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field("block_id", _ID),
        Field("lease", Bool(), optional=True),
        Field("share", Bool(), optional=True),
    )
    PAYLOAD: ClassVar[Payload | None] = RawPayload("data")
    RESPONSE: ClassVar[type[Message] | None] = PutBlockOk
    block_id: bytes
    data: bytes
    #: True: a put sends it, and the sender gets a short pending lease on the block (handoff
    #: and repair copies carry transferred leases instead; ``docs/leases.md``).
    lease: bool | None = None
    #: True: the block is an erasure-coded share (a put's or a stripe repair's); a receiver
    #: that writes it marks it so, and its handoff leaves it alone (``docs/erasure.md``).
    share: bool | None = None


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class BlockData(Message):
    """A block's bytes as the raw payload. The receiver checks the hash."""

    CODE: ClassVar[int] = 19
    NAME: ClassVar[str] = "BLOCK_DATA"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("block_id", _ID),)
    PAYLOAD: ClassVar[Payload | None] = RawPayload("data")
    block_id: bytes
    data: bytes


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class GetBlock(Message):
    """Fetch a block; answered by ``BlockData`` or ``Error`` (code ``not-found``)."""

    CODE: ClassVar[int] = 18
    NAME: ClassVar[str] = "GET_BLOCK"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("block_id", _ID),)
    RESPONSE: ClassVar[type[Message] | None] = BlockData
    block_id: bytes


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class HaveBlocks(Message):
    """Answer to ``HasBlocks``: ``present[i]`` tells whether ``block_ids[i]`` is held."""

    CODE: ClassVar[int] = 21
    NAME: ClassVar[str] = "HAVE_BLOCKS"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("present", Array(Bool(), MAX_BLOCK_IDS)),)
    present: tuple[bool, ...]


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class HasBlocks(Message):
    """Which of these blocks do you hold? Answered by ``HaveBlocks``.

    The ids travel packed in the payload (32 bytes each): 4096 of them would not fit the
    64 KiB header.
    """

    CODE: ClassVar[int] = 20
    NAME: ClassVar[str] = "HAS_BLOCKS"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("lease", Bool(), optional=True),)
    PAYLOAD: ClassVar[Payload | None] = IdListPayload("block_ids", ID_SIZE, MAX_BLOCK_IDS)
    RESPONSE: ClassVar[type[Message] | None] = HaveBlocks
    block_ids: tuple[bytes, ...]
    #: True: a put asks, and the sender gets a short pending lease on each block held.
    lease: bool | None = None

    def answer_check(self) -> AnswerCheck:
        asked = len(self.block_ids)

        def check(answer: Message) -> str | None:
            if isinstance(answer, HaveBlocks) and len(answer.present) != asked:
                return f"HAVE_BLOCKS has {len(answer.present)} entries for {asked} ids asked"
            return None

        return check


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Leased(Message):
    """Answer to ``Lease``: ``held[i]`` tells whether ``block_ids[i]`` is held here (a lease
    was recorded for exactly the blocks held)."""

    CODE: ClassVar[int] = 23
    NAME: ClassVar[str] = "LEASED"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("held", Array(Bool(), MAX_BLOCK_IDS)),)
    held: tuple[bool, ...]


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Lease(Message):
    """Keep these blocks of file ``root`` for ``seconds`` (capped by the receiver at its
    longest lease); answered by ``Leased``.

    The lease's owner is the authenticated sender; with ``owner`` set (a node that copied
    the blocks here passes on a lease it knows), the lease is that node's, and it can only
    keep data alive: it never shortens or releases anything. The ids travel packed in the
    payload, as in ``HasBlocks``.
    """

    CODE: ClassVar[int] = 22
    NAME: ClassVar[str] = "LEASE"
    HEADER: ClassVar[tuple[Field, ...]] = (
        Field("root", _ID),
        Field("seconds", UInt(MAX_LEASE_SECONDS)),
        Field("owner", _ID, optional=True),
    )
    PAYLOAD: ClassVar[Payload | None] = IdListPayload("block_ids", ID_SIZE, MAX_BLOCK_IDS)
    RESPONSE: ClassVar[type[Message] | None] = Leased
    root: bytes
    seconds: int
    block_ids: tuple[bytes, ...]
    owner: bytes | None = None

    def answer_check(self) -> AnswerCheck:
        asked = len(self.block_ids)

        def check(answer: Message) -> str | None:
            if isinstance(answer, Leased) and len(answer.held) != asked:
                return f"LEASED has {len(answer.held)} entries for {asked} ids sent"
            return None

        return check


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Released(Message):
    """Answer to ``Release``: how many lease rows of the sender were dropped."""

    CODE: ClassVar[int] = 25
    NAME: ClassVar[str] = "RELEASED"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("count", UInt()),)
    count: int


@MESSAGES.register
@dataclass(frozen=True, slots=True)
class Release(Message):
    """Drop the sender's own leases for file ``root`` (never anyone else's); answered by
    ``Released``."""

    CODE: ClassVar[int] = 24
    NAME: ClassVar[str] = "RELEASE"
    HEADER: ClassVar[tuple[Field, ...]] = (Field("root", _ID),)
    RESPONSE: ClassVar[type[Message] | None] = Released
    root: bytes


#: Each request type and the response it expects (``Error`` may answer any request).
RESPONSE_FOR: Final[dict[type[Message], type[Message]]] = MESSAGES.responses()
#: Messages that open a request (they carry a fresh request id).
REQUEST_TYPES: Final[frozenset[type[Message]]] = frozenset(RESPONSE_FOR)


# -- encoding and decoding ------------------------------------------------------------------


def encode_message(
    request_id: int,
    message: Message,
    *,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> list[bytes | memoryview]:
    """Check ``message`` and encode it as one frame (payload not copied).

    Raises:
        LocalProtocolError: Not a registered message, a field is invalid, or the frame
            exceeds the limits.
    """
    cls = type(message)
    if not isinstance(message, Message) or MESSAGES.get(cls.CODE) is not cls:
        raise LocalProtocolError(f"not a protocol message: {cls.__name__}")
    try:
        header = cls.schema.encode(message)
        payload = (
            b"" if cls.PAYLOAD is None else cls.PAYLOAD.to_wire(getattr(message, cls.PAYLOAD.field))
        )
    except FieldError as exc:
        raise LocalProtocolError(
            f"invalid {cls.NAME} message: {exc}", code="malformed-message"
        ) from None
    return encode_frame(
        cls.CODE,
        request_id,
        header,
        payload,
        max_frame_size=max_frame_size,
        max_header_size=max_header_size,
    )


def decode_message(frame: Frame, *, max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> Message:
    """Build and check the message a frame carries.

    Args:
        frame: A frame from ``FrameDecoder``.
        max_header_size: The connection's header limit; each type's own bound also applies.

    Raises:
        RemoteProtocolError: ``unknown-frame-type``, ``header-too-large``,
            ``malformed-header`` or ``malformed-message`` (missing or unknown key, wrong type
            or size, unexpected payload).
    """
    cls = MESSAGES.get(frame.type)
    if cls is None:
        raise RemoteProtocolError(f"unknown frame type {frame.type}", code="unknown-frame-type")
    values = cls.schema.decode(frame.header, max_header_size)
    try:
        if cls.PAYLOAD is not None:
            values[cls.PAYLOAD.field] = cls.PAYLOAD.from_wire(frame.payload)
        elif frame.payload:
            raise FieldError(f"{cls.NAME} carries no payload, got {len(frame.payload)} bytes")
    except FieldError as exc:
        raise RemoteProtocolError(
            f"invalid {cls.NAME} message: {exc}", code="malformed-message"
        ) from None
    message: Message = cls(**values)
    return message


def hello_version(frame: Frame) -> int | None:
    """The ``version`` of a HELLO frame, read before (and whatever) the rest of the header.

    ``None`` when the header has no readable non-negative integer ``version``.
    """
    return peek_uint(frame.header, "version", max_size=DEFAULT_MAX_HEADER_SIZE)
