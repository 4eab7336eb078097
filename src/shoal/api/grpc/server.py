"""The gRPC server of a running node (``grpc.aio``, on the node's own event loop).

How it works: :func:`serve_grpc` binds ``HOST:PORT`` (``shoal run --grpc``; 127.0.0.1 when no
host is given) and serves three services there: ``shoal.v1.Storage`` (:mod:`.service`), the
standard health service (``grpc.health.v1.Health``: SERVING while the node runs, NOT_SERVING
once it stops) and server reflection (so ``grpcurl`` and other tools can list and call the
services without the ``.proto``). Every call to any of them must carry the HTTP API's bearer
token as ``authorization: Bearer <token>`` metadata; an interceptor refuses any other call with
UNAUTHENTICATED before its handler runs (constant-time comparison). The bound address is
added to ``api.json`` as ``grpc`` (next to the HTTP API's ``url`` and the ``token``).

Resource handling: the server owns its calls. Closing it marks the health service
NOT_SERVING, gives calls in flight :data:`STOP_GRACE` seconds, then cancels the rest (a put
cancelled so writes no catalog entry).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from shoal.api.grpc.service import ERROR_CODE_KEY, StorageService, one_line, status_code_for
from shoal.client.api_info import API_FILE_NAME, publish_grpc_address
from shoal.errors import AddressInUse, ConfigError, ShoalError, Unauthenticated
from shoal.names import printable
from shoal.node.service import Node
from shoal.transport.addresses import format_address, is_loopback_host, parse_address
from shoal.v1 import storage_pb2, storage_pb2_grpc

__all__ = [
    "DEFAULT_HOST",
    "MAX_RECEIVE_MESSAGE",
    "SERVICE_NAME",
    "STOP_GRACE",
    "GrpcServer",
    "parse_grpc_address",
    "serve_grpc",
]

log = logging.getLogger(__name__)

SERVICE_NAME: Final = storage_pb2.DESCRIPTOR.services_by_name["Storage"].full_name
"""``shoal.v1.Storage``."""

DEFAULT_HOST: Final = "127.0.0.1"
"""The host of ``--grpc PORT`` or ``--grpc :PORT``: only programs on this machine."""

MAX_RECEIVE_MESSAGE: Final = 4 * 1024 * 1024 + 64 * 1024
"""Largest request message: a Put chunk of 4 MiB plus its few bytes of framing."""

STOP_GRACE: Final = 1.0
"""Seconds calls in flight get to finish when the server closes; then they are cancelled."""

_SERVER_OPTIONS: Final = (
    # gRPC sets SO_REUSEPORT by default: a second node could then bind the same port and
    # take half the calls. One port, one node.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE),
)


def parse_grpc_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of ``--grpc``; ``PORT`` or ``:PORT`` alone means 127.0.0.1.

    Examples: ``:0`` and ``0`` (127.0.0.1, a free port), ``50051``, ``[::1]:50051``,
    ``0.0.0.0:50051`` (every interface: unencrypted, so only on a network you trust).

    Raises:
        ConfigError: Not of that form, or the port is not 0 to 65535.
    """
    text = text.strip()
    if text.isdigit() or (text.startswith(":") and text[1:].isdigit()):
        text = f"{DEFAULT_HOST}:{text.lstrip(':')}"
    try:
        return parse_address(text)
    except ConfigError:
        raise ConfigError(
            f"invalid --grpc address {printable(text)!r}: expected HOST:PORT, :PORT or PORT, "
            "e.g. 127.0.0.1:50051 or :0"
        ) from None


class _TokenCheck(grpc.aio.ServerInterceptor):
    """Refuse every call that lacks ``authorization: Bearer <token>``, before its handler."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
        return hmac.compare_digest(given, self._expected)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or self._allowed(handler_call_details):
            return handler  # an unknown method gets UNIMPLEMENTED, token or not
        return _refusal(handler)


_UNAUTHENTICATED: Final = Unauthenticated(
    "missing or wrong API token: send the metadata 'authorization: Bearer <token>' with the "
    f"token from {API_FILE_NAME} in the node's data dir"
)


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(
        status_code_for(_UNAUTHENTICATED),
        one_line(_UNAUTHENTICATED),
        trailing_metadata=((ERROR_CODE_KEY, _UNAUTHENTICATED.code),),
    )


def _refusal(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that only refuses the call."""
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(
        _refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class GrpcServer:
    """The running gRPC API: its ``address`` (``host:port``, once started) and its
    ``service`` (the :class:`StorageService`)."""

    def __init__(
        self,
        node: Node,
        address: str,
        *,
        token: str,
        data_dir: str | Path | None = None,
    ) -> None:
        """Prepare to serve ``node``; nothing listens until :meth:`start`.

        Args:
            node: The running node to expose.
            address: ``HOST:PORT`` to listen on (see :func:`parse_grpc_address`).
            token: The bearer token every call must carry (the HTTP API's).
            data_dir: Where the node's ``api.json`` is, to add the address to; None: do not.

        Raises:
            ConfigError: ``address`` is malformed.
        """
        self.node = node
        self.host, self._port = parse_grpc_address(address)
        self.token = token
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.address = ""
        self.service = StorageService(node)
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()

    async def start(self) -> None:
        """Listen, serve, and publish the address in ``api.json``.

        Raises:
            AddressInUse: The address is taken or not one of this machine's.
            ConfigError: ``api.json`` is missing or another node's.
            StorageError: ``api.json`` cannot be written.
        """
        server = grpc.aio.server(
            interceptors=[_TokenCheck(self.token)], options=list(_SERVER_OPTIONS)
        )
        storage_pb2_grpc.add_StorageServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        wanted = format_address(self.host, self._port)
        try:
            port = server.add_insecure_port(wanted)
        except RuntimeError:
            port = 0
        if port == 0:
            raise AddressInUse(
                f"cannot listen on {wanted} for the gRPC API: the port is in use or the "
                "host is not an address of this machine (choose another with --grpc)"
            )
        self._server = server
        try:
            await server.start()
            self.address = format_address(self.host, port)
            await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
            await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
            self.node.add_own_address(self.address)
            if not is_loopback_host(self.host):
                log.warning(
                    "the gRPC API on %s is not encrypted: its token and files cross the "
                    "network in the clear (serve it on 127.0.0.1 unless the network is trusted)",
                    self.address,
                )
            if self.data_dir is not None:
                publish_grpc_address(self.data_dir, self.token, self.address)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop serving: NOT_SERVING, :data:`STOP_GRACE` for calls in flight, then cancel."""
        server, self._server = self._server, None
        if server is None:
            return
        await self._health.enter_graceful_shutdown()
        await server.stop(STOP_GRACE)
        if self.data_dir is not None and self.address:
            # api.json may be gone already (the HTTP API stopped first) or another node's.
            with contextlib.suppress(ShoalError):
                publish_grpc_address(self.data_dir, self.token, None)


@contextlib.asynccontextmanager
async def serve_grpc(
    node: Node, address: str, *, token: str, data_dir: str | Path | None = None
) -> AsyncIterator[GrpcServer]:
    """Serve the gRPC API of ``node`` on ``address`` for the duration of the block.

    Example::

        async with (
            Node.start(data_dir) as node,
            serve_api(node, data_dir) as api,
            serve_grpc(node, ":0", token=api.token, data_dir=data_dir) as grpc_api,
        ):
            print(grpc_api.address)

    Raises:
        AddressInUse: The address is taken.
        ConfigError: ``address`` is malformed, or ``api.json`` is not this node's.
    """
    server = GrpcServer(node, address, token=token, data_dir=data_dir)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
