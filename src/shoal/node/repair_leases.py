"""Leases that go with the copies repair makes (``docs/leases.md``, ``docs/repair.md``).

A copy with no lease is freed by GC after its grace period, so each copy repair sends to a
node carries the leases this node knows for it (as transferred leases: they only keep data
alive, and the receiver caps them):

- the rows it holds on the copied blocks themselves (``transfer_leases``);
- the rows it holds on the file's root block, applied to the copied blocks: a node that
  holds a file's root for its owners repairs the file's other blocks in their name;
- this node's own lease, when the file is in its catalog (the owner repairing its files);
- when it knows none of these (a `shoal repair CAP` on a node that neither keeps nor holds
  the file), a lease of this node's own for two renewal intervals: long enough for the
  owner's weekly renewal, which goes to the placement holders, to take the copy over, and
  short enough that the copy is freed soon after the owner's `rm`.

Failures are logged, never raised: the copy stays for the GC grace period, until an owner
renews.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shoal.errors import ShoalError
from shoal.ids import short_id
from shoal.node.leases import transfer_leases
from shoal.protocol import Lease, Leased
from shoal.protocol.messages import MAX_BLOCK_IDS, MAX_LEASE_SECONDS

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["carry_leases"]

log = logging.getLogger(__name__)


async def carry_leases(
    rt: NodeRuntime, root: bytes, copies: dict[bytes, list[bytes]], *, own: bool
) -> None:
    """Send the leases that keep ``copies`` (node -> block IDs just copied there) of file
    ``root`` alive; ``own``: the file is in this node's catalog."""
    now = rt.options.clock.time()
    try:
        rows = await rt.io(rt.leases.leases_of, [root], now)
    except ShoalError as exc:
        log.warning("repair: cannot read the leases of %s: %s", short_id(root), exc)
        rows = []
    # (owner or None for this node's own lease) -> seconds
    leases: dict[bytes | None, int] = {}
    for row in rows:
        if row.root == root and row.owner != rt.node_id:
            seconds = int(min(max(row.expires - now, 1.0), MAX_LEASE_SECONDS))
            leases[row.owner] = max(leases.get(row.owner, 0), seconds)
    if own or any(row.owner == rt.node_id for row in rows):
        leases[None] = int(min(rt.options.lease_duration, MAX_LEASE_SECONDS))
    elif not leases:
        bridge = 2 * rt.options.lease_renew_interval
        leases[None] = int(min(bridge, rt.options.lease_duration, MAX_LEASE_SECONDS))
    for node_id, block_ids in copies.items():
        if not block_ids:
            continue
        if node_id == rt.node_id:
            try:
                await rt.io(_grant_here, rt, root, leases, block_ids, now)
            except ShoalError as exc:
                log.warning("repair: cannot record the leases of copies made here: %s", exc)
            continue
        await transfer_leases(rt, node_id, block_ids)
        for owner, seconds in leases.items():
            await _send(rt, node_id, root, owner, seconds, block_ids)


def _grant_here(
    rt: NodeRuntime,
    root: bytes,
    leases: dict[bytes | None, int],
    block_ids: list[bytes],
    now: float,
) -> None:
    """Record ``leases`` on blocks just copied into this node's own store (as a LEASE from
    this node would; on the I/O pool)."""
    with rt.leases.guard_many(block_ids):
        for owner, seconds in leases.items():
            rt.leases.grant(
                rt.node_id if owner is None else owner,
                root,
                block_ids,
                now + min(float(seconds), rt.options.lease_duration),
                now=now,
                granted_by=rt.node_id,
            )


async def _send(
    rt: NodeRuntime,
    node_id: bytes,
    root: bytes,
    owner: bytes | None,
    seconds: int,
    block_ids: Sequence[bytes],
) -> None:
    for start in range(0, len(block_ids), MAX_BLOCK_IDS):
        message = Lease(
            root=root,
            seconds=seconds,
            block_ids=tuple(block_ids[start : start + MAX_BLOCK_IDS]),
            owner=owner,
        )
        try:
            conn = await rt.routing.connect(node_id)
            answer = await conn.request(message, timeout=rt.options.request_timeout)
        except ShoalError as exc:
            log.info("repair: could not pass leases to %s: %s", short_id(node_id), exc)
            return
        assert isinstance(answer, Leased)
