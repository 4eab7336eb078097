"""The local HTTP API over a real node, driven by the real blocking ``Client``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shoal import Client, Node
from shoal.api.http import ApiServer, serve_api
from shoal.client.api_info import API_FILE_NAME
from shoal.errors import InvalidCapability, NotFound
from shoal.ids import encode_id


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
