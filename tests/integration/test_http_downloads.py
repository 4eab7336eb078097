"""Downloads over the HTTP API on a real node: Range, ETag, If-None-Match, HEAD, media types."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shoal import Node
from shoal.api.http import ApiServer, serve_api
from shoal.content import ReadCap, iter_tree
from shoal.ids import encode_id

SIZE = 3 * 1024 * 1024 + 1000  # four chunks of 1 MiB, the last one short


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0", replicas=1) as node,
        serve_api(node, data_dir) as server,
    ):
        yield server


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {api.token}"}, trust_env=False
    ) as client:
        yield client


@pytest.fixture
async def stored(api: ApiServer) -> tuple[bytes, str]:
    data = os.urandom(SIZE)
    cap = await api.node.store("movie.mp4", data)
    return data, cap


async def test_whole_file_headers(http: httpx.AsyncClient, stored: tuple[bytes, str]) -> None:
    data, cap = stored
    answer = await http.get("/v1/files/movie.mp4")
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["Content-Length"] == str(SIZE)
    assert answer.headers["Content-Type"] == "video/mp4"  # guessed from the name at put
    assert answer.headers["ETag"] == f'"{encode_id(ReadCap.parse(cap).cid)}"'
    assert answer.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-19", 10, 20),
        ("bytes=1048570-2097160", 1048570, 2097161),  # across two chunk boundaries
        ("bytes=3145728-", 3145728, SIZE),  # the last, short chunk only
        ("bytes=-100", SIZE - 100, SIZE),
        ("bytes=3000000-99999999", 3000000, SIZE),
    ],
)
async def test_single_ranges(
    http: httpx.AsyncClient, stored: tuple[bytes, str], header: str, start: int, end: int
) -> None:
    data, cap = stored
    for url in ("/v1/files/movie.mp4", f"/v1/caps/{cap}"):
        answer = await http.get(url, headers={"Range": header})
        assert answer.status_code == 206, answer.text
        assert answer.content == data[start:end]
        assert answer.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
        assert answer.headers["Content-Length"] == str(end - start)


async def test_unsatisfiable_range_is_416_with_the_size(
    http: httpx.AsyncClient, stored: tuple[bytes, str]
) -> None:
    data, _ = stored
    answer = await http.get("/v1/files/movie.mp4", headers={"Range": f"bytes={SIZE}-"})
    assert answer.status_code == 416
    assert answer.headers["Content-Range"] == f"bytes */{SIZE}"
    assert answer.json()["error"]["code"] == "config"
    # Several ranges, or a range that does not parse, get the whole file.
    for header in ("bytes=0-1,4-5", "pages=1-2"):
        whole = await http.get("/v1/files/movie.mp4", headers={"Range": header})
        assert whole.status_code == 200
        assert whole.content == data


async def test_if_range_with_another_etag_gets_the_whole_file(
    http: httpx.AsyncClient, stored: tuple[bytes, str]
) -> None:
    data, _ = stored
    answer = await http.get(
        "/v1/files/movie.mp4", headers={"Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert answer.status_code == 200
    assert answer.content == data


async def test_if_none_match_and_head(http: httpx.AsyncClient, stored: tuple[bytes, str]) -> None:
    _, cap = stored
    etag = (await http.head("/v1/files/movie.mp4")).headers["ETag"]
    not_modified = await http.get("/v1/files/movie.mp4", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    changed = await http.get(f"/v1/caps/{cap}", headers={"If-None-Match": '"stale"'})
    assert changed.status_code == 200
    head = await http.head(f"/v1/caps/{cap}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(SIZE)
    assert head.content == b""


async def test_media_type_by_cap_is_guessed_from_a_given_name(
    api: ApiServer, http: httpx.AsyncClient
) -> None:
    cap = await api.node.store("notes", b"plain words", media_type="text/markdown")
    by_name = await http.get("/v1/files/notes")
    assert by_name.headers["Content-Type"].startswith("text/markdown")
    by_cap = await http.get(f"/v1/caps/{cap}")
    assert by_cap.headers["Content-Type"] == "application/octet-stream"
    named = await http.get(f"/v1/caps/{cap}", params={"name": "photo.png"})
    assert named.headers["Content-Type"] == "image/png"
    assert "photo.png" in named.headers["Content-Disposition"]
    bad = await http.get(f"/v1/caps/{cap}", params={"name": "a\nb"})
    assert bad.status_code == 400


async def test_an_empty_file_has_no_satisfiable_range(
    api: ApiServer, http: httpx.AsyncClient
) -> None:
    await api.node.store("empty", b"")
    whole = await http.get("/v1/files/empty")
    assert (whole.status_code, whole.content) == (200, b"")
    ranged = await http.get("/v1/files/empty", headers={"Range": "bytes=0-"})
    assert ranged.status_code == 416


async def test_a_range_fetches_only_the_blocks_it_covers(
    api: ApiServer, http: httpx.AsyncClient, stored: tuple[bytes, str]
) -> None:
    data, cap = stored
    blocks = api.node._rt.blocks
    first = next(iter(iter_tree(ReadCap.parse(cap), blocks.get)))
    assert blocks.delete(first.block_id)  # the only copy of the file's first chunk
    tail = await http.get("/v1/files/movie.mp4", headers={"Range": "bytes=2097152-2097161"})
    assert tail.status_code == 206
    assert tail.content == data[2097152:2097162]
    head = await http.get("/v1/files/movie.mp4", headers={"Range": "bytes=0-9"})
    assert head.status_code == 404  # this one needs the missing block
