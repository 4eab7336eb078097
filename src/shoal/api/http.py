"""Local HTTP API of a running node (aiohttp), used by the CLI and ``shoal.Client``.

How it works: :func:`serve_api` binds 127.0.0.1 on a port chosen by the OS, makes a random
bearer token and publishes both in ``<data dir>/api.json`` (mode 0600, written atomically), so
only users who can read the data dir can talk to the node. Every request must carry
``Authorization: Bearer <token>``. Bodies stream both ways: a PUT body is handed to
``Node.store`` as an async iterator of pieces and a GET is written piece by piece as the node
decrypts, so no request holds a whole file in memory. ``ShoalError`` subclasses become JSON
errors ``{"error": {"type", "code", "message"}}`` with the status their class carries; see
``docs/http-api.md``.

Downloads answer single ``Range`` requests (206/416), carry ``ETag`` = the CID and honour
``If-None-Match`` (304), see :mod:`shoal.api.ranges`. Folder endpoints are in
:mod:`shoal.api.folders`; ``/metrics`` serves the node's own Prometheus registry (token
needed); ``/openapi.json`` (:mod:`shoal.api.openapi`) and ``/docs`` need no token.

Checks come before work: the token, then the name (:func:`shoal.names.check_name`) and the
``Content-Type`` (:func:`shoal.names.check_media_type`) of a PUT, all before its body is read.
A request whose client goes away is cancelled (``handler_cancellation``), so a get stops
fetching blocks for nobody and a put stops placing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import logging
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from shoal.api.docs_page import DOCS_HTML
from shoal.api.folders import add_folder_routes
from shoal.api.health import add_health_routes
from shoal.api.keys import NODE_KEY
from shoal.api.leases import add_lease_routes
from shoal.api.openapi import openapi_document
from shoal.api.ranges import Unsatisfiable, etag_matches, parse_range, strong_etag
from shoal.api.scrub import add_scrub_routes
from shoal.api.ui import install_ui, ui_request_allowed
from shoal.client.api_info import API_FILE_NAME, ApiInfo, remove_api_info, write_api_info
from shoal.client.http import check_read_cap
from shoal.content.caps import looks_like_cap, parse_cap
from shoal.content.manifest import MAX_REPLICAS, Redundancy
from shoal.errors import (
    ConfigError,
    NotFound,
    QuorumNotMet,
    ShoalError,
    TransportError,
    Unauthenticated,
)
from shoal.ids import encode_id
from shoal.names import check_media_type, check_name
from shoal.node.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from shoal.node.service import DEFAULT_MEDIA_TYPE, Node
from shoal.transport.manager import parse_address

__all__ = ["ApiServer", "error_status", "serve_api"]

log = logging.getLogger(__name__)

PIECE_SIZE: Final = 1024 * 1024

# Only JSON bodies would ever be buffered (``request.read()``), and no endpoint takes one:
# file bodies are streamed from ``request.content``, which ``client_max_size`` does not limit.
CLIENT_MAX_SIZE: Final = 1024 * 1024

_NODE_KEY: Final = NODE_KEY
_TOKEN_KEY: Final = web.AppKey("token", str)


class RequestCounter:
    """How many requests are being handled right now (``ApiServer.active_requests``)."""

    def __init__(self) -> None:
        self.active = 0


_COUNTER_KEY: Final = web.AppKey("requests", RequestCounter)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _MalformedRequestFilter(logging.Filter):
    """Log a malformed HTTP request as one line, not an error with a traceback.

    aiohttp logs every request it cannot parse at ERROR with the traceback (and echoes the
    client's bytes). On a local API that is the client's fault, not the node's: one INFO line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "malformed HTTP request refused: %s", (exc.message[:200],)
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("aiohttp.server").addFilter(_MalformedRequestFilter())


class _UploadInterrupted(TransportError):
    """The client stopped sending a PUT body before its end."""


def error_status(exc: ShoalError) -> int:
    """HTTP status for a ``ShoalError``: the one its class carries."""
    return exc.http_status


def _error_response(exc: ShoalError, *, status: int | None = None) -> web.Response:
    """The one JSON error shape: ``{"error": {"type", "code", "message"}}`` (and ``placed``)."""
    body: dict[str, Any] = {"type": type(exc).__name__, "code": exc.code, "message": str(exc)}
    if isinstance(exc, QuorumNotMet):
        body["placed"] = exc.placed
    status = exc.http_status if status is None else status
    if status >= 500 and type(exc) is ShoalError:
        log.error("API request failed: %s", exc, exc_info=exc)
    return web.json_response({"error": body}, status=status)


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error shape, including aiohttp's own 404/405."""
    try:
        return await handler(request)
    except ShoalError as exc:
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = f"{exc.reason}: {request.method} {request.path}"
        error = NotFound(text) if exc.status == 404 else ConfigError(text)
        return _error_response(error, status=exc.status)
    except Exception as exc:
        log.exception("API request %s %s failed", request.method, request.path)
        return _error_response(ShoalError(f"internal error: {type(exc).__name__}"))


@web.middleware
async def _count_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the requests in progress (a cancelled one stops counting when it has stopped)."""
    counter = request.app[_COUNTER_KEY]
    counter.active += 1
    try:
        return await handler(request)
    finally:
        counter.active -= 1


PUBLIC_PATHS: Final = frozenset({"/openapi.json", "/docs"})
"""Read-only pages that hold no secret and need no token (a browser cannot send one)."""


@web.middleware
async def _auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse any request without the right bearer token (constant-time comparison)."""
    if request.path in PUBLIC_PATHS and request.method in ("GET", "HEAD"):
        return await handler(request)
    expected = f"Bearer {request.app[_TOKEN_KEY]}".encode()
    given = request.headers.get("Authorization", "").encode("utf-8", "replace")
    if not hmac.compare_digest(given, expected) and not ui_request_allowed(request):
        return _error_response(
            Unauthenticated(
                "missing or wrong API token: send 'Authorization: Bearer <token>' with the token "
                f"from {API_FILE_NAME} in the node's data dir"
            )
        )
    return await handler(request)


# -- handlers ---------------------------------------------------------------------------------


async def _status(request: web.Request) -> web.Response:
    status = await request.app[_NODE_KEY].status()
    return web.json_response(status.to_json())


async def _peers(request: web.Request) -> web.Response:
    return web.json_response([p.to_json() for p in request.app[_NODE_KEY].peers()])


async def _list_files(request: web.Request) -> web.Response:
    entries = await request.app[_NODE_KEY].list_files()
    return web.json_response([e.to_json() for e in entries])


async def _put_file(request: web.Request) -> web.Response:
    # Everything the request says is checked before a byte of the body is read.
    name = check_name(request.match_info["name"])
    media_type = request.headers.get("Content-Type")
    if media_type is not None:
        media_type = check_media_type(media_type)

    redundancy = _put_redundancy(request)
    node = request.app[_NODE_KEY]
    piece_size = node.chunk_size

    async def body() -> AsyncIterator[bytes]:
        # Whole chunks, each joined once from what arrived: the node's chunker then passes them
        # on without copying them again on the event loop.
        try:
            while True:
                try:
                    piece = await request.content.readexactly(piece_size)
                except asyncio.IncompleteReadError as end:
                    if end.partial:
                        yield end.partial
                    return
                yield piece
        except (ClientPayloadError, ConnectionError) as exc:
            raise _UploadInterrupted(f"upload of {name!r} was interrupted: {exc}") from exc

    try:
        result = await node.store_with_result(
            name,
            body(),
            media_type=media_type,
            expected_size=request.content_length,
            redundancy=redundancy,
        )
    except _UploadInterrupted as exc:
        # The client went away (e.g. Ctrl-C on `shoal put`): nothing was cataloged and
        # nobody reads this answer, so it is not worth an error with a traceback.
        log.info("%s", exc)
        return _error_response(exc, status=400)
    except asyncio.CancelledError:
        # The same, noticed by aiohttp first: it cancels the handler of a closed connection.
        log.info("upload of %r was interrupted: the client went away", name)
        raise
    answer = {
        "name": result.name,
        "cap": result.cap,
        "size": result.size,
        "blocks": result.blocks,
        "replicas": result.replicas,
        "replicas_wanted": result.replicas_wanted,
        "redundancy": result.redundancy,
    }
    return web.json_response(answer, status=201)


def _put_redundancy(request: web.Request) -> Redundancy | None:
    """``?replicas=R`` or ``?erasure=K-of-N`` (at most one); None: the node's default."""
    replicas = request.query.getall("replicas", [])
    erasure = request.query.getall("erasure", [])
    if len(replicas) + len(erasure) > 1:
        raise ConfigError("give at most one of the query parameters replicas and erasure, once")
    if replicas:
        text = replicas[0].strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
            1 <= int(text) <= MAX_REPLICAS
        ):
            raise ConfigError(f"replicas must be a whole number from 1 to {MAX_REPLICAS}")
        return Redundancy.replicate(int(text))
    if erasure:
        try:
            return Redundancy.parse_erasure(erasure[0])
        except ValueError as exc:
            raise ConfigError(f"erasure: {exc}") from None
    return None


