"""Range and conditional request parsing (pure)."""

from __future__ import annotations

import pytest

from shoal.api.ranges import Unsatisfiable, etag_matches, parse_range, strong_etag


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=10-", 100, (10, 100)),
        ("bytes=-5", 100, (95, 100)),
        ("bytes=-500", 100, None),  # covers everything: the whole file, 200
        ("bytes=90-1000", 100, (90, 100)),  # clipped to the end
        ("bytes = 5 - 6", 100, (5, 7)),
        ("bytes=0-", 100, None),
        ("bytes=0-99", 100, None),
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole file
        ("items=0-1", 100, None),  # another unit: ignored
        ("bytes=5-2", 100, None),  # last < first: invalid, ignored
        ("bytes=-", 100, None),
        ("bytes=abc", 100, None),
        ("bytes=" + "9" * 40 + "-", 100, None),  # absurd numbers are not parsed
    ],
)
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


def test_etags() -> None:
    tag = strong_etag("abc")
    assert tag == '"abc"'
    assert etag_matches('"abc"', tag)
    assert etag_matches('W/"abc"', tag)
    assert etag_matches('"x", "abc"', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"abcd"', tag)
    assert not etag_matches("abc", tag)
