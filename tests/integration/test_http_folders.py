"""Folders over the HTTP API: the multipart upload, listings, the tar archive, the Client
and the CLI (``put -r``, ``ls FOLDER``, ``get -r``), against a real node."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from shoal import Client, Node
from shoal.api.http import ApiServer, serve_api
from shoal.cli.main import cli
from shoal.errors import ConfigError, IntegrityError
from tests.integration.test_folders import MTIME, make_tree, tree_state


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0", replicas=1) as node,
        serve_api(node, data_dir) as server,
    ):
        yield server


def http(api: ApiServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}, trust_env=False
    )


async def test_client_put_list_get_round_trip(api: ApiServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    (src / "link").symlink_to("a.txt")
    seen: list[int] = []
    with Client.from_data_dir(api.data_dir) as client:
        result = await asyncio.to_thread(
            client.put_folder, src, "album", lambda n, total: seen.append(n)
        )
        assert result["name"] == "album"
        assert result["skipped"] == ["link"]
        assert result["files"] == 4
        assert sum(seen) == result["size"]
        # The Python API stores the same tree with the same cap: times travel exactly.
        assert (await api.node.store_folder("again", src)).cap == result["cap"]

        listing = await asyncio.to_thread(client.list_folder, "album")
        assert listing["cap"] == result["cap"]
        assert [e["name"] for e in listing["entries"]] == ["a.txt", "empty dir", "empty.dat", "sub"]
        first = listing["entries"][0]
        assert (first["type"], first["mode"], first["mtime_ns"]) == ("file", 0o600, MTIME)
        by_cap = await asyncio.to_thread(client.list_folder, result["cap"])
        assert by_cap["name"] is None
        assert by_cap["entries"] == listing["entries"]

        out = tmp_path / "out"
        got = await asyncio.to_thread(client.get_folder, result["cap"], out)
        assert got["files"] == 4
        expected = tree_state(src)
        del expected["link"]
        assert tree_state(out) == expected
        with pytest.raises(ConfigError, match="already exists"):
            await asyncio.to_thread(client.get_folder, "album", out)
        assert tree_state(out) == expected


async def test_archive_is_a_tar_of_the_tree(api: ApiServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    cap = (await api.node.store_folder("album", src)).cap
    async with http(api) as client:
        answer = await client.get("/v1/folders/album/archive")
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/x-tar"
        assert 'filename="album.tar"' in answer.headers["Content-Disposition"]
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert members["album/a.txt"].mode == 0o600
            assert members["album/a.txt"].mtime == pytest.approx(MTIME / 1e9)
            assert members["album/empty dir"].isdir()
            for relative, data in files.items():
                extracted = tar.extractfile(f"album/{relative}")
                assert extracted is not None
                assert extracted.read() == data
        listing = await client.get("/v1/folders/album")
        etag = listing.headers["ETag"]
        assert etag == f'"{cap.split(":")[2]}"'
        cached = await client.get("/v1/folders/album", headers={"If-None-Match": etag})
        assert (cached.status_code, cached.content) == (304, b"")
        by_cap = await client.get(f"/v1/folders/{cap}/archive")
        assert by_cap.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(by_cap.content)) as tar:
            assert all(name.split("/")[0] == cap.split(":")[2] for name in tar.getnames())


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    boundary = "b0undary"
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None and filename.startswith("*"):  # RFC 5987 form, taken as is
            disposition += f"; filename*=UTF-8''{quote(filename[1:], safe='')}"
        elif filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def test_raw_multipart_upload_with_fields(api: ApiServer) -> None:
    body, content_type = multipart(
        [
            ("mtime", None, b"1500000000.5"),
            ("mode", None, b"640"),
            ("file", "docs/readme.md", b"# hi"),
            ("dir", None, b"docs/empty"),
            ("file", "top.txt", b"top"),
        ]
    )
    async with http(api) as client:
        answer = await client.put(
            "/v1/folders/upload", content=body, headers={"Content-Type": content_type}
        )
        assert answer.status_code == 201, answer.text
        result = answer.json()
        assert (result["files"], result["directories"], result["size"]) == (2, 3, 7)
        listing = (await client.get("/v1/folders/upload")).json()
        docs = listing["entries"][0]
        assert docs["name"] == "docs"
        inner = (await client.get(f"/v1/folders/{docs['cap']}")).json()["entries"]
        assert [(e["name"], e["type"]) for e in inner] == [("empty", "dir"), ("readme.md", "file")]
        readme = inner[1]
        assert (readme["mode"], readme["mtime"]) == (0o640, 1500000000.5)
        assert inner[0]["mode"] == 0o755  # fields apply to the next part only
        top = listing["entries"][1]
        assert top["mode"] == 0o644
        content = await client.get(f"/v1/caps/{top['cap']}", params={"name": "top.txt"})
        assert content.content == b"top"
        assert content.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([("file", "../escape.txt", b"x")], "'..'"),
        ([("file", "*/etc/passwd", b"x")], "must be relative"),
        ([("file", "*a/\x1b[2Jb", b"x")], "control character"),
        ([("file", "a//b", b"x")], "empty name"),
        ([("file", "a", b"x"), ("file", "a/b", b"y")], "both a file and a folder"),
        ([("file", "a", b"x"), ("file", "a", b"y")], "appears twice"),
        ([("file", None, b"x")], "needs a filename"),
        ([("other", None, b"x")], "unknown part"),
        ([("mode", None, b"4755"), ("file", "a", b"x")], "at most 777"),
        ([("mtime", None, b"soon"), ("file", "a", b"x")], "Unix seconds"),
    ],
)
async def test_hostile_uploads_are_refused_and_catalog_nothing(
    api: ApiServer, parts: list[tuple[str, str | None, bytes]], message: str
) -> None:
    body, content_type = multipart(parts)
    async with http(api) as client:
        answer = await client.put(
            "/v1/folders/bad", content=body, headers={"Content-Type": content_type}
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "config"
        assert message in error["message"]
        assert (await client.get("/v1/files")).json() == []
        # The node still works.
        ok, ok_type = multipart([("file", "fine.txt", b"fine")])
        good = await client.put("/v1/folders/good", content=ok, headers={"Content-Type": ok_type})
        assert good.status_code == 201


async def test_folder_upload_needs_multipart_and_lists_refuse_files(api: ApiServer) -> None:
    cap = await api.node.store("plain.txt", b"plain")
    async with http(api) as client:
        answer = await client.put("/v1/folders/x", content=b"not multipart")
        assert answer.status_code == 400
        assert "multipart/form-data" in answer.json()["error"]["message"]
        listing = await client.get(f"/v1/folders/{cap}")
        assert listing.status_code == 422
        assert "names a file" in listing.json()["error"]["message"]
        archive = await client.get("/v1/folders/plain.txt/archive")
        assert archive.status_code == 422
        missing = await client.get("/v1/folders/nothing")
        assert missing.status_code == 404
    with Client.from_data_dir(api.data_dir) as blocking, pytest.raises(IntegrityError):
        await asyncio.to_thread(blocking.list_folder, cap)


async def test_cli_put_r_ls_get_r(api: ApiServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    runner = CliRunner()
    base = ["--data-dir", str(api.data_dir)]

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, [*args, *base], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    code, out, err = await asyncio.to_thread(run, "put", "-r", str(src))
    assert code == 0, err
    cap = out.strip()
    assert cap.startswith("shoal:r:")
    assert "stored folder src (4 files" in err

    code, out, err = await asyncio.to_thread(run, "ls", "src")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "SIZE", "MODIFIED", "NAME", "CAP"]
    assert any("empty dir/" in line for line in lines)
    code, out, err = await asyncio.to_thread(run, "ls", cap, "--json")
    assert code == 0, err
    assert json.loads(out)["cap"] == cap

    dest = tmp_path / "restored"
    code, out, err = await asyncio.to_thread(run, "get", "-r", cap, "-o", str(dest))
    assert code == 0, err
    assert tree_state(dest) == tree_state(src)
    code, out, err = await asyncio.to_thread(run, "get", "-r", cap, "-o", str(dest))
    assert code == 1
    assert "already exists" in err
    (dest / "a.txt").write_text("changed")
    code, out, err = await asyncio.to_thread(run, "get", "-r", cap, "-o", str(dest), "--force")
    assert code == 0, err
    assert tree_state(dest) == tree_state(src)

    code, out, err = await asyncio.to_thread(run, "put", "-r", str(tmp_path / "missing"))
    assert code == 1
    assert "no such folder" in err


async def test_an_upload_that_arrives_in_tiny_pieces(api: ApiServer) -> None:
    # A chunked body in 3-byte pieces: parts and boundaries split anywhere still parse
    # (the pushback case itself is pinned in tests/unit/api/test_folders_multipart.py).
    body, content_type = multipart(
        [("file", f"f{i}.txt", bytes([65 + i]) * (100 + i)) for i in range(5)]
    )

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 3):
            yield body[start : start + 3]
            await asyncio.sleep(0)

    async with http(api) as client:
        answer = await client.put(
            "/v1/folders/trickle", content=trickle(), headers={"Content-Type": content_type}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["size"] == sum(100 + i for i in range(5))


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


async def test_an_upload_cut_short_catalogs_nothing(api: ApiServer) -> None:
    body, content_type = multipart([("file", "a.txt", b"a" * 1000), ("file", "b.txt", b"b" * 1000)])
    port = int(api.url.rsplit(":", 1)[1])
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT /v1/folders/cut HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    await wait_for(lambda: api.active_requests == 1, "the upload to start")
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: api.active_requests == 0, "the upload to stop")
    assert await api.node.list_files() == []
    # Nothing broke: the same upload, whole, is stored.
    async with http(api) as client:
        answer = await client.put(
            "/v1/folders/cut", content=body, headers={"Content-Type": content_type}
        )
        assert answer.status_code == 201


async def test_a_cancelled_restore_leaves_nothing(api: ApiServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    cap = (await api.node.store_folder("f", src)).cap
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    task: asyncio.Task[object] | None = None

    def cancel_on_first_bytes(_: int) -> None:
        assert task is not None
        task.cancel()

    task = asyncio.ensure_future(api.node.get_folder(cap, out, progress=cancel_on_first_bytes))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no staging
    await api.node.get_folder(cap, out)  # and the node still restores it
    assert tree_state(out) == tree_state(src)


async def test_a_malformed_part_header_is_a_400(api: ApiServer) -> None:
    # Found by schemathesis: aiohttp's parser raised InvalidHeader, which became a 500.
    body = b"--b0undary\r\n[]--b0undary--\r\n"
    async with http(api) as client:
        answer = await client.put(
            "/v1/folders/x",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
        assert answer.status_code == 400, answer.text
        assert "malformed multipart body" in answer.json()["error"]["message"]
        assert (await client.get("/v1/files")).json() == []
