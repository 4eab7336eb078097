"""The connection state machine: handshake, then multiplexed requests (sans-I/O).

How it works: the transport feeds received bytes with ``receive_data`` and pulls events with
``next_event`` until ``NEED_DATA``; whatever the connection wants to send accumulates and is
taken with ``data_to_send``. No sockets, clocks or randomness here: the nonce and the TLS
facts (the listener's certificate hash and, for the dialer, its key) are injected.

Handshake (all with request id 0)::

    dialer                                 listener
    start()      --- HELLO ------------->  check version, network, node id
                 <-- HELLO --------------
    check, + key from TLS cert
                 --- AUTH (sig[, mac]) ->  verify
                 <-- AUTH (sig[, mac]) --  ESTABLISHED, HandshakeComplete
    verify: ESTABLISHED, HandshakeComplete

States: dialer IDLE -> AWAIT_HELLO -> AWAIT_AUTH -> ESTABLISHED; listener AWAIT_HELLO ->
AWAIT_AUTH -> ESTABLISHED; then CLOSED on EOF, or ERROR from anywhere. Request ids: the dialer
opens requests with odd ids, the listener with even ids; a response echoes the id.

Any violation moves to ERROR, queues an ERROR frame (request id 0; not when the violation was
the peer's own ERROR) and raises; every later ``next_event`` raises again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal import defaults
from shoal.errors import HandshakeError, LocalProtocolError, ProtocolError, RemoteProtocolError
from shoal.ids import short_id
from shoal.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    Frame,
    FrameDecoder,
    FrameType,
)
from shoal.protocol.handshake import (
    Role,
    node_id_for,
    public_key_bytes,
    sign_auth,
    verify_auth,
)
from shoal.protocol.messages import (
    ID_SIZE,
    MAX_ERROR_CODE_LENGTH,
    MAX_ERROR_MESSAGE_LENGTH,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    Auth,
    Error,
    Hello,
    Message,
    decode_message,
    encode_message,
)

__all__ = [
    "NEED_DATA",
    "Connection",
    "ConnectionClosed",
    "Event",
    "HandshakeComplete",
    "LocalNode",
    "MessageReceived",
    "NeedData",
    "Role",
    "State",
]

_MAX_REQUEST_ID: Final = 0xFFFFFFFF
_REQUEST_FRAME_TYPES: Final = frozenset(cls.TYPE for cls in REQUEST_TYPES)


class State(enum.Enum):
    """Where a ``Connection`` is in its life."""

    IDLE = "idle"  # dialer before start()
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    ESTABLISHED = "established"
    CLOSED = "closed"  # the peer closed cleanly (EOF between frames)
    ERROR = "error"


@dataclass(frozen=True)
class LocalNode:
    """This node as the handshake presents it.

    Attributes:
        private_key: The node's Ed25519 key.
        listen_addrs: ``host:port`` addresses other nodes can dial (at most 16).
        network: The network name; both sides must use the same.
        network_secret: Shared secret of a closed network, or ``None`` for an open one.
    """

    private_key: Ed25519PrivateKey
    listen_addrs: tuple[str, ...] = ()
    network: str = defaults.OPEN_NETWORK
    network_secret: bytes | None = None

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return public_key_bytes(self.private_key)

    @property
    def node_id(self) -> bytes:
        """SHA-256 of the raw public key."""
        return node_id_for(self.public_key)


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The peer proved its key; requests may flow. ``peer`` is its HELLO."""

    peer: Hello


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A request, response or per-request ERROR from the established peer."""

    request_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection cleanly (EOF on a frame boundary)."""


class NeedData(enum.Enum):
    """Type of the ``NEED_DATA`` sentinel."""

    NEED_DATA = "need-data"


#: Returned by ``next_event`` when every received byte has been used.
NEED_DATA: Final = NeedData.NEED_DATA

Event: TypeAlias = HandshakeComplete | MessageReceived | ConnectionClosed


