"""gRPC streams under pressure, through a real grpcio client on a real port: a client that
cancels a Put or a Get mid-stream, and a Put whose holder never answers (gRPC's flow control
must hold the client back; nothing may queue up between it and the node's put window).

(A client that stops reading a Get is tested with a node process, whose memory can be
measured: tests/e2e/test_grpc.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.node.datadir import load_data_dir
from shoal.transport import TransportLimits
from shoal.v1 import storage_pb2 as pb
from tests.e2e.rogue import RoguePeer
from tests.integration.conftest import FAST
from tests.integration.grpc_api import (
    CHUNK,
    MAX_WAIT,
    Api,
    MiB,
    Serve,
    data_of,
    serving,
    wait_until,
)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    async with serving(tmp_path) as serve:
        yield serve


@pytest.fixture
async def api(serve: Serve) -> Api:
    return await serve()


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
    # Full-mesh routing: the rogue must be chosen as a holder; under the DHT a peer that does
    # not answer FIND_NODE is skipped as failed, and the put goes on without it.
    patient = dataclasses.replace(
        FAST,
        routing="mesh",
        ping_interval=600.0,
        ping_timeout=600.0,
        request_timeout=600.0,
        limits=TransportLimits(stall_timeout=600.0, stall_ping_timeout=600.0),
    )
    api = await serve(options=patient, replicas=2)
    network = load_data_dir(api.node.data_dir).network
    rogue = await asyncio.to_thread(RoguePeer, api.node.listen_address, network)
    try:
        await api.node.wait_for_peers(1, timeout=MAX_WAIT)
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
