"""Formatting helpers of the CLI."""

from __future__ import annotations

import pytest

from shoal.cli.output import format_age, format_size, format_table


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "?"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (20 * 1024 * 1024, "20.0 MiB"),
        (3 * 1024**4, "3.0 TiB"),
        (5 * 1024**5, "5120.0 TiB"),
    ],
)
def test_format_size(size: int | None, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("age", "text"),
    [(None, "never"), (0, "0s ago"), (59, "59s ago"), (120, "2m ago"), (7200, "2h ago")],
)
def test_format_age(age: float | None, text: str) -> None:
    now = 1_000_000.0
    assert format_age(None if age is None else now - age, now=now) == text


def test_format_age_never_negative() -> None:
    assert format_age(2_000.0, now=1_000.0) == "0s ago"


def test_format_table_aligns_and_keeps_long_cells_whole() -> None:
    cap = "shoal:r:" + "a" * 52 + ":" + "b" * 52
    text = format_table(
        ["NAME", "SIZE", "CAP"], [["a.png", "1 B", cap], ["longer.bin", "2 MiB", "x"]]
    )
    lines = text.splitlines()
    assert lines[0] == "NAME        SIZE   CAP"
    assert lines[1] == f"a.png       1 B    {cap}"
    assert lines[2] == "longer.bin  2 MiB  x"


def test_format_table_without_rows() -> None:
    assert format_table(["A", "B"], []) == "A  B"
