"""Write the known-answer vectors of the ``shoal-v1`` content format.

Run from the repository root: ``.venv/bin/python tests/vectors/generate.py``. It rewrites
``chunks.json``, ``files.json`` and ``caps.json`` next to this script.

The expected outputs are computed by an independent reference implementation written from
``docs/content-format.md`` (straight calls to hashlib, blake3, AES-GCM and msgpack, and a batch
tree build instead of the streaming builder). The script then checks that ``shoal.content``
produces exactly the same bytes and refuses to write anything if it does not. The vectors are
committed; ``tests/unit/content/test_vectors.py`` checks the code still reproduces them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import blake3
import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal.content import (
    Chunker,
    FileInfo,
    ManifestBuilder,
    ReadCap,
    Redundancy,
    VerifyCap,
    seal_chunk,
)
from shoal.ids import encode_id

HERE = Path(__file__).resolve().parent
SECRET = bytes(range(32))
CHUNK_LABEL = b"shoal-v1 chunk key\x00"
MANIFEST_LABEL = b"shoal-v1 manifest key\x00"
NONCE = bytes(12)


def check(condition: bool, what: str) -> None:
    """Stop before writing anything when the code and the reference disagree (even with -O)."""
    if not condition:
        raise SystemExit(f"shoal.content disagrees with the reference implementation: {what}")


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking test plaintext."""
    return bytes((i * 7 + 3) % 251 for i in range(size))


# ----- reference implementation (from the spec, not from shoal.content) -----------------------


def ref_prf(secret: bytes, label: bytes, data: bytes) -> bytes:
    return blake3.blake3(label + data, key=secret).digest()


def ref_seal(key: bytes, plaintext: bytes) -> bytes:
    return AESGCM(key).encrypt(NONCE, plaintext, None)


def ref_chunk(secret: bytes, plaintext: bytes) -> tuple[bytes, bytes, bytes]:
    key = ref_prf(secret, CHUNK_LABEL, plaintext)
    data = ref_seal(key, plaintext)
    return key, data, hashlib.sha256(data).digest()


def ref_manifest(
    secret: bytes,
    depth: int,
    replicas: int,
    entries: list[tuple[bytes, int, bytes, int]],
    info: dict[str, Any] | None,
) -> tuple[bytes, int, bytes, int, bytes]:
    """Seal one manifest; entries are (block id, stored size, key, plaintext size)."""
    sealed: dict[str, Any] = {"k": [[key, psize] for _, _, key, psize in entries]}
    if info is not None:
        sealed["f"] = info
    sealed_plain = msgpack.packb(sealed, use_bin_type=True)
    key = ref_prf(secret, MANIFEST_LABEL, sealed_plain)
    block = msgpack.packb(
        {
            "v": 1,
            "d": depth,
            "r": {"t": "replicate", "r": replicas},
            "c": [[bid, ssize] for bid, ssize, _, _ in entries],
            "s": ref_seal(key, sealed_plain),
        },
        use_bin_type=True,
    )
    total = sum(psize for _, _, _, psize in entries)
    return hashlib.sha256(block).digest(), len(block), key, total, block


def ref_file(case: dict[str, Any]) -> tuple[dict[bytes, bytes], str]:
    """Batch build: group each level by fanout until one node is left; that node is the root."""
    plaintext = bytes.fromhex(case["plaintext"])
    size, fanout = case["chunk_size"], case["fanout"]
    blocks: dict[bytes, bytes] = {}
    level: list[tuple[bytes, int, bytes, int]] = []
    for start in range(0, len(plaintext), size):
        piece = plaintext[start : start + size]
        key, data, bid = ref_chunk(SECRET, piece)
        blocks[bid] = data
        level.append((bid, len(data), key, len(piece)))
    depth = 0
    while len(level) > fanout:
        parents = []
        for start in range(0, len(level), fanout):
            bid, ssize, key, total, block = ref_manifest(
                SECRET, depth, case["replicas"], level[start : start + fanout], None
            )
            blocks[bid] = block
            parents.append((bid, ssize, key, total))
        level, depth = parents, depth + 1
    info = {
        "n": case["name"],
        "z": len(plaintext),
        "m": case["media_type"],
        "t": case["mtime"],
        "c": case["created"],
    }
    bid, _, key, _, block = ref_manifest(SECRET, depth, case["replicas"], level, info)
    blocks[bid] = block
    return blocks, f"shoal:r:{encode_id(bid)}:{encode_id(key)}"


# ----- shoal.content, as the node pipeline drives it -------------------------------------------


def shoal_file(case: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], ReadCap]:
    plaintext = bytes.fromhex(case["plaintext"])
    chunker = Chunker(case["chunk_size"])
    builder = ManifestBuilder(
        SECRET, redundancy=Redundancy("replicate", case["replicas"]), fanout=case["fanout"]
    )
    out: list[tuple[bytes, bytes]] = []
    pieces = chunker.feed(plaintext)
    tail = chunker.finish()
    for piece in [*pieces, *([tail] if tail is not None else [])]:
        sealed = seal_chunk(SECRET, piece)
        out.append((sealed.block_id, sealed.data))
        out.extend(builder.add(sealed.block_id, len(sealed.data), sealed.key, len(piece)))
    info = FileInfo(
        case["name"], len(plaintext), case["media_type"], case["mtime"], case["created"]
    )
    blocks, cap = builder.finish(info)
    out.extend(blocks)
    return out, cap


