"""Write the known-answer vectors of the content format (profile ``shoal-v1``, manifest v2).

Run from the repository root: ``.venv/bin/python tests/vectors/generate.py``. It rewrites
``chunks.json``, ``files.json``, ``refused.json`` and ``caps.json`` next to this script.

This is an independent reference implementation written from ``docs/content-format.md``: it
does not import ``shoal`` (straight calls to hashlib, blake3, AES-GCM and msgpack, a batch tree
build instead of the streaming builder, its own base32). ``tests/unit/content/test_vectors.py``
checks that ``shoal.content`` reproduces every accepted vector byte for byte and refuses every
refused one with the stated error.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import blake3
import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = Path(__file__).resolve().parent
PROFILE = "shoal-v1"
VERSION = 2
SECRET = bytes(range(32))
CHUNK_LABEL = b"shoal-v1 chunk key\x00"
MANIFEST_LABEL = b"shoal-v1 manifest key\x00"
NONCE = bytes(12)
TAG = 16

Entry = tuple[bytes, int, bytes]  # (block id, stored size, key)


def id_text(raw: bytes) -> str:
    """Lowercase RFC 4648 base32 without padding."""
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def read_cap(cid: bytes, key: bytes) -> str:
    return f"shoal:r:{id_text(cid)}:{id_text(key)}"


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-looking test plaintext."""
    return bytes((i * 7 + 3) % 251 for i in range(size))


def prf(secret: bytes, label: bytes, data: bytes) -> bytes:
    return blake3.blake3(label + data, key=secret).digest()


def seal(key: bytes, plaintext: bytes) -> bytes:
    return AESGCM(key).encrypt(NONCE, plaintext, None)


def pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def chunk(secret: bytes, plaintext: bytes) -> tuple[bytes, bytes, bytes]:
    """(key, stored bytes, block id) of one chunk."""
    key = prf(secret, CHUNK_LABEL, plaintext)
    data = seal(key, plaintext)
    return key, data, hashlib.sha256(data).digest()


def sealed_map(keys: list[bytes], size: int | None, kind: str = "file") -> dict[str, Any]:
    return {"k": keys} if size is None else {"t": kind, "z": size, "k": keys}


def manifest(
    depth: int,
    chunk_size: int,
    fanout: int,
    replicas: int,
    entries: list[Entry],
    sealed: dict[str, Any],
    *,
    version: int = VERSION,
    redundancy: dict[str, Any] | None = None,
) -> tuple[bytes, bytes, bytes]:
    """(block id, block bytes, manifest key) of one manifest (``redundancy``: the "r" map,
    default replicate ``replicas``)."""
    sealed_plain = pack(sealed)
    key = prf(SECRET, MANIFEST_LABEL, sealed_plain)
    block = pack(
        {
            "v": version,
            "d": depth,
            "z": chunk_size,
            "f": fanout,
            "r": redundancy or {"t": "replicate", "r": replicas},
            "c": [[bid, stored] for bid, stored, _ in entries],
            "s": seal(key, sealed_plain),
        }
    )
    return hashlib.sha256(block).digest(), block, key


def build_tree(
    plaintext: bytes, chunk_size: int, fanout: int, replicas: int
) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
    """Batch build: group each level by fanout until one node is left; that node is the root.

    Returns the blocks in the order the streaming pipeline emits them (checked by the test
    separately, so here simply: chunks, then each level's manifests, root last), the CID and
    the root key.
    """
    blocks: list[tuple[bytes, bytes]] = []
    level: list[Entry] = []
    for start in range(0, len(plaintext), chunk_size):
        key, data, bid = chunk(SECRET, plaintext[start : start + chunk_size])
        blocks.append((bid, data))
        level.append((bid, len(data), key))
    depth = 0
    while len(level) > fanout:
        parents: list[Entry] = []
        for start in range(0, len(level), fanout):
            group = level[start : start + fanout]
            sealed = sealed_map([key for _, _, key in group], None)
            bid, block, key = manifest(depth, chunk_size, fanout, replicas, group, sealed)
            blocks.append((bid, block))
            parents.append((bid, len(block), key))
        level, depth = parents, depth + 1
    sealed = sealed_map([key for _, _, key in level], len(plaintext))
    bid, block, key = manifest(depth, chunk_size, fanout, replicas, level, sealed)
    blocks.append((bid, block))
    return blocks, bid, key


