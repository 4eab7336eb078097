"""The gRPC API (``shoal.v1.Storage``) over a real node, through a real ``grpcio`` client on a
real port: round trips, ranged gets, every error status, the token, a cancelled put, reflection
and health.

Each error test compares the call's status message with the message of the error the Python
API raises for the same mistake: the gRPC adapter adds nothing and hides nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shoal import Node
from shoal.api.grpc import GrpcServer, serve_grpc
from shoal.api.grpc.service import ERROR_CODE_KEY, MAX_GET_MESSAGE
from shoal.api.http import serve_api
from shoal.client.api_info import API_FILE_NAME
from shoal.errors import (
    ConfigError,
    IntegrityError,
    InvalidCapability,
    NotFound,
    OutOfRange,
    QuorumNotMet,
    ShoalError,
    StorageFull,
)
from shoal.node.datadir import load_data_dir
from shoal.node.network import Invite
from shoal.node.runtime import RuntimeOptions
from shoal.transport import TransportLimits
from shoal.v1 import storage_pb2 as pb
from shoal.v1 import storage_pb2_grpc as pb_grpc
from tests.e2e.rogue import RoguePeer
from tests.integration.conftest import FAST
from tests.integration.test_content_trees import tower, write_blocks
from tests.integration.test_failures import repair_disk
from tests.unit.content.forge import cap_of

MiB = 1 << 20
CHUNK = MiB  # the node's chunk size (the default)
WAIT = 30.0  # bound on waiting for a condition (only bounds a failure)
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


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    serving = Serve(tmp_path, [])
    try:
        yield serving
    finally:
        for close in reversed(serving.stack):
            await close()


@pytest.fixture
async def api(serve: Serve) -> Api:
    return await serve()


def data_of(size: int) -> bytes:
    # Distinct per size, cheap to make: every chunk differs (no dedup hides a lost chunk).
    import random

    return random.Random(size).randbytes(size)


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
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


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3 * CHUNK + 12_345, 20 * MiB])
async def test_put_and_get_round_trip(api: Api, size: int) -> None:
    data = data_of(size)
    reply = await api.put("dir/file.bin", data)
    assert (reply.name, reply.size, reply.replicas_wanted) == ("dir/file.bin", size, 3)
    assert reply.replicas == 1  # a node alone holds one copy of each block
    assert reply.cap.startswith("shoal:r:")
    # The same cap as the Python API gives for the same bytes: nothing was lost or added.
    assert reply.cap == await api.node.store("python.bin", data)

    assert await api.get("dir/file.bin") == data
    assert await api.get(reply.cap) == data
    call = api.stub.Get(pb.GetRequest(ref="dir/file.bin"), metadata=api.auth)
    replies = [r async for r in call]
    assert all(len(r.chunk) <= MAX_GET_MESSAGE for r in replies)
    initial = dict(await call.initial_metadata())
    assert initial["shoal-size"] == str(size)
    assert initial["shoal-media-type"] == "application/octet-stream"
    assert [(f.name, f.size) for f in await api.node.list_files()] == [
        ("dir/file.bin", size),
        ("python.bin", size),
    ]


async def test_put_options_media_type_and_replicas(serve: Serve) -> None:
    api = await serve("a")
    other = await serve("b", peers=[api.node.listen_address])
    await other.node.wait_for_peers(1, timeout=WAIT)
    data = data_of(2 * CHUNK + 7)
    header = pb.PutHeader(name="photo", media_type="image/png", replicas=2)
    reply = await other.put("photo", data, header=header)
    assert (reply.replicas, reply.replicas_wanted) == (2, 2)
    stat = await other.stub.Stat(pb.StatRequest(ref="photo"), metadata=other.auth)
    assert (stat.name, stat.cap, stat.size, stat.media_type) == (
        "photo",
        reply.cap,
        len(data),
        "image/png",
    )
    # Both nodes hold every block: two copies of each, as asked (the node's setting is 3).
    assert (await api.node.status()).blocks == (await other.node.status()).blocks == reply.blocks
    assert await api.get(reply.cap) == data


async def test_ranged_gets(api: Api) -> None:
    data = data_of(3 * CHUNK + 1000)
    reply = await api.put("ranged.bin", data)
    size = len(data)
    cases = [
        (0, 0),  # everything
        (0, 10),
        (5, 1),
        (CHUNK - 3, 6),  # across the first chunk boundary
        (CHUNK, CHUNK),  # exactly the second chunk
        (100, 2 * CHUNK + 50),  # spans three chunks
        (3 * CHUNK + 10, 0),  # to the end, inside the last chunk
        (size - 1, 0),
        (size - 10, 1000),  # past the end: stops at the end
        (size, 0),  # at the end: nothing
        (size, 5),
    ]
    for offset, length in cases:
        end = size if length == 0 else offset + length
        assert await api.get("ranged.bin", offset, length) == data[offset:end], (offset, length)
    assert await api.get(reply.cap, CHUNK + 1, 3) == data[CHUNK + 1 : CHUNK + 4]


# -- the other calls -------------------------------------------------------------------------


async def test_stat_list_delete_peers_status(serve: Serve) -> None:
    api = await serve("a")
    other = await serve("b", peers=[api.node.listen_address])
    await api.node.wait_for_peers(1, timeout=WAIT)
    one = await api.put("docs/one.txt", b"one")
    two = await api.put("docs/two.txt", b"two!")
    await api.put("zz.bin", b"z")

    stat = await api.stub.Stat(pb.StatRequest(ref="docs/one.txt"), metadata=api.auth)
    assert (stat.name, stat.cap, stat.size, stat.media_type) == (
        "docs/one.txt",
        one.cap,
        3,
        "text/plain",
    )
    assert stat.HasField("created")
    by_cap = await api.stub.Stat(pb.StatRequest(ref=two.cap), metadata=api.auth)
    assert (by_cap.name, by_cap.size, by_cap.HasField("created")) == ("", 4, False)
    assert by_cap.cid == two.cap.split(":")[2]

    listed = [f.name async for f in api.stub.List(pb.ListRequest(), metadata=api.auth)]
    assert listed == ["docs/one.txt", "docs/two.txt", "zz.bin"]
    call = api.stub.List(pb.ListRequest(prefix="docs/"), metadata=api.auth)
    assert [(f.name, f.cap) async for f in call] == [
        ("docs/one.txt", one.cap),
        ("docs/two.txt", two.cap),
    ]

    removed = await api.stub.Delete(pb.DeleteRequest(name="docs/one.txt"), metadata=api.auth)
    assert (removed.removed.name, removed.removed.cap) == ("docs/one.txt", one.cap)
    assert [f.name for f in await api.node.list_files()] == ["docs/two.txt", "zz.bin"]
    assert await api.get(one.cap) == b"one"  # the blocks stay: only the name went

    peers = await api.stub.Peers(pb.PeersRequest(), metadata=api.auth)
    assert [(p.node_id, p.state) for p in peers.peers] == [(other.node.node_id, pb.PEER_STATE_UP)]
    assert peers.peers[0].address

    status = await api.stub.Status(pb.StatusRequest(), metadata=api.auth)
    assert (status.node_id, status.listen, status.peers_up, status.files) == (
        api.node.node_id,
        api.node.listen_address,
        1,
        2,
    )
    assert status.chunk_size == CHUNK
    assert status.replicas == 3


async def test_api_json_names_the_grpc_address(api: Api) -> None:
    info = json.loads((Path(api.node.data_dir) / API_FILE_NAME).read_text())
    assert info["grpc"] == api.server.address
    assert api.server.address.startswith("127.0.0.1:")
    assert (("authorization", f"Bearer {info['token']}"),) == api.auth


# -- errors ----------------------------------------------------------------------------------


async def test_not_found(api: Api) -> None:
    async def get_missing() -> None:
        async with api.node.get("missing.bin"):
            pass

    cases: list[tuple[Awaitable[object], Awaitable[object]]] = [
        (get_missing(), api.get("missing.bin")),
        (
            api.node.file_entry("missing.bin"),
            api.stub.Stat(pb.StatRequest(ref="missing.bin"), metadata=api.auth),
        ),
        (
            api.node.remove("missing.bin"),
            api.stub.Delete(pb.DeleteRequest(name="missing.bin"), metadata=api.auth),
        ),
    ]
    for python_call, grpc_call in cases:
        with pytest.raises(NotFound) as expected:
            await python_call
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_call
        assert_status(info, grpc.StatusCode.NOT_FOUND, expected.value)
    await assert_still_works(api)


async def test_invalid_arguments(api: Api) -> None:
    # A bad name: the same message as the Python API's.
    with pytest.raises(ConfigError) as bad_name:
        await api.node.store("bad\nname", b"x")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.put("bad\nname", b"x")
    assert_status(info, grpc.StatusCode.INVALID_ARGUMENT, bad_name.value)

    # A malformed cap.
    with pytest.raises(InvalidCapability) as bad_cap:
        await api.node.resolve("shoal:r:nonsense")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.get("shoal:r:nonsense")
    assert_status(info, grpc.StatusCode.INVALID_ARGUMENT, bad_cap.value)

    # Requests a client got wrong: no header first, erasure coding, too many replicas.
    async def chunk_first() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(chunk=b"bytes before the header")

    async def two_headers() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(name="two.bin"))
        yield pb.PutRequest(chunk=data_of(CHUNK + 1))
        yield pb.PutRequest(header=pb.PutHeader(name="two.bin"))

    calls: list[Awaitable[object]] = [
        api.stub.Put(chunk_first(), metadata=api.auth),
        api.stub.Put(two_headers(), metadata=api.auth),
        api.put("x", b"x", header=pb.PutHeader(name="x", erasure=pb.Erasure(required=3, total=5))),
        api.put("x", b"x", header=pb.PutHeader(name="x", replicas=256)),
        api.put("x", b"x", header=pb.PutHeader(name="x", media_type="not a media type")),
        api.get(""),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (ERROR_CODE_KEY, "config") in tuple(info.value.trailing_metadata() or ())
        assert "\n" not in (info.value.details() or "")
    assert await api.node.list_files() == []
    await assert_still_works(api)


async def test_out_of_range(api: Api) -> None:
    await api.put("short.bin", b"0123456789")
    with pytest.raises(OutOfRange) as expected:
        async with api.node.get("short.bin", offset=11):
            pass
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.get("short.bin", offset=11)
    assert_status(info, grpc.StatusCode.OUT_OF_RANGE, expected.value)
    assert await api.get("short.bin", offset=10) == b""
    await assert_still_works(api)


async def test_a_missed_quorum_is_unavailable_and_stores_no_name(serve: Serve) -> None:
    api = await serve()
    broken = break_disk_of(api)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.put("doomed.bin", data_of(300_000))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (ERROR_CODE_KEY, QuorumNotMet.code) in tuple(info.value.trailing_metadata() or ())
    assert "could not be stored on any node" in (info.value.details() or "")
    assert await api.node.list_files() == []
    repair_disk(broken)
    await assert_still_works(api)


def break_disk_of(api: Api) -> Path:
    """Break the node's disk for real: its temp directory becomes a plain file."""
    tmp = Path(api.node.data_dir) / "blocks" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"not a directory")
    return tmp


