"""The blocking ``Client`` against small scripted HTTP servers (no node involved)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from shoal.client.api_info import (
    API_FILE_NAME,
    ApiInfo,
    read_api_info,
    remove_api_info,
    write_api_info,
)
from shoal.client.http import Client
from shoal.errors import (
    ConfigError,
    IntegrityError,
    NotFound,
    QuorumNotMet,
    ShoalError,
    StorageError,
    TransportError,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a one-handler HTTP server on 127.0.0.1 port 0; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def error(status: int, code: str, message: str, **extra: object) -> web.Response:
    body = {"error": {"type": "Whatever", "code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("not-found", NotFound),
        ("integrity", IntegrityError),
        ("storage", StorageError),
        ("no-such-code", ShoalError),
        ("ValueError", ShoalError),  # only codes of the error table are rebuilt
    ],
)
async def test_errors_come_back_as_their_class(
    serve: Serve, code: str, expected: type[ShoalError]
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return error(404, code, "the message")

    url = await serve(handler)
    with Client(url, "tok") as client, pytest.raises(ShoalError) as info:
        await asyncio.to_thread(client.list_files)
    assert type(info.value) is expected
    assert str(info.value) == "the message"


async def test_quorum_error_keeps_placement(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return error(503, "quorum", "only 1 of 3", placed={"blk": ["n1"]})

    url = await serve(handler)
    with Client(url, "tok") as client, pytest.raises(QuorumNotMet) as info:
        await asyncio.to_thread(client.put, io.BytesIO(b"data"), "f")
    assert info.value.placed == {"blk": ["n1"]}


async def test_non_json_error_is_still_a_shoal_error(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Internal Server Error\n\nboom")

    url = await serve(handler)
    with Client(url, "tok") as client, pytest.raises(ShoalError, match="500"):
        await asyncio.to_thread(client.status)


async def test_token_is_sent_and_put_streams_with_length(serve: Serve) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["type"] = request.headers.get("Content-Type")
        seen["length"] = request.content_length
        seen["path"] = request.raw_path
        seen["body"] = await request.content.read()
        return web.json_response({"name": "x", "cap": "c", "size": 1}, status=201)

    url = await serve(handler)
    data = bytes(range(256)) * 5000  # 1.2 MiB: more than one piece
    progress: list[tuple[int, int | None]] = []
    with Client(url, "s3cret") as client:
        result = await asyncio.to_thread(
            client.put,
            io.BytesIO(data),
            "dir/..a b.png",
            lambda done, total: progress.append((done, total)),
        )
    assert result == {"name": "x", "cap": "c", "size": 1}
    assert seen["auth"] == "Bearer s3cret"
    assert seen["type"] == "image/png"
    assert seen["length"] == len(data)
    assert seen["body"] == data
    assert seen["path"] == "/v1/files/dir%2F%2E%2Ea%20b%2Epng"
    assert sum(done for done, _ in progress) == len(data)
    assert {total for _, total in progress} == {len(data)}


async def test_put_needs_a_name_for_anonymous_file_objects(serve: Serve) -> None:
    with Client("http://127.0.0.1:9", "tok") as client, pytest.raises(ConfigError):
        client.put(io.BytesIO(b"x"))


async def test_truncated_get_fails_and_leaves_nothing(serve: Serve, tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"x" * 400)
        assert request.transport is not None
        request.transport.close()
        return response

    url = await serve(handler)
    dest = tmp_path / "out.bin"
    with Client(url, "tok") as client, pytest.raises(TransportError):
        await asyncio.to_thread(client.get, "f", dest)
    assert list(tmp_path.iterdir()) == []


async def test_failed_get_keeps_an_existing_file(serve: Serve, tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        return error(404, "not-found", "no such file")

    url = await serve(handler)
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with Client(url, "tok") as client, pytest.raises(NotFound):
        await asyncio.to_thread(client.get, "f", dest)
    assert list(tmp_path.iterdir()) == [dest]
    assert dest.read_bytes() == b"old"


async def test_get_writes_whole_file(serve: Serve, tmp_path: Path) -> None:
    data = b"0123456789" * 300_000

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="application/octet-stream")

    url = await serve(handler)
    dest = tmp_path / "out.bin"
    with Client(url, "tok") as client:
        size = await asyncio.to_thread(client.get, "f", dest)
    assert size == len(data)
    assert dest.read_bytes() == data
    assert list(tmp_path.iterdir()) == [dest]


def test_read_api_info_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no running node for data dir"):
        read_api_info(tmp_path)


@pytest.mark.parametrize(
    "content", ["", "[]", '{"url": 1, "token": "t", "pid": 1, "node_id": "n"}', '{"url": "u"}']
)
def test_read_api_info_malformed(tmp_path: Path, content: str) -> None:
    (tmp_path / API_FILE_NAME).write_text(content)
    with pytest.raises(ConfigError, match=API_FILE_NAME):
        read_api_info(tmp_path)


def test_read_api_info_ok(tmp_path: Path) -> None:
    info = {"url": "http://127.0.0.1:1", "token": "t", "pid": 5, "node_id": "n"}
    (tmp_path / API_FILE_NAME).write_text(json.dumps({**info, "later": "fields are ignored"}))
    assert read_api_info(tmp_path) == ApiInfo(**info)  # type: ignore[arg-type]
    (tmp_path / API_FILE_NAME).write_text(json.dumps({**info, "grpc": "127.0.0.1:2"}))
    assert read_api_info(tmp_path) == ApiInfo(**info, grpc="127.0.0.1:2")  # type: ignore[arg-type]


def test_api_info_written_by_the_node_reads_back_and_is_private(tmp_path: Path) -> None:
    info = ApiInfo(url="http://127.0.0.1:9", token="tok", pid=42, node_id="abc")
    write_api_info(tmp_path, info)
    assert read_api_info(tmp_path) == info
    assert (tmp_path / API_FILE_NAME).stat().st_mode & 0o777 == 0o600
    remove_api_info(tmp_path, "another node's token")
    assert (tmp_path / API_FILE_NAME).exists()
    remove_api_info(tmp_path, "tok")
    assert not (tmp_path / API_FILE_NAME).exists()


async def test_get_without_overwrite_keeps_a_file_that_appeared_meanwhile(
    serve: Serve, tmp_path: Path
) -> None:
    dest = tmp_path / "out.bin"

    async def handler(request: web.Request) -> web.Response:
        dest.write_bytes(b"written by someone else during the transfer")
        return web.Response(body=b"the file")

    url = await serve(handler)
    with Client(url, "tok") as client, pytest.raises(ConfigError, match="already exists"):
        await asyncio.to_thread(client.get, "f", dest, overwrite=False)
    assert dest.read_bytes() == b"written by someone else during the transfer"
    assert list(tmp_path.iterdir()) == [dest]  # no temporary file left


async def test_get_without_overwrite_refuses_an_existing_file_before_asking(
    serve: Serve, tmp_path: Path
) -> None:
    asked: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=b"the file")

    url = await serve(handler)
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with Client(url, "tok") as client:
        with pytest.raises(ConfigError, match="already exists"):
            await asyncio.to_thread(client.get, "f", dest, overwrite=False)
        assert asked == []
        assert dest.read_bytes() == b"old"
        # The default replaces it, atomically.
        await asyncio.to_thread(client.get, "f", dest)
    assert dest.read_bytes() == b"the file"
    assert list(tmp_path.iterdir()) == [dest]


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 1025, "\u202eevil"])
async def test_put_refuses_a_bad_name_before_sending(
    serve: Serve, tmp_path: Path, name: str
) -> None:
    asked: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({}, status=201)

    url = await serve(handler)
    src = tmp_path / "f.txt"
    src.write_bytes(b"data")
    with Client(url, "tok") as client:
        with pytest.raises(ConfigError, match="file name"):
            await asyncio.to_thread(client.put, src, name)
        with pytest.raises(ConfigError, match="file name"):
            await asyncio.to_thread(client.put, io.BytesIO(b"data"), name)
    assert asked == []