async def _get_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    return await _stream_file(request, name, file_name=name)


async def _get_cap(request: web.Request) -> web.StreamResponse:
    cap = request.match_info["cap"]
    check_read_cap(cap)
    # A file reached by its cap has no name of its own: like `shoal get CAP`, it is its CID,
    # unless the caller names it (?name=, e.g. from a folder listing).
    given = request.query.get("name")
    file_name = check_name(given, what="name") if given is not None else None
    return await _stream_file(
        request, cap, file_name=file_name or encode_id(parse_cap(cap).cid), guess=file_name
    )


async def _stream_file(
    request: web.Request, name_or_cap: str, *, file_name: str, guess: str | None = None
) -> web.StreamResponse:
    """Stream a file, or the one byte range asked; an error before the first byte is a JSON
    error, after it an abort. ``guess``: a name to guess the media type from (by cap)."""
    node = request.app[_NODE_KEY]
    cap = await node.resolve(name_or_cap)
    etag = strong_etag(encode_id(cap.cid))
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        # The CID is the bytes: nothing to fetch to know they did not change.
        return web.Response(status=304, headers=headers)
    async with node.get(name_or_cap) as reader:
        media_type = reader.media_type
        if guess is not None and media_type == DEFAULT_MEDIA_TYPE:
            media_type = mimetypes.guess_type(guess, strict=False)[0] or DEFAULT_MEDIA_TYPE
        headers["Content-Type"] = media_type
        headers["Content-Disposition"] = _content_disposition(file_name)
        status, length = 200, reader.size
        asked = request.headers.get("Range")
        if asked is not None and request.headers.get("If-Range", etag) == etag:
            try:
                span = parse_range(asked, reader.size)
            except Unsatisfiable as exc:
                error = _error_response(ConfigError(str(exc)), status=416)
                error.headers["Content-Range"] = f"bytes */{reader.size}"
                return error
            if span is not None:
                reader.limit(*span)
                status, length = 206, span[1] - span[0]
                headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{reader.size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = length
        if request.method == "HEAD":
            await response.prepare(request)
            return response
        chunks = aiter(reader)
        # Fetch the first chunk before sending headers, so that a failure to get the first
        # blocks still gets a proper error status instead of a truncated 200.
        first = await anext(chunks, b"")
        try:
            await response.prepare(request)
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except ConnectionError:
            log.debug("client went away while getting %s", _loggable(name_or_cap))
            return response
        except Exception as exc:
            # Headers are out, so the only honest signal left is a short body: close the
            # connection and the client sees fewer bytes than Content-Length.
            log.warning("get of %s failed mid-transfer: %s", _loggable(name_or_cap), exc)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response


async def _invite(request: web.Request) -> web.Response:
    addresses = request.query.getall("address", [])
    for address in addresses:
        parse_address(address)
    invite = request.app[_NODE_KEY].invite(addresses)
    return web.json_response({"invite": invite})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_NODE_KEY].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(shoal_version()))


