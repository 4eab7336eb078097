"""The local HTTP API over a real node, driven by the real blocking ``Client``."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from shoal import Client, Node
from shoal.api.http import ApiServer, serve_api
from shoal.client.api_info import API_FILE_NAME
from shoal.errors import InvalidCapability, NotFound
from shoal.ids import encode_id
from shoal.transport import PeerSource
from tests.integration.conftest import FAST

T = TypeVar("T")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0") as node,
        serve_api(node, data_dir) as server,
    ):
        yield server


@pytest.fixture
def client(api: ApiServer) -> Client:
    return Client.from_data_dir(api.data_dir)


async def test_api_file_is_private_and_removed_on_close(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    api_file = data_dir / API_FILE_NAME
    async with Node.start(data_dir, listen="127.0.0.1:0") as node:
        async with serve_api(node, data_dir) as server:
            info = json.loads(api_file.read_text())
            assert info == {
                "url": server.url,
                "token": server.token,
                "pid": os.getpid(),
                "node_id": node.node_id,
            }
            assert server.url.startswith("http://127.0.0.1:")
            assert stat.S_IMODE(api_file.stat().st_mode) == 0o600
        assert not api_file.exists()
        assert [p.name for p in data_dir.iterdir() if p.name.startswith(".api.")] == []


async def test_put_get_round_trip(client: Client, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 12345)
    src = tmp_path / "picture_1.png"
    src.write_bytes(data)
    sent: list[int] = []
    with client:
        result = await asyncio.to_thread(client.put, src, None, lambda n, total: sent.append(n))
        assert result["name"] == "picture_1.png"
        assert result["size"] == len(data)
        assert result["cap"].startswith("shoal:r:")
        assert sum(sent) == len(data)

        by_name = tmp_path / "by_name.png"
        got: list[int] = []
        size = await asyncio.to_thread(
            client.get, "picture_1.png", by_name, lambda n, total: got.append(n)
        )
        assert size == len(data) == sum(got)
        assert by_name.read_bytes() == data

        by_cap = tmp_path / "by_cap.png"
        assert await asyncio.to_thread(client.get, result["cap"], by_cap) == len(data)
        assert by_cap.read_bytes() == data

        out = io.BytesIO()
        assert await asyncio.to_thread(client.get_into, "picture_1.png", out) == len(data)
        assert out.getvalue() == data


async def test_headers_of_a_get(api: ApiServer) -> None:
    headers = {"Authorization": f"Bearer {api.token}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as http:
        put = await http.put(
            "/v1/files/h%C3%A9.png", content=b"\x89PNG...", headers={"Content-Type": "image/png"}
        )
        assert put.status_code == 201
        got = await http.get("/v1/files/h%C3%A9.png")
    assert got.status_code == 200
    assert got.content == b"\x89PNG..."
    assert got.headers["Content-Length"] == "7"
    assert got.headers["Content-Type"] == "image/png"
    assert "filename*=UTF-8''h%C3%A9.png" in got.headers["Content-Disposition"]


async def test_list_status_peers_and_remove(client: Client) -> None:
    with client:
        await asyncio.to_thread(client.put, io.BytesIO(b"one"), "a.txt")
        await asyncio.to_thread(client.put, io.BytesIO(b"two!"), "b/c.txt")
        files = await asyncio.to_thread(client.list_files)
        assert [(f["name"], f["size"]) for f in files] == [("a.txt", 3), ("b/c.txt", 4)]
        assert all(f["cap"].startswith("shoal:r:") for f in files)

        status = await asyncio.to_thread(client.status)
        assert len(status["node_id"]) == 52
        assert await asyncio.to_thread(client.peers) == []

        removed = await asyncio.to_thread(client.remove, "b/c.txt")
        assert removed["name"] == "b/c.txt"
        files = await asyncio.to_thread(client.list_files)
        assert [f["name"] for f in files] == ["a.txt"]
        with pytest.raises(NotFound):
            await asyncio.to_thread(client.remove, "b/c.txt")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Bearer", "Basic dXNlcjpwYXNz"])
async def test_requests_without_the_token_are_refused(
    api: ApiServer, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=api.url) as http:
        for method, path in [
            ("GET", "/v1/status"),
            ("GET", "/v1/files"),
            ("PUT", "/v1/files/x"),
            ("DELETE", "/v1/files/x"),
            ("GET", "/v1/nothing"),
        ]:
            response = await http.request(method, path, headers=headers, content=b"data")
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"
        files = await http.get("/v1/files", headers={"Authorization": f"Bearer {api.token}"})
    assert files.json() == []  # the refused PUT stored nothing


async def test_unknown_name_is_not_found(client: Client, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "x.bin"
    dest.parent.mkdir()
    with client, pytest.raises(NotFound):
        await asyncio.to_thread(client.get, "no-such-file", dest)
    assert list(dest.parent.iterdir()) == []


async def test_unknown_cap_fails_and_leaves_no_file(client: Client, tmp_path: Path) -> None:
    cap = f"shoal:r:{encode_id(bytes([7]) * 32)}:{encode_id(bytes([9]) * 32)}"
    dest = tmp_path / "out" / "x.bin"
    dest.parent.mkdir()
    with client, pytest.raises(NotFound):
        await asyncio.to_thread(client.get, cap, dest)
    assert list(dest.parent.iterdir()) == []


async def test_bad_cap_is_invalid_capability(api: ApiServer, client: Client) -> None:
    with client, pytest.raises(InvalidCapability):
        await asyncio.to_thread(client.get, "shoal:r:garbage", api.data_dir / "x")
    headers = {"Authorization": f"Bearer {api.token}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as http:
        for cap in ["shoal:r:garbage", "not-a-cap", f"shoal:v:{encode_id(bytes(32))}"]:
            response = await http.get(f"/v1/caps/{cap}")
            assert response.status_code == 400
            assert response.json()["error"]["type"] == "InvalidCapability"
        missing = await http.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFound"


async def test_interrupted_upload_stores_nothing(
    api: ApiServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.api.http")
    # Announce 4 MiB, send 1 MiB, hang up: the node must not catalog anything.
    _, writer = await asyncio.open_connection("127.0.0.1", int(api.url.rsplit(":", 1)[1]))
    writer.write(
        b"PUT /v1/files/partial.bin HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {api.token}\r\n".encode()
        + b"Content-Length: 4194304\r\n\r\n"
        + b"x" * (1024 * 1024)
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(10):
        while not any("was interrupted" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)
    with client:
        assert await asyncio.to_thread(client.list_files) == []


async def _blocks_on_disk(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blocks").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("path", "headers", "fragment"),
    [
        # A 5,000-character Content-Type once gave a 500 after the blocks were placed.
        ("/v1/files/a.bin", {"Content-Type": "x" * 5000}, "at most 255 bytes"),
        ("/v1/files/a.bin", {"Content-Type": "a/" + "b" * 254}, "at most 255 bytes"),
        ("/v1/files/a.bin", {"Content-Type": "not a media type"}, "type/subtype"),
        ("/v1/files/a.bin", {"Content-Type": "text/plain; x"}, "type/subtype"),
        ("/v1/files/fake%0Arow", {}, "control character: U+000A"),
        ("/v1/files/%1B%5B2J", {}, "control character: U+001B"),
        ("/v1/files/%E2%80%AEevil", {}, "bidirectional"),
        ("/v1/files/%20%20", {}, "visible character"),
        ("/v1/files/" + "x" * 1025, {}, "at most 1024 bytes"),
    ],
)
async def test_bad_request_headers_and_names_are_refused_before_any_work(
    api: ApiServer, path: str, headers: dict[str, str], fragment: str
) -> None:
    auth = {"Authorization": f"Bearer {api.token}"}
    async with httpx.AsyncClient(base_url=api.url, headers=auth) as http:
        response = await http.put(path, content=os.urandom(3 * 1024 * 1024), headers=headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"type", "code", "message"}
        assert (error["type"], error["code"]) == ("ConfigError", "config")
        assert fragment in error["message"]
        # Nothing was stored, and the node still works.
        assert (await http.get("/v1/files")).json() == []
        assert await _blocks_on_disk(api.data_dir) == []
        ok = await http.put(
            "/v1/files/ok.txt",
            content=b"fine",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert ok.status_code == 201, ok.text
        listing = (await http.get("/v1/files")).json()
    assert [(f["name"], f["media_type"]) for f in listing] == [
        ("ok.txt", "text/plain; charset=utf-8")
    ]


async def test_a_get_by_cap_is_named_after_its_cid(api: ApiServer) -> None:
    auth = {"Authorization": f"Bearer {api.token}"}
    async with httpx.AsyncClient(base_url=api.url, headers=auth) as http:
        put = await http.put("/v1/files/dir%2Fa.txt", content=b"hello")
        cap = put.json()["cap"]
        got = await http.get(f"/v1/caps/{cap}")
    cid = cap.split(":")[2]
    assert got.content == b"hello"
    assert (
        got.headers["Content-Disposition"]
        == f"attachment; filename=\"{cid}\"; filename*=UTF-8''{cid}"
    )


class ThreadNode:
    """A real node running in its own thread and event loop, which the test can freeze.

    Freezing blocks that loop (as SIGSTOP would block a process): its connections stay open
    and requests to it get no answer until it thaws.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._ready = threading.Event()
        self._thaw = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.node: Node | None = None
        self.error: BaseException | None = None

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with Node.start(self._data_dir, listen="127.0.0.1:0", options=FAST) as node:
                self.node = node
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            raise

    async def start(self) -> Node:
        self._thread.start()
        assert await asyncio.to_thread(self._ready.wait, 60), "thread node did not start"
        assert self.error is None, self.error
        assert self.node is not None
        return self.node

    def call(self, fn: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """Run ``fn()`` in the node's loop; await the result from ours."""
        assert self._loop is not None
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(), self._loop))

    def freeze(self) -> None:
        assert self._loop is not None
        self._thaw.clear()
        self._loop.call_soon_threadsafe(self._thaw.wait)

    def thaw(self) -> None:
        self._thaw.set()

    async def stop(self) -> None:
        self.thaw()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, 60)
        assert not self._thread.is_alive()


