"""Sans-I/O wire protocol: frame codec, message registry and schemas, handshake, connection.

No sockets, clocks or asyncio here: bytes in, events and bytes out. Layout on the wire:
``docs/wire-format.md``. The transport uses ``Connection`` and its events; the node layer uses
the message classes.
"""

from __future__ import annotations

from shoal.protocol.connection import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    NeedData,
    RequestReceived,
    ResponseReceived,
    State,
)
from shoal.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    Frame,
    FrameDecoder,
    encode_frame,
)
from shoal.protocol.handshake import (
    AUTH_DOMAIN,
    LocalNode,
    Role,
    auth_transcript,
    node_id_for,
    public_key_bytes,
    sign_auth,
    verify_auth,
)
from shoal.protocol.messages import (
    MESSAGES,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    RESPONSE_FOR,
    Auth,
    BlockData,
    Error,
    FindNode,
    GetBlock,
    GetPeers,
    HasBlocks,
    HaveBlocks,
    Hello,
    Nodes,
    PeerAddress,
    Peers,
    Ping,
    Pong,
    PutBlock,
    PutBlockOk,
    decode_message,
    encode_message,
)
from shoal.protocol.registry import Message, Registry
from shoal.protocol.requests import DEFAULT_MAX_CANCELLED_REQUESTS

__all__ = [
    "AUTH_DOMAIN",
    "DEFAULT_MAX_CANCELLED_REQUESTS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "MESSAGES",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "RESPONSE_FOR",
    "Auth",
    "BlockData",
    "Connection",
    "ConnectionClosed",
    "Error",
    "Event",
    "FindNode",
    "Frame",
    "FrameDecoder",
    "GetBlock",
    "GetPeers",
    "HandshakeComplete",
    "HasBlocks",
    "HaveBlocks",
    "Hello",
    "LocalNode",
    "Message",
    "NeedData",
    "Nodes",
    "PeerAddress",
    "Peers",
    "Ping",
    "Pong",
    "PutBlock",
    "PutBlockOk",
    "Registry",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "State",
    "auth_transcript",
    "decode_message",
    "encode_frame",
    "encode_message",
    "node_id_for",
    "public_key_bytes",
    "sign_auth",
    "verify_auth",
]