def blocks_json(blocks: list[tuple[bytes, bytes]]) -> list[dict[str, str]]:
    return [{"id": id_text(bid), "data": data.hex()} for bid, data in blocks]


def build_chunks() -> dict[str, Any]:
    cases = []
    for text in [b"", b"a", b"shoal", pattern(100), pattern(1000)]:
        key, data, bid = chunk(SECRET, text)
        cases.append(
            {
                "plaintext": text.hex(),
                "key": key.hex(),
                "data": data.hex(),
                "block_id": id_text(bid),
            }
        )
    other = bytes(range(1, 33))
    key, data, bid = chunk(other, b"shoal")
    cases.append(
        {
            "secret": other.hex(),
            "plaintext": b"shoal".hex(),
            "key": key.hex(),
            "data": data.hex(),
            "block_id": id_text(bid),
        }
    )
    return {
        "profile": PROFILE,
        "description": "seal_chunk(secret, plaintext); secret is the top-level one unless given",
        "secret": SECRET.hex(),
        "cases": cases,
    }


FILE_CASES: list[tuple[str, str, bytes, int, int, int]] = [
    # (label, description, plaintext, chunk size, fanout, replicas)
    ("empty", "empty file: depth-0 root, no children", b"", 4, 2, 3),
    ("one", "one byte: one chunk, depth-0 root", b"\x01", 4, 2, 3),
    ("exact", "exactly fanout chunks: still a single depth-0 root", pattern(12), 4, 3, 3),
    ("square", "exactly fanout**2 chunks: depth-1 root, 3 full children", pattern(36), 4, 3, 3),
    ("tree", "10 chunks (last one 1 byte), fanout 2: depth-3 tree", pattern(37), 4, 2, 2),
    ("wide", "default fanout, 3 chunks of 16 bytes", b"hello, world\n" * 3, 16, 16384, 3),
]


def build_files() -> dict[str, Any]:
    cases = []
    for label, description, plaintext, chunk_size, fanout, replicas in FILE_CASES:
        blocks, cid, key = build_tree(plaintext, chunk_size, fanout, replicas)
        cases.append(
            {
                "label": label,
                "description": description,
                "chunk_size": chunk_size,
                "fanout": fanout,
                "replicas": replicas,
                "plaintext": plaintext.hex(),
                "cap": read_cap(cid, key),
                "blocks": blocks_json(blocks),
            }
        )
    return {
        "profile": PROFILE,
        "manifest_version": VERSION,
        "description": (
            "put pipeline: Chunker(chunk_size) -> seal_chunk -> ManifestBuilder(chunk_size, "
            "fanout, Redundancy('replicate', replicas)) -> finish(). 'blocks' holds every block "
            "of the file: the chunks in file order, then the manifests level by level, the root "
            "last. The cap depends only on the plaintext, the secret, the chunk size, the "
            "fanout and the replicas."
        ),
        "secret": SECRET.hex(),
        "cases": cases,
    }


def refused_case(
    label: str, description: str, error: str, blocks: list[tuple[bytes, bytes]], cap: str
) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "error": error,
        "cap": cap,
        "blocks": blocks_json(blocks),
    }


def chunks_of(plaintext: bytes, size: int) -> tuple[list[tuple[bytes, bytes]], list[Entry]]:
    blocks, entries = [], []
    for start in range(0, len(plaintext), size):
        key, data, bid = chunk(SECRET, plaintext[start : start + size])
        blocks.append((bid, data))
        entries.append((bid, len(data), key))
    return blocks, entries


def root_over(
    entries: list[Entry],
    size: int,
    *,
    depth: int = 0,
    chunk_size: int = 4,
    fanout: int = 4,
    version: int = VERSION,
    kind: str = "file",
    redundancy: dict[str, Any] | None = None,
) -> tuple[bytes, bytes, bytes]:
    sealed = sealed_map([key for _, _, key in entries], size, kind)
    return manifest(
        depth, chunk_size, fanout, 3, entries, sealed, version=version, redundancy=redundancy
    )