def file_case(
    name: str, plaintext: bytes, chunk_size: int, fanout: int, **kw: Any
) -> dict[str, Any]:
    case: dict[str, Any] = {
        "description": kw.pop("description"),
        "name": name,
        "media_type": kw.pop("media_type", "application/octet-stream"),
        "mtime": kw.pop("mtime", 1700000000.5),
        "created": kw.pop("created", 1700000100.25),
        "replicas": kw.pop("replicas", 3),
        "chunk_size": chunk_size,
        "fanout": fanout,
        "plaintext": plaintext.hex(),
    }
    check(not kw, f"unknown case fields {sorted(kw)}")
    return case


def build_chunks() -> dict[str, Any]:
    cases = []
    for text in [b"", b"a", b"shoal", pattern(100), pattern(1000)]:
        key, data, bid = ref_chunk(SECRET, text)
        sealed = seal_chunk(SECRET, text)
        check((sealed.key, sealed.data, sealed.block_id) == (key, data, bid), f"chunk {text!r}")
        cases.append(
            {
                "plaintext": text.hex(),
                "key": key.hex(),
                "data": data.hex(),
                "block_id": encode_id(bid),
            }
        )
    other = bytes(range(1, 33))
    key, data, bid = ref_chunk(other, b"shoal")
    cases.append(
        {
            "secret": other.hex(),
            "plaintext": b"shoal".hex(),
            "key": key.hex(),
            "data": data.hex(),
            "block_id": encode_id(bid),
        }
    )
    return {
        "profile": "shoal-v1",
        "description": "seal_chunk(secret, plaintext); secret is the top-level one unless given",
        "secret": SECRET.hex(),
        "cases": cases,
    }


def build_files() -> dict[str, Any]:
    cases = [
        file_case(
            "empty.txt",
            b"",
            4,
            2,
            description="empty file: depth-0 root, no children",
            media_type="text/plain",
            mtime=None,
        ),
        file_case("one.bin", b"\x01", 4, 2, description="one byte: one chunk, depth-0 root"),
        file_case(
            "exact.bin",
            pattern(12),
            4,
            3,
            description="exactly fanout chunks: still a single depth-0 root",
        ),
        file_case(
            "square.bin",
            pattern(36),
            4,
            3,
            description="exactly fanout**2 chunks: depth-1 root with 3 full children",
        ),
        file_case(
            "tree.bin",
            pattern(37),
            4,
            2,
            description="10 chunks (last one 1 byte), fanout 2: depth-3 tree",
            replicas=2,
        ),
        file_case(
            "héllo wörld.txt",
            b"hello, world\n" * 3,
            16,
            16384,
            description="default fanout, non-ASCII name, 3 chunks",
            media_type="text/plain; charset=utf-8",
        ),
    ]
    for case in cases:
        ref_blocks, ref_cap = ref_file(case)
        blocks, cap = shoal_file(case)
        what = case["description"]
        check(dict(blocks) == ref_blocks, f"blocks of {what}")
        check(len(blocks) == len(ref_blocks), f"a block emitted twice in {what}")
        check(str(cap) == ref_cap, f"cap of {what}")
        check(blocks[-1][0] == cap.cid, f"root not last in {what}")
        case["cap"] = str(cap)
        case["blocks"] = [{"id": encode_id(bid), "data": data.hex()} for bid, data in blocks]
    return {
        "profile": "shoal-v1",
        "description": (
            "put pipeline: Chunker(chunk_size) -> seal_chunk -> ManifestBuilder(fanout, "
            "Redundancy('replicate', replicas)) -> finish(FileInfo). 'blocks' lists every block "
            "in the order the pipeline emits it (each chunk, then the manifests add() returns, "
            "then finish()'s, root last)."
        ),
        "secret": SECRET.hex(),
        "cases": cases,
    }


def build_caps() -> dict[str, Any]:
    cid, key = bytes(range(32)), bytes(range(32, 64))
    read, verify = str(ReadCap(cid, key)), str(VerifyCap(cid))
    check(read == f"shoal:r:{encode_id(cid)}:{encode_id(key)}", "read cap")
    check(verify == f"shoal:v:{encode_id(cid)}", "verify cap")
    return {
        "profile": "shoal-v1",
        "cases": [
            {"cid": cid.hex(), "key": key.hex(), "read_cap": read, "verify_cap": verify},
        ],
    }


def main() -> None:
    for name, data in [
        ("chunks.json", build_chunks()),
        ("files.json", build_files()),
        ("caps.json", build_caps()),
    ]:
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {name} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
