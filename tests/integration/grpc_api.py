"""A node with its gRPC API and a real grpcio client to it, for the gRPC integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from shoal import Node
from shoal.api.grpc import GrpcServer, serve_grpc
from shoal.api.grpc.service import ERROR_CODE_KEY
from shoal.api.http import serve_api
from shoal.errors import ShoalError
from shoal.node.network import Invite
from shoal.node.runtime import RuntimeOptions
from shoal.v1 import storage_pb2 as pb
from shoal.v1 import storage_pb2_grpc as pb_grpc
from tests.integration.conftest import FAST

MiB = 1 << 20
CHUNK = MiB  # the node's chunk size (the default)
MAX_WAIT = 30.0  # bound on waiting for a condition (only bounds a failure)
Metadata = tuple[tuple[str, str], ...]


@dataclasses.dataclass
class Api:
    """A running node, its gRPC server, and a client channel to it."""

    node: Node
    server: GrpcServer
    stub: pb_grpc.StorageStub
    channel: grpc.aio.Channel
    auth: Metadata

    async def put(
        self,
        name: str,
        data: bytes,
        *,
        piece: int = 100_000,
        header: pb.PutHeader | None = None,
        metadata: Metadata | None = None,
    ) -> pb.PutReply:
        """Put ``data`` in pieces of ``piece`` bytes (not the chunk size on purpose)."""
        return await self.stub.Put(
            requests(header or pb.PutHeader(name=name), data, piece),
            metadata=self.auth if metadata is None else metadata,
        )

    async def get(
        self, ref: str, offset: int = 0, length: int = 0, metadata: Metadata | None = None
    ) -> bytes:
        call = self.stub.Get(
            pb.GetRequest(ref=ref, offset=offset, length=length),
            metadata=self.auth if metadata is None else metadata,
        )
        return b"".join([reply.chunk async for reply in call])


async def requests(header: pb.PutHeader, data: bytes, piece: int) -> AsyncIterator[pb.PutRequest]:
    yield pb.PutRequest(header=header)
    for start in range(0, len(data), piece):
        yield pb.PutRequest(chunk=data[start : start + piece])


@dataclasses.dataclass
class Serve:
    """Starts nodes with their gRPC API; each is stopped when the test ends."""

    root: Path
    stack: list[Callable[[], Awaitable[None]]]
    network: Invite = dataclasses.field(default_factory=lambda: Invite(secrets.token_bytes(32), ()))

    async def __call__(
        self, name: str = "node", options: RuntimeOptions = FAST, **start: object
    ) -> Api:
        data_dir = self.root / name
        node_cm = Node.start(
            data_dir, listen="127.0.0.1:0", options=options, join=self.network, **start
        )  # type: ignore[arg-type]
        node = await node_cm.__aenter__()
        self.stack.append(lambda: node_cm.__aexit__(None, None, None))
        api_cm = serve_api(node, data_dir)
        api = await api_cm.__aenter__()
        self.stack.append(lambda: api_cm.__aexit__(None, None, None))
        grpc_cm = serve_grpc(node, ":0", token=api.token, data_dir=data_dir)
        server = await grpc_cm.__aenter__()
        self.stack.append(lambda: grpc_cm.__aexit__(None, None, None))
        channel = grpc.aio.insecure_channel(server.address)
        self.stack.append(lambda: channel.close(None))
        return Api(
            node,
            server,
            pb_grpc.StorageStub(channel),
            channel,
            (("authorization", f"Bearer {api.token}"),),
        )


def data_of(size: int) -> bytes:
    # Distinct per size, cheap to make: every chunk differs (no dedup hides a lost chunk).
    return random.Random(size).randbytes(size)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + MAX_WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def assert_still_works(api: Api) -> None:
    """The node and its gRPC API still store and get after a failure."""
    data = data_of(1234)
    reply = await api.put("after-failure.bin", data)
    assert await api.get(reply.cap) == data


def assert_status(
    info: pytest.ExceptionInfo[grpc.aio.AioRpcError], code: grpc.StatusCode, error: ShoalError
) -> None:
    """The call failed with ``code`` and exactly the message and code of ``error``."""
    assert info.value.code() == code, info.value.details()
    assert info.value.details() == " ".join(str(error).split())  # the CLI's error line
    assert (ERROR_CODE_KEY, error.code) in tuple(info.value.trailing_metadata() or ())


@contextlib.asynccontextmanager
async def serving(root: Path) -> AsyncIterator[Serve]:
    """A :class:`Serve` whose nodes (and channels) are all closed on exit, newest first."""
    serve = Serve(root, [])
    try:
        yield serve
    finally:
        for close in reversed(serve.stack):
            await close()