def build_refused() -> dict[str, Any]:
    """Hostile or broken trees, every block intact (hashes right): all must be refused."""
    cases = []

    def add(
        label: str, description: str, error: str, blocks: list[tuple[bytes, bytes]], cap: str
    ) -> None:
        cases.append(refused_case(label, description, error, blocks, cap))

    data_blocks, entries = chunks_of(pattern(10), 4)  # chunks of 4, 4, 2 bytes

    bid, block, key = root_over(entries, 11)
    add("size-lies", "root says 11 bytes, its chunks hold 10", "integrity",
        [*data_blocks, (bid, block)], read_cap(bid, key))  # fmt: skip

    # Version 1 (pre-release): keys v d r c s; sealed children [key, size] and file info.
    v1_sealed = pack(
        {
            "k": [[key, 4 if i < 2 else 2] for i, (_, _, key) in enumerate(entries)],
            "f": {"n": "a.txt", "z": 10, "m": "text/plain", "t": None, "c": 1700000100.25},
        }
    )
    v1_key = prf(SECRET, MANIFEST_LABEL, v1_sealed)
    v1_block = pack(
        {
            "v": 1,
            "d": 0,
            "r": {"t": "replicate", "r": 3},
            "c": [[bid, stored] for bid, stored, _ in entries],
            "s": seal(v1_key, v1_sealed),
        }
    )
    v1_id = hashlib.sha256(v1_block).digest()
    add("version-1", "a version-1 root: a pre-release format, refused", "integrity",
        [*data_blocks, (v1_id, v1_block)], read_cap(v1_id, v1_key))  # fmt: skip

    bid, block, key = root_over(entries, 10, kind="dir")  # reserved for directories
    add("directory", "root of kind 'dir' (reserved for directories)", "integrity",
        [*data_blocks, (bid, block)], read_cap(bid, key))  # fmt: skip

    short_blocks, short_entries = chunks_of(pattern(3), 4)
    mixed = short_entries + entries[:1]  # a 3-byte chunk before a 4-byte one
    bid, block, key = root_over(mixed, 7)
    add("short-chunk-first", "a chunk other than the last is not full", "integrity",
        [*short_blocks, *data_blocks, (bid, block)], read_cap(bid, key))  # fmt: skip

    empty_key, empty_data, empty_id = chunk(SECRET, b"")
    zero = [(empty_id, len(empty_data), empty_key)] * 4
    bid, block, key = root_over(zero, 0)
    add("empty-children", "a 0-byte file listing four 0-byte chunks", "integrity",
        [(empty_id, empty_data), (bid, block)], read_cap(bid, key))  # fmt: skip

    # The issue's endless tree, small: every level lists the level below fanout times.
    level: Entry = (empty_id, len(empty_data), empty_key)
    tower = [(empty_id, empty_data)]
    for depth in range(3):
        inner = manifest(depth, 4, 4, 3, [level] * 4, sealed_map([level[2]] * 4, None))
        tower.append((inner[0], inner[1]))
        level = (inner[0], len(inner[1]), inner[2])
    bid, block, key = root_over([level] * 4, 0, depth=3)
    add("tower", "depth-3 tree of repeated children over a 0-byte chunk, size 0", "integrity",
        [*tower, (bid, block)], read_cap(bid, key))  # fmt: skip

    leaf = manifest(0, 4, 4, 3, entries, sealed_map([k for _, _, k in entries], None))
    bid, block, key = root_over([(leaf[0], len(leaf[1]), leaf[2])], 10, depth=1)
    add("too-deep", "a depth-1 root with one child: deeper than its size needs", "integrity",
        [*data_blocks, leaf[:2], (bid, block)], read_cap(bid, key))  # fmt: skip

    bid, block, key = root_over(entries, 10, fanout=2)
    add("over-fanout", "a root listing 3 children with fanout 2", "integrity",
        [*data_blocks, (bid, block)], read_cap(bid, key))  # fmt: skip

    full_blocks, full_entries = chunks_of(pattern(32), 4)  # 8 full chunks
    groups = [full_entries[:4], full_entries[4:]]
    halves = [manifest(0, 4, 4, 3, g, sealed_map([k for _, _, k in g], None)) for g in groups]
    refs = [(h[0], len(h[1]), h[2]) for h in halves]
    bid, block, key = root_over(refs, 32, depth=2)
    add("wrong-depth", "a depth-2 root listing depth-0 manifests", "integrity",
        [*full_blocks, *(h[:2] for h in halves), (bid, block)], read_cap(bid, key))  # fmt: skip

    good_id, good_block, good_key = root_over(entries, 10)
    add("inner-as-root", "the cap of an inner manifest, not of a file's root", "integrity",
        [*full_blocks, *(h[:2] for h in halves)], read_cap(halves[0][0], halves[0][2]))  # fmt: skip

    other = bytes(reversed(good_key))
    add("wrong-key", "an intact root and a key that does not open it", "invalid-cap",
        [*data_blocks, (good_id, good_block)], read_cap(good_id, other))  # fmt: skip

    altered = bytearray(good_block)
    altered[-1] ^= 1
    add("corrupt-root", "root bytes that do not hash to the CID", "corrupt-block",
        [*data_blocks, (good_id, bytes(altered))], read_cap(good_id, good_key))  # fmt: skip

    # Non-canonical: the depth as uint8 0x00 instead of positive fixint 0 (same meaning).
    assert good_block[:6] == b"\x87\xa1v\x02\xa1d"
    long_form = good_block[:6] + b"\xcc\x00" + good_block[7:]
    long_id = hashlib.sha256(long_form).digest()
    add("non-canonical", "the depth written as uint8: not the canonical encoding", "integrity",
        [*data_blocks, (long_id, long_form)], read_cap(long_id, good_key))  # fmt: skip

    # Erasure coding (zfec 3-of-5, docs/content-format.md 3.8). The shares are never fetched:
    # each tree is refused on its manifests, so placeholder share IDs do.
    zfec = {"t": "zfec", "k": 3, "n": 5}
    stripes: list[Entry] = [
        (b"".join(hashlib.sha256(b"share %d %d" % (c, i)).digest() for i in range(5)), size, k)
        for c, (size, (_, _, k)) in enumerate(zip((11, 11, 10), entries, strict=True))
    ]  # chunks of 4, 4, 2 bytes: shares of 4 + ceil(20 / 3) = 11 and 4 + ceil(18 / 3) = 10
    bid, block, key = root_over(stripes, 10, redundancy={"t": "zfec", "k": 3, "n": 33})
    add("zfec-too-many-shares", "a 3-of-33 root: more shares than 32", "integrity",
        [(bid, block)], read_cap(bid, key))  # fmt: skip
    liar = [*stripes[:2], (stripes[2][0], 11, stripes[2][2])]
    bid, block, key = root_over(liar, 10, redundancy=zfec)
    add("zfec-share-size", "a 3-of-5 root whose last chunk's shares are too big for 2 bytes",
        "integrity", [(bid, block)], read_cap(bid, key))  # fmt: skip
    bid, block, key = root_over(refs, 32, depth=1, redundancy=zfec)  # refs: the two halves
    add("zfec-over-replicated", "a 3-of-5 root over replicated manifests (one scheme per file)",
        "integrity", [*full_blocks, *(h[:2] for h in halves), (bid, block)],
        read_cap(bid, key))  # fmt: skip

    return {
        "profile": PROFILE,
        "manifest_version": VERSION,
        "description": (
            "Trees a reader must refuse. Every block hashes to its ID; 'error' is the code of "
            "the error that reading the whole file raises (integrity: IntegrityError, "
            "invalid-cap: InvalidCapability, corrupt-block: CorruptBlock)."
        ),
        "secret": SECRET.hex(),
        "cases": cases,
    }


def build_caps() -> dict[str, Any]:
    cid, key = bytes(range(32)), bytes(range(32, 64))
    return {
        "profile": PROFILE,
        "cases": [
            {
                "cid": cid.hex(),
                "key": key.hex(),
                "read_cap": read_cap(cid, key),
                "verify_cap": f"shoal:v:{id_text(cid)}",
            }
        ],
    }


def main() -> None:
    for name, data in [
        ("chunks.json", build_chunks()),
        ("files.json", build_files()),
        ("refused.json", build_refused()),
        ("caps.json", build_caps()),
    ]:
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {name} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