async def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


async def test_a_get_whose_client_leaves_stops_fetching_and_the_node_stays_fine(
    tmp_path: Path,
) -> None:
    # B holds the file alone; A (with the API) must fetch every block from B. B then freezes,
    # so A's get waits for an answer that does not come; A's timeouts are long, so only the
    # client leaving can end that wait.
    holder = ThreadNode(tmp_path / "b")
    b = await holder.start()
    try:
        data = os.urandom(3 * 1024 * 1024 + 5)
        cap = await holder.call(lambda: b.store("big.bin", data))
        patient = dataclasses.replace(
            FAST, request_timeout=300.0, ping_interval=300.0, ping_timeout=300.0
        )
        async with (
            Node.start(tmp_path / "a", listen="127.0.0.1:0", join=b.invite(), options=patient) as a,
            serve_api(a, tmp_path / "a") as api,
        ):
            await a.wait_for_peers(1)
            assert (await a.status()).blocks == 0
            baseline = asyncio.all_tasks()
            holder.freeze()
            port = int(api.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /v1/caps/{cap} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {api.token}\r\n\r\n".encode()
            )
            await writer.drain()
            await _wait_for(lambda: api.active_requests == 1, "the get to start")
            writer.close()
            await writer.wait_closed()
            # The handler and whatever it started finish, long before any timeout of A's.
            await _wait_for(lambda: api.active_requests == 0, "the get to stop")
            await _wait_for(
                lambda: (
                    not {t for t in asyncio.all_tasks() - baseline if not t.done()}
                    - {asyncio.current_task()}
                ),
                "the get's tasks to finish",
            )
            assert reader.at_eof() or not await reader.read()

            # Nothing broke: B thaws, and the same get through A returns the whole file.
            holder.thaw()
            with Client.from_data_dir(tmp_path / "a") as client:
                out = io.BytesIO()
                assert await asyncio.to_thread(client.get_into, cap, out) == len(data)
            assert out.getvalue() == data
            assert [p.node_id for p in a.peers()] == [b.node_id]
    finally:
        await holder.stop()


async def test_the_node_never_learns_its_own_api_address_as_a_peer(api: ApiServer) -> None:
    manager = api.node._rt.manager
    api_address = api.url.removeprefix("http://")
    stranger = secrets.token_bytes(32)
    # As if a peer on this machine announced the API port as its own listen address.
    assert manager.learn(stranger, [api_address], source=PeerSource.HELLO) == []
    assert manager.learn(stranger, ["127.0.0.1:9"], source=PeerSource.HELLO) == ["127.0.0.1:9"]
