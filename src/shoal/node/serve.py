"""Answering peers: what a node does with each request it receives.

The transport hands every request to :func:`handle_request` (in a task it owns and bounds);
the answer goes back with the same request id, and a ``ShoalError`` becomes an ERROR answer
(see ``transport.peer.error_for``). A storing node never trusts a sender's block ID: blocks are
hashed before they are stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.errors import RemoteProtocolError, StorageFull
from shoal.node.leases import grant_pending
from shoal.protocol import (
    BlockData,
    FindNode,
    GetBlock,
    GetPeers,
    HasBlocks,
    HaveBlocks,
    Lease,
    Leased,
    Message,
    PeerAddress,
    Peers,
    PutBlock,
    PutBlockOk,
    Release,
    Released,
)
from shoal.store.leases import ZERO_ROOT
from shoal.transport import PeerConnection

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["MAX_PEERS_SHARED", "RequestHandler"]

#: Peers named in one answer to GET_PEERS.
MAX_PEERS_SHARED = 64
#: Bytes of an answer to GET_PEERS: a frame header holds at most 64 KiB.
PEERS_ANSWER_BUDGET = 48 * 1024


def _peers_to_share(rt: NodeRuntime, asker: PeerConnection) -> list[PeerAddress]:
    """Up to ``MAX_PEERS_SHARED`` connected peers, within ``PEERS_ANSWER_BUDGET`` bytes of
    addresses, so the answer always fits a frame header (addresses may be 255 bytes long)."""
    shared: list[PeerAddress] = []
    budget = PEERS_ANSWER_BUDGET
    for record in rt.manager.records():
        if not (record.up and record.addresses) or record.node_id == asker.peer_id:
            continue
        addresses = tuple(record.addresses[:4])
        cost = 48 + sum(len(a.encode()) + 4 for a in addresses)  # id, map keys, lengths
        if cost > budget:
            break
        budget -= cost
        shared.append(PeerAddress(node_id=record.node_id, addrs=addresses))
        if len(shared) == MAX_PEERS_SHARED:
            break
    return shared


def _has_and_lease(rt: NodeRuntime, sender: bytes, ids: tuple[bytes, ...]) -> tuple[bool, ...]:
    """HAS_BLOCKS during a put: which blocks are held, and a pending lease on those."""
    with rt.leases.guard_many(ids):
        present = tuple(rt.blocks.has(b, verify=True) for b in ids)
        now = rt.options.clock.time()
        held = [b for b, yes in zip(ids, present, strict=True) if yes]
        if held:
            rt.leases.grant(sender, ZERO_ROOT, held, now + rt.options.pending_lease, now=now)
    return present


def _lease(rt: NodeRuntime, sender: bytes, message: Lease) -> tuple[bool, ...]:
    """Record ``message``'s leases on the blocks held here; which those are.

    The owner is the sender, or, for a transferred lease, the node named (it can only keep
    data alive). Either way the lease ends at most ``lease_duration`` from now and rows are
    charged to the sender.

    Raises:
        StorageFull: The sender's or the node's lease bound refused some of them.
    """
    ids = message.block_ids
    owner = sender if message.owner is None else message.owner
    now = rt.options.clock.time()
    expires = now + min(float(message.seconds), rt.options.lease_duration)
    with rt.leases.guard_many(ids):
        held = tuple(rt.blocks.has(b, verify=True) for b in ids)
        refused = rt.leases.grant(
            owner,
            message.root,
            [b for b, yes in zip(ids, held, strict=True) if yes],
            expires,
            now=now,
            granted_by=sender,
        )
    if refused:
        raise StorageFull(f"{refused} lease(s) refused: this node's lease table is full")
    return held


class RequestHandler:
    """The node's answers to peers' requests."""

    def __init__(self, rt: NodeRuntime) -> None:
        self._rt = rt

    async def __call__(self, peer: PeerConnection, message: Message) -> Message:
        """Answer one request from ``peer``."""
        rt = self._rt
        if isinstance(message, PutBlock):
            if message.lease:
                # Leased first, then stored: GC deletes only what has no live lease, and a
                # put rewrites a block deleted meanwhile (docs/leases.md).
                await grant_pending(rt, peer.peer_id, [message.block_id])
            if await rt.io(rt.blocks.put, message.block_id, message.data, verify=True):
                # Only the PUT that wrote the block says what it is: a sender can mark as a
                # share only a block it stored here first (docs/decisions/0012-...).
                await rt.io(rt.leases.mark_written, message.block_id, share=bool(message.share))
            return PutBlockOk(block_id=message.block_id)
        if isinstance(message, GetBlock):
            data = await rt.io(rt.blocks.get, message.block_id)
            return BlockData(block_id=message.block_id, data=data)
        if isinstance(message, HasBlocks):
            ids = message.block_ids
            # verify=True: a copy that fails its hash is not "present" (a stat per stamped
            # block; see docs/storage.md).
            if message.lease:
                present = await rt.io(_has_and_lease, rt, peer.peer_id, ids)
            else:
                present = await rt.io(lambda: tuple(rt.blocks.has(b, verify=True) for b in ids))
            return HaveBlocks(present=present)
        if isinstance(message, Lease):
            return Leased(held=await rt.io(_lease, rt, peer.peer_id, message))
        if isinstance(message, Release):
            # Only ever the sender's own leases: nobody can release another owner's.
            count = await rt.io(
                rt.leases.release, peer.peer_id, message.root, now=rt.options.clock.time()
            )
            return Released(count=count)
        if isinstance(message, FindNode):
            if rt.dht is None:
                raise RemoteProtocolError("FIND_NODE is not served: this node runs no DHT")
            return rt.dht.answer_find_node(peer, message)
        if isinstance(message, GetPeers):
            return Peers(peers=tuple(_peers_to_share(rt, peer)))
        raise RemoteProtocolError(f"{type(message).__name__} is not a request this node serves")
