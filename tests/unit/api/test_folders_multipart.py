"""The folder upload's multipart plumbing, with a scripted stream (no sockets)."""

from __future__ import annotations

from typing import cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader
from multidict import CIMultiDict

from shoal.api.folders import _field, _Pushback


class Scripted:
    """A stream whose reads return scripted lengths (short ones, then long ones)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.pos, self.sizes, self.calls = data, 0, sizes, 0

    async def read(self, n: int = -1) -> bytes:
        size = self.sizes[self.calls % len(self.sizes)]
        self.calls += 1
        take = len(self.data) - self.pos if n < 0 else min(n, size)
        chunk = self.data[self.pos : self.pos + take]
        self.pos += len(chunk)
        return chunk

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        line = self.data[self.pos : end]
        self.pos = end
        return line

    def at_eof(self) -> bool:
        return self.pos >= len(self.data)

    def unread_data(self, data: bytes) -> None:
        raise AssertionError("aiohttp's deprecated unread_data() must not be reached")


async def test_bytes_read_too_far_are_kept_by_the_pushback_buffer() -> None:
    boundary = "XyZ-boundary-0123456789"
    parts = [("mtime_ns", b"1700000000000000000"), ("file", b"F" * 9000), ("mode", b"644")]
    body = b""
    for name, value in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    # Reads of 2 bytes (shorter than the boundary) then long ones: the multipart reader
    # reads past what it asked for and must hand the rest back.
    pushback = _Pushback(cast(StreamReader, Scripted(body, [2, 5000])))
    handed_back: list[int] = []
    original = pushback.unread_data

    def spy(data: bytes) -> None:
        handed_back.append(len(data))
        original(data)

    pushback.unread_data = spy  # type: ignore[method-assign]
    headers = CIMultiDict({"Content-Type": f"multipart/form-data; boundary={boundary}"})
    reader = MultipartReader(headers, cast(StreamReader, pushback))
    got = []
    while (part := await reader.next()) is not None:
        assert isinstance(part, BodyPartReader)
        if part.name == "file":
            data = bytearray()
            while chunk := await part.read_chunk(4096):
                data += chunk
            got.append((part.name, bytes(data)))
        else:
            got.append((part.name, (await _field(part, str(part.name))).encode()))
    assert got == parts
    assert handed_back  # the case this adapter exists for did happen