async def _docs(request: web.Request) -> web.Response:
    return web.Response(
        text=DOCS_HTML,
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'"
        },
    )


async def _remove_file(request: web.Request) -> web.Response:
    entry = await request.app[_NODE_KEY].remove(request.match_info["name"])
    return web.json_response(entry.to_json())


def _content_disposition(name: str) -> str:
    """RFC 6266 header: an ASCII fallback ``filename`` plus the exact UTF-8 ``filename*``."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\/' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _loggable(name_or_cap: str) -> str:
    # A read cap is a secret: log only its CID part.
    return name_or_cap.rsplit(":", 1)[0] + ":..." if looks_like_cap(name_or_cap) else name_or_cap


def shoal_version() -> str:
    """The installed Shoal's version (for the OpenAPI document)."""
    try:
        return importlib.metadata.version("shoal")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def make_app(node: Node, token: str) -> web.Application:
    """Build the aiohttp application serving ``node`` (no socket, no ``api.json``)."""
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[_count_middleware, _errors_middleware, _auth_middleware],
    )
    app[_NODE_KEY] = node
    app[_TOKEN_KEY] = token
    app[_COUNTER_KEY] = RequestCounter()
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/v1/peers", _peers)
    app.router.add_get("/v1/files", _list_files)
    app.router.add_put("/v1/files/{name}", _put_file)
    app.router.add_get("/v1/files/{name}", _get_file)
    app.router.add_delete("/v1/files/{name}", _remove_file)
    app.router.add_get("/v1/caps/{cap}", _get_cap)
    install_ui(app, node)  # the web UI: a browser session instead of the token (api/ui.py)
    app.router.add_get("/v1/invite", _invite)
    add_folder_routes(app)
    add_health_routes(app)
    add_lease_routes(app)
    add_scrub_routes(app)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/docs", _docs)
    return app


