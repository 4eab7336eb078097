"""What the CLI prints: plain aligned tables, sizes, times and progress bars.

Tables are plain text rather than rich tables so that long capability strings are never folded
or cut when stdout is a pipe or a narrow terminal; columns are aligned by display width (an east
Asian character or an emoji takes two terminal cells). Progress bars go to stderr, keeping
stdout for results that scripts read. Every size and speed uses ``shoal.units`` (binary units:
MiB, MiB/s), in bars and summaries alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.cells import cell_len
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from shoal.units import format_size

__all__ = [
    "BytesColumn",
    "SpeedColumn",
    "format_age",
    "format_size",
    "format_speed",
    "format_table",
    "format_time",
    "transfer_progress",
]


def format_age(timestamp: float | None, now: float | None = None) -> str:
    """Seconds since ``timestamp`` in words: ``"5s ago"``, ``"3m ago"``; None → ``"never"``."""
    if timestamp is None:
        return "never"
    age = max(0.0, (time.time() if now is None else now) - timestamp)
    if age < 60:
        return f"{age:.0f}s ago"
    if age < 3600:
        return f"{age / 60:.0f}m ago"
    if age < 86400:
        return f"{age / 3600:.0f}h ago"
    return f"{age / 86400:.0f}d ago"


def format_time(seconds: object) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM``; ``-`` if it is none or out of range."""
    if not isinstance(seconds, int | float):
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):
        return "-"


def format_speed(bytes_per_second: float | None) -> str:
    """``1.5 * 2**20`` → ``"1.5 MiB/s"``; None → ``"?/s"``."""
    return f"{format_size(bytes_per_second)}/s"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is never padded.

    Widths are display widths (terminal cells), so wide characters line up.
    """
    widths = [cell_len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


class BytesColumn(ProgressColumn):
    """``3.0 MiB / 20.0 MiB`` (or ``3.0 MiB`` when the total is unknown), in binary units."""

    def render(self, task: Task) -> Text:
        done = format_size(int(task.completed))
        if task.total is None:
            return Text(done, style="progress.download")
        return Text(f"{done} / {format_size(int(task.total))}", style="progress.download")


class SpeedColumn(ProgressColumn):
    """``12.3 MiB/s``, in binary units (rich's own column counts decimal MB)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.elapsed:  # rich needs two updates to estimate a speed
            speed = task.completed / task.elapsed
        return Text(format_speed(speed), style="progress.data.speed")


class _Bar:
    """Progress callback for ``Client.put``/``get``: ``bar(bytes_done, total_or_None)``.

    The bar appears on the first call, so a request that fails before any byte moved prints
    only its error line.
    """

    def __init__(self, description: str) -> None:
        self._description = description
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._progress is None or self._task is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                BytesColumn(),
                SpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total)
        self._progress.update(self._task, advance=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def transfer_progress(description: str) -> Iterator[_Bar]:
    """A rich progress bar on stderr (bytes, MiB/s, ETA) for the duration of the block."""
    bar = _Bar(description)
    try:
        yield bar
    finally:
        bar.close()