async def test_a_full_store_is_resource_exhausted_and_stores_no_name(serve: Serve) -> None:
    tiny = dataclasses.replace(FAST, max_storage=512 * 1024, reserved_space=0)
    api = await serve(options=tiny)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.put("too-big.bin", data_of(3 * CHUNK))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    assert (ERROR_CODE_KEY, StorageFull.code) in tuple(info.value.trailing_metadata() or ())
    assert "full" in (info.value.details() or "")
    assert str(api.node.data_dir) not in (info.value.details() or "")
    assert await api.node.list_files() == []
    await assert_still_works(api)  # a small file still fits


async def test_a_file_whose_structure_lies_is_data_loss(api: Api) -> None:
    store, root = tower(1 << 15)
    await write_blocks(api.node, store)
    cap = str(cap_of(root))
    with pytest.raises(IntegrityError) as expected:
        async with api.node.get(cap) as reader:
            await reader.read()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api.get(cap)
    assert_status(info, grpc.StatusCode.DATA_LOSS, expected.value)
    await assert_still_works(api)


# -- the token -------------------------------------------------------------------------------

BAD_TOKENS: Sequence[Metadata] = [
    (),
    (("authorization", "Bearer wrong"),),
    (("authorization", "wrong"),),
    (("authorization", ""),),
]


