from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content.crypto import (
    CHUNK_KEY_LABEL,
    KEY_SIZE,
    MANIFEST_KEY_LABEL,
    PROFILE,
    TAG_SIZE,
    AuthenticationFailed,
    block_id,
    chunk_key,
    decrypt,
    encrypt,
    open_chunk,
    seal_chunk,
)
from shoal.errors import CorruptBlock, IntegrityError
from shoal.ids import encode_id, sha256

from .helpers import OTHER_SECRET, SECRET


def test_profile_constants() -> None:
    assert PROFILE == "shoal-v1"
    assert KEY_SIZE == 32
    assert TAG_SIZE == 16
    assert CHUNK_KEY_LABEL != MANIFEST_KEY_LABEL


@settings(max_examples=50)
@given(st.binary(max_size=3000))
def test_seal_open_round_trip(plaintext: bytes) -> None:
    sealed = seal_chunk(SECRET, plaintext)
    assert len(sealed.data) == len(plaintext) + TAG_SIZE
    assert sealed.plaintext_size == len(plaintext)
    assert sealed.block_id == sha256(sealed.data) == block_id(sealed.data)
    assert sealed.key == chunk_key(SECRET, plaintext)
    assert open_chunk(sealed.key, sealed.block_id, sealed.data) == plaintext


def test_memoryview_input_gives_same_result() -> None:
    buf = bytearray(b"xx" + b"chunk data" * 100 + b"yy")
    view = memoryview(buf)[2:-2]
    assert seal_chunk(SECRET, view) == seal_chunk(SECRET, bytes(view))
    assert seal_chunk(SECRET, view).plaintext_size == len(view)


def test_same_plaintext_same_secret_dedupes() -> None:
    assert seal_chunk(SECRET, b"hello").block_id == seal_chunk(SECRET, b"hello").block_id


def test_different_secret_gives_different_block() -> None:
    a, b = seal_chunk(SECRET, b"hello"), seal_chunk(OTHER_SECRET, b"hello")
    assert a.key != b.key
    assert a.block_id != b.block_id


def test_different_plaintexts_get_different_keys() -> None:
    assert chunk_key(SECRET, b"a") != chunk_key(SECRET, b"b")


def test_every_byte_of_a_chunk_block_is_protected() -> None:
    sealed = seal_chunk(SECRET, b"0123456789")
    for pos in range(len(sealed.data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(sealed.data)
            bad[pos] ^= flip
            # Against the real ID: the hash check fails, names the block, and says the bytes
            # are corrupt (the one failure that justifies trying another holder).
            with pytest.raises(CorruptBlock, match=encode_id(sealed.block_id)):
                open_chunk(sealed.key, sealed.block_id, bytes(bad))
            # Even with a matching ID (a forged manifest), the GCM tag catches it; the bytes
            # match their ID, so this is not corruption of the block.
            with pytest.raises(IntegrityError, match="key does not open it") as info:
                open_chunk(sealed.key, sha256(bad), bytes(bad))
            assert not isinstance(info.value, CorruptBlock)


def test_truncated_and_extended_blocks_are_rejected() -> None:
    sealed = seal_chunk(SECRET, b"0123456789")
    for bad in (sealed.data[:-1], sealed.data + b"\x00", b"", sealed.data[: TAG_SIZE - 1]):
        with pytest.raises(IntegrityError):
            open_chunk(sealed.key, sealed.block_id, bad)
        with pytest.raises(IntegrityError):
            open_chunk(sealed.key, sha256(bad), bad)


def test_wrong_key_is_detected() -> None:
    sealed = seal_chunk(SECRET, b"secret stuff")
    wrong = chunk_key(SECRET, b"other stuff")
    with pytest.raises(IntegrityError, match="key does not open it") as info:
        open_chunk(wrong, sealed.block_id, sealed.data)
    assert not isinstance(info.value, CorruptBlock)
    with pytest.raises(AuthenticationFailed):
        decrypt(wrong, sealed.data)


def test_stored_size_is_checked_after_the_hash() -> None:
    sealed = seal_chunk(SECRET, b"12345")
    size = len(sealed.data)
    assert open_chunk(sealed.key, sealed.block_id, sealed.data, stored_size=size) == b"12345"
    # Intact bytes, wrong size in the manifest: the manifest lies, the block is fine.
    with pytest.raises(
        IntegrityError, match=f"is {size} bytes, its manifest says {size + 1}"
    ) as info:
        open_chunk(sealed.key, sealed.block_id, sealed.data, stored_size=size + 1)
    assert not isinstance(info.value, CorruptBlock)
    # Damaged bytes of the wrong size: the hash is checked first, so this is corruption.
    with pytest.raises(CorruptBlock):
        open_chunk(sealed.key, sealed.block_id, sealed.data[:-1], stored_size=size)


def test_plaintext_size_is_checked() -> None:
    sealed = seal_chunk(SECRET, b"12345")
    assert open_chunk(sealed.key, sealed.block_id, sealed.data, plaintext_size=5) == b"12345"
    with pytest.raises(IntegrityError, match="manifest says 6"):
        open_chunk(sealed.key, sealed.block_id, sealed.data, plaintext_size=6)


def test_encrypt_is_deterministic_and_decrypts() -> None:
    key = bytes(range(32))
    assert encrypt(key, b"abc") == encrypt(key, b"abc")
    assert decrypt(key, encrypt(key, b"abc")) == b"abc"
    assert decrypt(key, encrypt(key, b"")) == b""


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "x" * 32, bytearray(32)])
def test_bad_key_and_secret_lengths_are_programming_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        chunk_key(bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt(bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt(bad, bytes(20))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        seal_chunk(bad, b"x")  # type: ignore[arg-type]


def test_open_chunk_rejects_short_block_id() -> None:
    sealed = seal_chunk(SECRET, b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        open_chunk(sealed.key, sealed.block_id[:31], sealed.data)


def test_sealed_chunk_repr_hides_key_and_data() -> None:
    sealed = seal_chunk(SECRET, b"top secret plaintext")
    text = repr(sealed)
    assert sealed.key.hex() not in text
    assert repr(sealed.key) not in text
    assert "data=" not in text
