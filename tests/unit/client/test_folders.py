"""The blocking client's folder helpers: the listing check and the multipart body."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import BodyPartReader, MultipartReader, StreamReader
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict

from shoal.client.folders import entries_from_json, multipart_body
from shoal.content import ReadCap
from shoal.errors import IntegrityError
from shoal.node.folder_disk import scan_folder

CAP = str(ReadCap(bytes(32), bytes(range(32))))


def raw(**kw: Any) -> dict[str, Any]:
    return {"name": "a", "type": "file", "size": 1, "mtime_ns": 5, "mode": 0o644, "cap": CAP} | kw


def test_a_good_listing_is_read() -> None:
    (one,) = entries_from_json([raw()])
    assert (one.name, one.size, one.mtime_ns, one.mode) == ("a", 1, 5, 0o644)


@pytest.mark.parametrize(
    "bad",
    [
        raw(name=".."),
        raw(name="a/b"),
        raw(name="x\x00"),
        raw(name=7),
        raw(mode=0o4755),
        raw(size=-1),
        raw(type="link"),
        raw(cap=str(ReadCap(bytes(32), bytes(32)).verify_cap)),
        {"name": "a"},
        "not an entry",
    ],
)
def test_a_listing_the_client_cannot_trust_is_refused(bad: Any) -> None:
    with pytest.raises(IntegrityError):
        entries_from_json([bad])


async def test_the_multipart_body_parses_back(tmp_path: Path) -> None:
    (tmp_path / "sub" / "empty").mkdir(parents=True)
    (tmp_path / "sub" / "ü x.txt").write_bytes(b"data" * 1000)
    (tmp_path / "top").write_bytes(b"")
    items, _ = scan_folder(tmp_path)
    sent: list[int] = []
    body = b"".join(multipart_body(items, "bnd", lambda n, total: sent.append(n)))
    assert sum(sent) == 4000
    stream = StreamReader(
        BaseProtocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop()
    )
    stream.feed_data(body)
    stream.feed_eof()
    reader = MultipartReader(
        CIMultiDict({"Content-Type": "multipart/form-data; boundary=bnd"}), stream
    )
    parts = []
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        parts.append((part.name, part.filename, bytes(await part.read())))
    names = [(n, f) for n, f, _ in parts if n in ("file", "dir")]
    # Parents before children, each directory's entries in byte order.
    assert names == [("dir", None), ("file", "top"), ("dir", None), ("file", "sub/ü x.txt")]
    dirs = [v for n, _, v in parts if n == "dir"]
    assert dirs == [b"sub", b"sub/empty"]
    assert [v for n, _, v in parts if n == "file"] == [b"", b"data" * 1000]
    assert sum(1 for n, _, _ in parts if n == "mtime_ns") == 4
