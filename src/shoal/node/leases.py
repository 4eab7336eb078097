"""Leases over the network: take, renew, release and transfer them (``docs/leases.md``).

How it works: an owner keeps a file alive by sending LEASE(root, block IDs, seconds) to the
nodes that hold its blocks; each holder records a lease for the blocks it holds and answers
which those are. The holders of a block are found as a put places it: among
``rt.routing.closest(block_id, R + spare)``; asking a node that lacks a block costs nothing but
the question. A file's block IDs come from the keyless walk of its manifests
(``walk_placements``: an erasure-coded share lives on the nodes closest to its stripe's
ID, not its own), so a verify cap is enough, and folders are walked for the roots of every
file and directory in them (each object is leased under its own root CID, so a file stored
twice, alone and in a folder, stays leased while either is kept).

- After a put succeeds, ``lease_roots`` turns the put's short pending leases into long ones.
- ``LeaseKeeper`` renews the leases of every object in the catalog on its current placement,
  once soon after start and then every ``lease_renew_interval`` (weekly).
- ``release_roots`` (``shoal rm``) sends RELEASE(root) to every node that may hold a block of
  the object and releases locally. Nodes it cannot reach keep their leases until they expire.
- ``transfer_leases`` passes the lease rows this node knows with a copy of blocks (handoff,
  repair): a transferred lease keeps data alive until its original expiry, never longer, and
  never releases anything.

Resource handling: the keeper's loop is a task of its ``TaskSet`` (``aclose`` cancels and
awaits it); every request has the runtime's request timeout; a node that fails once is not
asked again during the same pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal.content import ReadCap
from shoal.errors import ShoalError, StorageError
from shoal.ids import short_id
from shoal.protocol import Lease, Leased, Release, Released
from shoal.protocol.messages import MAX_BLOCK_IDS, MAX_LEASE_SECONDS
from shoal.store.catalog import CatalogEntry
from shoal.store.leases import ZERO_ROOT
from shoal.transport.tasks import TaskSet

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = [
    "LeaseKeeper",
    "LeaseStats",
    "catalog_roots",
    "entry_roots",
    "grant_pending",
    "lease_entry",
    "lease_roots",
    "release_entry",
    "release_roots",
    "stored_for_others",
    "transfer_leases",
]

log = logging.getLogger(__name__)

#: Nodes beyond the R closest asked to lease a block (those a put may have placed it on when
#: some of the R closest failed; ``node.blocks.SPARE_HOLDERS``).
SPARE_HOLDERS = 8


@dataclass
class LeaseStats:
    """What one lease or release pass did."""

    roots: int = 0  # objects (files, directories) handled
    blocks: int = 0  # blocks walked
    leased: int = 0  # (block, node) leases recorded, this node included
    released: int = 0  # lease rows dropped, this node included
    nodes: set[bytes] = field(default_factory=set)  # nodes that answered
    failed: set[bytes] = field(default_factory=set)  # nodes that could not be reached


def _now(rt: NodeRuntime) -> float:
    return rt.options.clock.time()


def _holder_count(rt: NodeRuntime, replicas: int | None) -> int:
    wanted = replicas or rt.options.replicas
    return wanted + max(wanted, SPARE_HOLDERS)


async def grant_pending(rt: NodeRuntime, owner: bytes, block_ids: Sequence[bytes]) -> None:
    """Give ``owner`` a pending lease (``pending_lease`` seconds, unknown root) on blocks
    held here: a put in progress is not collected before it could finish."""
    if not block_ids:
        return
    now = _now(rt)
    await rt.io(
        rt.leases.grant, owner, ZERO_ROOT, block_ids, now + rt.options.pending_lease, now=now
    )


# -- the objects of the catalog -----------------------------------------------------------------


async def entry_roots(rt: NodeRuntime, cap: ReadCap, media_type: str) -> AsyncIterator[bytes]:
    """The root CID of a catalog object and, for a folder, of every file and directory in it
    (depth first; a damaged folder stops the walk with its error)."""
    # Imported here: node.folders imports node.put, which imports this module.
    from shoal.content.directory import EnterDir, FolderWalk, PutFile
    from shoal.node.folders import FOLDER_MEDIA_TYPE, folder_steps

    yield cap.cid
    if media_type != FOLDER_MEDIA_TYPE:
        return

    async for step in folder_steps(rt, FolderWalk(cap)):
        if isinstance(step, EnterDir | PutFile) and step.entry is not None:
            yield step.entry.cap.cid


async def catalog_roots(rt: NodeRuntime, entries: Iterable[CatalogEntry]) -> set[bytes]:
    """The roots of ``entries`` (see ``entry_roots``); an object that cannot be walked adds
    its own root only, and a WARNING."""
    roots: set[bytes] = set()
    for entry in entries:
        cap = ReadCap.parse(entry.cap)
        try:
            async for root in entry_roots(rt, cap, entry.media_type):
                roots.add(root)
        except ShoalError as exc:
            roots.add(cap.cid)
            log.warning("cannot list the files of folder %s: %s", entry.name, exc)
    return roots


async def lease_entry(rt: NodeRuntime, entry: CatalogEntry) -> LeaseStats:
    """Take this node's leases on every block of a catalog entry (a file, or a folder and
    everything in it), wherever they are held."""
    cap = ReadCap.parse(entry.cap)
    roots: list[bytes] = []
    try:
        async for root in entry_roots(rt, cap, entry.media_type):
            roots.append(root)
    except ShoalError as exc:
        log.warning("could not list every object of %s to lease it: %s", entry.name, exc)
    return await lease_roots(rt, roots, replicas=entry.replicas_wanted)


async def release_entry(rt: NodeRuntime, entry: CatalogEntry) -> LeaseStats:
    """Release this node's leases of a catalog entry that was just removed, except the
    objects another entry of the catalog still keeps (the same bytes under two names, or a
    file also in a folder)."""
    cap = ReadCap.parse(entry.cap)
    roots: list[bytes] = []
    try:
        async for root in entry_roots(rt, cap, entry.media_type):
            roots.append(root)
    except ShoalError as exc:
        log.warning("could not list every object of %s to release it: %s", entry.name, exc)
    kept = await catalog_roots(rt, await rt.io(rt.catalog.list_files))
    stats = await release_roots(
        rt, [r for r in dict.fromkeys(roots) if r not in kept], replicas=entry.replicas_wanted
    )
    log.info(
        "released the leases of %s: %d lease(s) dropped on %d node(s)%s",
        entry.name,
        stats.released,
        len(stats.nodes) + 1,
        f"; {len(stats.failed)} node(s) unreachable keep theirs until they expire"
        if stats.failed
        else "",
    )
    return stats


_OTHERS_CACHE_SECONDS = 30.0


async def stored_for_others(rt: NodeRuntime) -> tuple[int, int]:
    """Blocks held here whose live leases all belong to other owners, and their bytes
    (computed at most every 30 seconds)."""
    now = _now(rt)
    cached = rt.lease_keeper.others_cache
    if cached is not None and now - cached[0] < _OTHERS_CACHE_SECONDS:
        return cached[1], cached[2]

    def count() -> tuple[int, int]:
        blocks = total = 0
        for block_id in rt.leases.held_only_for_others(rt.node_id, now):
            try:
                total += rt.blocks.path_for(block_id).stat().st_size
            except OSError:
                continue
            blocks += 1
        return blocks, total

    blocks, total = await rt.io(count)
    rt.lease_keeper.others_cache = (now, blocks, total)
    return blocks, total


# -- leasing --------------------------------------------------------------------------------------


class _Batches:
    """Block IDs to send to each node, sent ``MAX_BLOCK_IDS`` at a time."""

    def __init__(self, rt: NodeRuntime, root: bytes, seconds: int, stats: LeaseStats) -> None:
        self._rt = rt
        self._root = root
        self._seconds = seconds
        self._stats = stats
        self._pending: dict[bytes, list[bytes]] = {}
        self._local: list[bytes] = []

    async def add(self, node_id: bytes, block_id: bytes) -> None:
        if node_id == self._rt.node_id:
            self._local.append(block_id)
            if len(self._local) >= MAX_BLOCK_IDS:
                await self._flush_local()
            return
        if node_id in self._stats.failed:
            return
        batch = self._pending.setdefault(node_id, [])
        batch.append(block_id)
        if len(batch) >= MAX_BLOCK_IDS:
            await self._send(node_id, self._pending.pop(node_id))

    async def flush(self) -> None:
        await self._flush_local()
        pending, self._pending = self._pending, {}
        await asyncio.gather(*(self._send(n, ids) for n, ids in pending.items()))

    async def _flush_local(self) -> None:
        rt, ids, self._local = self._rt, self._local, []
        if not ids:
            return

        def grant() -> int:
            held = [b for b in ids if rt.blocks.has(b)]
            now = _now(rt)
            rt.leases.grant(rt.node_id, self._root, held, now + self._seconds, now=now)
            return len(held)

        self._stats.leased += await rt.io(grant)

    async def _send(self, node_id: bytes, block_ids: list[bytes]) -> None:
        if node_id in self._stats.failed:
            return
        rt = self._rt
        message = Lease(root=self._root, seconds=self._seconds, block_ids=tuple(block_ids))
        try:
            conn = await rt.routing.connect(node_id)
            answer = await conn.request(message, timeout=rt.options.request_timeout)
        except ShoalError as exc:
            log.debug("LEASE to %s failed: %s", short_id(node_id), exc)
            self._stats.failed.add(node_id)
            return
        assert isinstance(answer, Leased)
        self._stats.nodes.add(node_id)
        self._stats.leased += sum(answer.held)


async def lease_roots(
    rt: NodeRuntime,
    roots: Iterable[bytes],
    *,
    replicas: int | None = None,
    seconds: float | None = None,
    stats: LeaseStats | None = None,
) -> LeaseStats:
    """Lease every block of the objects ``roots`` on the nodes that may hold them (and here),
    for ``seconds`` (default: the node's lease duration).

    A block none of whose possible holders can be walked to stops that object's walk with a
    WARNING; the other objects are still leased.
    """
    from shoal.node.get import walk_placements

    stats = stats if stats is not None else LeaseStats()
    length = int(min(seconds or rt.options.lease_duration, MAX_LEASE_SECONDS))
    for root in roots:
        batches = _Batches(rt, root, length, stats)
        placement: tuple[bytes, list[bytes]] = (b"", [])
        try:
            async for block_id, placement_id, stripe_n in walk_placements(rt, root):
                stats.blocks += 1
                await batches.add(rt.node_id, block_id)
                if placement_id != placement[0]:  # the shares of one stripe share their nodes
                    count = _holder_count(rt, stripe_n or replicas)
                    placement = (placement_id, await rt.routing.closest(placement_id, count))
                for node_id in placement[1]:
                    if node_id != rt.node_id:
                        await batches.add(node_id, block_id)
        except ShoalError as exc:
            log.warning("could not walk every block of %s to lease it: %s", short_id(root), exc)
        finally:
            await batches.flush()
        stats.roots += 1
    return stats


async def release_roots(
    rt: NodeRuntime, roots: Iterable[bytes], *, replicas: int | None = None
) -> LeaseStats:
    """Drop this node's leases of the objects ``roots`` here and on every node that may hold
    one of their blocks and can be reached (the others keep them until they expire)."""
    from shoal.node.get import walk_placements

    stats = LeaseStats()
    for root in roots:
        nodes: set[bytes] = set(await rt.routing.closest(root, _holder_count(rt, replicas)))
        last_placement = b""
        try:
            async for _block_id, placement_id, stripe_n in walk_placements(rt, root):
                stats.blocks += 1
                if placement_id == last_placement:
                    continue  # the other shares of one stripe: the same nodes
                last_placement = placement_id
                count = _holder_count(rt, stripe_n or replicas)
                nodes.update(await rt.routing.closest(placement_id, count))
        except ShoalError as exc:
            log.warning(
                "could not walk every block of %s: releasing on the nodes found: %s",
                short_id(root),
                exc,
            )
        stats.released += await rt.io(rt.leases.release, rt.node_id, root, now=_now(rt))
        nodes.discard(rt.node_id)
        results = await asyncio.gather(*(_release_on(rt, n, root) for n in nodes))
        for node_id, dropped in zip(nodes, results, strict=True):
            if dropped is None:
                stats.failed.add(node_id)
            else:
                stats.nodes.add(node_id)
                stats.released += dropped
        stats.roots += 1
    return stats


async def _release_on(rt: NodeRuntime, node_id: bytes, root: bytes) -> int | None:
    try:
        conn = await rt.routing.connect(node_id)
        answer = await conn.request(Release(root=root), timeout=rt.options.request_timeout)
    except ShoalError as exc:
        log.info("could not release leases on %s (they expire by themselves): %s",
                 short_id(node_id), exc)  # fmt: skip
        return None
    assert isinstance(answer, Released)
    return answer.count


async def transfer_leases(rt: NodeRuntime, node_id: bytes, block_ids: Sequence[bytes]) -> int:
    """Pass the live leases this node knows on ``block_ids`` to ``node_id``, which was just
    sent copies of them (handoff, repair). Each (owner, root) goes as one LEASE with
    ``owner`` set and the latest expiry of its rows: the copy is kept as long as the original
    leases say and no longer; the receiver caps it and records it only for blocks it holds.

    Returns how many block leases the receiver recorded. Failures are logged, never raised
    (a copy without leases is kept for the GC grace period, until its owner renews).
    """
    if not block_ids or node_id == rt.node_id:
        return 0
    now = _now(rt)
    try:
        rows = await rt.io(rt.leases.leases_of, list(block_ids), now)
    except StorageError as exc:
        log.warning("cannot read the leases to transfer: %s", exc)
        return 0
    groups: dict[tuple[bytes, bytes], tuple[float, list[bytes]]] = {}
    for row in rows:
        expires, ids = groups.get((row.owner, row.root), (0.0, []))
        ids.append(row.block_id)
        groups[(row.owner, row.root)] = (max(expires, row.expires), ids)
    recorded = 0
    for (owner, root), (expires, ids) in groups.items():
        seconds = int(min(max(expires - now, 1.0), MAX_LEASE_SECONDS))
        for start in range(0, len(ids), MAX_BLOCK_IDS):
            message = Lease(
                root=root,
                seconds=seconds,
                block_ids=tuple(ids[start : start + MAX_BLOCK_IDS]),
                owner=owner,
            )
            try:
                conn = await rt.routing.connect(node_id)
                answer = await conn.request(message, timeout=rt.options.request_timeout)
            except ShoalError as exc:
                log.info("could not transfer leases to %s: %s", short_id(node_id), exc)
                return recorded
            assert isinstance(answer, Leased)
            recorded += sum(answer.held)
    return recorded


# -- renewal --------------------------------------------------------------------------------------


class LeaseKeeper:
    """Renews the leases of every object in the catalog (see the module docstring).

    Args:
        rt: The node.
        interval: Seconds between two renewals.
        first: Seconds after start before the first one.
    """

    def __init__(self, rt: NodeRuntime, *, interval: float, first: float) -> None:
        self._rt = rt
        self.interval = interval
        self.first = first
        self.passes = 0
        self.last: LeaseStats | None = None
        #: (when, blocks, bytes) of ``stored_for_others``' last count.
        self.others_cache: tuple[float, int, int] | None = None
        self._tasks = TaskSet("leases")

    def start(self) -> None:
        self._tasks.spawn(self._loop(), name="lease-renewal")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    async def _loop(self) -> None:
        clock = self._rt.options.clock
        await clock.sleep(self.first)
        while True:
            try:
                await self.renew()
            except ShoalError as exc:  # renewals are retried next time; leases last 31 days
                log.warning("lease renewal failed: %s", exc)
            await clock.sleep(self.interval)

    async def renew(self) -> LeaseStats:
        """One renewal of every object in the catalog, on its current placement."""
        rt = self._rt
        stats = LeaseStats()
        try:
            entries = await rt.io(rt.catalog.list_files)
        except StorageError as exc:
            log.warning("lease renewal skipped: cannot read the catalog: %s", exc)
            return stats
        for entry in entries:
            cap = ReadCap.parse(entry.cap)
            roots: list[bytes] = []
            try:
                async for root in entry_roots(rt, cap, entry.media_type):
                    roots.append(root)
            except ShoalError as exc:
                log.warning("lease renewal of %s incomplete: %s", entry.name, exc)
            await lease_roots(rt, roots, replicas=entry.replicas_wanted, stats=stats)
        self.passes += 1
        self.last = stats
        if stats.roots:
            log.info(
                "renewed the leases of %d object(s), %d block(s), on %d node(s)%s",
                stats.roots,
                stats.blocks,
                len(stats.nodes),
                f" ({len(stats.failed)} unreachable)" if stats.failed else "",
            )
        return stats
