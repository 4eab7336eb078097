"""``shoal run``: a node plus its local HTTP API, until SIGINT or SIGTERM.

Also what ``shoal demo`` shares with it: logging setup and waiting for a stop signal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from shoal.api.http import serve_api
from shoal.client.http import Client
from shoal.errors import ConfigError, ShoalError
from shoal.node.service import Node, init_data_dir

__all__ = ["configure_logging", "refuse_if_running", "run_node", "wait_for_stop_signal"]

log = logging.getLogger("shoal.cli")

PROBE_TIMEOUT: Final = 5.0


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr at ``level``."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; only our own story belongs in the node's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)


async def wait_for_stop_signal() -> None:
    """Return when the process gets SIGINT or SIGTERM.

    The handlers are removed on return, so a second Ctrl-C during shutdown interrupts it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def refuse_if_running(data_dir: Path) -> None:
    """Refuse to start a second node on a data dir whose node answers on its API."""
    try:
        with Client.from_data_dir(data_dir, read_timeout=PROBE_TIMEOUT) as client:
            status = client.status()
    except ShoalError:
        return  # no api.json, or a stale one: nobody is running
    raise ConfigError(
        f"a node is already running for data dir {data_dir} "
        f"(node {status.get('node_id', '?')}, stop it first)"
    )


async def run_node(
    data_dir: Path, *, listen: str | None, peers: Sequence[str], replicas: int | None
) -> None:
    """Run a node and its API until SIGINT/SIGTERM; print one line once it is listening."""
    node_id, created = init_data_dir(data_dir)
    if created:
        log.info("initialized data dir %s for node %s", data_dir, node_id)
    async with (
        Node.start(data_dir, listen=listen, peers=peers, replicas=replicas) as node,
        serve_api(node, data_dir) as api,
    ):
        print(
            f"shoal node {node.node_id} listening on {node.listen_address} (API {api.url})",
            flush=True,
        )
        # Peers going up and down are logged by the transport layer (INFO, on stderr).
        await wait_for_stop_signal()
        log.info("stopping")
