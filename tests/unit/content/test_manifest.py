from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.content.crypto import encrypt, seal_chunk
from shoal.content.manifest import (
    MANIFEST_VERSION,
    MAX_CHILDREN,
    ChildRef,
    FileInfo,
    Manifest,
    Redundancy,
    load_manifest,
    manifest_key,
    open_manifest,
)
from shoal.errors import IntegrityError
from shoal.ids import sha256

from .helpers import SECRET, make_info

ID = bytes(range(32))
KEY = bytes(range(32, 64))


def sealed_blob(keys: list[list[Any]], info: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    """Return (key, sealed ciphertext) of a hand-made sealed part."""
    obj: dict[str, Any] = {"k": keys}
    if info is not None:
        obj["f"] = info
    plain = msgpack.packb(obj, use_bin_type=True)
    key = manifest_key(SECRET, plain)
    return key, encrypt(key, plain)


def data_manifest(sizes: list[int], info: FileInfo | None = None) -> tuple[Manifest, bytes]:
    """A depth-0 manifest over real chunks of the given plaintext sizes."""
    chunks = [seal_chunk(SECRET, bytes([i]) * n) for i, n in enumerate(sizes)]
    info_map = None
    if info is not None:
        info_map = {
            "n": info.name,
            "z": info.size,
            "m": info.media_type,
            "t": info.mtime,
            "c": info.created,
        }
    key, blob = sealed_blob([[c.key, c.plaintext_size] for c in chunks], info_map)
    refs = tuple(ChildRef(c.block_id, len(c.data)) for c in chunks)
    return Manifest(MANIFEST_VERSION, 0, Redundancy(), refs, blob), key


def raw(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "v": 1,
        "d": 0,
        "r": {"t": "replicate", "r": 3},
        "c": [[ID, 100]],
        "s": bytes(40),
    }
    for name, value in fields.items():
        if value is DROP:
            del base[name]
        else:
            base[name] = value
    packed: bytes = msgpack.packb(base, use_bin_type=True)
    return packed


DROP = object()


def test_encode_decode_round_trip() -> None:
    manifest, key = data_manifest([3, 5, 7], make_info("x", 15))
    data = manifest.encode()
    decoded = Manifest.decode(data)
    assert decoded == manifest
    assert decoded.encode() == data
    part = open_manifest(decoded, key)
    assert [k.plaintext_size for k in part.keys] == [3, 5, 7]
    assert part.info == make_info("x", 15)


def test_encoding_is_a_map_with_short_keys_in_order() -> None:
    manifest, _ = data_manifest([1])
    obj = msgpack.unpackb(manifest.encode(), raw=False)
    assert list(obj) == ["v", "d", "r", "c", "s"]
    assert obj["r"] == {"t": "replicate", "r": 3}
    assert isinstance(obj["c"][0][0], bytes)
    assert isinstance(obj["s"], bytes)


def test_inner_manifest_without_info() -> None:
    manifest, key = data_manifest([1, 2])
    assert open_manifest(manifest, key).info is None


def test_wrong_key_is_detected() -> None:
    manifest, _ = data_manifest([1, 2])
    with pytest.raises(IntegrityError, match="authentication"):
        open_manifest(manifest, KEY)


def test_every_byte_of_sealed_part_is_protected() -> None:
    manifest, key = data_manifest([1, 2], make_info("n", 3))
    for pos in range(len(manifest.sealed)):
        bad = bytearray(manifest.sealed)
        bad[pos] ^= 0x01
        tampered = Manifest(1, 0, manifest.redundancy, manifest.children, bytes(bad))
        with pytest.raises(IntegrityError):
            open_manifest(tampered, key)


def test_key_count_must_match_child_count() -> None:
    manifest, key = data_manifest([1, 2])
    fewer = Manifest(1, 0, manifest.redundancy, manifest.children[:1], manifest.sealed)
    with pytest.raises(IntegrityError, match="1 children but 2 keys"):
        open_manifest(fewer, key)


def test_data_child_sizes_must_agree() -> None:
    manifest, key = data_manifest([4])
    ref = manifest.children[0]
    lying = Manifest(
        1, 0, manifest.redundancy, (ChildRef(ref.block_id, ref.stored_size + 1),), manifest.sealed
    )
    with pytest.raises(IntegrityError, match="stored size"):
        open_manifest(lying, key)


def test_load_manifest_checks_the_hash() -> None:
    data = data_manifest([1])[0].encode()
    assert load_manifest(sha256(data), data) == Manifest.decode(data)
    with pytest.raises(IntegrityError, match="does not match its hash"):
        load_manifest(bytes(32), data)


def test_redundancy_validation() -> None:
    assert Redundancy() == Redundancy("replicate", 3)
    with pytest.raises(ValueError, match="unsupported"):
        Redundancy("zfec", 3)
    with pytest.raises(ValueError, match="replicas"):
        Redundancy("replicate", 0)


def test_file_info_validation() -> None:
    FileInfo("ok", 0, "", None, 0.0)
    for args in [
        (1, 0, "t", None, 0.0),
        ("n", -1, "t", None, 0.0),
        ("n", True, "t", None, 0.0),
        ("n", 0, "t", float("nan"), 0.0),
        ("n", 0, "t", None, float("inf")),
        ("\udc80", 0, "t", None, 0.0),
        ("x" * 5000, 0, "t", None, 0.0),
    ]:
        with pytest.raises(ValueError):
            FileInfo(*args)  # type: ignore[arg-type]


MALFORMED = [
    (b"", "not valid msgpack"),
    (b"\xc1", "not valid msgpack"),
    (raw() + b"\x00", "not valid msgpack"),
    (msgpack.packb([1, 2]), "expected a map"),
    (raw(x=1), "unknown field"),
    (raw(v=DROP), "missing field"),
    (raw(v=2), "unsupported manifest version 2"),
    (raw(v="1"), "unsupported manifest version"),
    (raw(v=True), "unsupported manifest version"),
    (raw(d=9), "depth must be 0..8"),
    (raw(d=-1), "depth"),
    (raw(d=1.0), "depth"),
    (raw(d=1, c=[]), "inner manifest must have children"),
    (raw(r=[3]), "redundancy must be a map"),
    (raw(r={"t": "zfec", "k": 3, "n": 5}), "unsupported redundancy kind 'zfec'"),
    (raw(r={"t": "replicate"}), "missing field"),
    (raw(r={"t": "replicate", "r": 3, "x": 1}), "unknown field"),
    (raw(r={"t": "replicate", "r": 0}), "replicas"),
    (raw(c={}), "expected an array"),
    (raw(c=[[ID[:31], 1]]), "entry 0"),
    (raw(c=[[ID, -1]]), "entry 0"),
    (raw(c=[[ID, 1], [ID, 2.0]]), "entry 1"),
    (raw(c=[[ID, 1, 2]]), "entry 0"),
    (raw(c=[[ID.hex(), 1]]), "entry 0"),
    (raw(c=[[ID, 1 << 32]]), "entry 0"),
    (raw(s=bytes(15)), "sealed part"),
    (raw(s="text"), "sealed part"),
    (b"\x82\xa1v\x01\xa1v\x01", "duplicate key"),
    (msgpack.packb({1: 1}), "not valid msgpack"),
    (msgpack.packb(msgpack.ExtType(1, b"x")), "msgpack"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_manifests_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        Manifest.decode(data)


def test_too_many_children_is_rejected() -> None:
    data = raw(c=[[ID, 17]] * (MAX_CHILDREN + 1))
    with pytest.raises(IntegrityError):
        Manifest.decode(data)


def test_oversized_manifest_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="larger than"):
        Manifest.decode(bytes(5 << 20))


SEALED_MALFORMED = [
    ({"k": [[KEY, 1]], "x": 1}, "unknown field"),
    ({"f": {}}, "missing field"),
    ({"k": [[KEY[:31], 1]]}, "entry 0"),
    ({"k": [[KEY, -1]]}, "entry 0"),
    ({"k": [[KEY, 1]], "f": []}, "file info must be a map"),
    ({"k": [[KEY, 1]], "f": {"n": "a"}}, "missing field"),
    (
        {"k": [[KEY, 1]], "f": {"n": "a", "z": 1, "m": "t", "t": None, "c": 1}},
        "times must be float64",
    ),
    (
        {"k": [[KEY, 1]], "f": {"n": "a", "z": -1, "m": "t", "t": None, "c": 1.0}},
        "file size",
    ),
    (
        {"k": [[KEY, 1]], "f": {"n": b"a", "z": 1, "m": "t", "t": None, "c": 1.0}},
        "file name",
    ),
]


@pytest.mark.parametrize(("obj", "message"), SEALED_MALFORMED)
def test_malformed_sealed_parts_are_rejected(obj: dict[str, Any], message: str) -> None:
    plain = msgpack.packb(obj, use_bin_type=True)
    key = manifest_key(SECRET, plain)
    # One data child of stored size 17 (1 plaintext byte + tag), matching the keys above.
    manifest = Manifest(1, 0, Redundancy(), (ChildRef(ID, 17),), encrypt(key, plain))
    with pytest.raises(IntegrityError, match=message):
        open_manifest(manifest, key)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_decode_never_raises_anything_but_integrity_error(data: bytes) -> None:
    try:
        Manifest.decode(data)
    except IntegrityError:
        pass


@settings(max_examples=200)
@given(st.data())
def test_mutated_valid_manifest_decodes_or_raises_integrity_error(data: st.DataObject) -> None:
    manifest, _ = data_manifest([1, 2], make_info("n", 3))
    buf = bytearray(manifest.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    try:
        Manifest.decode(bytes(buf))
    except IntegrityError:
        pass
