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
        if isinstance(message, GetPeers):
            shared = [
                PeerAddress(node_id=r.node_id, addrs=tuple(r.addresses[:4]))
                for r in rt.manager.records()
                if r.up and r.addresses and r.node_id != peer.peer_id
            ]
            return Peers(peers=tuple(shared[:MAX_PEERS_SHARED]))
        raise RemoteProtocolError(f"{type(message).__name__} is not a request this node serves")
