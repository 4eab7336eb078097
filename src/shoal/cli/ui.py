"""``shoal ui``: print (and open) a one-time sign-in link to the running node's web UI.

The link comes from the node (``POST /v1/ui/login-token``, with the API token of ``api.json``),
works once and for ten minutes; ``docs/web-ui.md`` has the security model.
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click
import httpx

from shoal.cli.options import data_dir_option
from shoal.client.api_info import API_FILE_NAME, read_api_info
from shoal.errors import ConfigError, ShoalError

__all__ = ["login_link", "ui"]

TIMEOUT = 10.0


def login_link(data_dir: Path) -> str:
    """A fresh one-time sign-in URL for the web UI of the node running on ``data_dir``.

    Raises:
        ConfigError: No node runs on ``data_dir`` (no ``api.json``, or a stale one).
        ShoalError: The node refused or failed.
    """
    info = read_api_info(data_dir)
    try:
        response = httpx.post(
            f"{info.url}/v1/ui/login-token",
            headers={"Authorization": f"Bearer {info.token}"},
            timeout=TIMEOUT,
            trust_env=False,  # never send the token through a proxy from the environment
        )
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise ConfigError(
            f"no node answers at {info.url} for data dir {data_dir} (stale {API_FILE_NAME}: "
            f"the node was stopped or crashed): start it with `shoal run --data-dir {data_dir}`"
        ) from None
    except httpx.HTTPError as exc:
        raise ShoalError(f"asking the node at {info.url} for a sign-in link failed: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise ShoalError(
            f"the node at {info.url} refused a sign-in link ({response.status_code}): "
            f"{message if isinstance(message, str) else 'no web UI in this version?'}"
        )
    path = body.get("path")
    if not isinstance(path, str) or not path.startswith("/ui/login?token="):
        raise ShoalError(f"the node at {info.url} sent a malformed sign-in link")
    return f"{info.url}{path}"


@click.command(name="ui")
@data_dir_option()
@click.option("--open", "open_browser", is_flag=True, help="Also open the link in a browser.")
def ui(data_dir: Path, open_browser: bool) -> None:
    """Print a sign-in link to the running node's web UI (it works once, for ten minutes)."""
    url = login_link(data_dir)
    click.echo(url)
    if open_browser and not webbrowser.open(url):
        click.echo("no browser could be opened: open the link above yourself", err=True)
