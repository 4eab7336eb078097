"""The code must reproduce the committed known-answer vectors (tests/vectors/*.json) exactly.

The vectors were written by tests/vectors/generate.py, an independent reference implementation
of docs/content-format.md that does not import shoal; a failure here means the format changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shoal.content import (
    MANIFEST_VERSION,
    Chunker,
    ManifestBuilder,
    ReadCap,
    Redundancy,
    VerifyCap,
    open_chunk,
    parse_cap,
    seal_chunk,
    walk_blocks,
)
from shoal.errors import ShoalError
from shoal.ids import encode_id

from .helpers import fetcher, get

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["profile"] == "shoal-v1"
    return data


CHUNKS = load("chunks.json")
FILES = load("files.json")
REFUSED = load("refused.json")
CAPS = load("caps.json")


def store_of(case: dict[str, Any]) -> dict[bytes, bytes]:
    return {parse_cap(f"shoal:v:{b['id']}").cid: bytes.fromhex(b["data"]) for b in case["blocks"]}


def test_vectors_are_of_this_manifest_version() -> None:
    assert FILES["manifest_version"] == REFUSED["manifest_version"] == MANIFEST_VERSION == 2


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


@pytest.mark.parametrize("case", FILES["cases"], ids=lambda c: c["label"])
def test_file_vectors(case: dict[str, Any]) -> None:
    secret = bytes.fromhex(FILES["secret"])
    plaintext = bytes.fromhex(case["plaintext"])
    chunker = Chunker(case["chunk_size"])
    builder = ManifestBuilder(
        secret,
        chunk_size=case["chunk_size"],
        fanout=case["fanout"],
        redundancy=Redundancy("replicate", case["replicas"]),
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
    blocks, cap = builder.finish()
    emitted += blocks
    # The same blocks (the reference lists them level by level, the builder as they complete),
    # none twice, and the root last.
    expected = {(b["id"], b["data"]) for b in case["blocks"]}
    assert len(emitted) == len(case["blocks"])
    assert {(encode_id(b), d.hex()) for b, d in emitted} == expected
    assert str(cap) == case["cap"]
    assert emitted[-1][0] == cap.cid
    # And the committed blocks read back to the plaintext through the committed cap.
    store = store_of(case)
    size, back = get(ReadCap.parse(case["cap"]), store)
    assert (size, back) == (len(plaintext), plaintext)
    assert sorted(r.block_id for r in walk_blocks(cap.cid, fetcher(store))) == sorted(store)


def test_file_vectors_cover_the_required_shapes() -> None:
    cases = FILES["cases"]
    assert any(c["plaintext"] == "" for c in cases)
    assert any(len(c["plaintext"]) == 2 for c in cases)
    assert any(c["fanout"] == 2 and len(c["blocks"]) > 10 for c in cases)


@pytest.mark.parametrize("case", REFUSED["cases"], ids=lambda c: c["label"])
def test_refused_vectors(case: dict[str, Any]) -> None:
    store = store_of(case)
    fetch = fetcher(store)
    with pytest.raises(ShoalError) as info:
        get(ReadCap.parse(case["cap"]), store)
    assert info.value.code == case["error"], str(info.value)
    if case["error"] == "integrity":
        # Intact blocks that lie are refused by the keyless walk too, or walked as far as it
        # can check without the size; either way it ends, with no other error.
        assert keyless_outcome(ReadCap.parse(case["cap"]).cid, fetch) in ("ok", "integrity")


def keyless_outcome(cid: bytes, fetch: Callable[[bytes], bytes]) -> str:
    try:
        list(walk_blocks(cid, fetch))
    except ShoalError as exc:
        return exc.code
    return "ok"


def test_refused_vectors_cover_the_attacks() -> None:
    labels = {c["label"] for c in REFUSED["cases"]}
    assert {"size-lies", "version-1", "empty-children", "tower", "wrong-key"} <= labels


@pytest.mark.parametrize("case", CAPS["cases"])
def test_cap_vectors(case: dict[str, Any]) -> None:
    cid, key = bytes.fromhex(case["cid"]), bytes.fromhex(case["key"])
    assert str(ReadCap(cid, key)) == case["read_cap"]
    assert str(VerifyCap(cid)) == case["verify_cap"]
    assert parse_cap(case["read_cap"]) == ReadCap(cid, key)
    assert parse_cap(case["verify_cap"]) == VerifyCap(cid)
