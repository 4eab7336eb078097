"""Names and media types: what enters the catalog (shoal.names)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ConfigError
from shoal.names import (
    MAX_MEDIA_TYPE_BYTES,
    MAX_NAME_BYTES,
    check_media_type,
    check_name,
    local_file_name,
    printable,
)


@pytest.mark.parametrize(
    "name",
    [
        "a.png",
        "b/c.txt",
        "../x",
        "h\u00e9llo w\u00f6rld.txt",
        "\u65e5\u672c\u8a9e\u306e\u30d5\u30a1\u30a4\u30eb.txt",  # east Asian wide
        "\U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467.png",  # emoji with ZWJ
        "\u0645\u0644\u0641.txt",  # right-to-left script without explicit controls
        " leading and trailing ",
        "x" * MAX_NAME_BYTES,
        "\u00e9" * (MAX_NAME_BYTES // 2),  # 2 bytes each: exactly at the limit
    ],
)
def test_valid_names_pass_unchanged(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "must not be empty"),
        ("   ", "visible character"),
        ("\t", "control character: U+0009 at position 1"),
        ("a\nb", "control character: U+000A at position 2"),
        ("a\x00", "control character: U+0000"),
        ("a\rb", "control character"),
        ("\x1b[31mred", "control character: U+001B"),
        ("del\x7f", "control character: U+007F"),
        ("c1\x85", "control character: U+0085"),  # NEL: a line break for str.splitlines
        ("c1\x9b", "control character: U+009B"),  # CSI
        ("a\u2028b", "line separator: U+2028"),
        ("a\u2029b", "line separator"),
        ("evil\u202egnp.exe", "bidirectional text control: U+202E"),
        ("\u2066x\u2069", "bidirectional text control"),
        ("bad\ud800", "lone surrogate"),
        ("x" * (MAX_NAME_BYTES + 1), f"at most {MAX_NAME_BYTES} bytes"),
        ("\u00e9" * (MAX_NAME_BYTES // 2 + 1), f"this one has {MAX_NAME_BYTES + 2}"),
    ],
)
def test_invalid_names_are_config_errors(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_name(name)
    message = str(info.value)
    assert fragment in message
    # The refused name never appears in the message (it is what cannot be printed).
    if len(name) > 1:
        assert name not in message


def test_non_text_name() -> None:
    with pytest.raises(ConfigError, match="text"):
        check_name(b"a.png")


def test_what_names_the_field() -> None:
    with pytest.raises(ConfigError, match="a --name must not be empty"):
        check_name("", what="--name")


@given(st.text(max_size=40))
def test_a_checked_name_is_one_printable_line(name: str) -> None:
    try:
        checked = check_name(name)
    except ConfigError:
        return
    assert len(checked.splitlines()) == 1
    assert printable(checked) == checked
    checked.encode("utf-8")


@given(st.text(max_size=40))
def test_printable_is_always_one_line(text: str) -> None:
    shown = printable(text)
    assert len(shown.splitlines()) <= 1
    if shown.strip():
        assert check_name(shown) == shown  # nothing check_name refuses is left


def test_printable_escapes() -> None:
    assert printable("a\nb") == "a\\x0ab"
    assert printable("x\u202ey") == "x\\u202ey"
    assert printable("fine \u00e9") == "fine \u00e9"


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("a.png", "a.png"),
        ("b/c.txt", "c.txt"),
        ("../x", "x"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("a\\b", "a\\b"),  # a backslash is an ordinary character in a POSIX file name
        ("..x", "..x"),
    ],
)
def test_local_file_name_stays_in_the_directory(name: str, local: str) -> None:
    assert local_file_name(name) == local


@pytest.mark.parametrize("name", ["", ".", "..", "a/..", "a/.", "dir/", "/", "a/ ", "a/\nb"])
def test_local_file_name_refuses_what_is_not_a_file_name(name: str) -> None:
    with pytest.raises(ConfigError, match="-o FILE"):
        local_file_name(name)


@given(st.text(max_size=30))
def test_local_file_name_never_escapes(name: str) -> None:
    try:
        local = local_file_name(name)
    except ConfigError:
        return
    assert "/" not in local
    assert local not in ("", ".", "..")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("image/png", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("  application/vnd.api+json  ", "application/vnd.api+json"),
        ('multipart/form-data; boundary="a b;c"', 'multipart/form-data; boundary="a b;c"'),
        ("text/plain;charset=utf-8;", "text/plain;charset=utf-8;"),
    ],
)
def test_valid_media_types(value: str, expected: str) -> None:
    assert check_media_type(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "png",
        "image/",
        "/png",
        "image/png/x",
        "image png",
        "image/png; charset",
        "text/plain; a=\u00e9",
        "t\u00e9xt/plain",
        "text/plain\r\nX-Injected: 1",
        "a/" + "b" * MAX_MEDIA_TYPE_BYTES,
        "x" * 5000,
    ],
)
def test_invalid_media_types(value: str) -> None:
    with pytest.raises(ConfigError, match="media type"):
        check_media_type(value)


def test_media_type_length_limit_is_inclusive() -> None:
    value = "a/" + "b" * (MAX_MEDIA_TYPE_BYTES - 2)
    assert check_media_type(value) == value
