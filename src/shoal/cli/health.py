"""``shoal check`` and ``shoal repair``: a file's health, and one repair pass now.

Both talk to the node running on ``--data-dir`` (``shoal.Client``); a verify cap
(``shoal:v:...``) is enough for either. Results go to stdout (``--json`` for scripts), a
progress line (blocks checked) to stderr while the node works.

Exit codes: 0 healthy (``check``) or everything healthy after the pass (``repair``); 1 not
healthy, or the command failed (one ``error:`` line: no node running, an unknown name); 2 bad
input (a malformed cap, bad usage).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from shoal.cli.options import data_dir_option, json_option, print_json
from shoal.client.http import Client
from shoal.content.caps import looks_like_cap, parse_cap
from shoal.errors import InvalidCapability
from shoal.names import printable
from shoal.units import format_size

__all__ = ["check", "repair"]

EXIT_UNHEALTHY = 1
EXIT_BAD_INPUT = 2


def _check_ref(name_or_cap: str) -> None:
    """A malformed cap is bad input (exit 2), refused before anything is asked."""
    if looks_like_cap(name_or_cap):
        try:
            parse_cap(name_or_cap)
        except InvalidCapability as exc:
            click.echo(f"error: {printable(str(exc))}", err=True)
            raise click.exceptions.Exit(EXIT_BAD_INPUT) from None


@contextmanager
def _blocks_progress(description: str, *, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A spinner with the blocks checked so far, on stderr (only on a terminal)."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield lambda _done: None
        return
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.fields[n]}"),
        console=console, transient=True,
    )  # fmt: skip
    task = progress.add_task(description, n="")
    with progress:
        yield lambda done: progress.update(task, n=f"{done} block(s) checked")


def _file_lines(report: dict[str, Any], *, repaired: bool = False) -> list[str]:
    lines = [
        f"{report.get('cap', '?')}: {report.get('state', '?')}",
        f"  blocks {report.get('blocks', 0)}, copies wanted {report.get('wanted', 0)}, "
        f"fewest live copies {report.get('min_copies', 0)}",
    ]
    if repaired:
        lines.append(
            f"  copied {report['copied']} block(s), {format_size(report.get('bytes_moved', 0))} "
            f"moved; fewest live copies now {report.get('min_copies_after', 0)}"
        )
    if report.get("waiting"):
        lines.append(
            f"  {report['waiting']} block(s) wait for nodes unreachable for less than the "
            "repair delay (`shoal repair` copies them now)"
        )
    if report.get("lost_blocks"):
        lines.append(f"  {report['lost_blocks']} block(s) have no live copy")
    if report.get("verified"):
        lines.append(
            f"  every copy counted was downloaded and hashed: "
            f"{report.get('verified_copies', 0)} intact"
        )
    if report.get("error"):
        lines.append(f"  cannot walk the file: {printable(str(report['error']))}")
    lines.extend(f"  not repaired: {printable(str(r))}" for r in report.get("unrepaired", []))
    return lines


@click.command()
@data_dir_option()
@json_option
@click.option("--verify", is_flag=True, help="Also download and hash every copy counted.")
@click.argument("name_or_cap", metavar="NAME|CAP")
def check(data_dir: Path, as_json: bool, verify: bool, name_or_cap: str) -> None:
    """Show how healthy a file is: the live copies of each of its blocks.

    A verify cap (shoal:v:...) is enough. Exit code 0 when healthy, 1 when not (or on error),
    2 for a malformed cap.
    """
    _check_ref(name_or_cap)
    with (
        Client.from_data_dir(data_dir) as client,
        _blocks_progress("checking", quiet=as_json) as bar,
    ):
        report = client.check(name_or_cap, verify=verify, progress=bar)
    if as_json:
        print_json(report)
    else:
        click.echo("\n".join(_file_lines(report)))
    if not report.get("healthy"):
        raise click.exceptions.Exit(EXIT_UNHEALTHY)


@click.command()
@data_dir_option()
@json_option
@click.argument("name_or_cap", metavar="[NAME|CAP]", required=False)
def repair(data_dir: Path, as_json: bool, name_or_cap: str | None) -> None:
    """Run one repair pass now, over one file or every file the node keeps or holds.

    Copies every missing block at once (nodes unreachable for less than the repair delay are
    not waited for), and prints blocks copied, bytes moved and what could not be repaired.
    Exit code 0 when everything is healthy afterwards, 1 when not (or on error), 2 for a
    malformed cap.
    """
    if name_or_cap is not None:
        _check_ref(name_or_cap)
    with (
        Client.from_data_dir(data_dir) as client,
        _blocks_progress("repairing", quiet=as_json) as bar,
    ):
        result = client.repair(name_or_cap, progress=bar)
    if as_json:
        print_json(result)
    if "reports" not in result:  # one file
        if not as_json:
            click.echo("\n".join(_file_lines(result, repaired=True)))
        healthy = bool(result.get("healthy"))
    else:
        if not as_json:
            click.echo(
                f"{result['files']} file(s): {result.get('copied', 0)} block(s) copied, "
                f"{format_size(result.get('bytes_moved', 0))} moved; healthy "
                f"{result.get('healthy', 0)}, degraded {result.get('degraded', 0)}, "
                f"lost {result.get('lost', 0)}"
            )
            for line in result.get("unrepaired", []):
                click.echo(f"  not repaired: {printable(str(line))}")
        healthy = result.get("healthy", 0) == result.get("files", 0)
    if not healthy:
        raise click.exceptions.Exit(EXIT_UNHEALTHY)
