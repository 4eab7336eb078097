"""The connection state machine: handshake, requests, and every documented failure."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest

from shoal.errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from shoal.protocol import (
    NEED_DATA,
    Auth,
    BlockData,
    Connection,
    ConnectionClosed,
    Error,
    FrameDecoder,
    GetBlock,
    GetPeers,
    HandshakeComplete,
    HasBlocks,
    HaveBlocks,
    Hello,
    Message,
    PeerAddress,
    Peers,
    Ping,
    Pong,
    PutBlockOk,
    RequestReceived,
    ResponseReceived,
    Role,
    State,
    encode_frame,
    encode_message,
)
from shoal.protocol.messages import decode_message

from .helpers import CERT_HASH, Link, drain, make_key, make_local, make_pair, nonce, transfer

BLOCK = bytes(range(256)) * 4096


def wire(request_id: int, message: Message) -> bytes:
    return b"".join(encode_message(request_id, message))


def sent_frames(conn: Connection) -> list[tuple[int, Message]]:
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(conn.data_to_send()))
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append((frame.request_id, decode_message(frame)))
    assert decoder.buffered == 0
    return out


def established() -> Link:
    dialer, listener = make_pair()
    dialer.start()
    Link(dialer, listener).pump()
    assert dialer.state is listener.state is State.ESTABLISHED
    return Link(dialer, listener)


def test_full_handshake() -> None:
    dialer_local, listener_local = make_local(1), make_local(2)
    dialer, listener = make_pair(dialer_local, listener_local)
    assert dialer.state is State.IDLE
    assert listener.state is State.AWAIT_HELLO
    assert dialer.data_to_send() == []
    listener.start()  # a no-op for the listener
    assert listener.data_to_send() == []
    dialer.start()
    with pytest.raises(LocalProtocolError):
        dialer.start()
    dialer_events, listener_events = Link(dialer, listener).pump()
    assert len(dialer_events) == len(listener_events) == 1
    d_event, l_event = dialer_events[0], listener_events[0]
    assert isinstance(d_event, HandshakeComplete)
    assert isinstance(l_event, HandshakeComplete)
    assert d_event.peer.node_id == listener_local.node_id
    assert d_event.peer.listen_addrs == listener_local.listen_addrs
    assert l_event.peer.node_id == dialer_local.node_id
    assert l_event.peer.nonce == nonce("dialer")
    assert dialer.peer == d_event.peer
    assert listener.peer == l_event.peer


def test_handshake_frames_in_order() -> None:
    dialer, listener = make_pair()
    dialer.start()
    [(rid, hello)] = sent_frames(dialer)
    assert rid == 0
    assert isinstance(hello, Hello)
    assert hello.version == 1
    listener.receive_data(wire(0, hello))
    assert drain(listener) == []
    assert listener.state is State.AWAIT_AUTH
    [(_, listener_hello)] = sent_frames(listener)
    assert isinstance(listener_hello, Hello)
    dialer.receive_data(wire(0, listener_hello))
    assert drain(dialer) == []
    [(_, auth)] = sent_frames(dialer)
    assert isinstance(auth, Auth)
    assert auth.mac is None
    listener.receive_data(wire(0, auth))
    assert isinstance(listener.next_event(), HandshakeComplete)
    [(_, listener_auth)] = sent_frames(listener)
    dialer.receive_data(wire(0, listener_auth))
    assert isinstance(dialer.next_event(), HandshakeComplete)
    assert dialer.next_event() is NEED_DATA


def test_requests_both_ways() -> None:
    link = established()
    dialer, listener = link.dialer, link.listener
    block_id = b"\x01" * 32
    assert dialer.send_request(GetBlock(block_id)) == 1
    assert dialer.send_request(GetPeers()) == 3
    assert dialer.send_request(HasBlocks((block_id,))) == 5
    assert dialer.outstanding_requests == 3
    _, events = link.pump()
    assert events == [
        RequestReceived(1, GetBlock(block_id)),
        RequestReceived(3, GetPeers()),
        RequestReceived(5, HasBlocks((block_id,))),
    ]
    assert listener.open_peer_requests == 3
    assert listener.send_request(GetPeers()) == 2
    listener.send_response(3, Peers(()))
    listener.send_response(1, BlockData(block_id, BLOCK))
    listener.send_response(5, Error("not-found", "no such block"))
    events, _ = link.pump()
    assert events == [
        RequestReceived(2, GetPeers()),
        ResponseReceived(3, Peers(())),
        ResponseReceived(1, BlockData(block_id, BLOCK)),
        ResponseReceived(5, Error("not-found", "no such block")),
    ]
    assert listener.open_peer_requests == 0
    assert dialer.outstanding_requests == 0
    peers = Peers((PeerAddress(block_id, ("127.0.0.1:1",)),))
    dialer.send_response(2, peers)
    assert link.pump()[1] == [ResponseReceived(2, peers)]


def test_ping_is_answered_by_the_connection_itself() -> None:
    """PING never reaches the caller: the connection queues the PONG while reading."""
    link = established()
    ping_id = link.dialer.send_request(Ping())
    dialer_events, listener_events = link.pump()
    assert listener_events == []
    assert dialer_events == [ResponseReceived(ping_id, Pong())]
    assert link.listener.open_peer_requests == 0


def test_request_id_wraps_and_skips_zero_and_ids_in_use() -> None:
    link = established()
    dialer, listener = link.dialer, link.listener
    busy = dialer.send_request(Ping())
    assert busy == 1
    dialer._requests._last_id = 2**32 - 3
    assert [dialer.send_request(Ping()) for _ in range(3)] == [2**32 - 1, 3, 5]  # 1 is in use
    listener._requests._last_id = 2**32 - 4
    assert [listener.send_request(Ping()) for _ in range(3)] == [2**32 - 2, 2, 4]


def test_cancelled_request_answer_is_dropped() -> None:
    link = established()
    dialer = link.dialer
    first = dialer.send_request(GetBlock(b"\x01" * 32))
    second = dialer.send_request(GetBlock(b"\x02" * 32))
    link.pump()
    dialer.cancel_request(first)
    dialer.cancel_request(first)  # twice is harmless
    dialer.cancel_request(99)  # never sent: a no-op
    assert dialer.outstanding_requests == 1
    link.listener.send_response(first, BlockData(b"\x01" * 32, b"late"))
    link.listener.send_response(second, Error("not-found", "no"))
    events, _ = link.pump()
    assert events == [ResponseReceived(second, Error("not-found", "no"))]
    assert dialer.state is State.ESTABLISHED
    # Answered once: a second answer to the same id is unknown.
    link.dialer.receive_data(wire(first, BlockData(b"\x01" * 32, b"again")))
    assert_failed(link.dialer, "unknown-response", RemoteProtocolError)


def test_cancelled_ids_are_remembered_up_to_the_bound() -> None:
    dialer, listener = make_pair(max_cancelled_requests=2)
    dialer.start()
    link = Link(dialer, listener)
    link.pump()
    ids = [dialer.send_request(Ping()) for _ in range(3)]
    for request_id in ids:
        dialer.cancel_request(request_id)
    # The two latest cancelled ids are dropped quietly; the oldest was forgotten.
    dialer.receive_data(wire(ids[2], Pong()) + wire(ids[1], Pong()))
    assert drain(dialer) == []
    dialer.receive_data(wire(ids[0], Pong()))
    assert_failed(dialer, "unknown-response", RemoteProtocolError)


def test_cancelled_answer_of_the_wrong_type_is_still_refused() -> None:
    link = established()
    request_id = link.dialer.send_request(GetBlock(b"\x01" * 32))
    link.dialer.cancel_request(request_id)
    link.dialer.receive_data(wire(request_id, PutBlockOk(b"\x01" * 32)))
    assert_failed(link.dialer, "unexpected-response", RemoteProtocolError)


# -- failures ---------------------------------------------------------------------------------


def assert_failed(conn: Connection, code: str, cls: type[Exception] = HandshakeError) -> str:
    """next_event raises cls with code, an ERROR frame is queued, and it raises again."""
    with pytest.raises(cls) as info:
        drain(conn)
    assert type(info.value) is cls
    assert info.value.code == code  # type: ignore[attr-defined]
    assert conn.state is State.ERROR
    frames = sent_frames(conn)
    assert frames[-1] == (0, Error(code, str(info.value)[:1024]))
    with pytest.raises(cls):
        conn.next_event()
    conn.receive_data(b"more bytes after the error")  # dropped, no exception
    return str(info.value)


def assert_peer_error(conn: Connection, code: str, cls: type[Exception] = HandshakeError) -> None:
    """conn got the other side's ERROR: raises with the peer's code, answers nothing."""
    with pytest.raises(cls) as info:
        drain(conn)
    assert type(info.value) is cls
    assert info.value.code == code  # type: ignore[attr-defined]
    assert "reported an error" in str(info.value)
    assert conn.data_to_send() == []
    assert conn.state is State.ERROR


def run_until_failure(
    dialer: Connection, listener: Connection, failing: Connection, code: str
) -> HandshakeError:
    dialer.start()
    other = listener if failing is dialer else dialer
    for _ in range(4):
        if failing is listener:
            transfer(dialer, listener)
            try:
                drain(listener)
            except HandshakeError:
                break
            transfer(listener, dialer)
            drain(dialer)
        else:
            transfer(dialer, listener)
            drain(listener)
            transfer(listener, dialer)
            try:
                drain(dialer)
            except HandshakeError:
                break
    else:
        pytest.fail("the handshake did not fail")
    # Re-run through the checker (it raises again), then deliver our ERROR to the other side.
    with pytest.raises(HandshakeError) as info:
        failing.next_event()
    assert info.value.code == code
    frames = sent_frames(failing)
    assert frames[-1][1] == Error(code, frames[-1][1].message)  # type: ignore[union-attr]
    # The listener completes first: a dialer refusing its AUTH finds it already established.
    other_cls = RemoteProtocolError if other.state is State.ESTABLISHED else HandshakeError
    other.receive_data(wire(0, frames[-1][1]))
    assert_peer_error(other, code, other_cls)
    return info.value


def test_incompatible_version_both_sides() -> None:
    listener_local = make_local(2)
    dialer, _ = make_pair(listener_local=listener_local)
    listener = Connection(
        Role.LISTENER, listener_local, nonce=nonce("l"), listener_cert_hash=CERT_HASH
    )
    hello = Hello(2, b"\x00" * 32, b"\x00" * 32, (), "shoal", nonce("x"))
    listener.receive_data(wire(0, hello))
    text = assert_failed(listener, "incompatible-version")
    assert "version 1" in text
    assert "version 2" in text
    assert "upgrade the older node (this node)" in text
    # A future HELLO that changed its other keys is still reported as a version problem.
    future = Connection(
        Role.LISTENER, listener_local, nonce=nonce("l"), listener_cert_hash=CERT_HASH
    )
    header = msgpack.packb({"whatever": [1], "version": 3, "nonce": [[[]]]})
    future.receive_data(b"".join(encode_frame(Hello.CODE, 0, header)))
    assert_failed(future, "incompatible-version")
    # The dialer side refuses an older listener.
    dialer.start()
    dialer.data_to_send()
    old = Hello(0, b"\x00" * 32, listener_local.public_key, (), "shoal", nonce("x"))
    dialer.receive_data(wire(0, old))
    assert "(the peer)" in assert_failed(dialer, "incompatible-version")


def test_wrong_network() -> None:
    dialer, listener = make_pair(make_local(1, network="alpha"), make_local(2, network="beta"))
    error = run_until_failure(dialer, listener, listener, "wrong-network")
    assert "'alpha'" in str(error)


def test_wrong_peer_id() -> None:
    dialer, listener = make_pair(expected_peer_id=make_local(3).node_id)
    run_until_failure(dialer, listener, dialer, "wrong-peer")


def test_key_not_matching_certificate() -> None:
    dialer, listener = make_pair(listener_public_key=make_local(3).public_key)
    run_until_failure(dialer, listener, dialer, "key-mismatch")


def test_self_connection() -> None:
    same = make_local(1)
    dialer, listener = make_pair(same, same)
    run_until_failure(dialer, listener, listener, "self-connection")


def test_relay_with_another_certificate_fails_signature() -> None:
    dialer_local, listener_local = make_local(1), make_local(2)
    dialer = Connection(
        Role.DIALER,
        dialer_local,
        nonce=nonce("d"),
        listener_cert_hash=b"\x07" * 32,  # the relay's certificate, seen by the dialer
        listener_public_key=listener_local.public_key,
    )
    _, listener = make_pair(dialer_local, listener_local)
    run_until_failure(dialer, listener, listener, "bad-signature")


def test_forged_dialer_auth() -> None:
    dialer, listener = make_pair()
    dialer.start()
    transfer(dialer, listener)
    drain(listener)
    transfer(listener, dialer)
    drain(dialer)
    dialer.data_to_send()
    listener.receive_data(wire(0, Auth(b"\x01" * 64)))
    assert_failed(listener, "bad-signature")


def test_forged_listener_auth() -> None:
    dialer, listener = make_pair()
    dialer.start()
    transfer(dialer, listener)
    drain(listener)
    transfer(listener, dialer)
    drain(dialer)
    transfer(dialer, listener)
    drain(listener)
    listener.data_to_send()
    dialer.receive_data(wire(0, Auth(b"\x01" * 64)))
    assert_failed(dialer, "bad-signature")


@pytest.mark.parametrize(
    ("dialer_secret", "listener_secret", "failing"),
    [
        (b"one", b"two", "listener"),
        (None, b"two", "listener"),
        (b"one", None, "dialer"),
    ],
)
def test_network_secret_mismatch(
    dialer_secret: bytes | None, listener_secret: bytes | None, failing: str
) -> None:
    dialer, listener = make_pair(
        make_local(1, network_secret=dialer_secret), make_local(2, network_secret=listener_secret)
    )
    who = dialer if failing == "dialer" else listener
    run_until_failure(dialer, listener, who, "wrong-network-secret")


def test_same_network_secret_works() -> None:
    dialer, listener = make_pair(
        make_local(1, network_secret=b"s"), make_local(2, network_secret=b"s")
    )
    dialer.start()
    Link(dialer, listener).pump()
    assert dialer.state is listener.state is State.ESTABLISHED


def test_invalid_node_id() -> None:
    _, listener = make_pair()
    key = make_local(5).public_key
    listener.receive_data(wire(0, Hello(1, b"\x02" * 32, key, (), "shoal", nonce("x"))))
    assert_failed(listener, "invalid-node-id")


@pytest.mark.parametrize("message", [Ping(), GetBlock(b"\x00" * 32), Auth(b"\x00" * 64)])
def test_message_before_hello(message: Message) -> None:
    _, listener = make_pair()
    listener.receive_data(wire(1 if type(message) is not Auth else 0, message))
    assert_failed(listener, "unexpected-message")


def test_message_between_hello_and_auth() -> None:
    dialer, listener = make_pair()
    dialer.start()
    transfer(dialer, listener)
    drain(listener)
    listener.receive_data(wire(1, Ping()))
    assert_failed(listener, "unexpected-message")


def test_second_hello_and_data_before_start() -> None:
    dialer, listener = make_pair()
    dialer.start()
    hello_bytes = b"".join(dialer.data_to_send())
    listener.receive_data(hello_bytes + hello_bytes)
    assert_failed(listener, "unexpected-message")
    idle, _ = make_pair()
    idle.receive_data(hello_bytes)
    assert_failed(idle, "unexpected-message")


def test_hello_with_request_id() -> None:
    dialer, listener = make_pair()
    dialer.start()
    [(_, hello)] = sent_frames(dialer)
    listener.receive_data(wire(7, hello))
    assert_failed(listener, "bad-request-id")


def test_malformed_frame_during_handshake_is_a_handshake_error() -> None:
    _, listener = make_pair()
    listener.receive_data(struct.pack(">IBIH", 8, 1, 0, 1) + b"\x90")  # header is an array
    assert_failed(listener, "malformed-header")


def test_oversize_frame_refused_from_prefix() -> None:
    link = established()
    link.listener.receive_data(struct.pack(">I", 2**31))
    assert_failed(link.listener, "frame-too-large", RemoteProtocolError)


def test_error_from_peer_during_handshake() -> None:
    dialer, _ = make_pair()
    dialer.start()
    dialer.data_to_send()
    dialer.receive_data(wire(0, Error("busy", "too many connections")))
    with pytest.raises(HandshakeError, match=r"reported an error \[busy\]: too many") as info:
        dialer.next_event()
    assert info.value.code == "busy"
    assert dialer.data_to_send() == []
    with pytest.raises(HandshakeError):
        dialer.next_event()


def test_error_after_handshake() -> None:
    link = established()
    request_id = link.dialer.send_request(GetPeers())
    link.pump()
    link.listener.send_response(request_id, Error("overloaded", "try later"))
    assert link.pump()[0] == [ResponseReceived(request_id, Error("overloaded", "try later"))]
    link.listener.send_connection_error(Error("shutting-down", "bye"))
    transfer(link.listener, link.dialer)
    assert_peer_error(link.dialer, "shutting-down", RemoteProtocolError)


def test_peer_error_text_is_made_safe() -> None:
    """A peer's ERROR text goes into our message with control characters escaped."""
    dialer, _ = make_pair()
    dialer.start()
    dialer.data_to_send()
    dialer.receive_data(wire(0, Error("bad\ncode", "line one\nFAKE LOG LINE\x1b[31m")))
    with pytest.raises(HandshakeError) as info:
        dialer.next_event()
    text = str(info.value)
    assert "\n" not in text
    assert "\x1b" not in text
    assert "line one\\u000aFAKE LOG LINE" in text