class Connection:
    """One side of one Shoal connection.

    Args:
        role: ``Role.DIALER`` or ``Role.LISTENER``.
        local: This node's key, addresses and network.
        nonce: 32 fresh random bytes (the caller draws them: no randomness in here).
        listener_cert_hash: SHA-256 of the listener's TLS certificate (ours as listener).
        listener_public_key: Dialer only, required: the raw key of the listener's certificate.
        expected_peer_id: The node id the peer must have, when known.
        max_frame_size: Largest accepted and sent frame ``length``.
        max_header_size: Largest accepted and sent header.

    Raises:
        LocalProtocolError: Invalid arguments (nonce size, missing key, bad local addresses).
    """

    def __init__(
        self,
        role: Role,
        local: LocalNode,
        *,
        nonce: bytes,
        listener_cert_hash: bytes,
        listener_public_key: bytes | None = None,
        expected_peer_id: bytes | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        if type(nonce) is not bytes or len(nonce) != ID_SIZE:
            raise LocalProtocolError(f"the handshake nonce must be {ID_SIZE} bytes")
        if type(listener_cert_hash) is not bytes or len(listener_cert_hash) != ID_SIZE:
            raise LocalProtocolError(f"listener_cert_hash must be {ID_SIZE} bytes (SHA-256)")
        if role is Role.DIALER and listener_public_key is None:
            raise LocalProtocolError("a dialer needs the public key of the listener's certificate")
        self.role = role
        self.local = local
        self._cert_hash = listener_cert_hash
        self._listener_key = listener_public_key
        self._expected_peer_id = expected_peer_id
        self._max_frame_size = max_frame_size
        self._max_header_size = max_header_size
        self._decoder = FrameDecoder(max_frame_size, max_header_size)
        self._our_node_id = local.node_id
        self._hello = Hello(
            version=PROTOCOL_VERSION,
            node_id=self._our_node_id,
            public_key=local.public_key,
            listen_addrs=tuple(local.listen_addrs),
            network=local.network,
            nonce=nonce,
        )
        # Encoded now so bad local settings fail here, not in the middle of a handshake.
        self._hello_frame = self._encode(0, self._hello)
        self._peer: Hello | None = None
        self._state = State.IDLE if role is Role.DIALER else State.AWAIT_HELLO
        self._outgoing: list[bytes | memoryview] = []
        self._eof = False
        self._error: ProtocolError | None = None
        self._own_parity = 1 if role is Role.DIALER else 0
        self._last_request_id = -1 if role is Role.DIALER else 0

    # -- public API -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def peer(self) -> Hello | None:
        """The peer's HELLO once received (its identity is proven only once ESTABLISHED)."""
        return self._peer

    def start(self) -> None:
        """Begin the handshake: the dialer queues its HELLO; a no-op for the listener."""
        if self.role is Role.LISTENER:
            return
        if self._state is not State.IDLE:
            raise LocalProtocolError("start() was already called on this connection")
        self._outgoing.extend(self._hello_frame)
        self._state = State.AWAIT_HELLO

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed (EOF).

        Raises:
            LocalProtocolError: Data fed after EOF.
        """
        if self._state is State.ERROR:
            return  # the connection is being torn down: drop, never buffer
        if self._eof:
            if data:
                raise LocalProtocolError("received data after EOF")
            return
        if not data:
            self._eof = True
            return
        self._decoder.receive_data(data)

    def next_event(self) -> Event | Literal[NeedData.NEED_DATA]:
        """Process buffered bytes and return the next event, or ``NEED_DATA``.

        Raises:
            RemoteProtocolError: The peer broke the protocol or sent a connection ERROR
                (``HandshakeError`` before ESTABLISHED). Raised again on every later call.
        """
        if self._error is not None:
            raise type(self._error)(str(self._error), code=self._error.code)
        if self._state is State.CLOSED:
            return ConnectionClosed()
        try:
            while True:
                frame = self._decoder.next_frame()
                if frame is None:
                    if not self._eof:
                        return NEED_DATA
                    if self._decoder.buffered:
                        raise RemoteProtocolError(
                            f"the peer closed the connection in the middle of a frame "
                            f"({self._decoder.buffered} bytes of it received)",
                            code="truncated-frame",
                        )
                    self._state = State.CLOSED
                    return ConnectionClosed()
                event = self._handle(frame)
                if event is not None:
                    return event
        except _PeerError as exc:
            self._fail(exc.error, send_error=False)
            raise exc.error from None
        except ProtocolError as exc:
            error = exc
            if self._in_handshake() and not isinstance(exc, HandshakeError | LocalProtocolError):
                error = HandshakeError(str(exc), code=exc.code)
            self._fail(error, send_error=True)
            if error is exc:
                raise
            raise error from exc

    def send(self, request_id: int, message: Message) -> None:
        """Queue ``message`` with ``request_id`` (see ``next_request_id``).

        Requests use our own ids, responses and per-request ERRORs echo the peer's id; an
        ``Error`` with request id 0 (about the connection) may be sent in any state.

        Raises:
            LocalProtocolError: Wrong state, handshake message, bad id or malformed message.
        """
        if isinstance(message, Hello | Auth):
            raise LocalProtocolError("HELLO and AUTH are sent by the connection itself")
        if self._state is State.ERROR:
            raise LocalProtocolError("the connection has failed; close it")
        if isinstance(message, Error) and request_id == 0:
            self._outgoing.extend(self._encode(0, message))
            return
        if self._state is not State.ESTABLISHED:
            raise LocalProtocolError(
                f"cannot send {type(message).__name__} in state {self._state.value}: "
                "wait for HandshakeComplete"
            )
        ours = type(message) in REQUEST_TYPES
        if not self._id_ok(request_id, ours=ours):
            raise LocalProtocolError(self._bad_id_text(request_id, message.TYPE, ours=ours))
        self._outgoing.extend(self._encode(request_id, message))

    def data_to_send(self) -> list[bytes | memoryview]:
        """Take the buffers queued for the peer (to pass to ``writelines``)."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_request_id(self) -> int:
        """A fresh id for a request: odd for the dialer, even for the listener, never 0."""
        nxt = self._last_request_id + 2
        if nxt > _MAX_REQUEST_ID:
            nxt = 1 if self.role is Role.DIALER else 2
        self._last_request_id = nxt
        return nxt

    # -- internals --------------------------------------------------------------------------

    def _encode(self, request_id: int, message: Message) -> list[bytes | memoryview]:
        return encode_message(
            request_id,
            message,
            max_frame_size=self._max_frame_size,
            max_header_size=self._max_header_size,
        )

    def _in_handshake(self) -> bool:
        return self._state in (State.IDLE, State.AWAIT_HELLO, State.AWAIT_AUTH)

    def _fail(self, error: ProtocolError, *, send_error: bool) -> None:
        self._state = State.ERROR
        self._error = error
        if send_error:
            code = error.code[:MAX_ERROR_CODE_LENGTH] or "protocol-error"
            text = str(error)[:MAX_ERROR_MESSAGE_LENGTH]
            self._outgoing.extend(self._encode(0, Error(code=code, message=text)))

    def _id_ok(self, request_id: int, *, ours: bool) -> bool:
        parity = self._own_parity if ours else 1 - self._own_parity
        return 0 < request_id <= _MAX_REQUEST_ID and request_id % 2 == parity

    def _bad_id_text(self, request_id: int, frame_type: FrameType, *, ours: bool) -> str:
        opener = self.role if ours else _other(self.role)
        kind = "odd" if opener is Role.DIALER else "even"
        return (
            f"{frame_type.name} has request id {request_id}, but requests opened by the "
            f"{opener.value} use {kind} ids other than 0"
        )

    def _handle(self, frame: Frame) -> Event | None:
        if frame.type is FrameType.ERROR:
            message = decode_message(frame)
            assert isinstance(message, Error)
            if frame.request_id == 0 or self._in_handshake():
                raise _PeerError(self._peer_error(message))
        elif self._in_handshake():
            return self._handle_handshake(frame)
        elif frame.type in (FrameType.HELLO, FrameType.AUTH):
            raise RemoteProtocolError(
                f"{frame.type.name} after the handshake completed", code="unexpected-message"
            )
        else:
            message = decode_message(frame)
        ours = frame.type not in _REQUEST_FRAME_TYPES  # responses and ERRORs echo our ids
        if not self._id_ok(frame.request_id, ours=ours):
            raise RemoteProtocolError(
                self._bad_id_text(frame.request_id, frame.type, ours=ours), code="bad-request-id"
            )
        return MessageReceived(frame.request_id, message)

    def _peer_error(self, error: Error) -> RemoteProtocolError:
        who = "the peer" if self._peer is None else f"peer {short_id(self._peer.node_id)}"
        text = f"{who} reported an error [{error.code}]: {error.message}"
        cls = HandshakeError if self._in_handshake() else RemoteProtocolError
        return cls(text, code=error.code)

    def _handle_handshake(self, frame: Frame) -> Event | None:
        expected = FrameType.HELLO if self._state is State.AWAIT_HELLO else FrameType.AUTH
        if self._state is State.IDLE or frame.type is not expected:
            waiting = "start()" if self._state is State.IDLE else expected.name
            raise HandshakeError(
                f"received {frame.type.name} during the handshake while waiting for {waiting}",
                code="unexpected-message",
            )
        if frame.request_id != 0:
            raise HandshakeError(
                f"{frame.type.name} must have request id 0, got {frame.request_id}",
                code="bad-request-id",
            )
        if frame.type is FrameType.HELLO:
            self._on_hello(frame)
            return None
        return self._on_auth(frame)

    def _on_hello(self, frame: Frame) -> None:
        # Check the version before the full decode: a later version may change other keys.
        version = frame.header.get("version")
        if type(version) is int and version >= 0 and version != PROTOCOL_VERSION:
            older = "this node" if version > PROTOCOL_VERSION else "the peer"
            raise HandshakeError(
                f"incompatible protocol versions: this node speaks version {PROTOCOL_VERSION}, "
                f"the peer speaks version {version}; upgrade the older node ({older})",
                code="incompatible-version",
            )
        hello = decode_message(frame)
        assert isinstance(hello, Hello)
        if hello.network != self.local.network:
            raise HandshakeError(
                f"the peer is in network {hello.network!r}, this node in "
                f"{self.local.network!r}; use the same network name on both",
                code="wrong-network",
            )
        if node_id_for(hello.public_key) != hello.node_id:
            raise HandshakeError(
                "the peer's node id is not the SHA-256 of its public key",
                code="invalid-node-id",
            )
        if hello.node_id == self._our_node_id:
            raise HandshakeError(
                "this node connected to itself (one of its peer addresses is its own)",
                code="self-connection",
            )
        if self.role is Role.DIALER and hello.public_key != self._listener_key:
            raise HandshakeError(
                "the peer's HELLO key differs from the key of its TLS certificate",
                code="key-mismatch",
            )
        if self._expected_peer_id is not None and hello.node_id != self._expected_peer_id:
            raise HandshakeError(
                f"expected node {short_id(self._expected_peer_id)} but the peer is node "
                f"{short_id(hello.node_id)}; the address now belongs to another node",
                code="wrong-peer",
            )
        self._peer = hello
        if self.role is Role.LISTENER:
            self._outgoing.extend(self._hello_frame)
        else:
            self._outgoing.extend(self._encode(0, self._sign()))
        self._state = State.AWAIT_AUTH

    def _on_auth(self, frame: Frame) -> Event:
        auth = decode_message(frame)
        assert isinstance(auth, Auth)
        peer = self._peer
        assert peer is not None  # set when leaving AWAIT_HELLO
        dialer, listener = self._hellos()
        verify_auth(
            auth,
            _other(self.role),
            peer.public_key,
            self._cert_hash,
            dialer,
            listener,
            network_secret=self.local.network_secret,
        )
        if self.role is Role.LISTENER:
            self._outgoing.extend(self._encode(0, self._sign()))
        self._state = State.ESTABLISHED
        return HandshakeComplete(peer)

    def _hellos(self) -> tuple[Hello, Hello]:
        assert self._peer is not None
        if self.role is Role.DIALER:
            return self._hello, self._peer
        return self._peer, self._hello

    def _sign(self) -> Auth:
        dialer, listener = self._hellos()
        return sign_auth(
            self.role,
            self.local.private_key,
            self._cert_hash,
            dialer,
            listener,
            network_secret=self.local.network_secret,
        )


class _PeerError(Exception):
    """Carries the peer's own ERROR out of ``_handle``: it is not answered with an ERROR."""

    def __init__(self, error: RemoteProtocolError) -> None:
        super().__init__(str(error))
        self.error = error


def _other(role: Role) -> Role:
    return Role.LISTENER if role is Role.DIALER else Role.DIALER
