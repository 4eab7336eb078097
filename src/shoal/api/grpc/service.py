"""``shoal.v1.Storage``: the gRPC service of a node, a thin adapter over :class:`shoal.Node`.

How it works: each call checks what its request says (names, media types, options, refs)
before any work, then hands the work to the node. Bytes stream both ways without being
gathered: a Put hands ``Node.store_with_result`` an async iterator over the request stream,
which gRPC reads only as the node's put window asks for chunks, so HTTP/2 flow control holds
back a client that sends faster than blocks are placed; a Get yields each chunk as the node's
get window delivers it, and gRPC's send waits while the client's window is full, so a client
that stops reading stops the node's fetching after one window. A call whose client cancels is
cancelled (the node's windows cancel their tasks; a put writes no catalog entry).

Errors: a :class:`~shoal.errors.ShoalError` ends the call with the status its class names
(``grpc_status``), its message (the line the CLI would print), and its code in the trailing
metadata ``shoal-error-code``; anything else is INTERNAL, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Final

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from shoal.content.caps import looks_like_cap, parse_cap
from shoal.content.manifest import Redundancy
from shoal.errors import ConfigError, ShoalError
from shoal.ids import encode_id
from shoal.names import check_media_type, check_name, printable
from shoal.node.service import Node
from shoal.node.types import FileEntry, PeerState, PeerStatus
from shoal.v1 import storage_pb2 as pb
from shoal.v1 import storage_pb2_grpc as pb_grpc

__all__ = [
    "ERROR_CODE_KEY",
    "MAX_GET_MESSAGE",
    "StorageService",
    "one_line",
    "status_code_for",
]

log = logging.getLogger(__name__)

ERROR_CODE_KEY: Final = "shoal-error-code"
"""Trailing metadata key with Shoal's error code (``not-found``, ``quorum``, ...)."""

SIZE_KEY: Final = "shoal-size"
MEDIA_TYPE_KEY: Final = "shoal-media-type"

MAX_GET_MESSAGE: Final = 1024 * 1024
"""Most bytes in one ``GetReply``: well under every client's default 4 MiB receive limit
(a file stored with bigger chunks is sent in pieces)."""

_PEER_STATES: Final = {
    PeerState.UP: pb.PEER_STATE_UP,
    PeerState.DOWN: pb.PEER_STATE_DOWN,
}

Context = grpc.aio.ServicerContext[Any, Any]


def one_line(exc: ShoalError) -> str:
    """The message of ``exc`` as the CLI prints it after ``error:``: one line, control
    characters escaped."""
    return printable(" ".join(str(exc).split())) or type(exc).__name__


def status_code_for(exc: ShoalError) -> grpc.StatusCode:
    """The gRPC status of a ``ShoalError``: the one its class names in the error table."""
    return grpc.StatusCode[exc.grpc_status]


class _Call:
    """``async with service._call(context, what):`` counts the call as in flight and ends it
    with the status of any error raised inside (see the module docstring); it never swallows
    one."""

    def __init__(self, service: StorageService, context: Context, what: str) -> None:
        self._service = service
        self._context = context
        self._what = what

    async def __aenter__(self) -> None:
        self._service.calls_in_flight += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, ShoalError):
                await self._context.abort(
                    status_code_for(exc),
                    one_line(exc),
                    trailing_metadata=((ERROR_CODE_KEY, exc.code),),
                )
            if isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
                log.error("gRPC %s failed", self._what, exc_info=exc)
                await self._context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error: {type(exc).__name__}",
                    trailing_metadata=((ERROR_CODE_KEY, ShoalError.code),),
                )
        finally:
            self._service.calls_in_flight -= 1


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def file_stat(entry: FileEntry) -> pb.FileStat:
    """A catalog entry as a ``FileStat``."""
    return pb.FileStat(
        name=entry.name,
        cap=entry.cap,
        cid=encode_id(parse_cap(entry.cap).cid),
        size=entry.size,
        media_type=entry.media_type,
        created=_timestamp(entry.created),
    )


def _peer(peer: PeerStatus) -> pb.Peer:
    return pb.Peer(
        node_id=peer.node_id,
        address=peer.address or "",
        state=_PEER_STATES.get(peer.state, pb.PEER_STATE_UNSPECIFIED),
        last_seen=_timestamp(peer.last_seen),
    )


def _check_ref(ref: str) -> str:
    """A Get's or Stat's ``ref``: a read cap (checked when parsed) or a catalog name."""
    if not ref:
        raise ConfigError("ref is empty: give a name in this node's catalog or a read cap")
    if looks_like_cap(ref):
        return ref  # Node parses it and refuses a malformed cap or a verify cap
    return check_name(ref)


def _check_header(request: pb.PutRequest | None) -> pb.PutHeader:
    """The header a Put must start with, its options checked."""
    if request is None or request.WhichOneof("part") != "header":
        raise ConfigError(
            "a Put starts with its header (PutRequest.header: the name and options), "
            "then sends the file's bytes as chunks"
        )
    header = request.header
    check_name(header.name)
    if header.media_type:
        check_media_type(header.media_type)
    if header.HasField("erasure") and header.replicas:
        raise ConfigError("give PutHeader.replicas or PutHeader.erasure, not both")
    return header