def test_handshake_messages_after_established() -> None:
    link = established()
    link.listener.receive_data(wire(0, Auth(b"\x00" * 64)))
    assert_failed(link.listener, "unexpected-message", RemoteProtocolError)


@pytest.mark.parametrize(
    ("request_id", "message"),
    [(0, Ping()), (2, Ping()), (1, Pong()), (0, Pong()), (3, Error("x", ""))],
)
def test_bad_request_ids_from_peer(request_id: int, message: Message) -> None:
    """The dialer's requests use odd ids; responses to the listener echo its even ids."""
    link = established()
    link.listener.receive_data(wire(request_id, message))
    assert_failed(link.listener, "bad-request-id", RemoteProtocolError)


@pytest.mark.parametrize(
    "message", [Pong(), Error("not-found", "x"), HaveBlocks(()), PutBlockOk(b"\x00" * 32)]
)
def test_answer_to_a_request_never_sent(message: Message) -> None:
    link = established()
    link.listener.send_request(Ping())  # id 2 is outstanding; 4 is not
    link.pump()
    link.listener.receive_data(wire(4, message))
    assert_failed(link.listener, "unknown-response", RemoteProtocolError)


def test_answer_of_the_wrong_type() -> None:
    link = established()
    request_id = link.dialer.send_request(GetBlock(b"\x00" * 32))
    link.pump()
    link.dialer.receive_data(wire(request_id, HaveBlocks(())))
    message = assert_failed(link.dialer, "unexpected-response", RemoteProtocolError)
    assert "expects BLOCK_DATA or ERROR" in message


