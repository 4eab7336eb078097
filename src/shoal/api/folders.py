"""Folder endpoints of the HTTP API: upload (multipart), listing (JSON), download (tar).

How it works:

- ``PUT /v1/folders/{name}`` takes ``multipart/form-data``, read part by part as it arrives
  (never buffered): each ``file`` part is one file, its ``filename`` the file's relative path
  (``sub/dir/a.txt``), its body streamed into the node; a ``dir`` part (value: a relative path)
  declares a directory, so empty ones survive; ``mtime`` (Unix seconds, decimals allowed) or
  ``mtime_ns`` (integer nanoseconds: exact) and ``mode`` (octal, e.g. ``644``) parts apply to
  the next ``file`` or ``dir`` part only. Paths are
  checked as they come (:func:`~shoal.content.directory.split_relative_path`): an absolute
  path, ``..``, an empty part or a control character fails the whole upload with 400, and
  nothing is cataloged.
- ``GET /v1/folders/{ref}`` answers one directory's entries (``ref``: a catalog name or a read
  cap; a sub-folder is listed by the cap its entry gives).
- ``GET /v1/folders/{ref}/archive`` streams the whole tree as a POSIX (pax) tar, under one
  top-level folder, file by file as the node decrypts them (no ``Content-Length``: chunked).
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import AsyncIterator
from typing import Final, cast
from urllib.parse import quote

from aiohttp import BodyPartReader, ClientPayloadError, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from shoal.api.keys import NODE_KEY
from shoal.api.ranges import etag_matches, strong_etag
from shoal.content.caps import looks_like_cap
from shoal.content.directory import EnterDir, LeaveDir, PutFile
from shoal.errors import ConfigError, TransportError
from shoal.ids import encode_id
from shoal.names import check_name, local_file_name, printable
from shoal.node.folders import FolderItem
from shoal.node.service import Node

__all__ = ["add_folder_routes"]

log = logging.getLogger(__name__)

_FIELD_LIMIT: Final = 4096  # bytes of a small field (mtime, mode, dir path)
_BLOCK: Final = tarfile.BLOCKSIZE
_PART_NAMES: Final = ("file", "dir", "mtime", "mtime_ns", "mode")


class _UploadInterrupted(TransportError):
    """The client stopped sending a folder upload before its end."""


async def _field(part: BodyPartReader, what: str) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(_FIELD_LIMIT):
        data += chunk
        if len(data) > _FIELD_LIMIT:
            raise ConfigError(f"the {what} field of a folder upload is too long")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} field of a folder upload is not UTF-8") from None


def _mtime_ns(text: str) -> int:
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError("mtime must be Unix seconds, e.g. 1700000000.5") from None
    if not -(2**62) < seconds * 1e9 < 2**62:
        raise ConfigError("mtime is out of range")
    return round(seconds * 1e9)


def _int_ns(text: str) -> int:
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise ConfigError("mtime_ns must be an integer: nanoseconds since 1970")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ConfigError("mtime_ns is out of range")
    return value


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError("mode must be octal permission bits, e.g. 644") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError("mode must be at most 777 (permission bits only)")
    return mode


async def _file_body(part: BodyPartReader, size: int) -> AsyncIterator[bytes]:
    try:
        while chunk := await part.read_chunk(size):
            yield chunk
    except (ClientPayloadError, ConnectionError) as exc:
        raise _UploadInterrupted(f"the folder upload was interrupted: {exc}") from exc


class _Pushback:
    """``request.content`` with a pushback buffer of its own.

    aiohttp's multipart reader hands bytes it read too far back with ``unread_data``, which
    aiohttp itself deprecates (a warning on every such call, an error under this project's
    tests). This adapter gives the reader the few methods it uses, and keeps what is handed
    back here instead.
    """

    def __init__(self, stream: StreamReader) -> None:
        self._stream = stream
        self._head = b""

    async def read(self, n: int = -1) -> bytes:
        if not self._head:
            return await self._stream.read(n)
        if n < 0 or n >= len(self._head):
            data, self._head = self._head, b""
        else:
            data, self._head = self._head[:n], self._head[n:]
        return data

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        if not self._head:
            return await self._stream.readline(max_line_length=max_line_length)
        end = self._head.find(b"\n")
        if end >= 0:
            line, self._head = self._head[: end + 1], self._head[end + 1 :]
            return line
        rest, self._head = self._head, b""
        return rest + await self._stream.readline(max_line_length=max_line_length)

    def at_eof(self) -> bool:
        return not self._head and self._stream.at_eof()

    def unread_data(self, data: bytes) -> None:
        self._head = bytes(data) + self._head


async def _items(request: web.Request, piece: int) -> AsyncIterator[FolderItem]:
    try:
        content = cast(StreamReader, _Pushback(request.content))
        reader = MultipartReader(request.headers, content)
        mtime: int | None = None
        mode: int | None = None
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ConfigError("a folder upload has no nested multipart parts")
            if part.name == "mtime":
                mtime = _mtime_ns(await _field(part, "mtime"))
            elif part.name == "mtime_ns":
                mtime = _int_ns(await _field(part, "mtime_ns"))
            elif part.name == "mode":
                mode = _mode(await _field(part, "mode"))
            elif part.name == "dir":
                yield FolderItem(await _field(part, "dir"), None, mtime, mode)
                mtime = mode = None
            elif part.name == "file":
                if not part.filename:
                    raise ConfigError("a file part needs a filename: the file's relative path")
                yield FolderItem(part.filename, _file_body(part, piece), mtime, mode)
                await part.release()  # whatever the node did not read (nothing, normally)
                mtime = mode = None
            else:
                raise ConfigError(f"unknown part in a folder upload; expected one of {_PART_NAMES}")
    except (ClientPayloadError, ConnectionError) as exc:
        raise _UploadInterrupted(f"the folder upload was interrupted: {exc}") from exc
    except (ValueError, HttpProcessingError) as exc:  # aiohttp's parser: a malformed body
        detail = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
        raise ConfigError(f"malformed multipart body: {printable(detail[:200])}") from None


async def _put_folder(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    if request.content_type != "multipart/form-data":
        raise ConfigError("a folder upload is multipart/form-data (see /docs)")
    node = request.app[NODE_KEY]
    try:
        result = await node.store_folder(name, _items(request, node.chunk_size))
    except _UploadInterrupted as exc:
        log.info("%s", exc)
        raise
    return web.json_response(result.to_json(), status=201)


async def _list_folder(request: web.Request) -> web.Response:
    ref = request.match_info["ref"]
    node = request.app[NODE_KEY]
    cap = await node.resolve(ref)
    # A folder is immutable: its CID is a strong validator of its listing.
    headers = {"ETag": strong_etag(encode_id(cap.cid)), "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, headers["ETag"]):
        return web.Response(status=304, headers=headers)
    entries = await node.list_folder(str(cap))
    return web.json_response(
        {
            "name": None if looks_like_cap(ref) else ref,
            "cap": str(cap),
            "size": sum(e.size for e in entries),
            "entries": [e.to_json() for e in entries],
        },
        headers=headers,
    )


def _tar_header(path: str, *, directory: bool, size: int, mtime_ns: int, mode: int) -> bytes:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    info.mtime = mtime_ns // 1_000_000_000 if mtime_ns % 1_000_000_000 == 0 else mtime_ns / 1e9
    info.mode = mode
    info.uname = info.gname = ""
    header: bytes = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
    return header


async def _archive(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["ref"]
    node = request.app[NODE_KEY]
    cap = await node.resolve(ref)
    top = encode_id(cap.cid) if looks_like_cap(ref) else local_file_name(ref)
    steps = node.walk_folder(str(cap))
    first = await anext(steps)  # the root listing: a bad cap is still a JSON error
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": _disposition(top + ".tar"),
            "ETag": strong_etag(encode_id(cap.cid)),
        }
    )
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        step: EnterDir | PutFile | LeaveDir | None = first
        while step is not None:
            await _write_step(response, node, top, step)
            step = await anext(steps, None)
        await response.write(bytes(2 * _BLOCK))
    except ConnectionError:
        log.debug("client went away during a folder download")
        return response
    except Exception as exc:
        log.warning("folder download failed mid-transfer: %s", exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def _write_step(
    response: web.StreamResponse, node: Node, top: str, step: EnterDir | PutFile | LeaveDir
) -> None:
    path = "/".join((top, *step.path))
    if isinstance(step, EnterDir):
        entry = step.entry
        await response.write(
            _tar_header(
                path + "/",
                directory=True,
                size=0,
                mtime_ns=entry.mtime_ns if entry else 0,
                mode=entry.mode if entry else 0o755,
            )
        )
    elif isinstance(step, PutFile):
        async with node.get(str(step.entry.cap)) as reader:
            await response.write(
                _tar_header(
                    path,
                    directory=False,
                    size=reader.size,
                    mtime_ns=step.entry.mtime_ns,
                    mode=step.entry.mode,
                )
            )
            async for chunk in reader:
                await response.write(chunk)
        if reader.size % _BLOCK:
            await response.write(bytes(_BLOCK - reader.size % _BLOCK))


def _disposition(name: str) -> str:
    """RFC 6266: an ASCII fallback ``filename`` and the exact UTF-8 ``filename*``."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\/' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def add_folder_routes(app: web.Application) -> None:
    """Add the folder endpoints to ``app``."""
    app.router.add_put("/v1/folders/{name}", _put_folder)
    app.router.add_get("/v1/folders/{ref}", _list_folder)
    app.router.add_get("/v1/folders/{ref}/archive", _archive)
