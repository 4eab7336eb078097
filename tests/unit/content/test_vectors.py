"""The code must reproduce the committed known-answer vectors (tests/vectors/*.json) exactly.

The vectors were written by tests/vectors/generate.py from an independent reference
implementation of docs/content-format.md; a failure here means the format changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shoal.content import (
    Chunker,
    FileInfo,
    ManifestBuilder,
    ReadCap,
    Redundancy,
    VerifyCap,
    open_chunk,
    parse_cap,
    seal_chunk,
)
from shoal.ids import encode_id

from .helpers import fetcher, get

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["profile"] == "shoal-v1"
    return data


CHUNKS = load("chunks.json")
FILES = load("files.json")
CAPS = load("caps.json")


@pytest.mark.parametrize("case", CHUNKS["cases"], ids=lambda c: f"{len(c['plaintext']) // 2}B")
def test_chunk_vectors(case: dict[str, Any]) -> None:
    secret = bytes.fromhex(case.get("secret", CHUNKS["secret"]))
    plaintext = bytes.fromhex(case["plaintext"])
    sealed = seal_chunk(secret, plaintext)
    assert sealed.key.hex() == case["key"]
    assert sealed.data.hex() == case["data"]
    assert encode_id(sealed.block_id) == case["block_id"]
    assert open_chunk(sealed.key, sealed.block_id, bytes.fromhex(case["data"])) == plaintext


def test_chunk_vectors_cover_empty_and_one_byte() -> None:
    sizes = {len(c["plaintext"]) // 2 for c in CHUNKS["cases"]}
    assert {0, 1} <= sizes


@pytest.mark.parametrize("case", FILES["cases"], ids=lambda c: c["name"])
def test_file_vectors(case: dict[str, Any]) -> None:
    secret = bytes.fromhex(FILES["secret"])
    plaintext = bytes.fromhex(case["plaintext"])
    chunker = Chunker(case["chunk_size"])
    builder = ManifestBuilder(
        secret, redundancy=Redundancy("replicate", case["replicas"]), fanout=case["fanout"]
    )
    emitted: list[tuple[bytes, bytes]] = []
    # Feed in odd-sized pieces: the split must not matter.
    pieces = [plaintext[i : i + 3] for i in range(0, len(plaintext), 3)]
    chunks = [c for piece in pieces for c in chunker.feed(piece)]
    tail = chunker.finish()
    for chunk in chunks + ([tail] if tail is not None else []):
        sealed = seal_chunk(secret, chunk)
        emitted.append((sealed.block_id, sealed.data))
        emitted += builder.add(sealed.block_id, len(sealed.data), sealed.key, len(chunk))
    info = FileInfo(
        case["name"], len(plaintext), case["media_type"], case["mtime"], case["created"]
    )
    blocks, cap = builder.finish(info)
    emitted += blocks
    assert [{"id": encode_id(b), "data": d.hex()} for b, d in emitted] == case["blocks"]
    assert str(cap) == case["cap"]
    # And the committed blocks read back to the plaintext through the committed cap.
    store = {parse_cap(f"shoal:v:{b['id']}").cid: bytes.fromhex(b["data"]) for b in case["blocks"]}
    read_info, back = get(ReadCap.parse(case["cap"]), store)
    assert back == plaintext
    assert read_info == info
    assert fetcher(store)(cap.cid) == emitted[-1][1]


def test_file_vectors_cover_the_required_shapes() -> None:
    cases = FILES["cases"]
    assert any(c["plaintext"] == "" for c in cases)
    assert any(len(c["plaintext"]) == 2 for c in cases)
    assert any(c["fanout"] == 2 and len(c["blocks"]) > 10 for c in cases)


@pytest.mark.parametrize("case", CAPS["cases"])
def test_cap_vectors(case: dict[str, Any]) -> None:
    cid, key = bytes.fromhex(case["cid"]), bytes.fromhex(case["key"])
    assert str(ReadCap(cid, key)) == case["read_cap"]
    assert str(VerifyCap(cid)) == case["verify_cap"]
    assert parse_cap(case["read_cap"]) == ReadCap(cid, key)
    assert parse_cap(case["verify_cap"]) == VerifyCap(cid)