@pytest.mark.parametrize("metadata", BAD_TOKENS, ids=["missing", "wrong", "no-scheme", "empty"])
async def test_a_missing_or_wrong_token_is_unauthenticated_for_every_call(
    api: Api, metadata: Metadata
) -> None:
    token = api.auth[0][1].removeprefix("Bearer ")
    assert (("authorization", f"Bearer {token}x"),) not in BAD_TOKENS
    health = health_pb2_grpc.HealthStub(api.channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    calls: list[Awaitable[object]] = [
        api.put("refused.bin", b"secret", metadata=metadata),
        api.get("anything", metadata=metadata),
        api.stub.Stat(pb.StatRequest(ref="x"), metadata=metadata),
        collect(api.stub.List(pb.ListRequest(), metadata=metadata)),
        api.stub.Delete(pb.DeleteRequest(name="x"), metadata=metadata),
        api.stub.Peers(pb.PeersRequest(), metadata=metadata),
        api.stub.Status(pb.StatusRequest(), metadata=metadata),
        health.Check(health_pb2.HealthCheckRequest(), metadata=metadata),
        collect(reflection.ServerReflectionInfo(list_services(), metadata=metadata)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing or wrong API token" in (info.value.details() or "")
        assert token not in (info.value.details() or "")
    assert await api.node.list_files() == []  # the refused put stored nothing
    await assert_still_works(api)


async def collect(call: AsyncIterator[object]) -> list[object]:
    return [reply async for reply in call]


# -- cancellation ----------------------------------------------------------------------------


async def test_a_put_cancelled_mid_stream_stores_no_name_and_leaves_no_temp_file(
    api: Api,
) -> None:
    sent = 0
    more = asyncio.Event()

    async def endless() -> AsyncIterator[pb.PutRequest]:
        nonlocal sent
        yield pb.PutRequest(header=pb.PutHeader(name="cancelled.bin"))
        for i in range(10_000):
            await more.wait()
            piece = data_of(256 * 1024 + i)
            sent += len(piece)
            yield pb.PutRequest(chunk=piece)

    more.set()
    call = api.stub.Put(endless(), metadata=api.auth)

    async def blocks_stored() -> bool:
        return (await api.node.status()).blocks >= 4

    await wait_until(blocks_stored, "the node to store some blocks of the put")
    assert api.server.service.calls_in_flight == 1
    assert call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    async def handler_done() -> bool:
        return api.server.service.calls_in_flight == 0

    await wait_until(handler_done, "the cancelled put to end on the node")
    assert sent < 10_000 * 256 * 1024  # it was cut off mid-stream
    assert await api.node.list_files() == []
    # A block write already in the I/O pool finishes (renamed into place, whole) or is
    # removed; no partial file stays.
    tmp = Path(api.node.data_dir) / "blocks" / "tmp"

    async def no_temp_file() -> bool:
        return not any(tmp.iterdir())

    await wait_until(no_temp_file, "the block writes in flight to finish")
    # The same name stores fine afterwards, with the complete file.
    data = data_of(2 * CHUNK + 1)
    reply = await api.put("cancelled.bin", data)
    assert await api.get("cancelled.bin") == data
    assert [(f.name, f.cap) for f in await api.node.list_files()] == [("cancelled.bin", reply.cap)]


async def test_a_put_held_up_by_a_holder_holds_the_client_back(serve: Serve) -> None:
    # A holder that never answers: an insider peer that completes the handshake, then reads
    # nothing. With patient timeouts the node's put window fills with blocks waiting for it,
    # and from then on gRPC's flow control must stop the client: the node reads no further.
    patient = dataclasses.replace(
        FAST,
        ping_interval=600.0,
        ping_timeout=600.0,
        request_timeout=600.0,
        limits=TransportLimits(stall_timeout=600.0, stall_ping_timeout=600.0),
    )
    api = await serve(options=patient, replicas=2)
    network = load_data_dir(api.node.data_dir).network
    rogue = await asyncio.to_thread(RoguePeer, api.node.listen_address, network)
    try:
        await api.node.wait_for_peers(1, timeout=WAIT)
        sent = 0
        base = data_of(CHUNK)

        async def big_file() -> AsyncIterator[pb.PutRequest]:
            nonlocal sent
            yield pb.PutRequest(header=pb.PutHeader(name="held.bin"))
            for i in range(256):  # 256 MiB, each chunk its own block
                sent += CHUNK
                yield pb.PutRequest(chunk=i.to_bytes(8, "big") + base[8:])

        call = api.stub.Put(big_file(), metadata=api.auth)
        seen: list[int] = []

        async def client_held_back() -> bool:
            seen.append(sent)
            del seen[:-21]  # the last second, at 0.05 s a poll
            return len(seen) == 21 and seen[0] == seen[-1]

        await wait_until(client_held_back, "the client to be held back")
        assert 0 < sent < 64 * MiB, f"the node took {sent / MiB:.0f} MiB it could not store"
        call.cancel()

        async def handler_done() -> bool:
            return api.server.service.calls_in_flight == 0

        await wait_until(handler_done, "the cancelled put to end on the node")
        assert await api.node.list_files() == []
    finally:
        rogue.close()


async def test_a_get_cancelled_mid_stream_ends_on_the_node(api: Api) -> None:
    data = data_of(30 * CHUNK)
    await api.put("big.bin", data)
    call = api.stub.Get(pb.GetRequest(ref="big.bin"), metadata=api.auth)
    first = await call.read()
    assert isinstance(first, pb.GetReply)
    assert first.chunk == data[: len(first.chunk)]
    call.cancel()

    async def handler_done() -> bool:
        return api.server.service.calls_in_flight == 0

    await wait_until(handler_done, "the cancelled get to end on the node")
    assert await api.get("big.bin", offset=len(data) - 5) == data[-5:]


# -- reflection and health -------------------------------------------------------------------


async def list_services() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    yield reflection_pb2.ServerReflectionRequest(list_services="")


async def test_reflection_lists_the_storage_service(api: Api) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    [answer] = await collect(stub.ServerReflectionInfo(list_services(), metadata=api.auth))
    assert isinstance(answer, reflection_pb2.ServerReflectionResponse)
    names = {s.name for s in answer.list_services_response.service}
    assert {"shoal.v1.Storage", "grpc.health.v1.Health"} <= names

    async def describe() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol="shoal.v1.Storage")

    [found] = await collect(stub.ServerReflectionInfo(describe(), metadata=api.auth))
    assert isinstance(found, reflection_pb2.ServerReflectionResponse)
    assert found.file_descriptor_response.file_descriptor_proto  # a tool can call it unseen


async def test_health_is_serving_then_not_serving_on_close(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0", options=FAST) as node,
        serve_api(node, data_dir) as http_api,
    ):
        auth = (("authorization", f"Bearer {http_api.token}"),)
        async with (
            serve_grpc(node, "127.0.0.1:0", token=http_api.token, data_dir=data_dir) as srv,
            grpc.aio.insecure_channel(srv.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "shoal.v1.Storage"):
                answer = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), metadata=auth
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), metadata=auth)
            first = await watch.read()
            assert isinstance(first, health_pb2.HealthCheckResponse)
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            await srv.close()
            second = await watch.read()
            assert isinstance(second, health_pb2.HealthCheckResponse)
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Closed, it is gone from api.json; the node and its HTTP API still run.
        info = json.loads((data_dir / API_FILE_NAME).read_text())
        assert "grpc" not in info
        assert info["token"] == http_api.token
        assert (await node.status()).node_id == node.node_id
