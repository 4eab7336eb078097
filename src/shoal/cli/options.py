"""What every command shares: the ``--data-dir`` and ``--json`` options and the JSON printer.

A module of its own so the command modules (``cli/health.py``, ``cli/leases.py``, ...) that
``cli/main.py`` imports can use them without importing ``cli/main.py`` back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["data_dir_option", "json_option", "print_json"]

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(*, required: bool = True) -> Callable[[F], F]:
    """The ``--data-dir`` option every command shares (also ``SHOAL_DATA_DIR``)."""
    return click.option(
        "--data-dir",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="SHOAL_DATA_DIR",
        show_envvar=True,
        required=required,
        help="The node's data directory.",
    )


def json_option(f: F) -> F:
    """The ``--json`` flag: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def print_json(value: Any) -> None:
    """``value`` as indented JSON with sorted keys, on stdout."""
    click.echo(json.dumps(value, indent=2, sort_keys=True))
