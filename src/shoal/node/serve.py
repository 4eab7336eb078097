"""Answering peers: what a node does with each request it receives.

The transport hands every request to :func:`handle_request` (in a task it owns and bounds);
the answer goes back with the same request id, and a ``ShoalError`` becomes an ERROR answer
(see ``transport.peer.error_for``). A storing node never trusts a sender's block ID: blocks are
hashed before they are stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.errors import RemoteProtocolError
from shoal.protocol import (
    BlockData,
    FindNode,
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


class RequestHandler:
    """The node's answers to peers' requests."""

    def __init__(self, rt: NodeRuntime) -> None:
        self._rt = rt

    async def __call__(self, peer: PeerConnection, message: Message) -> Message:
        """Answer one request from ``peer``."""
        rt = self._rt
        if isinstance(message, PutBlock):
            await rt.io(rt.blocks.put, message.block_id, message.data, verify=True)
            return PutBlockOk(block_id=message.block_id)
        if isinstance(message, GetBlock):
            data = await rt.io(rt.blocks.get, message.block_id)
            return BlockData(block_id=message.block_id, data=data)
        if isinstance(message, HasBlocks):
            ids = message.block_ids
            # verify=True: a copy that fails its hash is not "present" (a stat per stamped
            # block; see docs/storage.md).
            present = await rt.io(lambda: tuple(rt.blocks.has(b, verify=True) for b in ids))
            return HaveBlocks(present=present)
        if isinstance(message, FindNode):
            if rt.dht is None:
                raise RemoteProtocolError("FIND_NODE is not served: this node runs no DHT")
            return rt.dht.answer_find_node(peer, message)
        if isinstance(message, GetPeers):
            return Peers(peers=tuple(_peers_to_share(rt, peer)))
        raise RemoteProtocolError(f"{type(message).__name__} is not a request this node serves")
