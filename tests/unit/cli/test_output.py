"""Formatting helpers of the CLI."""

from __future__ import annotations

import pytest
from rich.cells import cell_len
from rich.progress import Progress

from shoal.cli.output import (
    BytesColumn,
    SpeedColumn,
    format_age,
    format_size,
    format_speed,
    format_table,
)


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


def test_format_table_aligns_wide_characters_by_display_width() -> None:
    # Each of these is 2 terminal cells per character (east Asian wide, emoji).
    text = format_table(
        ["NAME", "SIZE", "CAP"],
        [["\u65e5\u672c.txt", "1 B", "c1"], ["\U0001f600.png", "2 B", "c2"], ["ab", "3 B", "c3"]],
    )
    lines = text.splitlines()
    # The SIZE column starts in the same terminal cell on every line.
    starts = [
        cell_len(line[: line.index(size)])
        for line, size in zip(lines, ["SIZE", "1 B", "2 B", "3 B"], strict=True)
    ]
    assert len(set(starts)) == 1, text


def test_progress_columns_use_binary_units() -> None:
    progress = Progress()
    task_id = progress.add_task("x", total=20 * 1024 * 1024)
    progress.update(task_id, completed=3 * 1024 * 1024)
    task = progress.tasks[0]
    assert BytesColumn().render(task).plain == "3.0 MiB / 20.0 MiB"
    task.finished_speed = 1.5 * 1024 * 1024
    assert SpeedColumn().render(task).plain == "1.5 MiB/s"
    progress.add_task("y", total=None, start=False)
    unknown = progress.tasks[-1]
    assert BytesColumn().render(unknown).plain == "0 B"
    assert SpeedColumn().render(unknown).plain == "?/s"
    # One update only: rich has no speed estimate yet, the column uses the average.
    progress.add_task("z", total=None)
    single = progress.tasks[-1]
    single.completed = 1024
    assert SpeedColumn().render(single).plain.endswith("/s")
    assert SpeedColumn().render(single).plain != "?/s"


def test_format_speed() -> None:
    assert format_speed(1536) == "1.5 KiB/s"
    assert format_speed(None) == "?/s"
