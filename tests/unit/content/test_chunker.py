from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content.chunker import Chunker
from shoal.content.crypto import CHUNK_SIZE


def run(chunker: Chunker, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out.extend(chunker.feed(piece))
    tail = chunker.finish()
    if tail is not None:
        out.append(tail)
    return out


def expected(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@st.composite
def split_input(draw: st.DrawFn) -> tuple[bytes, int, list[bytes]]:
    data = draw(st.binary(max_size=400))
    size = draw(st.integers(min_value=1, max_value=64))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    return data, size, pieces


@settings(max_examples=200)
@given(split_input())
def test_any_split_gives_the_same_chunks(case: tuple[bytes, int, list[bytes]]) -> None:
    data, size, pieces = case
    chunker = Chunker(size)
    chunks = run(chunker, pieces)
    assert chunks == expected(data, size)
    assert all(len(c) == size for c in chunks[:-1])
    assert all(type(c) is bytes for c in chunks)
    assert chunker.bytes_fed == len(data)


@settings(max_examples=50)
@given(split_input())
def test_buffer_types_are_accepted(case: tuple[bytes, int, list[bytes]]) -> None:
    data, size, pieces = case
    mixed: list[bytes] = []
    for i, piece in enumerate(pieces):
        mixed.append([bytes, bytearray, memoryview][i % 3](piece))
    assert run(Chunker(size), mixed) == expected(data, size)


def test_empty_input_has_no_chunks() -> None:
    assert run(Chunker(4), []) == []
    assert run(Chunker(4), [b"", b""]) == []


def test_exact_multiple_has_no_tail() -> None:
    chunker = Chunker(4)
    assert chunker.feed(b"abcdefgh") == [b"abcd", b"efgh"]
    assert chunker.finish() is None


def test_whole_chunk_bytes_pass_through_without_copy() -> None:
    chunker = Chunker(4)
    piece = b"abcd"
    [out] = chunker.feed(piece)
    assert out is piece


def test_default_chunk_size() -> None:
    assert Chunker().chunk_size == CHUNK_SIZE == 1 << 20


def test_feed_after_finish_and_bad_size() -> None:
    chunker = Chunker(4)
    chunker.feed(b"ab")
    assert chunker.finish() == b"ab"
    assert chunker.finish() is None
    with pytest.raises(ValueError, match="after finish"):
        chunker.feed(b"x")
    with pytest.raises(ValueError, match="at least 1"):
        Chunker(0)


def test_many_tiny_pieces_stay_linear() -> None:
    # 1 MiB one byte at a time into 64 KiB chunks: quadratic copying would take minutes.
    chunker = Chunker(1 << 16)
    byte = b"x"
    chunks = []
    for _ in range(1 << 20):
        chunks.extend(chunker.feed(byte))
    assert chunker.finish() is None
    assert len(chunks) == 16