class ApiServer:
    """The running API: its ``url``, ``token`` and the ``api.json`` it published."""

    def __init__(self, node: Node, data_dir: str | os.PathLike[str], *, port: int = 0) -> None:
        """Prepare to serve ``node``; nothing listens until :meth:`start`.

        Args:
            node: The running node to expose.
            data_dir: The node's data dir, where ``api.json`` is written.
            port: TCP port on 127.0.0.1; 0 lets the OS choose.
        """
        self.node = node
        self.data_dir = Path(data_dir)
        self.api_file = self.data_dir / API_FILE_NAME
        self.token = secrets.token_urlsafe(32)
        self.url = ""
        self._port = port
        self._runner: web.AppRunner | None = None
        self._app = make_app(self.node, self.token)

    @property
    def active_requests(self) -> int:
        """Requests being handled right now (a request whose client left is not counted)."""
        return self._app[_COUNTER_KEY].active

    async def start(self) -> None:
        """Listen on 127.0.0.1 and publish ``api.json``."""
        # handler_cancellation: when a client disconnects, aiohttp cancels its handler, so no
        # work goes on for an answer nobody will read.
        runner = web.AppRunner(self._app, access_log=None, handler_cancellation=True)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, "127.0.0.1", self._port)
            await site.start()
            port = runner.addresses[0][1]  # the port the OS chose
            self.url = f"http://127.0.0.1:{port}"
            self.node.add_own_address(f"127.0.0.1:{port}")
            self._publish()
        except BaseException:
            await self.close()
            raise

    def _publish(self) -> None:
        info = ApiInfo(url=self.url, token=self.token, pid=os.getpid(), node_id=self.node.node_id)
        write_api_info(self.data_dir, info)

    async def close(self) -> None:
        """Stop serving and remove ``api.json`` (if it is still ours)."""
        remove_api_info(self.data_dir, self.token)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_api(
    node: Node, data_dir: str | os.PathLike[str], *, port: int = 0
) -> AsyncIterator[ApiServer]:
    """Serve the HTTP API of ``node`` on 127.0.0.1 for the duration of the block.

    Example::

        async with Node.start(data_dir) as node, serve_api(node, data_dir) as api:
            print(api.url)

    Raises:
        StorageError: ``api.json`` cannot be written into ``data_dir``.
    """
    server = ApiServer(node, data_dir, port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