def test_have_blocks_must_answer_every_id_asked() -> None:
    """The protocol checks an answer against its request, not only its type."""
    link = established()
    ids = (b"\x01" * 32, b"\x02" * 32)
    good = link.dialer.send_request(HasBlocks(ids))
    short = link.dialer.send_request(HasBlocks(ids))
    link.pump()
    link.listener.send_response(good, HaveBlocks((True, False)))
    assert link.pump()[0] == [ResponseReceived(good, HaveBlocks((True, False)))]
    link.dialer.receive_data(wire(short, HaveBlocks((True,))))
    message = assert_failed(link.dialer, "unexpected-response", RemoteProtocolError)
    assert message == f"HAVE_BLOCKS has 1 entries for 2 ids asked (request {short})"


def test_duplicate_request_id_from_peer() -> None:
    link = established()
    link.listener.receive_data(wire(1, GetPeers()) + wire(1, GetPeers()))
    assert link.listener.next_event() == RequestReceived(1, GetPeers())
    assert_failed(link.listener, "duplicate-request-id", RemoteProtocolError)
    # Once answered, the id may be used again.
    again = established()
    again.listener.receive_data(wire(1, GetPeers()))
    assert again.listener.next_event() == RequestReceived(1, GetPeers())
    again.listener.send_response(1, Peers(()))
    again.listener.receive_data(wire(1, GetPeers()))
    assert again.listener.next_event() == RequestReceived(1, GetPeers())


