"""Fetching a stripe's shares: k at once, one more when one fails or none answers for a while.

The network is a small in-memory stand-in for the routing seam (which nodes are closest, what
each answers), so a holder can be made to fail, to hold nothing, or to never answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from shoal.content.erasure import encode_shares, share_size
from shoal.content.walk import Stripe
from shoal.errors import IntegrityError, NotFound, PeerUnavailable
from shoal.ids import sha256
from shoal.node.erasure import fetch_shares
from shoal.protocol import BlockData, GetBlock, HasBlocks, HaveBlocks

T = TypeVar("T")
NODES = [bytes([i]) * 32 for i in range(1, 9)]
SELF = bytes(32)


@dataclass
class Network:
    """What each node holds and how it behaves."""

    held: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    dead: set[bytes] = field(default_factory=set)
    frozen: set[bytes] = field(default_factory=set)
    asked: list[tuple[bytes, bytes]] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)


class Conn:
    def __init__(self, net: Network, node: bytes) -> None:
        self.net, self.node = net, node

    async def request(self, msg: Any, *, timeout: float) -> Any:
        if isinstance(msg, GetBlock):
            self.net.asked.append((self.node, msg.block_id))
            if self.node in self.net.frozen:
                await self.net.never.wait()
            data = self.net.held.get(self.node, {}).get(msg.block_id)
            if data is None:
                raise NotFound("no such block")
            return BlockData(block_id=msg.block_id, data=data)
        assert isinstance(msg, HasBlocks)
        held = self.net.held.get(self.node, {})
        return HaveBlocks(present=tuple(b in held for b in msg.block_ids))


class Routing:
    def __init__(self, net: Network) -> None:
        self.net = net

    async def closest(self, target: bytes, count: int) -> list[bytes]:
        return NODES[:count]

    async def connect(self, node: bytes) -> Conn:
        if node in self.net.dead:
            raise PeerUnavailable("connection refused")
        return Conn(self.net, node)


class EmptyStore:
    def has(self, block_id: bytes, *, verify: bool = False) -> bool:
        return False


@dataclass
class Options:
    request_timeout: float = 5.0


class Runtime:
    """The parts of ``NodeRuntime`` that fetching uses."""

    def __init__(self, net: Network) -> None:
        self.node_id = SELF
        self.routing = Routing(net)
        self.blocks = EmptyStore()
        self.options = Options()

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


def stripe_on(net: Network, data: bytes, k: int = 3, n: int = 5) -> tuple[Stripe, list[bytes]]:
    """A stripe whose share i is on NODES[i]."""
    shares = encode_shares(data, k, n)
    ids = [sha256(s) for s in shares]
    for index, (share_id, share) in enumerate(zip(ids, shares, strict=True)):
        net.held.setdefault(NODES[index], {})[share_id] = share
    return Stripe(b"".join(ids), share_size(len(data), k), k, n), shares


async def fetch(net: Network, stripe: Stripe, hedge_after: float = 60.0) -> dict[int, bytes]:
    async with asyncio.timeout(30):
        return await fetch_shares(Runtime(net), stripe, hedge_after=hedge_after)  # type: ignore[arg-type]


async def test_k_primary_shares_are_asked_first_and_only_them() -> None:
    net = Network()
    stripe, shares = stripe_on(net, b"chunk bytes" * 10)
    got = await fetch(net, stripe)
    assert got == {i: shares[i] for i in range(3)}
    assert sorted(node for node, _ in net.asked) == NODES[:3]


async def test_a_failed_holder_starts_the_next_share() -> None:
    net = Network(dead={NODES[1]})
    stripe, shares = stripe_on(net, b"chunk bytes" * 10)
    net.held[NODES[0]].clear()  # holds nothing (NotFound)
    got = await fetch(net, stripe)
    assert got == {i: shares[i] for i in (2, 3, 4)}


async def test_a_holder_that_never_answers_is_overtaken() -> None:
    # Without hedging this fetch would wait for the frozen node forever (the timeout fails it).
    net = Network(frozen={NODES[0]})
    stripe, shares = stripe_on(net, b"chunk bytes" * 10)
    got = await fetch(net, stripe, hedge_after=0.01)
    assert got == {i: shares[i] for i in (1, 2, 3)}
    assert (NODES[0], stripe.share_id(0)) in net.asked


async def test_a_moved_share_is_found_on_another_close_node() -> None:
    net = Network(dead={NODES[0], NODES[1]})
    stripe, shares = stripe_on(net, b"chunk bytes" * 10)
    # Share 0 was placed on a spare node (its holder was down at the put); share 4 is lost.
    net.held.setdefault(NODES[6], {})[stripe.share_id(0)] = shares[0]
    net.held[NODES[4]].clear()
    got = await fetch(net, stripe)
    assert got == {0: shares[0], 2: shares[2], 3: shares[3]}


async def test_a_corrupt_copy_moves_on_and_a_lying_share_is_final() -> None:
    net = Network()
    stripe, shares = stripe_on(net, b"chunk bytes" * 10)
    net.held[NODES[0]][stripe.share_id(0)] = b"\x00" + shares[0][1:]  # bytes fail their hash
    got = await fetch(net, stripe)
    assert sorted(got) == [1, 2, 3]
    # An intact share listed at the wrong place: the manifest is wrong, no other holder helps.
    liar = Stripe(stripe.share_id(1) + stripe.share_ids[32:], stripe.share_size, 3, 5)
    net.held[NODES[0]][stripe.share_id(1)] = shares[1]
    with pytest.raises(IntegrityError, match="lists it as share 0"):
        await fetch(net, liar)


async def test_fewer_than_k_shares_anywhere_is_not_found() -> None:
    net = Network(dead={NODES[0], NODES[1], NODES[2]})
    stripe, _shares = stripe_on(net, b"chunk bytes" * 10)
    with pytest.raises(NotFound, match="only 2 of the 3 shares needed could be found"):
        await fetch(net, stripe)
