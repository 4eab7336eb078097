"""``shoal demo``: the classic three-server example, in one process.

Node 1 listens on :3000 and makes a closed network; nodes 2 (:4000) and 3 (:5000) join it with
its invite (the secret and node 1's address), as ``shoal init --join`` does; node 3 also
bootstraps from both. Once the third sees both peers up, it stores ``picture_1.png`` (a PNG
generated here), deletes its own copy of the blocks, gets the file back from the network and
checks it is byte for byte the same. Then the network keeps running until Ctrl-C (or exits at
once with ``--once``); node 1 serves the local HTTP API and web UI, and the demo's last line
before it waits is a sign-in link to that UI (``shoal ui``'s).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import click

from shoal.api.http import serve_api
from shoal.cli.output import format_age, format_size, format_table
from shoal.cli.run import wait_for_stop_signal
from shoal.cli.ui import login_link
from shoal.content import ReadCap
from shoal.errors import AddressInUse, IntegrityError, PeerUnavailable
from shoal.ids import encode_id
from shoal.node.service import Node, init_data_dir
from shoal.node.types import PeerState

__all__ = ["make_png", "run_demo"]

FILE_NAME: Final = "picture_1.png"
PEER_WAIT_TIMEOUT: Final = 20.0
PEER_POLL_INTERVAL: Final = 0.05


def make_png(width: int = 64, height: int = 64) -> bytes:
    """A valid RGB PNG of a colour gradient, built with ``zlib`` and ``struct`` only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes((x * 255 // (width - 1), y * 255 // (height - 1), 128))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def _step(text: str) -> None:
    click.echo(f"==> {text}")


@contextlib.contextmanager
def _data_root(data_root: Path | None) -> Iterator[Path]:
    if data_root is not None:
        data_root.mkdir(parents=True, exist_ok=True)
        yield data_root
        return
    with tempfile.TemporaryDirectory(prefix="shoal-demo-") as tmp:
        yield Path(tmp)


async def _wait_for_peers(node: Node, expected: set[str], timeout: float) -> None:
    """Poll until every node ID in ``expected`` is up as seen by ``node``."""
    deadline = time.monotonic() + timeout
    while True:
        up = {p.node_id for p in node.peers() if p.state is PeerState.UP}
        if expected <= up:
            return
        if time.monotonic() >= deadline:
            missing = ", ".join(sorted(n[:12] for n in expected - up))
            raise PeerUnavailable(f"peers {missing} did not come up within {timeout:.0f} s")
        await asyncio.sleep(PEER_POLL_INTERVAL)


def _print_peers(node: Node) -> None:
    rows = [
        [p.node_id[:12], p.address or "-", p.state.value, format_age(p.last_seen)]
        for p in node.peers()
    ]
    click.echo(format_table(["NODE", "ADDRESS", "STATE", "LAST SEEN"], rows))


async def _keep_running(node: Node, ui_url: str) -> None:
    """Print the peer list and the UI link, then the peer list whenever it changes, until
    Ctrl-C / SIGTERM."""
    stop = asyncio.create_task(wait_for_stop_signal())
    last = sorted((p.node_id, p.state.value) for p in node.peers())
    _print_peers(node)
    _step(f"web UI of node 1 (this sign-in link works once): {ui_url}")
    try:
        while not stop.done():
            current = sorted((p.node_id, p.state.value) for p in node.peers())
            if current != last:
                _print_peers(node)
                last = current
            await asyncio.wait({stop}, timeout=1.0)
    finally:
        stop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop


async def run_demo(*, once: bool, ephemeral_ports: bool, data_root: Path | None) -> None:
    """Run the three-node demo; see the module docstring."""
    try:
        await _run_demo(once=once, ephemeral_ports=ephemeral_ports, data_root=data_root)
    except AddressInUse as exc:
        if ephemeral_ports:
            raise
        raise AddressInUse(f"{exc} (`shoal demo --ephemeral-ports` uses free ports)") from exc


async def _run_demo(*, once: bool, ephemeral_ports: bool, data_root: Path | None) -> None:
    ports = (0, 0, 0) if ephemeral_ports else (3000, 4000, 5000)
    with _data_root(data_root) as root:
        dirs = [root / f"node{i}" for i in (1, 2, 3)]
        init_data_dir(dirs[0])  # a new closed network: only nodes with its secret get in
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                Node.start(dirs[0], listen=f"127.0.0.1:{ports[0]}")
            )
            await stack.enter_async_context(serve_api(first, dirs[0]))
            _step(f"node 1 {first.node_id[:12]} listening on {first.listen_address}")
            invite = first.invite()
            _step(f"node 1 made a closed network; its invite: {invite[:24]}... (a secret)")
            second = await stack.enter_async_context(
                Node.start(dirs[1], listen=f"127.0.0.1:{ports[1]}", join=invite)
            )
            _step(
                f"node 2 {second.node_id[:12]} joined with the invite, on {second.listen_address}"
            )
            third = await stack.enter_async_context(
                Node.start(
                    dirs[2],
                    listen=f"127.0.0.1:{ports[2]}",
                    join=invite,
                    peers=[first.listen_address, second.listen_address],
                )
            )
            _step(
                f"node 3 {third.node_id[:12]} listening on {third.listen_address}, "
                f"bootstrapping from {first.listen_address} and {second.listen_address}"
            )
            await _wait_for_peers(third, {first.node_id, second.node_id}, PEER_WAIT_TIMEOUT)
            _step("node 3 sees both peers up")

            picture = root / FILE_NAME
            original = make_png()
            picture.write_bytes(original)
            cap = await third.store(FILE_NAME, picture, media_type="image/png")
            cid = encode_id(ReadCap.parse(cap).cid)  # the public content ID
            _step(f"stored {FILE_NAME} ({format_size(len(original))}) from node 3")
            click.echo(f"    CID:      {cid}")
            click.echo(f"    read cap: {cap}")

            dropped = await third.drop_local_copy(FILE_NAME)
            _step(f"deleted node 3's local copy ({dropped} blocks)")

            async with third.get(FILE_NAME) as reader:
                fetched = await reader.read()
            if fetched != original:
                raise IntegrityError(f"{FILE_NAME} came back different from what was stored")
            _step(f"got {FILE_NAME} back from the network: {len(fetched)} bytes, identical")
            (root / f"fetched_{FILE_NAME}").write_bytes(fetched)

            if once:
                _step("done")
                return
            await first.keep(cap, FILE_NAME)
            _step(f"node 1 keeps {FILE_NAME} in its catalog by its read cap (see its web UI)")
            _step("network running; press Ctrl-C to stop")
            ui_url = await asyncio.to_thread(login_link, dirs[0])
            await _keep_running(third, ui_url)
            _step("stopping")
