"""Sizes in and out, binary units only."""

from __future__ import annotations

import pytest

from shoal.errors import ConfigError
from shoal.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("123", 123),
        (4096, 4096),
        ("1KiB", 1024),
        ("50GiB", 50 << 30),
        ("1.5 MiB", 3 << 19),
        ("512m", 512 << 20),
        (" 2 tib ", 2 << 40),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "-1", "1GB", "1.2.3", "ten", "1 GiB x", "9" * 100, -5])
def test_parse_size_refuses_what_it_would_have_to_guess(text: str | int) -> None:
    with pytest.raises(ConfigError, match="size"):
        parse_size(text)


def test_format_size_is_binary() -> None:
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 << 20) == "3.0 MiB"
    assert format_size(None) == "?"
    assert format_size(12) == "12 B"