def test_send_rules() -> None:
    dialer, _ = make_pair()
    with pytest.raises(LocalProtocolError):
        dialer.send_request(Ping())  # before the handshake
    with pytest.raises(LocalProtocolError):
        dialer.send_connection_error(Error("x", "y" * 2000))  # malformed
    dialer.send_connection_error(Error("bye", "going away"))  # allowed in any state
    assert sent_frames(dialer) == [(0, Error("bye", "going away"))]
    link = established()
    d = link.dialer
    for message in [
        Hello(1, b"\x00" * 32, b"\x00" * 32, (), "n", b"\x00" * 32),
        Auth(b"\x00" * 64),
        Pong(),
        Error("x", ""),
        PutBlockOk(b"\x00" * 32),
        GetBlock(b"short"),
    ]:
        with pytest.raises(LocalProtocolError):
            d.send_request(message)
    assert d.outstanding_requests == 0  # a request that could not be encoded is forgotten
    link.listener.send_request(GetPeers())  # id 2, open on the dialer's side once received
    link.pump()
    refused: list[tuple[int, Message]] = [
        (4, Peers(())),  # no such request from the peer
        (1, Peers(())),  # an id of ours
        (2, Pong()),  # the wrong response type
        (2, GetPeers()),  # a request is not an answer
        (2, Peers(((b"\x00" * 32, ()),))),  # type: ignore[arg-type]  # malformed
    ]
    for request_id, message in refused:
        with pytest.raises(LocalProtocolError):
            d.send_response(request_id, message)
    assert d.data_to_send() == []
    d.send_response(2, Error("internal", "the malformed answer was not sent"))
    assert link.pump()[1] == [
        ResponseReceived(2, Error("internal", "the malformed answer was not sent"))
    ]
    with pytest.raises(LocalProtocolError):
        d.send_response(2, Peers(()))  # already answered


