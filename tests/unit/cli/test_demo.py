"""The demo's generated picture is a real PNG."""

from __future__ import annotations

import struct
import zlib

from shoal.cli.demo import make_png


def test_make_png_is_a_valid_png() -> None:
    png = make_png(64, 32)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds, idat = 8, [], b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data)
        kinds.append(kind)
        if kind == b"IHDR":
            assert struct.unpack(">IIBBBBB", data) == (64, 32, 8, 2, 0, 0, 0)
        if kind == b"IDAT":
            idat += data
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert len(zlib.decompress(idat)) == 32 * (1 + 64 * 3)


def test_make_png_is_deterministic() -> None:
    assert make_png() == make_png()
