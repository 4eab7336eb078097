"""The public asyncio API: ``shoal.Node``.

Example::

    async with shoal.Node.start("n1", listen="127.0.0.1:0", peers=["127.0.0.1:3000"]) as node:
        cap = await node.store("picture_1.png", open("picture_1.png", "rb"))
        async with node.get("picture_1.png") as reader:   # or the cap string
            data = await reader.read()
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import mimetypes
import os
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Any

from shoal import defaults
from shoal.content import Chunker, ReadCap, Redundancy, looks_like_cap, parse_cap
from shoal.content.directory import DirEntry, EnterDir, FolderWalk, LeaveDir, PutFile
from shoal.content.manifest import MAX_CHILDREN, MAX_CHUNK_SIZE, MAX_REPLICAS
from shoal.errors import ConfigError, InvalidCapability, NotFound, StorageError
from shoal.ids import encode_id
from shoal.names import check_media_type, check_name
from shoal.node.activity import ActivityFeed, Transfer, TransferKind
from shoal.node.datadir import NodeConfig, check_dht_settings, dht_options_with, parse_erasure
from shoal.node.datadir import init_data_dir as _init_data_dir
from shoal.node.folders import (
    FolderItem,
    FolderResult,
    RestoreResult,
    folder_steps,
    read_listing,
    restore_folder,
    store_folder,
)
from shoal.node.gc import GcResult
from shoal.node.get import FileStream, open_file, walk_block_ids
from shoal.node.leases import LeaseStats, lease_entry, release_entry, stored_for_others
from shoal.node.metrics import NodeMetrics, runtime_gauges
from shoal.node.network import Invite, parse_invite
from shoal.node.put import store_file
from shoal.node.repair import FileReport
from shoal.node.repair_loop import PassReport
from shoal.node.runtime import NodeRuntime, RuntimeOptions
from shoal.node.types import (
    FileEntry,
    NodeStatus,
    PeerState,
    PeerStatus,
    ScrubReport,
    ScrubStatus,
    StorageStatus,
    StoreResult,
)
from shoal.store import AtomicFile, CatalogEntry
from shoal.transport.book import PeerSource
from shoal.transport.limits import limits_with

#: Seconds since a peer was last heard from during which ``peers()`` still calls it up.
PEER_UP_WINDOW = 60.0

Data = bytes | bytearray | memoryview | IO[bytes] | AsyncIterable[bytes] | os.PathLike[str]
Progress = Callable[[int], None]  # called with the number of bytes just done

DEFAULT_MEDIA_TYPE = "application/octet-stream"
_DELETE_BATCH = 256  # block deletes per trip to the I/O pool


def _check_options(opts: RuntimeOptions) -> None:
    """Refuse settings a put would only trip over later, with the range that is accepted."""
    if not 1 <= opts.replicas <= MAX_REPLICAS:
        raise ConfigError(f"replicas must be 1 to {MAX_REPLICAS}, got {opts.replicas}")
    if not 1 <= opts.chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes")
    if not 2 <= opts.manifest_fanout <= MAX_CHILDREN:
        raise ConfigError(f"manifest fanout must be 2 to {MAX_CHILDREN}")
    if opts.window < 1:
        raise ConfigError("the transfer window must be at least 1")
    if opts.gc_grace < 0 or opts.pending_lease < 0:
        raise ConfigError("the GC grace period and the pending lease must be 0 seconds or more")
    holders = opts.erasure[1] if opts.erasure is not None else opts.replicas
    if opts.routing == "dht" and opts.dht.k + 1 < holders:
        # Not refused: a small k is a fair choice for a test or a tiny network.
        logging.getLogger("shoal.node").warning(
            "dht.k = %d: a lookup finds at most %d nodes, fewer than the %d holders each new "
            "file wants; files will be under-placed (raise dht.k or lower the redundancy)",
            opts.dht.k,
            opts.dht.k + 1,
            holders,
        )


def _erasure_option(
    erasure: str | tuple[int, int] | None,
    replicas: int | None,
    config: NodeConfig,
    base: RuntimeOptions,
) -> tuple[int, int] | None:
    """The node's default erasure coding: the argument, else (unless ``replicas`` was given)
    the options', else config.toml's."""
    if isinstance(erasure, str):
        return parse_erasure(erasure)
    if erasure is not None:
        k, n = erasure
        return parse_erasure(f"{k}-of-{n}")
    if replicas is not None:
        return None
    return base.erasure if base.erasure is not None else config.erasure


def _open_binary(path: Path) -> IO[bytes]:
    return path.open("rb")


class FileReader:
    """A verified, decrypted file being read from the network, in order.

    ``size`` comes from the file's root manifest. ``name`` and ``media_type`` are not part of a
    file (its cap depends only on its bytes): they come from this node's catalog when the file
    was opened by name; opened by cap, ``name`` is None and ``media_type`` is
    ``application/octet-stream``. ``cid`` is the file's content ID (text form), a fallback name
    for downloads. ``read(n=-1)`` returns up to ``n`` bytes (everything left if -1, ``b""`` at
    the end); ``async for chunk in reader`` yields the file chunk by chunk, which keeps memory
    bounded for any file size. A reader of a range (``Node.get(x, offset=, length=)``) yields
    the ``length`` bytes from ``offset`` on; ``size`` is still the whole file's.
    """

    def __init__(
        self,
        stream: FileStream,
        *,
        name: str | None = None,
        media_type: str | None = None,
        on_chunk: Progress | None = None,
    ) -> None:
        self._stream = stream
        self._on_chunk = on_chunk
        self._buffer = bytearray()
        self.name = name
        self.size = stream.size
        self.offset = stream.start
        self.length = stream.end - stream.start if stream.end is not None else stream.size
        self.media_type = media_type or DEFAULT_MEDIA_TYPE
        self.cid = encode_id(stream.cid)

    def limit(self, start: int, end: int) -> None:
        """Read only bytes ``start`` (inclusive) to ``end`` (exclusive); call before reading.

        Data blocks wholly outside the range are never fetched (HTTP ``Range`` requests).

        Raises:
            ValueError: The range is not within the file, or reading has begun.
        """
        self._stream.limit(start, end)
        self.offset, self.length = start, end - start

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes; ``-1`` reads to the end (bounded only by the file size)."""
        while n < 0 or len(self._buffer) < n:
            chunk = await self._next_chunk()
            if chunk is None:
                break
            self._buffer += chunk
        if n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data
        while (chunk := await self._next_chunk()) is not None:
            yield chunk

    async def _next_chunk(self) -> bytes | None:
        chunk = await self._stream.next_chunk()
        if chunk is not None and self._on_chunk is not None:
            self._on_chunk(len(chunk))
        return chunk


