"""The node: block store, catalog and connections wired together, and the block operations
that the put and get pipelines are made of.

Threads: hashing and AEAD run on a small CPU pool (they release the GIL, so two threads use
both cores); disk reads, writes and fsyncs run on an I/O pool, so a slow fsync never holds up
hashing and nothing blocking ever runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shoal import defaults
from shoal.errors import (
    IntegrityError,
    NotFound,
    QuorumNotMet,
    RemoteProtocolError,
    ShoalError,
    StorageError,
    TransportError,
)
from shoal.ids import decode_id, encode_id, short_id
from shoal.node.datadir import DataDir
from shoal.node.placement import by_distance
from shoal.protocol import (
    BlockData,
    GetBlock,
    GetPeers,
    HasBlocks,
    HaveBlocks,
    Message,
    PeerAddress,
    Peers,
    PutBlock,
    PutBlockOk,
)
from shoal.store import BlockStore, Catalog
from shoal.transport import Backoff, ConnectionManager, PeerConnection

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PEERS_SHARED = 64


@dataclass
class RuntimeOptions:
    """Tunables; the defaults are what `shoal run` uses."""

    listen: str = defaults.LISTEN
    peers: tuple[str, ...] = ()
    replicas: int = defaults.REPLICAS
    network: str = defaults.OPEN_NETWORK
    network_secret: bytes | None = None
    chunk_size: int = defaults.CHUNK_SIZE
    manifest_fanout: int = defaults.MANIFEST_FANOUT
    window: int = defaults.WINDOW
    request_timeout: float = defaults.REQUEST_TIMEOUT
    ping_interval: float = defaults.PING_INTERVAL
    ping_timeout: float = defaults.PING_TIMEOUT
    backoff: Backoff = field(default_factory=Backoff)
    cpu_threads: int = max(2, os.cpu_count() or 2)
    io_threads: int = 8


class NodeRuntime:
    """Everything a running node owns. ``start()`` then ``aclose()``."""

    def __init__(self, data: DataDir, options: RuntimeOptions) -> None:
        self.data = data
        self.options = options
        self.node_id = data.identity.node_id
        self.blocks = BlockStore(data.blocks_path)
        self.catalog = Catalog(data.catalog_path)
        self._cpu = ThreadPoolExecutor(options.cpu_threads, thread_name_prefix="shoal-cpu")
        self._io = ThreadPoolExecutor(options.io_threads, thread_name_prefix="shoal-io")
        self.manager = ConnectionManager(
            data.identity,
            data.path,
            listen=options.listen,
            handler=self.handle_request,
            network=options.network,
            network_secret=options.network_secret,
            on_peer_up=self._on_peer_up,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            backoff=options.backoff,
        )
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then dial the bootstrap peers and the peers remembered in the catalog."""
        try:
            await self.manager.start()
            remembered = await self.io(self.catalog.peers)
        except BaseException:
            await self.aclose()
            raise
        for address in self.options.peers:
            self.manager.add_address(address)
        for node_id_text, addresses, _last_seen in remembered:
            try:
                node_id = decode_id(node_id_text)
            except ValueError:
                continue
            for address in addresses[:4]:
                self.manager.add_address(address, node_id)

    async def aclose(self) -> None:
        await self.manager.aclose()
        await self._close_resources()

    async def _close_resources(self) -> None:
        self._cpu.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._io.shutdown, wait=True)
        self.catalog.close()

    # -- threads -------------------------------------------------------------------------------

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (hashing, AEAD) on the CPU pool."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    async def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking disk or SQLite work on the I/O pool."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._io, call)

    # -- peers ---------------------------------------------------------------------------------

    def live_nodes(self) -> list[bytes]:
        """This node and every peer with an open connection."""
        return [self.node_id, *self.manager.live_ids()]

    async def _on_peer_up(self, conn: PeerConnection) -> None:
        peer = conn.peer
        if peer is None:
            return
        with contextlib.suppress(StorageError):
            await self.io(
                self.catalog.upsert_peer,
                encode_id(peer.node_id),
                list(peer.listen_addrs),
                time.time(),
            )
        # Peer exchange: learn who our new peer knows, so a node that bootstrapped from one
        # peer ends up connected to the whole (small) network.
        try:
            answer = await conn.request(GetPeers(), timeout=self.options.request_timeout)
        except (TransportError, RemoteProtocolError, ShoalError) as exc:
            log.debug("peer exchange with %s failed: %s", short_id(peer.node_id), exc)
            return
        assert isinstance(answer, Peers)
        for entry in answer.peers:
            if entry.node_id != self.node_id:
                for address in entry.addrs[:2]:
                    self.manager.add_address(address, entry.node_id)

    # -- serving peers -------------------------------------------------------------------------

    async def handle_request(self, peer: PeerConnection, message: Message) -> Message:
        """Answer one request from a peer (the transport calls this; errors become ERROR)."""
        if isinstance(message, PutBlock):
            # verify=True: a storing node never trusts the sender's block ID.
            await self.io(self.blocks.put, message.block_id, message.data, verify=True)
            return PutBlockOk(block_id=message.block_id)
        if isinstance(message, GetBlock):
            data = await self.io(self.blocks.get, message.block_id)
            return BlockData(block_id=message.block_id, data=data)
        if isinstance(message, HasBlocks):
            ids = message.block_ids
            present = await self.io(lambda: tuple(self.blocks.has(b) for b in ids))
            return HaveBlocks(present=present)
        if isinstance(message, GetPeers):
            shared = [
                PeerAddress(node_id=r.node_id, addrs=tuple(r.addresses[:4]))
                for r in self.manager.records()
                if r.up and r.addresses and r.node_id != peer.peer_id
            ]
            return Peers(peers=tuple(shared[:MAX_PEERS_SHARED]))
        raise RemoteProtocolError(f"{type(message).__name__} is not a request this node serves")

    # -- blocks --------------------------------------------------------------------------------

    async def put_on(self, node_id: bytes, block_id: bytes, data: bytes) -> None:
        """Store one block on one node (ourselves or a peer); returns after its fsync."""
        if node_id == self.node_id:
            # We computed block_id from these bytes ourselves: no need to hash them again.
            await self.io(self.blocks.put, block_id, data, verify=False)
            return
        conn = self.manager.connection(node_id)
        if conn is None:
            raise TransportError(f"peer {short_id(node_id)} is not connected")
        await conn.request(
            PutBlock(block_id=block_id, data=data), timeout=self.options.request_timeout
        )

    async def place_block(self, block_id: bytes, data: bytes, replicas: int) -> list[bytes]:
        """Store a block on the ``replicas`` XOR-closest live nodes; all must acknowledge.

        A node that fails is replaced by the next closest live node. Raises ``QuorumNotMet``,
        saying where the block did land, when not enough nodes acknowledged.
        """
        order = by_distance(block_id, self.live_nodes())
        acked: list[bytes] = []
        failures: list[str] = []
        next_index = 0
        while len(acked) < replicas:
            batch = order[next_index : next_index + replicas - len(acked)]
            next_index += len(batch)
            if not batch:
                holders = ", ".join(short_id(n) for n in acked) or "nowhere"
                raise QuorumNotMet(
                    f"block {short_id(block_id)} stored on {len(acked)} of {replicas} nodes "
                    f"({holders}); failed: {'; '.join(failures) or 'no live peers'}. "
                    "Check that enough peers are up (`shoal peers`) and retry.",
                    placed={encode_id(block_id): [encode_id(n) for n in acked]},
                )
            results = await asyncio.gather(
                *(self.put_on(n, block_id, data) for n in batch), return_exceptions=True
            )
            for node_id, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, ShoalError):
                        raise result
                    failures.append(f"{short_id(node_id)}: {result}")
                else:
                    acked.append(node_id)
        return acked

    async def fetch_block(self, block_id: bytes, open_block: Callable[[bytes], T]) -> T:
        """Get a block from the local store or, failing that, from peers, closest first.

        ``open_block`` runs on the CPU pool over the bytes; it must verify them (hash, and
        for data blocks the AEAD tag) and raise ``IntegrityError`` if they are bad, and returns
        what the caller wants (plaintext, an opened manifest). A source whose bytes fail it is
        skipped and the next one tried; a bad local copy is moved aside.
        """
        errors: list[str] = []
        try:
            data = await self.io(self.blocks.get, block_id, verify=False)
        except NotFound:
            pass
        except (IntegrityError, StorageError) as exc:
            errors.append(f"local: {exc}")
        else:
            try:
                return await self.cpu(open_block, data)
            except IntegrityError as exc:
                errors.append(f"local: {exc}")
                # Move the bad file aside so it is never served to peers.
                with contextlib.suppress(ShoalError):
                    await self.io(self.blocks.quarantine, block_id)
        peers = by_distance(block_id, self.manager.live_ids())
        for node_id in peers:
            conn = self.manager.connection(node_id)
            if conn is None:
                continue
            try:
                answer = await conn.request(
                    GetBlock(block_id=block_id), timeout=self.options.request_timeout
                )
                assert isinstance(answer, BlockData)
                return await self.cpu(open_block, answer.data)
            except (NotFound, IntegrityError, TransportError, RemoteProtocolError) as exc:
                errors.append(f"{short_id(node_id)}: {exc}")
        raise NotFound(
            f"block {short_id(block_id)} is not available: not stored here and "
            f"{len(peers)} live peer(s) could not supply it"
            + (f" ({'; '.join(errors[:4])})" if errors else "")
        )
