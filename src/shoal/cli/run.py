"""``shoal run``: a node plus its local HTTP API (and gRPC API), until SIGINT or SIGTERM.

Also what ``shoal demo`` shares with it: logging setup and waiting for a stop signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from shoal.api.http import serve_api
from shoal.client.http import Client
from shoal.errors import ConfigError, ShoalError
from shoal.node.datadir import is_initialized
from shoal.node.runtime import RuntimeOptions
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


@dataclass(frozen=True)
class NodeSettings:
    """What `shoal run`'s flags say (None or empty: config.toml or the default)."""

    listen: str | None = None
    peers: Sequence[str] = ()
    replicas: int | None = None
    #: ``--erasure K-of-N``: erasure-code new files by default (else config.toml's).
    erasure: str | None = None
    advertise: Sequence[str] = ()
    max_storage: int | None = None
    reserved_space: int | None = None
    limits: Mapping[str, object] = field(default_factory=dict)
    grpc: str | None = None  # HOST:PORT of the gRPC API; None: no gRPC API
    #: False: no mDNS (``--no-mdns``); True: as config.toml says (on by default).
    mdns: bool = True
    #: ``--gc-grace`` (None: config.toml, else 24 h) and ``--pending-lease`` (None: 1 h).
    gc_grace: float | None = None
    pending_lease: float | None = None
    #: ``--repair-delay`` seconds (None: config.toml, else one hour) and ``--repair-rate``
    #: bytes per second (None: the default; 0: no limit).
    repair_delay: float | None = None
    repair_rate: int | None = None
    #: ``RuntimeOptions`` fields a flag set (timers and rates: ``--scrub-rate``, ...).
    options: Mapping[str, object] = field(default_factory=dict)
    #: DHT settings a flag set (``--dht-k``, ``--dht-alpha``), over config.toml's ``[dht]``.
    dht: Mapping[str, int | float] = field(default_factory=dict)


async def run_node(data_dir: Path, settings: NodeSettings) -> None:
    """Run a node and its API until SIGINT/SIGTERM; print one line once it is listening.

    A data dir this call initializes is removed again if the node then fails to start (a
    port in use, a full disk): a start that fails leaves nothing behind.
    """
    undo = None if is_initialized(data_dir) else _undo_for(data_dir)
    started = False
    try:
        node_id, created = init_data_dir(data_dir)
        async with (
            Node.start(
                data_dir,
                listen=settings.listen,
                peers=settings.peers,
                replicas=settings.replicas,
                erasure=settings.erasure,
                advertise=settings.advertise,
                max_storage=settings.max_storage,
                reserved_space=settings.reserved_space,
                limits=settings.limits,
                options=dataclasses.replace(
                    _runtime_options(settings),
                    **settings.options,  # type: ignore[arg-type]
                ),
                gc_grace=settings.gc_grace,
                dht=settings.dht,
            ) as node,
            serve_api(node, data_dir) as api,
            _serve_grpc(node, settings.grpc, api.token, data_dir) as grpc_address,
        ):
            started = True
            if created:
                log.info(
                    "initialized data dir %s for node %s: a new closed network "
                    "(`shoal invite` prints an invite for other nodes to join it)",
                    data_dir,
                    node_id,
                )
            apis = f"API {api.url}" + (f", gRPC {grpc_address}" if grpc_address else "")
            print(
                f"shoal node {node.node_id} listening on {node.listen_address} ({apis})",
                flush=True,
            )
            # Peers going up and down are logged by the transport layer (INFO, on stderr).
            await wait_for_stop_signal()
            log.info("stopping")
    except BaseException:
        if not started and undo is not None:
            undo()
        raise


def _runtime_options(settings: NodeSettings) -> RuntimeOptions:
    options = RuntimeOptions(mdns=settings.mdns, repair_delay=settings.repair_delay)
    if settings.pending_lease is not None:
        options = dataclasses.replace(options, pending_lease=settings.pending_lease)
    if settings.repair_rate is not None:
        options = dataclasses.replace(options, repair_rate=settings.repair_rate)
    return options


@contextlib.asynccontextmanager
async def _serve_grpc(
    node: Node, address: str | None, token: str, data_dir: Path
) -> AsyncIterator[str | None]:
    """The gRPC API on ``address`` (its bound address), or nothing if ``address`` is None."""
    if address is None:
        yield None
        return
    from shoal.api.grpc import serve_grpc  # grpcio is loaded only when it is served

    async with serve_grpc(node, address, token=token, data_dir=data_dir) as server:
        yield server.address


def _undo_for(data_dir: Path) -> Callable[[], None]:
    """A function that removes what gets created in or for ``data_dir`` from now on.

    If the directory does not exist yet, the topmost of its missing parents goes, whole;
    otherwise only the entries that were not there now.
    """
    path = data_dir.absolute()
    missing_top: Path | None = None
    while not os.path.lexists(path):
        missing_top, path = path, path.parent
    if missing_top is None and not path.is_dir():
        return lambda: None  # not a directory: the start fails before creating anything
    before = set() if missing_top is not None else set(os.listdir(path))

    def undo() -> None:
        if missing_top is not None:
            shutil.rmtree(missing_top, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            for name in set(os.listdir(path)) - before:
                entry = path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    return undo