def _redundancy(header: pb.PutHeader) -> Redundancy | None:
    """``PutHeader.erasure`` as a ``Redundancy``; None: replicas (or the node's setting)."""
    if not header.HasField("erasure"):
        return None
    k, n = header.erasure.required, header.erasure.total
    try:
        return Redundancy.parse_erasure(f"{k}-of-{n}")
    except ValueError as exc:
        raise ConfigError(
            f"PutHeader.erasure {k}-of-{n}: {exc} (required is K, total is N)"
        ) from exc


class StorageService(pb_grpc.StorageServicer):
    """The ``shoal.v1.Storage`` servicer over one running node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.calls_in_flight = 0
        """Calls whose handler has not returned yet (a cancelled one counts until its work is
        cancelled and awaited)."""

    def _call(self, context: Context, what: str) -> _Call:
        return _Call(self, context, what)

    async def Put(
        self,
        request_iterator: AsyncIterator[pb.PutRequest],
        context: grpc.aio.ServicerContext[pb.PutRequest, pb.PutReply],
    ) -> pb.PutReply:
        async with self._call(context, "Put"):
            requests = aiter(request_iterator)
            header = _check_header(await anext(requests, None))
            name = header.name

            async def chunks() -> AsyncIterator[bytes]:
                async for request in requests:
                    part = request.WhichOneof("part")
                    if part != "chunk":
                        raise ConfigError(
                            f"a Put has one header, its first message, then only chunks: "
                            f"{'a second header' if part else 'an empty message'} came after "
                            f"the header of {printable(name)!r}"
                        )
                    if request.chunk:
                        yield request.chunk

            result = await self.node.store_with_result(
                name,
                chunks(),
                media_type=header.media_type or None,
                replicas=header.replicas or None,
                redundancy=_redundancy(header),
            )
            return pb.PutReply(
                cap=result.cap,
                size=result.size,
                replicas=result.replicas,
                replicas_wanted=result.replicas_wanted,
                name=result.name,
                blocks=result.blocks,
            )

    async def Get(
        self,
        request: pb.GetRequest,
        context: grpc.aio.ServicerContext[pb.GetRequest, pb.GetReply],
    ) -> AsyncIterator[pb.GetReply]:
        async with self._call(context, "Get"):
            ref = _check_ref(request.ref)
            length = request.length or None  # 0: to the end
            async with self.node.get(ref, offset=request.offset, length=length) as reader:
                await context.send_initial_metadata(
                    ((SIZE_KEY, str(reader.size)), (MEDIA_TYPE_KEY, reader.media_type))
                )
                async for chunk in reader:
                    if len(chunk) <= MAX_GET_MESSAGE:
                        yield pb.GetReply(chunk=chunk)
                        continue
                    view = memoryview(chunk)
                    for start in range(0, len(view), MAX_GET_MESSAGE):
                        yield pb.GetReply(chunk=bytes(view[start : start + MAX_GET_MESSAGE]))

    async def Stat(
        self,
        request: pb.StatRequest,
        context: grpc.aio.ServicerContext[pb.StatRequest, pb.FileStat],
    ) -> pb.FileStat:
        async with self._call(context, "Stat"):
            ref = _check_ref(request.ref)
            if not looks_like_cap(ref):
                return file_stat(await self.node.file_entry(ref))
            # A cap: the size is in its root manifest (fetched and checked; nothing else is).
            async with self.node.get(ref) as reader:
                return pb.FileStat(
                    cap=ref, cid=reader.cid, size=reader.size, media_type=reader.media_type
                )

    async def List(
        self,
        request: pb.ListRequest,
        context: grpc.aio.ServicerContext[pb.ListRequest, pb.FileStat],
    ) -> AsyncIterator[pb.FileStat]:
        async with self._call(context, "List"):
            for entry in await self.node.list_files():
                if entry.name.startswith(request.prefix):
                    yield file_stat(entry)

    async def Delete(
        self,
        request: pb.DeleteRequest,
        context: grpc.aio.ServicerContext[pb.DeleteRequest, pb.DeleteReply],
    ) -> pb.DeleteReply:
        async with self._call(context, "Delete"):
            entry = await self.node.remove(check_name(request.name))
            return pb.DeleteReply(removed=file_stat(entry))

    async def Peers(
        self,
        request: pb.PeersRequest,
        context: grpc.aio.ServicerContext[pb.PeersRequest, pb.PeersReply],
    ) -> pb.PeersReply:
        async with self._call(context, "Peers"):
            return pb.PeersReply(peers=[_peer(p) for p in self.node.peers()])

    async def Status(
        self,
        request: pb.StatusRequest,
        context: grpc.aio.ServicerContext[pb.StatusRequest, pb.StatusReply],
    ) -> pb.StatusReply:
        async with self._call(context, "Status"):
            status = await self.node.status()
            uptime = Duration()
            uptime.FromNanoseconds(round(max(status.uptime, 0.0) * 1e9))
            return pb.StatusReply(
                node_id=status.node_id,
                listen=status.listen,
                advertise=status.advertise,
                network=status.network,
                replicas=status.replicas,
                peers_up=status.peers_up,
                peers_known=status.peers_known,
                uptime=uptime,
                blocks=status.blocks,
                bytes=status.bytes,
                files=status.files,
                chunk_size=self.node.chunk_size,
                data_dir=status.data_dir,
            )
