"""The gRPC API (``shoal.v1.Storage``) over a real node, through a real ``grpcio`` client on a
real port: round trips, ranged gets, the other calls, every error status, the token, reflection
and health (streaming under pressure: test_grpc_streaming.py).

Each error test compares the call's status message with the message of the error the Python
API raises for the same mistake: the gRPC adapter adds nothing and hides nothing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shoal import Node
from shoal.api.grpc import serve_grpc
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
    StorageFull,
)
from shoal.v1 import storage_pb2 as pb
from tests.integration.conftest import FAST
from tests.integration.grpc_api import (
    CHUNK,
    MAX_WAIT,
    Api,
    Metadata,
    MiB,
    Serve,
    assert_status,
    assert_still_works,
    data_of,
    serving,
)
from tests.integration.test_content_trees import tower, write_blocks
from tests.integration.test_failures import repair_disk
from tests.unit.content.forge import cap_of


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    async with serving(tmp_path) as serve:
        yield serve


@pytest.fixture
async def api(serve: Serve) -> Api:
    return await serve()


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
    await other.node.wait_for_peers(1, timeout=MAX_WAIT)
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


async def test_put_erasure_coded(serve: Serve) -> None:
    """PutHeader.erasure: each chunk becomes N shares on N distinct nodes; any K read it."""
    first = await serve("a")
    others = [await serve(name, peers=[first.node.listen_address]) for name in "bc"]
    await first.node.wait_for_peers(2, timeout=MAX_WAIT)
    data = data_of(3 * CHUNK + 5)
    header = pb.PutHeader(name="coded.bin", erasure=pb.Erasure(required=2, total=3))
    reply = await first.put("coded.bin", data, header=header)
    assert (reply.replicas, reply.replicas_wanted) == (3, 3)  # 3 shares of every chunk
    assert reply.cap != await first.node.store("plain.bin", data)  # the scheme is in the cap
    entry = await first.node.file_entry("coded.bin")
    assert entry.redundancy == {"kind": "erasure", "k": 2, "n": 3, "replicas": 2}
    for api in (first, *others):
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
    await api.node.wait_for_peers(1, timeout=MAX_WAIT)
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

    # Requests a client got wrong: no header first, bad erasure coding, too many replicas.
    async def chunk_first() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(chunk=b"bytes before the header")

    async def two_headers() -> AsyncIterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(name="two.bin"))
        yield pb.PutRequest(chunk=data_of(CHUNK + 1))
        yield pb.PutRequest(header=pb.PutHeader(name="two.bin"))

    calls: list[Awaitable[object]] = [
        api.stub.Put(chunk_first(), metadata=api.auth),
        api.stub.Put(two_headers(), metadata=api.auth),
        api.put("x", b"x", header=pb.PutHeader(name="x", erasure=pb.Erasure(required=5, total=3))),
        api.put("x", b"x", header=pb.PutHeader(name="x", erasure=pb.Erasure())),
        api.put(
            "x",
            b"x",
            header=pb.PutHeader(name="x", replicas=2, erasure=pb.Erasure(required=2, total=3)),
        ),
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