def _file_entry(entry: CatalogEntry) -> FileEntry:
    return FileEntry(
        name=entry.name,
        cap=entry.cap,
        size=entry.size,
        media_type=entry.media_type,
        created=entry.created,
        redundancy=_redundancy_json(entry),
    )


def _redundancy_json(entry: CatalogEntry) -> dict[str, Any] | None:
    """How a cataloged file is kept, from its row (None: unknown, an older row)."""
    if entry.erasure is not None:
        try:
            return Redundancy.parse_erasure(entry.erasure).to_json()
        except ValueError:
            return None
    if entry.replicas_wanted is not None and 1 <= entry.replicas_wanted <= MAX_REPLICAS:
        return Redundancy.replicate(entry.replicas_wanted).to_json()
    return None


def _media_type(name: str, given: str | None) -> str:
    if given:
        return check_media_type(given)
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_MEDIA_TYPE


class Node:
    """A running Shoal node: listens, connects to peers, stores and gets files.

    Create it with ``Node.start(...)``, an async context manager that stops the node (closing
    every connection and background task) on exit.
    """

    def __init__(self, runtime: NodeRuntime) -> None:
        self._rt = runtime
        self.node_id = encode_id(runtime.node_id)
        self.data_dir = runtime.data.path
        #: Transfers in progress and the last finished ones, with a live feed (the web UI's).
        self.activity = ActivityFeed()
        self.metrics = NodeMetrics(lambda: runtime_gauges(runtime))
        """This node's Prometheus metrics (its own registry); ``metrics.exposition()``."""

    @property
    def listen_address(self) -> str:
        """The ``host:port`` this node actually listens on."""
        return self._rt.manager.listen_address

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per chunk of the files this node stores."""
        return self._rt.options.chunk_size

    @property
    def advertised_addresses(self) -> tuple[str, ...]:
        """Where peers are told to reach this node (HELLO), best first."""
        return self._rt.manager.advertised_addresses

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        listen: str | None = None,
        peers: Sequence[str] = (),
        replicas: int | None = None,
        erasure: str | tuple[int, int] | None = None,
        network: str | None = None,
        join: Invite | str | None = None,
        open_network: bool = False,
        advertise: Sequence[str] = (),
        max_storage: int | None = None,
        reserved_space: int | None = None,
        limits: Mapping[str, object] | None = None,
        options: RuntimeOptions | None = None,
        gc_grace: float | None = None,
        dht: Mapping[str, int | float] | None = None,
    ) -> AsyncIterator[Node]:
        """Start a node on ``data_dir`` (initialized on first use).

        Args:
            data_dir: the node's directory (key, config, blocks, catalog).
            listen: ``host:port`` to listen on; default from config.toml, else 127.0.0.1:0.
            peers: bootstrap peers, ``host:port``, added to those in config.toml.
            replicas: copies of each block (default 3, capped by the number of live nodes).
            erasure: erasure-code new files by default instead, ``"K-of-N"`` or ``(k, n)``
                (default: config.toml's ``node.erasure``; else ``replicas`` copies). An
                explicit ``replicas`` turns config.toml's ``node.erasure`` off.
            network: the name of an open network to be in instead of the data dir's network
                (a closed network made by ``shoal init``, or the open one); nodes of
                different networks refuse each other.
            join: an invite (``shoal invite``, :meth:`invite`): a new data dir joins that
                closed network; an existing one moves into it.
            open_network: a new data dir joins the open network instead of starting a new
                closed one.
            advertise: addresses peers should use to reach this node (``host:port``);
                default from config.toml, else the listen address (or the host's interface
                addresses for a wildcard listen address).
            max_storage: most bytes of blocks this node keeps (default from config.toml:
                no limit but the reserve).
            reserved_space: free disk never used (default from config.toml, else 5% of the
                file system, at most 1 GiB).
            limits: transport limits to change, by name (``TransportLimits`` fields), over
                config.toml's ``[limits]``.
            options: low-level tunables (timeouts, chunk size, window), mainly for tests.
            gc_grace: seconds a block with no live lease is kept before garbage collection
                frees it (default from config.toml's node.gc_grace, else ``options``', 24 h).
            dht: DHT settings to change, by config.toml key (``k``, ``alpha``, ... as in
                ``shoal.node.datadir.DHT_SETTINGS``), over config.toml's ``[dht]``, which
                is over ``options.dht``.

        Raises:
            AddressInUse: ``listen`` is taken.
            ConfigError: the data dir or an argument is invalid.
        """
        invite = parse_invite(join) if isinstance(join, str) else join
        data, _ = _init_data_dir(Path(data_dir), join=invite, open_network=open_network)
        config: NodeConfig = data.config
        base = options or RuntimeOptions()
        opts = dataclasses.replace(
            base,
            listen=listen or config.listen,
            peers=tuple(dict.fromkeys([*config.peers, *base.peers, *peers])),
            replicas=replicas if replicas is not None else config.replicas,
            erasure=_erasure_option(erasure, replicas, config, base),
            advertise=tuple(advertise) or tuple(config.advertise) or base.advertise,
            max_storage=max_storage if max_storage is not None else base.max_storage,
            reserved_space=reserved_space if reserved_space is not None else base.reserved_space,
            limits=limits_with(
                limits or {},
                base=limits_with(
                    config.limits, base=base.limits, source=str(data.path / "config.toml")
                ),
                source="limits",
            ),
            network=network or base.network or data.network.name,
            network_secret=(
                None if network else base.network_secret if base.network else data.network.secret
            ),
            dht=dht_options_with(
                {**config.dht, **check_dht_settings(dict(dht or {}), source="Node.start(dht=)")},
                base=base.dht,
            ),
        )
        grace = gc_grace if gc_grace is not None else config.gc_grace
        if grace is not None:
            opts = dataclasses.replace(opts, gc_grace=grace)
        _check_options(opts)
        runtime = NodeRuntime(data, opts)
        await runtime.start()
        try:
            yield cls(runtime)
        finally:
            await runtime.aclose()

    # -- files ---------------------------------------------------------------------------------

    async def store(
        self,
        name: str,
        data: Data,
        *,
        media_type: str | None = None,
        progress: Progress | None = None,
        redundancy: Redundancy | None = None,
    ) -> str:
        """Store ``data`` under ``name``; return the read cap string.

        ``data`` may be bytes, a binary file object, a path or an async iterable of bytes; it
        is read in chunks, never whole. Succeeds only when every block is on R nodes (R =
        replicas, capped by live nodes); raises ``QuorumNotMet`` otherwise, and then no
        catalog entry is written. ``redundancy`` (``Redundancy.replicate(r)`` or
        ``Redundancy.erasure(k, n)``) overrides the node's default for this file; an
        erasure-coded put fails only when fewer than ``k`` shares of a chunk could be placed.
        """
        result = await self.store_with_result(
            name, data, media_type=media_type, progress=progress, redundancy=redundancy
        )
        return result.cap

    async def store_with_result(
        self,
        name: str,
        data: Data,
        *,
        media_type: str | None = None,
        mtime: float | None = None,
        progress: Progress | None = None,
        replicas: int | None = None,
        expected_size: int | None = None,
        redundancy: Redundancy | None = None,
    ) -> StoreResult:
        """Like ``store`` but returns the full ``StoreResult`` (size, blocks, replicas).

        ``mtime`` (Unix seconds) is kept in the catalog; for a path it defaults to the file's.
        ``replicas`` (1 to 255) overrides the node's setting for this file (it is part of the
        file's cap); so does ``redundancy`` (give one of the two).
        ``expected_size`` (e.g. an HTTP ``Content-Length``) only lets :attr:`activity` show
        the bytes to go; the stored size is what ``data`` holds.
        """
        name = check_name(name)
        media_type = _media_type(name, media_type)
        if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
            raise ConfigError(f"replicas must be 1 to {MAX_REPLICAS}, got {replicas}")
        if replicas is not None and redundancy is not None:
            raise ConfigError("give replicas or redundancy, not both")
        close: IO[bytes] | None = None
        source: Any = data
        if isinstance(data, os.PathLike):
            path = Path(data)
            try:
                opened = await self._rt.io(_open_binary, path)
                source = close = opened
                stat = await self._rt.io(os.fstat, opened.fileno())
                if mtime is None:
                    mtime = stat.st_mtime
                expected_size = stat.st_size
            except OSError as exc:
                raise NotFound(f"cannot read {path}: {exc.strerror}") from exc
        elif isinstance(data, bytes | bytearray | memoryview):
            expected_size = memoryview(data).nbytes
        try:
            with self.activity.track(TransferKind.UPLOAD, name, expected_size) as transfer:
                chunks = self._counted(self._chunks(source), transfer)
                with self.metrics.timed_put():
                    result = await store_file(
                        self._rt,
                        name,
                        chunks,
                        media_type=media_type,
                        mtime=mtime,
                        progress=progress,
                        replicas=replicas,
                        redundancy=redundancy,
                    )
            self.metrics.bytes_in.inc(result.size)
            return result
        finally:
            if close is not None:
                close.close()

    async def _counted(
        self, chunks: AsyncIterator[bytes | memoryview], transfer: Transfer
    ) -> AsyncIterator[bytes | memoryview]:
        """``chunks``, each counted in :attr:`activity` as the put takes it (bytes received,
        which run ahead of ``progress``: that counts bytes placed on their holders)."""
        async for chunk in chunks:
            self.activity.progress(transfer, len(chunk))
            yield chunk

    async def _chunks(self, source: Any) -> AsyncIterator[bytes | memoryview]:
        size = self._rt.options.chunk_size
        if isinstance(source, bytes | bytearray | memoryview):
            view = memoryview(source).cast("B")
            for start in range(0, len(view), size):
                yield view[start : start + size]
        elif hasattr(source, "read"):
            reader: IO[bytes] = source
            while True:
                try:
                    chunk = await self._rt.io(reader.read, size)
                except OSError as exc:
                    raise StorageError(f"reading the input failed: {exc}") from exc
                if not chunk:
                    break
                # read() on a raw file may return short pieces; top up to a whole chunk.
                while len(chunk) < size:
                    more = await self._rt.io(reader.read, size - len(chunk))
                    if not more:
                        break
                    chunk += more
                yield chunk
        elif isinstance(source, AsyncIterable):
            chunker = Chunker(size)
            async for piece in source:
                for chunk in chunker.feed(piece):
                    yield chunk
            last = chunker.finish()
            if last is not None:
                yield last
        else:
            raise TypeError(f"cannot store data of type {type(source).__name__}")

    async def resolve(self, name_or_cap: str) -> ReadCap:
        """The read cap for a cap string or a name in this node's catalog."""
        if looks_like_cap(name_or_cap):
            cap = parse_cap(name_or_cap)
            if not isinstance(cap, ReadCap):
                raise InvalidCapability(
                    "a verify cap (shoal:v:...) can check a file but not read it: "
                    "use the read cap (shoal:r:...)"
                )
            return cap
        entry = await self._catalog_entry(name_or_cap)
        return ReadCap.parse(entry.cap)

    async def _catalog_entry(self, name: str) -> CatalogEntry:
        entry = await self._rt.io(self._rt.catalog.get_file, name)
        if entry is None:
            raise NotFound(
                f"no file named {name!r} in this node's catalog "
                "(files stored through other nodes are read with their cap, shoal:r:...)"
            )
        return entry

    async def file_entry(self, name: str) -> FileEntry:
        """The catalog entry of ``name`` (no network); ``NotFound`` if absent."""
        return _file_entry(await self._catalog_entry(name))

    def get(
        self, name_or_cap: str, *, offset: int = 0, length: int | None = None
    ) -> AbstractAsyncContextManager[FileReader]:
        """Open a file by name or read cap; use as ``async with node.get(x) as reader``.

        ``offset`` and ``length`` read a range: ``length`` bytes (None: to the end) from
        ``offset`` on, which may be the file's size (nothing to read) but not more
        (``OutOfRange``); a range past the end stops at the end. Only the blocks that hold
        bytes of the range are fetched.
        """
        return self._get(name_or_cap, offset, length)

    @asynccontextmanager
    async def _get(
        self, name_or_cap: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[FileReader]:
        name: str | None = None
        media_type: str | None = None
        started = time.monotonic()
        ok = False
        stream: FileStream | None = None
        try:
            if looks_like_cap(name_or_cap):
                cap = await self.resolve(name_or_cap)
            else:
                entry = await self._catalog_entry(name_or_cap)
                cap = ReadCap.parse(entry.cap)
                name, media_type = entry.name, entry.media_type
            shown = name if name is not None else encode_id(cap.cid)  # never the cap: a secret
            with self.activity.track(TransferKind.DOWNLOAD, shown) as transfer:
                stream = await open_file(self._rt, cap, offset=offset, length=length)
                # A ranged get's transfer is its range.
                transfer.size = (stream.size if stream.end is None else stream.end) - stream.start

                def count(nbytes: int) -> None:
                    self.activity.progress(transfer, nbytes)

                yield FileReader(stream, name=name, media_type=media_type, on_chunk=count)
                ok = True
        finally:
            if stream is not None:
                self.metrics.bytes_out.inc(stream.delivered)
                await stream.aclose()
            self.metrics.record_get(time.monotonic() - started, ok=ok)

    async def get_to_file(
        self, name_or_cap: str, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> int:
        """Write the file to ``path`` atomically (temp file + rename); return its size.

        On any failure nothing is left at ``path`` (and no temporary file either).
        """
        target = Path(path)
        async with self.get(name_or_cap) as reader:
            try:
                out = await self._rt.io(AtomicFile, target)
            except OSError as exc:
                raise StorageError(f"cannot write into {target.parent}: {exc.strerror}") from exc
            try:
                written = 0
                async for chunk in reader:
                    await self._rt.io(out.write, chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                await self._rt.io(out.commit)
            except BaseException as exc:
                await asyncio.shield(self._rt.io(out.discard))
                if isinstance(exc, OSError):  # e.g. the destination disk is full
                    raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
                raise
        return written

    # -- folders -------------------------------------------------------------------------------

    async def store_folder(
        self,
        name: str,
        source: str | os.PathLike[str] | AsyncIterable[FolderItem],
        *,
        progress: Progress | None = None,
    ) -> FolderResult:
        """Store a folder as directory objects under ``name``; return what was stored.

        ``source`` is a local folder (symbolic links and special files are skipped and listed
        in ``FolderResult.skipped``; every name and limit is checked before anything is
        stored), or an async iterable of :class:`~shoal.node.folders.FolderItem` (the HTTP
        API's upload; paths are checked as they come). The same tree gives the same cap. A
        failed put catalogs nothing.

        Raises:
            ConfigError: A name cannot be stored, a path repeats, or a limit is passed.
            QuorumNotMet: A block could be placed nowhere.
        """
        name = check_name(name)
        with self.metrics.timed_put():
            source_items = source if isinstance(source, str | os.PathLike) else aiter(source)
            result = await store_folder(
                self._rt, name, source_items, self._chunks, progress=progress
            )
        self.metrics.bytes_in.inc(result.size)
        return result

    async def list_folder(self, name_or_cap: str) -> list[DirEntry]:
        """The entries of a folder (by catalog name or read cap), sorted by name.

        Raises:
            IntegrityError: The cap names a file, not a folder (or its listing is damaged).
        """
        cap = await self.resolve(name_or_cap)
        return list(await read_listing(self._rt, cap))

    def walk_folder(self, name_or_cap: str) -> AsyncIterator[EnterDir | PutFile | LeaveDir]:
        """Every directory and file of a folder, depth first in listing order.

        Yields ``EnterDir`` (path, entry), ``PutFile`` (path, entry: read it with
        ``node.get(str(entry.cap))``) and ``LeaveDir``; paths are tuples of checked names.
        """

        async def steps() -> AsyncIterator[EnterDir | PutFile | LeaveDir]:
            cap = await self.resolve(name_or_cap)
            async for step in folder_steps(self._rt, FolderWalk(cap)):
                yield step

        return steps()

    async def get_folder(
        self,
        name_or_cap: str,
        out: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> RestoreResult:
        """Restore a folder as the folder ``out``, with its files' and folders' times and modes.

        Everything is written into a staging folder next to ``out`` (each file atomically)
        that is renamed to ``out`` when complete: a failure leaves nothing at ``out``.

        Raises:
            ConfigError: ``out`` exists and ``overwrite`` is False.
            IntegrityError: The cap names a file, or the tree breaks a limit or lies.
        """
        cap = await self.resolve(name_or_cap)

        async def write_file(file_cap: ReadCap, target: Path) -> None:
            await self.get_to_file(str(file_cap), target, progress=progress)

        return await restore_folder(self._rt, cap, Path(out), write_file, overwrite=overwrite)

    async def list_files(self) -> list[FileEntry]:
        """Every name in this node's catalog, sorted."""
        entries = await self._rt.io(self._rt.catalog.list_files)
        return [_file_entry(e) for e in entries]

    async def remove(self, name: str) -> FileEntry:
        """Drop ``name`` from the catalog and release this node's leases on its blocks on
        every node that can be reached (unless another name here still keeps the same
        bytes); ``NotFound`` if absent.

        Garbage collection frees the blocks once no one else leases them and the grace period
        is over; nodes that cannot be reached now keep their leases until those expire
        (``docs/leases.md``).
        """
        entry = await self._rt.io(self._rt.catalog.remove_file, name)
        if entry is None:
            raise NotFound(f"no file named {name!r} in this node's catalog")
        await release_entry(self._rt, entry)
        return _file_entry(entry)

    async def keep(self, cap: str, name: str) -> FileEntry:
        """Put a file someone shared (its read cap) in this node's catalog as ``name``.

        The file's root is fetched first (which proves the cap reaches a file and gives its
        size); then the name maps to the cap and pins it, and this node takes its leases on
        the file's blocks, as for a file stored here. An existing ``name`` is replaced.

        Raises:
            InvalidCapability: ``cap`` is not a read cap.
            ConfigError: ``name`` is not a valid name.
            NotFound: the file's root block is on no reachable node.
        """
        entry, _ = await self._keep(cap, name)
        return entry

    async def _keep(self, cap: str, name: str) -> tuple[FileEntry, LeaseStats]:
        name = check_name(name)
        read_cap = await self.resolve(cap)
        stream = await open_file(self._rt, read_cap)
        try:
            size = stream.size
        finally:
            await stream.aclose()
        entry = CatalogEntry(
            name=name,
            cap=str(read_cap),
            size=size,
            media_type=_media_type(name, None),
            created=time.time(),
        )
        await self._rt.io(self._rt.catalog.put_file, entry)
        return _file_entry(entry), await lease_entry(self._rt, entry)

    async def drop_local_copy(self, name_or_cap: str) -> int:
        """Delete this node's local blocks of a file (as the demo does); return how many."""
        cap = await self.resolve(name_or_cap)
        blocks = self._rt.blocks

        def delete(ids: list[bytes]) -> int:
            return sum(blocks.delete(block_id) for block_id in ids)

        # A streaming, keyless walk: each manifest is read before its ID comes out, so deleting
        # it as the walk goes is safe; memory stays bounded whatever the tree. Deletes go to
        # the I/O pool in batches (one thread hop per batch, not per block).
        deleted = 0
        batch: list[bytes] = []
        async for block_id in walk_block_ids(self._rt, cap.cid):
            batch.append(block_id)
            if len(batch) == _DELETE_BATCH:
                deleted += await self._rt.io(delete, batch)
                batch = []
        return deleted + await self._rt.io(delete, batch)

    def add_own_address(self, address: str) -> None:
        """Never dial ``address`` as a peer: another service of this node (its HTTP API).

        A peer that announces it (by mistake or on purpose) cannot make the node dial itself.
        """
        self._rt.add_own_address(address)

    def invite(self, addresses: Sequence[str] = ()) -> str:
        """A one-line invite into this node's closed network (give it to ``Node.start(join=)``
        or ``shoal init --join``). It holds the network secret: share it like a password.

        Args:
            addresses: where the new node should find this one; default: the addresses this
                node advertises.

        Raises:
            ConfigError: This node is in the open network, which needs no invite.
        """
        secret = self._rt.options.network_secret
        if secret is None:
            raise ConfigError(
                "this node is in the open network: other nodes join it with "
                "`shoal init --open` and `--peer ADDRESS`, no invite needed"
            )
        chosen = tuple(addresses) or self.advertised_addresses
        if not chosen:
            raise ConfigError(
                "this node has no address other nodes could reach: give one to the invite, "
                "or run the node with --advertise HOST:PORT"
            )
        return str(Invite(secret, chosen))

    # -- peers and status ----------------------------------------------------------------------

    def peers(self) -> list[PeerStatus]:
        """The routing table, and every peer the transport knows (connected or not).

        ``state`` is up when the peer is connected, or was heard from in the last minute and
        its last connection was closed by us as idle (not by the peer going away).
        """
        rt = self._rt
        clock = rt.options.clock
        now, now_mono = clock.time(), clock.monotonic()
        contacts = {c.node_id: c for c in rt.dht.table.contacts()} if rt.dht is not None else {}
        records = {r.node_id: r for r in rt.manager.records()}
        shown = set(contacts) | set(records)
        result = []
        for node_id in shown:
            record = records.get(node_id)
            contact = contacts.get(node_id)
            conn = record.connection if record is not None and record.up else None
            heard = [record.last_seen] if record is not None and record.last_seen else []
            if contact is not None:
                heard.append(now - (now_mono - contact.last_seen))
            last_seen = max(heard) if heard else None
            went_away = record is not None and conn is None and not record.closed_idle
            recent = last_seen is not None and now - last_seen < PEER_UP_WINDOW
            addresses = record.addresses if record is not None and record.addresses else []
            if not addresses and contact is not None:
                addresses = list(contact.addresses)
            address = addresses[0] if addresses else None
            if address is None and conn is not None:
                address = conn.remote_address
            result.append(
                PeerStatus(
                    node_id=encode_id(node_id),
                    address=address,
                    state=PeerState.UP
                    if conn is not None or (recent and not went_away)
                    else PeerState.DOWN,
                    last_seen=last_seen,
                    connected=conn is not None,
                    source=record.source.shown if record is not None else PeerSource.DHT.shown,
                )
            )
        return sorted(result, key=lambda p: p.node_id)

    async def storage(self) -> StorageStatus:
        """How much this node's block store holds, and how much more it may take."""
        blocks = self._rt.blocks
        count, used = await self._rt.io(blocks.usage)
        free = await self._rt.io(blocks.free_bytes)
        room = max(0, free - blocks.reserve_bytes)
        if blocks.max_bytes is not None:
            room = min(room, max(0, blocks.max_bytes - used))
        return StorageStatus(blocks=count, used=used, free=room, max_storage=blocks.max_bytes)

    async def wait_for_peers(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` peers are up; ``PeerUnavailable`` on timeout."""
        manager = self._rt.manager
        await manager.wait_until(lambda: len(manager.live_ids()) >= count, timeout)

    async def status(self) -> NodeStatus:
        """Who this node is, its peers, and what it stores locally."""
        records = self._rt.manager.records()
        blocks, size = await self._rt.io(self._rt.blocks.usage)
        files = await self._rt.io(self._rt.catalog.list_files)
        return NodeStatus(
            node_id=self.node_id,
            listen=self.listen_address,
            advertise=list(self.advertised_addresses),
            data_dir=str(self.data_dir),
            network=self._rt.options.network or defaults.OPEN_NETWORK,
            replicas=self._rt.options.replicas,
            peers_up=sum(1 for r in records if r.up),
            peers_known=len(records),
            uptime=time.time() - self._rt.started_at,
            blocks=blocks,
            bytes=size,
            files=len(files),
            routing_table=len(self._rt.dht.table) if self._rt.dht is not None else 0,
            dht_k=self._rt.dht.options.k if self._rt.dht is not None else 0,
            dht_alpha=self._rt.dht.options.alpha if self._rt.dht is not None else 0,
            connections=len(self._rt.manager.live_ids()),
            max_connections=self._rt.manager.limits.max_connections,
            lookups=self._rt.dht.stats.lookups if self._rt.dht is not None else 0,
            lookup_messages=self._rt.dht.stats.messages if self._rt.dht is not None else 0,
            bytes_for_others=(await stored_for_others(self._rt))[1],
            **await self._repair_status(),
            scrub=self._rt.scrub.status(),
        )

    # -- leases and garbage collection ---------------------------------------------------------

    async def pin(self, cap: str, name: str) -> dict[str, Any]:
        """Keep a file someone shared: catalog it as ``name`` (see :meth:`keep`) and take this
        node's leases on its blocks wherever they are held.

        Returns the catalog entry's fields plus ``blocks`` (walked) and ``leased`` (block
        leases recorded, on every holder together).
        """
        entry, stats = await self._keep(cap, name)
        return {**entry.to_json(), "blocks": stats.blocks, "leased": stats.leased}

    async def gc(self) -> GcResult:
        """One garbage-collection pass now: delete the local blocks that no live lease holds
        and whose grace period is over (never a block this node's catalog needs)."""
        return await self._rt.collector.run_pass()

    async def renew_leases(self) -> dict[str, int]:
        """Renew the leases of every object in the catalog now (the background does it weekly
        and soon after start); returns counts of objects, blocks, leases and nodes."""
        stats = await self._rt.lease_keeper.renew()
        return {
            "roots": stats.roots,
            "blocks": stats.blocks,
            "leased": stats.leased,
            "nodes": len(stats.nodes),
            "unreachable": len(stats.failed),
        }

    # -- health and repair (logic in node/repair.py and node/repair_loop.py) -------------------

    async def _repair_status(self) -> dict[str, int]:
        repairer = self._rt.repair
        counts = repairer.health_counts(await repairer.catalog_roots())
        return {
            "files_healthy": counts["healthy"],
            "files_degraded": counts["degraded"],
            "files_lost": counts["lost"],
            "files_unchecked": counts["unchecked"],
            "repair_queue": repairer.queue_length,
            "repair_copied": repairer.stats.copied,
            "repair_bytes": repairer.stats.bytes_moved,
            "repair_passes": repairer.stats.passes,
        }

    async def root_of(self, name_or_cap: str) -> bytes:
        """The root CID of a catalog name, a read cap or a verify cap."""
        if looks_like_cap(name_or_cap):
            return parse_cap(name_or_cap).cid
        entry = await self._catalog_entry(name_or_cap)
        return parse_cap(entry.cap).cid

    async def check(
        self, name_or_cap: str, *, verify: bool = False, progress: Progress | None = None
    ) -> FileReport:
        """How healthy a file is: the live copies of each block on the nodes placement puts
        it on. A verify cap (``shoal:v:...``) is enough. With ``verify``, every copy counted is
        also downloaded and hashed. ``progress`` is called with the blocks just checked.

        Raises:
            NotFound: ``name_or_cap`` is no name in the catalog.
            InvalidCapability: The cap is malformed.
        """
        root = await self.root_of(name_or_cap)
        return await self._rt.repair.check(root, verify=verify, progress=progress)

    async def repair(
        self, name_or_cap: str | None = None, *, progress: Progress | None = None
    ) -> PassReport:
        """One repair pass now over one file (name or cap; a verify cap is enough) or, with
        None, over every file this node keeps or holds. Copies what is missing at once (nodes
        unreachable for less than the repair delay are not waited for), unthrottled.
        ``progress`` is called with the blocks just checked."""
        repairer = self._rt.repair
        roots = None if name_or_cap is None else [await self.root_of(name_or_cap)]
        return await repairer.run_pass(roots, background=False, progress=progress)

    # -- scrub (node/scrub.py, docs/scrub.md) ----------------------------------------------------

    def scrub_status(self) -> ScrubStatus:
        """The scrub: the pass under way (progress), the last finished one, the next due."""
        return self._rt.scrub.status()

    def start_scrub(self) -> int:
        """Start a whole scrub pass now (one under way starts over); return its number.

        It is done when ``scrub_status().last.pass_number`` reaches that number.
        """
        return self._rt.scrub.request_pass()

    async def scrub(self) -> ScrubReport:
        """Run a whole scrub pass now (throttled as usual) and return what it found."""
        return await self._rt.scrub.run_pass()


def init_data_dir(
    data_dir: str | os.PathLike[str],
    *,
    join: Invite | str | None = None,
    open_network: bool = False,
) -> tuple[str, bool]:
    """Create a node's data dir (identity key, secrets, config.toml) if needed.

    A new data dir starts a new closed network, unless ``join`` (an invite) names one to join
    or ``open_network`` puts it in the open network; ``join`` also moves an existing data dir
    into the invite's network.

    Returns ``(node_id_text, created)``; ``created`` is False when it was already initialized.
    Raises ``ConfigError`` when the path exists but is not a usable data dir, or the invite is
    malformed.
    """
    invite = parse_invite(join) if isinstance(join, str) else join
    data, created = _init_data_dir(Path(data_dir), join=invite, open_network=open_network)
    return data.identity.node_id_text, created
