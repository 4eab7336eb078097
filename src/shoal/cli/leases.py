"""``shoal pin`` and ``shoal gc``: keep a shared file, free what no lease holds.

Both talk to the running node through its HTTP API (``shoal.Client``), like ``shoal rm``,
which releases this node's leases network-wide (``docs/leases.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from shoal.cli.output import format_size
from shoal.client.http import Client

__all__ = ["gc", "pin"]


F = TypeVar("F", bound=Callable[..., Any])


def _data_dir_option() -> Callable[[F], F]:
    # The same option as every other command's (cli.main.data_dir_option; not imported:
    # main imports this module).
    return click.option(
        "--data-dir",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SHOAL_DATA_DIR",
        show_envvar=True,
        required=True,
        help="The node's data directory.",
    )


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.command()
@_data_dir_option()
@click.argument("cap")
@click.option("--name", required=True, help="The name to keep the file under in the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def pin(data_dir: Path, cap: str, name: str, as_json: bool) -> None:
    """Keep a file someone shared (its read cap CAP) as NAME: add it to this node's catalog
    and take this node's leases on its blocks, so it lives while this node keeps it."""
    with Client.from_data_dir(data_dir) as client:
        result = client.pin(cap, name)
    if as_json:
        _print_json(result)
        return
    click.echo(
        f"pinned {name} ({format_size(result.get('size'))}, {result.get('blocks', 0)} blocks, "
        f"{result.get('leased', 0)} block leases taken)"
    )


@click.command()
@_data_dir_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gc(data_dir: Path, as_json: bool) -> None:
    """Run one garbage-collection pass now: free the local blocks that no live lease holds
    and whose grace period (--gc-grace of `shoal run`) is over."""
    with Client.from_data_dir(data_dir) as client:
        result = client.gc()
    if as_json:
        _print_json(result)
        return
    click.echo(f"freed {result.get('blocks', 0)} blocks, {format_size(result.get('bytes', 0))}")
    if result.get("skipped"):
        click.echo(f"warning: {result['skipped']}", err=True)