def test_send_oversize_block() -> None:
    link = established()
    link.listener.send_request(GetBlock(b"\x00" * 32))
    link.pump()
    with pytest.raises(LocalProtocolError):
        link.dialer.send_response(2, BlockData(b"\x00" * 32, bytes(5 * 1024 * 1024)))
    link.dialer.send_response(2, Error("too-large", "the block does not fit a frame"))


def test_eof_between_frames() -> None:
    link = established()
    link.dialer.send_request(GetPeers())
    transfer(link.dialer, link.listener)
    link.listener.receive_data(b"")
    link.listener.receive_data(b"")  # repeated EOF is harmless
    assert link.listener.next_event() == RequestReceived(1, GetPeers())
    assert link.listener.next_event() == ConnectionClosed()
    assert link.listener.state is State.CLOSED
    assert link.listener.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        link.listener.receive_data(b"late")


def test_eof_during_handshake_is_a_clean_close() -> None:
    _, listener = make_pair()
    listener.receive_data(b"")
    assert listener.next_event() == ConnectionClosed()


def test_eof_in_the_middle_of_a_frame() -> None:
    link = established()
    link.listener.receive_data(wire(1, Ping())[:-1])
    link.listener.receive_data(b"")
    assert_failed(link.listener, "truncated-frame", RemoteProtocolError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nonce": b"short"},
        {"listener_cert_hash": b"short"},
        {"listener_public_key": None},
    ],
)
def test_constructor_checks(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "nonce": nonce("d"),
        "listener_cert_hash": CERT_HASH,
        "listener_public_key": make_local(2).public_key,
    }
    args.update(kwargs)
    with pytest.raises(LocalProtocolError):
        Connection(Role.DIALER, make_local(1), **args)


def test_bad_local_settings_fail_early() -> None:
    from shoal.protocol import LocalNode

    local = LocalNode(make_key(1), ("a" * 300,))
    with pytest.raises(LocalProtocolError, match="listen_addrs"):
        Connection(Role.LISTENER, local, nonce=nonce("l"), listener_cert_hash=CERT_HASH)
