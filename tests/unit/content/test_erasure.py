"""The zfec share codec: any k of n shares rebuild a chunk bit for bit; fewer than k fail."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content.erasure import (
    MAX_SHARES,
    SHARE_HEADER_SIZE,
    ShareHeader,
    check_params,
    check_share,
    decode_shares,
    encode_shares,
    rebuild_shares,
    share_size,
    stripe_id,
)
from shoal.errors import CorruptBlock, IntegrityError, NotFound
from shoal.ids import sha256


@st.composite
def stripes(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    n = draw(st.integers(2, 12))
    k = draw(st.integers(1, n - 1))
    data = draw(st.binary(min_size=1, max_size=300))
    subset = draw(st.permutations(range(n)))[:k]
    return data, k, n, list(subset)


@settings(max_examples=300, deadline=None)
@given(stripes())
def test_any_k_shares_rebuild_the_chunk_bit_for_bit(
    case: tuple[bytes, int, int, list[int]],
) -> None:
    data, k, n, subset = case
    shares = encode_shares(data, k, n)
    assert len(shares) == n
    assert all(len(s) == share_size(len(data), k) for s in shares)
    assert len({sha256(s) for s in shares}) == n  # distinct blocks, even for k = 1
    assert decode_shares({i: shares[i] for i in subset}, k, n) == data


@settings(max_examples=200, deadline=None)
@given(stripes())
def test_rebuilt_shares_equal_the_originals(case: tuple[bytes, int, int, list[int]]) -> None:
    data, k, n, subset = case
    shares = encode_shares(data, k, n)
    missing = [i for i in range(n) if i not in subset]
    rebuilt = rebuild_shares({i: shares[i] for i in subset}, k, n, missing)
    assert rebuilt == {i: shares[i] for i in missing}


@settings(max_examples=100, deadline=None)
@given(stripes())
def test_fewer_than_k_shares_fail_clearly(case: tuple[bytes, int, int, list[int]]) -> None:
    data, k, n, subset = case
    shares = encode_shares(data, k, n)
    few = {i: shares[i] for i in subset[: k - 1]}
    with pytest.raises(NotFound, match=f"only {k - 1} of the {k} shares"):
        decode_shares(few, k, n)
    with pytest.raises(NotFound):
        rebuild_shares(few, k, n, [subset[-1]])


def test_every_subset_of_3_of_5_decodes() -> None:
    data = bytes(range(256)) * 40 + b"x"
    shares = encode_shares(data, 3, 5)
    for subset in itertools.combinations(range(5), 3):
        assert decode_shares({i: shares[i] for i in subset}, 3, 5) == data


def test_share_layout_is_the_documented_one() -> None:
    data = b"0123456789"  # 10 bytes, k = 3: pieces of 4, pad 2
    shares = encode_shares(data, 3, 5)
    assert [s[:SHARE_HEADER_SIZE] for s in shares] == [bytes((3, 5, i, 2)) for i in range(5)]
    # Systematic: the first k payloads are the chunk's pieces, the last padded with zeros.
    assert shares[0][4:] == b"0123"
    assert shares[1][4:] == b"4567"
    assert shares[2][4:] == b"89\x00\x00"
    assert share_size(10, 3) == 8


def test_check_share_hash_first_then_header() -> None:
    shares = encode_shares(b"some chunk bytes", 2, 4)
    ids = [sha256(s) for s in shares]
    size = len(shares[0])
    assert check_share(ids[1], shares[1], k=2, n=4, index=1, size=size) == ShareHeader(2, 4, 1, 0)
    with pytest.raises(CorruptBlock):
        check_share(ids[1], shares[1][:-1] + b"?", k=2, n=4, index=1, size=size)
    # Intact but listed at the wrong place, or with a wrong size: the manifest lies.
    with pytest.raises(IntegrityError, match="lists it as share 2") as info:
        check_share(ids[1], shares[1], k=2, n=4, index=2, size=size)
    assert not isinstance(info.value, CorruptBlock)
    with pytest.raises(IntegrityError, match="its manifest says"):
        check_share(ids[1], shares[1], k=2, n=4, index=1, size=size + 1)


def test_shares_of_different_stripes_do_not_mix() -> None:
    one = encode_shares(b"a" * 30, 2, 3)
    other = encode_shares(b"b" * 31, 2, 3)
    with pytest.raises(IntegrityError):
        decode_shares({0: one[0], 1: other[1]}, 2, 3)
    with pytest.raises(IntegrityError):
        decode_shares({0: one[0], 1: one[1]}, 2, 4)  # headers say 2-of-3


def test_bad_headers_are_refused() -> None:
    for header in (bytes((0, 5, 0, 0)), bytes((3, 3, 0, 0)), bytes((3, 5, 5, 0)),
                   bytes((3, 5, 0, 3)), bytes((3, MAX_SHARES + 1, 0, 0))):  # fmt: skip
        with pytest.raises(IntegrityError):
            ShareHeader.parse(header + b"data")
    with pytest.raises(IntegrityError):
        ShareHeader.parse(bytes((2, 3, 0, 0)))  # no payload


@pytest.mark.parametrize(("k", "n"), [(0, 2), (2, 2), (3, 2), (1, MAX_SHARES + 1), (True, 3)])
def test_parameters_are_checked(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="1 <= k < n"):
        check_params(k, n)
    with pytest.raises(ValueError):
        encode_shares(b"x", k, n)


def test_stripe_id_is_the_hash_of_the_share_ids() -> None:
    ids = b"".join(bytes([i]) * 32 for i in range(5))
    assert stripe_id(ids) == sha256(ids)
    with pytest.raises(ValueError):
        stripe_id(ids[:-1])
