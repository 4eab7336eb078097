"""In-process networks of real nodes: real TLS sockets on 127.0.0.1, real files, real SQLite."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shoal import Node
from shoal.node.network import Invite
from shoal.node.runtime import RuntimeOptions
from shoal.transport import Backoff

# Fast liveness and reconnect so failure tests finish in seconds, not tens of seconds.
FAST = RuntimeOptions(
    ping_interval=0.5, ping_timeout=2.0, backoff=Backoff(base=0.05, cap=0.5), request_timeout=10.0
)


class Cluster:
    """Nodes started in one event loop, members of one closed network; each can be stopped on
    its own."""

    def __init__(self, root: Path, stack: contextlib.AsyncExitStack) -> None:
        self.root = root
        self._stack = stack
        # Every node joins the same closed network; the invite names no address, so each test
        # wires its own topology with explicit peers.
        self.network = Invite(secrets.token_bytes(32), ())
        self.nodes: list[Node] = []
        self._stops: dict[str, contextlib.AsyncExitStack] = {}

    async def add(
        self,
        name: str,
        *,
        peers: list[str] | None = None,
        listen: str = "127.0.0.1:0",
        options: RuntimeOptions = FAST,
        replicas: int | None = None,
    ) -> Node:
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        node = await stack.enter_async_context(
            Node.start(
                self.root / name,
                join=self.network,
                listen=listen,
                peers=peers or [],
                options=options,
                replicas=replicas,
            )
        )
        self._stops[node.node_id] = stack
        self._stack.push_async_callback(stack.aclose)
        self.nodes.append(node)
        return node

    async def stop(self, node: Node) -> None:
        await self._stops[node.node_id].aclose()
        self.nodes.remove(node)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with contextlib.AsyncExitStack() as stack:
        yield Cluster(tmp_path, stack)


@pytest.fixture
def random_bytes() -> Callable[[int], bytes]:
    import random

    rng = random.Random(1234)
    return rng.randbytes
