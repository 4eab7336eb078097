"""Fuzzing: any input ends in a ProtocolError (or nothing), never another exception,
and the decoder never holds more than one maximum frame plus its length prefix."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import ProtocolError
from shoal.protocol import (
    NEED_DATA,
    BlockData,
    Connection,
    FrameDecoder,
    GetBlock,
    HasBlocks,
    Message,
    Ping,
    Role,
    State,
    decode_message,
    encode_message,
)

from .helpers import CERT_HASH, Link, drain, make_local, make_pair, nonce
from .strategies import messages

SMALL_FRAME = 4096
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- mutation helpers ---------------------------------------------------------------------

mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(min_value=0),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, pos, value in ops:
        if not buf:
            break
        i = pos % len(buf)
        if op == "flip":
            buf[i] ^= 1 << (value % 8)
        elif op == "set":
            buf[i] = value
        elif op == "insert":
            buf[i:i] = bytes([value]) * (1 + value % 4)
        elif op == "delete":
            del buf[i : i + 1 + value % 8]
        else:
            del buf[i:]
    return bytes(buf)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_decoder(chunks: list[bytes], max_frame_size: int) -> None:
    decoder = FrameDecoder(
        max_frame_size=max_frame_size, max_header_size=min(max_frame_size, 65535)
    )
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (frame := decoder.next_frame()) is not None:
                decode_message(frame)
            assert decoder.buffered <= max_frame_size + 4
    except ProtocolError:
        pass


def feed_connection(conn: Connection, chunks: list[bytes], eof: bool) -> None:
    limit = conn._decoder.max_frame_size + 4
    try:
        for chunk in chunks + ([b""] if eof else []):
            conn.receive_data(chunk)
            while conn.next_event() is not NEED_DATA:
                if conn.state is State.CLOSED:
                    return
            assert conn._decoder.buffered <= limit
            conn.data_to_send()
    except ProtocolError:
        # The connection is dead for good, and says so to the peer unless the peer spoke.
        assert conn.state is State.ERROR
        try:
            conn.next_event()
        except ProtocolError:
            pass
        else:
            raise AssertionError("next_event did not raise again after an error") from None


# -- captured valid traffic ---------------------------------------------------------------


def capture() -> tuple[bytes, bytes]:
    """The bytes each side sends in a full handshake followed by a few requests."""
    dialer, listener = make_pair()
    sent_by_dialer = bytearray()
    sent_by_listener = bytearray()
    dialer.start()
    for _ in range(2):
        out = b"".join(dialer.data_to_send())
        sent_by_dialer += out
        listener.receive_data(out)  # never empty here: b"" would mean EOF
        drain(listener)
        out = b"".join(listener.data_to_send())
        sent_by_listener += out
        dialer.receive_data(out)
        drain(dialer)
    assert dialer.state is listener.state is State.ESTABLISHED
    traffic: list[tuple[int, Message]] = [
        (1, Ping()),
        (3, GetBlock(b"\x01" * 32)),
        (5, HasBlocks((b"\x02" * 32,) * 3)),
    ]
    for rid, msg in traffic:
        sent_by_dialer += b"".join(encode_message(rid, msg))
    sent_by_listener += b"".join(encode_message(2, Ping()))
    sent_by_listener += b"".join(encode_message(3, BlockData(b"\x01" * 32, b"x" * 3000)))
    return bytes(sent_by_dialer), bytes(sent_by_listener)


DIALER_BYTES, LISTENER_BYTES = capture()


def new_dialer(**kwargs: Any) -> Connection:
    dialer, _ = make_pair(**kwargs)
    dialer.start()
    dialer.data_to_send()
    return dialer


def new_listener() -> Connection:
    return Connection(
        Role.LISTENER, make_local(2), nonce=nonce("listener"), listener_cert_hash=CERT_HASH
    )


def test_captured_traffic_is_valid() -> None:
    """Sanity check for the fuzz seeds: unmutated, both streams are accepted."""
    listener = new_listener()
    listener.receive_data(DIALER_BYTES)
    events = []
    while (event := listener.next_event()) is not NEED_DATA:
        events.append(event)
    assert len(events) == 4  # HandshakeComplete + 3 requests
    dialer = new_dialer()
    dialer.receive_data(LISTENER_BYTES)
    events = []
    while (event := dialer.next_event()) is not NEED_DATA:
        events.append(event)
    assert len(events) == 3  # HandshakeComplete + a request + a response


# -- the fuzz tests -----------------------------------------------------------------------


@FUZZ
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
    small=st.booleans(),
)
def test_decoder_random_bytes(data: bytes, cuts: list[int], small: bool) -> None:
    feed_decoder(pieces(data, cuts), SMALL_FRAME if small else 4 * 1024 * 1024 + 65536)


@FUZZ
@given(
    batch=st.lists(st.tuples(st.integers(0, 2**32 - 1), messages), min_size=1, max_size=3),
    ops=mutations,
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_decoder_mutated_streams(
    batch: list[tuple[int, Message]], ops: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    data = b"".join(b"".join(encode_message(rid, msg)) for rid, msg in batch)
    feed_decoder(pieces(mutate(data, ops), cuts), 4 * 1024 * 1024 + 65536)
    feed_decoder(pieces(mutate(data, ops), cuts), SMALL_FRAME)


@FUZZ
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    dialer=st.booleans(),
    eof=st.booleans(),
)
def test_connection_random_bytes(data: bytes, cuts: list[int], dialer: bool, eof: bool) -> None:
    conn = new_dialer() if dialer else new_listener()
    feed_connection(conn, pieces(data, cuts), eof)


@FUZZ
@given(
    ops=mutations,
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    dialer=st.booleans(),
    eof=st.booleans(),
)
def test_connection_mutated_handshake(
    ops: list[tuple[str, int, int]], cuts: list[int], dialer: bool, eof: bool
) -> None:
    if dialer:
        feed_connection(new_dialer(), pieces(mutate(LISTENER_BYTES, ops), cuts), eof)
    else:
        feed_connection(new_listener(), pieces(mutate(DIALER_BYTES, ops), cuts), eof)


@FUZZ
@given(
    batch=st.lists(st.tuples(st.integers(0, 2**32 - 1), messages), min_size=1, max_size=3),
    ops=st.none() | mutations,
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    to_dialer=st.booleans(),
)
def test_established_connection_mutated_messages(
    batch: list[tuple[int, Message]],
    ops: list[tuple[str, int, int]] | None,
    cuts: list[int],
    to_dialer: bool,
) -> None:
    dialer, listener = make_pair()
    dialer.start()
    Link(dialer, listener).pump()
    data = b"".join(b"".join(encode_message(rid, msg)) for rid, msg in batch)
    target = dialer if to_dialer else listener
    feed_connection(target, pieces(mutate(data, ops) if ops else data, cuts), eof=True)
