"""``shoal scrub``: a whole scrub pass now; and how ``shoal status`` shows the scrub.

The pass runs in the node (``POST /v1/scrub``), throttled like the background ones (``shoal
run --scrub-rate``); this command polls ``GET /v1/scrub`` until it is done, showing progress
on stderr, then prints what it found (``--json`` for scripts). ``--no-wait`` only starts it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

import click

from shoal.cli.options import data_dir_option, json_option, print_json
from shoal.cli.output import format_size, format_time
from shoal.client.http import Client
from shoal.errors import ShoalError
from shoal.units import parse_size

__all__ = ["format_scrub", "parse_rate", "scrub"]

POLL_INTERVAL: Final = 0.5


def parse_rate(text: str | None, *, what: str) -> float | None:
    """``"10MiB"`` (per second) as bytes per second; None stays None."""
    if text is None:
        return None
    rate = parse_size(text.removesuffix("/s"), what=what)
    if rate <= 0:
        raise click.BadParameter("must be more than 0 bytes per second", param_hint=what)
    return float(rate)


def _report_line(last: dict[str, Any]) -> str:
    return (
        f"pass {last.get('pass')} finished {format_time(last.get('finished'))}: "
        f"{last.get('checked')} block(s) checked ({format_size(last.get('bytes'))}), "
        f"{last.get('corrupt')} corrupt, {last.get('replaced')} replaced"
        + (f", {last['unreplaced']} not yet" if last.get("unreplaced") else "")
    )


def format_scrub(value: object) -> str:
    """One line for ``shoal status``: the pass under way or the next due, and the last one."""
    if not isinstance(value, dict):
        return "-"
    parts = []
    if value.get("running"):
        parts.append(
            f"pass {value.get('pass')} running: {value.get('checked')} of about "
            f"{value.get('blocks')} block(s) checked, {value.get('corrupt')} corrupt, "
            f"{value.get('replaced')} replaced"
        )
    else:
        parts.append(f"next pass {format_time(value.get('next_pass'))}")
    last = value.get("last")
    parts.append(_report_line(last) if isinstance(last, dict) else "no pass finished yet")
    return "; ".join(parts)


@click.command()
@data_dir_option()
@json_option
@click.option("--no-wait", is_flag=True, help="Start the pass and return at once.")
def scrub(data_dir: Path, as_json: bool, no_wait: bool) -> None:
    """Re-hash every block this node stores now; fetch corrupt ones again from holders.

    A pass already under way starts over. The pass is throttled (shoal run --scrub-rate):
    on a big store it takes a while; Ctrl-C stops waiting, not the pass.
    """
    with Client.from_data_dir(data_dir) as client:
        number = client.start_scrub()
        if no_wait:
            click.echo(json.dumps({"pass": number}) if as_json else f"scrub pass {number} started")
            return
        last_shown = -1
        while True:
            status = client.scrub_status()
            last = status.get("last")
            done = last.get("pass") if isinstance(last, dict) else None
            if isinstance(done, int) and done >= number:
                break
            checked = status.get("checked")
            if not as_json and status.get("running") and checked != last_shown:
                click.echo(
                    f"\rscrub pass {status.get('pass')}: {checked} of about "
                    f"{status.get('blocks')} block(s) checked",
                    err=True,
                    nl=False,
                )
                last_shown = checked if isinstance(checked, int) else last_shown
            time.sleep(POLL_INTERVAL)
    if not isinstance(last, dict):
        raise ShoalError("node API sent a malformed scrub status")
    if as_json:
        print_json(last)
        return
    if last_shown >= 0:
        click.echo("", err=True)
    click.echo(_report_line(last))
