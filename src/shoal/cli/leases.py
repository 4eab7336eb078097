"""``shoal pin`` and ``shoal gc``: keep a shared file, free what no lease holds.

Both talk to the running node through its HTTP API (``shoal.Client``), like ``shoal rm``,
which releases this node's leases network-wide (``docs/leases.md``).
"""

from __future__ import annotations

from pathlib import Path

import click

from shoal.cli.options import data_dir_option, print_json
from shoal.cli.output import format_size
from shoal.client.http import Client

__all__ = ["gc", "pin"]


@click.command()
@data_dir_option()
@click.argument("cap")
@click.option("--name", required=True, help="The name to keep the file under in the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def pin(data_dir: Path, cap: str, name: str, as_json: bool) -> None:
    """Keep a file someone shared (its read cap CAP) as NAME: add it to this node's catalog
    and take this node's leases on its blocks, so it lives while this node keeps it."""
    with Client.from_data_dir(data_dir) as client:
        result = client.pin(cap, name)
    if as_json:
        print_json(result)
        return
    click.echo(
        f"pinned {name} ({format_size(result.get('size'))}, {result.get('blocks', 0)} blocks, "
        f"{result.get('leased', 0)} block leases taken)"
    )


@click.command()
@data_dir_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gc(data_dir: Path, as_json: bool) -> None:
    """Run one garbage-collection pass now: free the local blocks that no live lease holds
    and whose grace period (--gc-grace of `shoal run`) is over."""
    with Client.from_data_dir(data_dir) as client:
        result = client.gc()
    if as_json:
        print_json(result)
        return
    click.echo(f"freed {result.get('blocks', 0)} blocks, {format_size(result.get('bytes', 0))}")
    if result.get("skipped"):
        click.echo(f"warning: {result['skipped']}", err=True)
