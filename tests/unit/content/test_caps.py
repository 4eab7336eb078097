from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.content.caps import ReadCap, VerifyCap, looks_like_cap, parse_cap
from shoal.errors import InvalidCapability
from shoal.ids import encode_id

ids = st.binary(min_size=32, max_size=32)
CID = bytes(range(32))
KEY = bytes(range(32, 64))
CID_T = encode_id(CID)
KEY_T = encode_id(KEY)


@settings(max_examples=100)
@given(ids, ids)
def test_read_cap_round_trip(cid: bytes, key: bytes) -> None:
    cap = ReadCap(cid, key)
    text = str(cap)
    assert text == f"shoal:r:{encode_id(cid)}:{encode_id(key)}"
    assert parse_cap(text) == cap
    assert ReadCap.parse(f"  {text}\n") == cap
    assert parse_cap(text.upper()) == cap
    assert looks_like_cap(text)
    assert str(cap.verify_cap) == f"shoal:v:{encode_id(cid)}"


@settings(max_examples=100)
@given(ids)
def test_verify_cap_round_trip(cid: bytes) -> None:
    cap = VerifyCap(cid)
    assert parse_cap(str(cap)) == cap
    assert VerifyCap.parse(str(cap)) == cap
    assert VerifyCap.parse(str(ReadCap(cid, cid))) == cap


def test_verify_cap_cannot_read() -> None:
    with pytest.raises(InvalidCapability, match="read cap 'shoal:r:<cid>:<key>' is needed"):
        ReadCap.parse(f"shoal:v:{CID_T}")


REJECTED = [
    ("", "expected 'shoal:r:<cid>:<key>'"),
    ("   ", "expected"),
    ("hello.txt", "not a capability"),
    ("shoal", "not a capability"),
    ("shoal:", "not a capability"),
    ("shoal:x:" + CID_T, "not a capability"),
    ("tahoe:r:" + CID_T + ":" + KEY_T, "not a capability"),
    ("shoal:r:" + CID_T, "read cap has the form"),
    ("shoal:r:" + CID_T + ":" + KEY_T + ":extra", "read cap has the form"),
    ("shoal:v:" + CID_T + ":" + KEY_T, "verify cap has the form"),
    ("shoal:v:", "bad cid"),
    ("shoal:v:" + CID_T[:-1], "bad cid"),
    ("shoal:v:" + CID_T + "a", "bad cid"),
    ("shoal:v:" + CID_T[:-1] + "1", "bad cid"),  # '1' is not base32
    ("shoal:v:" + CID_T[:-1] + "b", "bad cid"),  # non-canonical trailing bits
    ("shoal:r:" + CID_T + ":" + KEY_T[:-2], "bad key"),
    ("shoal:r:" + CID_T + ":", "bad key"),
    ("shoal:r:" + CID_T + ":" + KEY_T[:-1] + "é", "bad key"),
    ("shoal:r:" + CID_T + " :" + KEY_T, "bad cid"),
    ("shoal:r::" + KEY_T, "bad cid .* got 0"),
    ("shoal:r:" + KEY_T, "two fields after 'shoal:r:'\\), got 1"),
    ("shoal r " + CID_T, "not a capability"),
]


@pytest.mark.parametrize(("text", "message"), REJECTED)
def test_rejection_table(text: str, message: str) -> None:
    with pytest.raises(InvalidCapability, match=message):
        parse_cap(text)


def test_errors_never_show_the_key() -> None:
    bad_key = KEY_T[:-2] + "!!"
    with pytest.raises(InvalidCapability) as info:
        parse_cap(f"shoal:r:{CID_T}:{bad_key}")
    assert KEY_T[:10] not in str(info.value)


def test_a_cap_without_its_cid_does_not_show_the_key() -> None:
    # The case: the key shifted into the CID field by an empty CID.
    with pytest.raises(InvalidCapability) as info:
        parse_cap("shoal:r::" + KEY_T)
    assert_no_key_text(str(info.value), KEY_T)


def assert_no_key_text(message: str, key_text: str) -> None:
    lowered = message.lower()
    for start in range(len(key_text) - 7):
        assert key_text[start : start + 8] not in lowered, (key_text[start : start + 8], message)


def around_the_key(key_text: str, cid_text: str) -> st.SearchStrategy[str]:
    """Malformed read caps built around a real key: fields missing, swapped, cut, padded."""
    key_forms = st.sampled_from(
        [
            key_text,
            key_text.upper(),
            key_text[:-1],
            key_text[1:],
            key_text + "a",
            key_text[:20] + "!" + key_text[21:],
            key_text[:26] + ":" + key_text[26:],
            key_text[:-1] + "1",
            " " + key_text + "\n",
        ]
    )
    prefixes = st.sampled_from(
        ["shoal:r:", "SHOAL:R:", "shoal:v:", "shoal:r::", "shoal:x:", "shoal:", "", "r:", "shoal:r"]
    )
    layouts = st.sampled_from(
        [
            "{p}{k}",
            "{p}:{k}",
            "{p}{k}:{c}",
            "{p}{c}:{k}:",
            "{p}{c}::{k}",
            "{p}{c}{k}",
            "{p}{c}:{k}:{c}",
            "{p}{c}:{k}x",
            "{p}{c}:{k}",
            "{k}",
            "{k}:{c}",
            "{p}{c10}:{k}",
        ]
    )
    return st.builds(
        lambda p, k, layout: layout.format(p=p, k=k, c=cid_text, c10=cid_text[:10]),
        prefixes,
        key_forms,
        layouts,
    )


@settings(max_examples=300)
@given(st.data(), ids, ids)
def test_no_error_message_shows_eight_characters_of_a_key(
    data: st.DataObject, cid: bytes, key: bytes
) -> None:
    key_text = encode_id(key)
    text = data.draw(around_the_key(key_text, encode_id(cid)))
    try:
        cap = parse_cap(text)
    except InvalidCapability as exc:
        assert_no_key_text(str(exc), key_text)
        return
    # Some layouts are valid caps after all; then asking for a read cap must not leak either.
    try:
        ReadCap.parse(text)
    except InvalidCapability as exc:
        assert_no_key_text(str(exc), key_text)
    else:
        assert isinstance(cap, ReadCap)


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidCapability, match="must be a string"):
        parse_cap(b"shoal:v:x")  # type: ignore[arg-type]


def test_repr_hides_key() -> None:
    cap = ReadCap(CID, KEY)
    assert KEY_T not in repr(cap)
    assert repr(KEY) not in repr(cap)


def test_looks_like_cap() -> None:
    assert looks_like_cap(" shoal:v:whatever")
    assert looks_like_cap("SHOAL:r:")
    assert not looks_like_cap("shoal.txt")
    assert not looks_like_cap("photos/shoal:1.png")


@pytest.mark.parametrize(("cid", "key"), [(b"", KEY), (bytes(31), KEY), (CID, bytes(33))])
def test_constructor_checks_lengths(cid: bytes, key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ReadCap(cid, key)


def test_caps_are_hashable_and_frozen() -> None:
    assert len({ReadCap(CID, KEY), ReadCap(CID, KEY)}) == 1
    with pytest.raises(AttributeError):
        ReadCap(CID, KEY).cid = KEY  # type: ignore[misc]
