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
AWAIT_AUTH -> ESTABLISHED; then CLOSED on EOF, or ERROR from anywhere.

Once ESTABLISHED the connection pairs requests and responses (``requests.py``):
``send_request`` returns the id of a new request of ours, and its answer comes back as
``ResponseReceived`` (the expected response type or ``Error``); ``cancel_request`` gives up on
one, and its late answer is dropped. The peer's requests come out as ``RequestReceived`` and
are answered with ``send_response``, except PING, which the connection answers with PONG by
itself (PING never reaches the caller). An answer to a request we never sent is
``unknown-response``; an answer of the wrong type is ``unexpected-response``.

Any violation moves to ERROR, queues an ERROR frame (request id 0; not when the violation was
the peer's own ERROR) and raises; every later ``next_event`` raises again.
"""

from __future__ import annotations

from typing import Literal

from shoal.errors import HandshakeError, LocalProtocolError, ProtocolError, RemoteProtocolError
from shoal.ids import short_id
from shoal.protocol.events import (
    NEED_DATA,
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
    FRAME_OVERHEAD,
    Frame,
    FrameDecoder,
)
from shoal.protocol.handshake import LocalNode, Role, check_hello, sign_auth, verify_auth
from shoal.protocol.messages import (
    ID_SIZE,
    MAX_ERROR_CODE_LENGTH,
    MAX_ERROR_MESSAGE_LENGTH,
    MESSAGES,
    PROTOCOL_VERSION,
    Auth,
    Error,
    Hello,
    Message,
    Ping,
    Pong,
    decode_message,
    encode_message,
    hello_version,
)
from shoal.protocol.requests import DEFAULT_MAX_CANCELLED_REQUESTS, RequestTable
from shoal.protocol.schema import safe_text

__all__ = [
    "NEED_DATA",
    "Connection",
    "ConnectionClosed",
    "Event",
    "HandshakeComplete",
    "LocalNode",
    "NeedData",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "State",
]


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
        max_header_size: Largest accepted and sent header (each message type also has its
            own, smaller bound computed from its schema).
        max_cancelled_requests: How many cancelled request ids are remembered so that late
            answers to them are dropped quietly (``requests.py``).

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
        max_cancelled_requests: int = DEFAULT_MAX_CANCELLED_REQUESTS,
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
        self._decoder = FrameDecoder(max_frame_size, max_header_size, frame_types=MESSAGES.codes)
        # Until the peer is authenticated only HELLO, AUTH and ERROR can come, and none has a
        # payload: a stranger cannot make us buffer more than one maximum header.
        self._decoder.max_frame_size = min(max_frame_size, FRAME_OVERHEAD + max_header_size)
        self._requests = RequestTable(
            dialer=role is Role.DIALER, max_cancelled=max_cancelled_requests
        )
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

    # -- public API -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def peer(self) -> Hello | None:
        """The peer's HELLO once received (its identity is proven only once ESTABLISHED)."""
        return self._peer

    @property
    def outstanding_requests(self) -> int:
        """Our requests still waiting for an answer (cancelled ones not counted)."""
        return self._requests.outstanding

    @property
    def open_peer_requests(self) -> int:
        """The peer's requests we received and have not answered yet."""
        return self._requests.peer_open

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

    def send_request(self, message: Message) -> int:
        """Queue a request; return its new request id (its answer is a ``ResponseReceived``).

        Raises:
            LocalProtocolError: Not established, not a request type, or a malformed message.
        """
        self._check_can_send(message)
        cls = type(message)
        if not cls.is_request():
            raise LocalProtocolError(f"{cls.NAME} is not a request; use send_response")
        request_id = self._requests.open(message)
        try:
            frame = self._encode(request_id, message)
        except LocalProtocolError:
            self._requests.abandon(request_id)
            raise
        self._outgoing.extend(frame)
        return request_id

    def send_response(self, request_id: int, message: Message) -> None:
        """Answer the peer's request ``request_id`` with its response type or an ``Error``.

        Raises:
            LocalProtocolError: Not established, no such open request, the wrong response
                type, or a malformed message (the request then stays open, so an ``Error``
                can still answer it).
        """
        self._check_can_send(message)
        self._requests.check_answer(request_id, message)
        frame = self._encode(request_id, message)
        self._requests.answered(request_id)
        self._outgoing.extend(frame)

    def cancel_request(self, request_id: int) -> None:
        """Give up on our request ``request_id``: a late answer to it is dropped silently.

        Only the ``max_cancelled_requests`` latest cancelled ids are remembered; an answer to
        an older one ends the connection (``unknown-response``). A no-op for an id that is not
        outstanding.
        """
        self._requests.cancel(request_id)

    def send_connection_error(self, error: Error) -> None:
        """Queue an ERROR about the whole connection (request id 0), in any state.

        The caller closes the connection once it is flushed.

        Raises:
            LocalProtocolError: The connection already failed (its own ERROR is queued), or
                the message is malformed.
        """
        if self._state is State.ERROR:
            raise LocalProtocolError("the connection has failed; close it")
        self._outgoing.extend(self._encode(0, error))

    def data_to_send(self) -> list[bytes | memoryview]:
        """Take the buffers queued for the peer (to pass to ``writelines``)."""
        out, self._outgoing = self._outgoing, []
        return out

    # -- internals --------------------------------------------------------------------------

    def _check_can_send(self, message: Message) -> None:
        if self._state is State.ERROR:
            raise LocalProtocolError("the connection has failed; close it")
        if self._state is not State.ESTABLISHED:
            raise LocalProtocolError(
                f"cannot send {type(message).__name__} in state {self._state.value}: "
                "wait for HandshakeComplete"
            )

    def _encode(self, request_id: int, message: Message) -> list[bytes | memoryview]:
        return encode_message(
            request_id,
            message,
            max_frame_size=self._max_frame_size,
            max_header_size=self._max_header_size,
        )

    def _decode(self, frame: Frame) -> Message:
        return decode_message(frame, max_header_size=self._max_header_size)

    def _in_handshake(self) -> bool:
        return self._state in (State.IDLE, State.AWAIT_HELLO, State.AWAIT_AUTH)

    def _fail(self, error: ProtocolError, *, send_error: bool) -> None:
        self._state = State.ERROR
        self._error = error
        self._decoder.discard()  # never hold bytes for a dead connection
        self._requests.fail_all()
        if send_error:
            code = error.code[:MAX_ERROR_CODE_LENGTH] or "protocol-error"
            text = str(error)[:MAX_ERROR_MESSAGE_LENGTH]
            self._outgoing.extend(self._encode(0, Error(code=code, message=text)))

    def _handle(self, frame: Frame) -> Event | None:
        cls = MESSAGES.get(frame.type)
        assert cls is not None  # the decoder refuses unknown types
        if cls is Error:
            error = self._decode(frame)
            assert isinstance(error, Error)
            if frame.request_id == 0 or self._in_handshake():
                raise _PeerError(self._peer_error(error))
            deliver, _ = self._requests.close_answered(frame.request_id, Error)
            return ResponseReceived(frame.request_id, error) if deliver else None
        if self._in_handshake():
            return self._handle_handshake(frame, cls)
        if cls is Hello or cls is Auth:
            raise RemoteProtocolError(
                f"{cls.NAME} after the handshake completed", code="unexpected-message"
            )
        if cls.is_request():
            # Ids are checked before the message is decoded: refusing costs nothing.
            self._requests.peer_opened(frame.request_id, cls)
            message = self._decode(frame)
            if cls is Ping:
                self._requests.answered(frame.request_id)
                self._outgoing.extend(self._encode(frame.request_id, Pong()))
                return None
            return RequestReceived(frame.request_id, message)
        deliver, check = self._requests.close_answered(frame.request_id, cls)
        message = self._decode(frame)
        problem = None if check is None else check(message)
        if problem is not None:
            raise RemoteProtocolError(
                f"{problem} (request {frame.request_id})", code="unexpected-response"
            )
        return ResponseReceived(frame.request_id, message) if deliver else None

    def _peer_error(self, error: Error) -> RemoteProtocolError:
        who = "the peer" if self._peer is None else f"peer {short_id(self._peer.node_id)}"
        text = (
            f"{who} reported an error [{safe_text(error.code, MAX_ERROR_CODE_LENGTH)}]: "
            f"{safe_text(error.message, MAX_ERROR_MESSAGE_LENGTH)}"
        )
        cls = HandshakeError if self._in_handshake() else RemoteProtocolError
        return cls(text, code=error.code)

    def _handle_handshake(self, frame: Frame, cls: type[Message]) -> Event | None:
        expected = Hello if self._state is State.AWAIT_HELLO else Auth
        if self._state is State.IDLE or cls is not expected:
            waiting = "start()" if self._state is State.IDLE else expected.NAME
            raise HandshakeError(
                f"received {cls.NAME} during the handshake while waiting for {waiting}",
                code="unexpected-message",
            )
        if frame.request_id != 0:
            raise HandshakeError(
                f"{cls.NAME} must have request id 0, got {frame.request_id}",
                code="bad-request-id",
            )
        if cls is Hello:
            self._on_hello(frame)
            return None
        return self._on_auth(frame)

    def _on_hello(self, frame: Frame) -> None:
        # Check the version before the full decode: a later version may change other keys.
        version = hello_version(frame)
        if version is not None and version != PROTOCOL_VERSION:
            older = "this node" if version > PROTOCOL_VERSION else "the peer"
            raise HandshakeError(
                f"incompatible protocol versions: this node speaks version {PROTOCOL_VERSION}, "
                f"the peer speaks version {version}; upgrade the older node ({older})",
                code="incompatible-version",
            )
        hello = self._decode(frame)
        assert isinstance(hello, Hello)
        check_hello(
            hello,
            self.local,
            self.role,
            listener_public_key=self._listener_key,
            expected_peer_id=self._expected_peer_id,
        )
        self._peer = hello
        if self.role is Role.LISTENER:
            self._outgoing.extend(self._hello_frame)
        else:
            self._outgoing.extend(self._encode(0, self._sign()))
        self._state = State.AWAIT_AUTH

    def _on_auth(self, frame: Frame) -> Event:
        auth = self._decode(frame)
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
        self._decoder.max_frame_size = self._max_frame_size
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
