from __future__ import annotations

from typing import Any

import msgpack
import pytest

from shoal.content.crypto import AuthenticationFailed, encrypt, seal_chunk
from shoal.content.manifest import (
    MANIFEST_VERSION,
    MAX_CHUNK_SIZE,
    MAX_FILE_SIZE,
    MAX_MANIFEST_SIZE,
    ChildRef,
    Manifest,
    Redundancy,
    encode_sealed,
    load_manifest,
    manifest_key,
    open_sealed,
)
from shoal.errors import CorruptBlock, IntegrityError
from shoal.ids import sha256

from .helpers import SECRET

ID = bytes(range(32))
KEY = bytes(range(32, 64))


def sealed_blob(obj: dict[str, Any]) -> tuple[bytes, bytes]:
    """Return (key, sealed ciphertext) of a hand-made sealed part."""
    plain = msgpack.packb(obj, use_bin_type=True)
    key = manifest_key(SECRET, plain)
    return key, encrypt(key, plain)


def data_manifest(sizes: list[int], *, root_size: int | None = None) -> tuple[Manifest, bytes]:
    """A depth-0 manifest (chunk size 4, fanout 4) over real chunks of the given sizes."""
    chunks = [seal_chunk(SECRET, bytes([i]) * n) for i, n in enumerate(sizes)]
    key, blob = sealed_blob(
        {"k": [c.key for c in chunks]}
        if root_size is None
        else {"t": "file", "z": root_size, "k": [c.key for c in chunks]}
    )
    refs = [ChildRef(c.block_id, len(c.data)) for c in chunks]
    return Manifest.build(0, 4, 4, Redundancy(), refs, blob), key


def raw(**fields: Any) -> bytes:
    """A manifest block from a field map (values replaced or dropped), in canonical order."""
    base: dict[str, Any] = {
        "v": 2,
        "d": 0,
        "z": 4,
        "f": 4,
        "r": {"t": "replicate", "r": 3},
        "c": [[ID, 20]],
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
    manifest, key = data_manifest([4, 4, 3], root_size=11)
    data = manifest.encode()
    decoded = Manifest.decode(data)
    assert decoded == manifest
    assert decoded.encode() == data
    assert decoded.children == tuple(
        ChildRef(manifest.child_id(i), s) for i, s in enumerate([20, 20, 19])
    )
    part = open_sealed(decoded, key, root=True)
    assert part.size == 11
    assert [part.key(i) for i in range(3)] == [
        seal_chunk(SECRET, bytes([i]) * n).key for i, n in enumerate([4, 4, 3])
    ]


def test_encoding_is_a_map_with_short_keys_in_order() -> None:
    manifest, _ = data_manifest([1])
    obj = msgpack.unpackb(manifest.encode(), raw=False)
    assert list(obj) == ["v", "d", "z", "f", "r", "c", "s"]
    assert (obj["v"], obj["d"], obj["z"], obj["f"]) == (MANIFEST_VERSION, 0, 4, 4)
    assert obj["r"] == {"t": "replicate", "r": 3}
    assert isinstance(obj["c"][0][0], bytes)
    assert isinstance(obj["s"], bytes)


def test_sealed_part_holds_only_keys_and_at_the_root_kind_and_size() -> None:
    inner = msgpack.unpackb(encode_sealed([KEY, ID], None), raw=False)
    root = msgpack.unpackb(encode_sealed([KEY], 7), raw=False)
    assert inner == {"k": [KEY, ID]}
    assert list(root) == ["t", "z", "k"]
    assert root == {"t": "file", "z": 7, "k": [KEY]}


def test_inner_and_root_parts_are_not_interchangeable() -> None:
    inner, inner_key = data_manifest([4, 1])
    assert open_sealed(inner, inner_key, root=False).size is None
    with pytest.raises(IntegrityError, match="not a file's root"):
        open_sealed(inner, inner_key, root=True)
    root, root_key = data_manifest([4, 1], root_size=5)
    with pytest.raises(IntegrityError, match="expected 1"):
        open_sealed(root, root_key, root=False)


def test_wrong_key_is_an_authentication_failure() -> None:
    manifest, _ = data_manifest([1, 2])
    with pytest.raises(AuthenticationFailed, match="authentication"):
        open_sealed(manifest, KEY, root=False)


def test_every_byte_of_sealed_part_is_protected() -> None:
    manifest, key = data_manifest([4, 2], root_size=6)
    for pos in range(len(manifest.sealed)):
        bad = bytearray(manifest.sealed)
        bad[pos] ^= 0x01
        tampered = Manifest(
            0, 4, 4, manifest.redundancy, manifest.child_ids, manifest.stored_sizes, bytes(bad)
        )
        with pytest.raises(IntegrityError):
            open_sealed(tampered, key, root=True)


def test_key_count_must_match_child_count() -> None:
    manifest, key = data_manifest([4, 2])
    fewer = Manifest.build(0, 4, 4, Redundancy(), manifest.children[:1], manifest.sealed)
    with pytest.raises(IntegrityError, match="2 keys for 1 children"):
        open_sealed(fewer, key, root=False)


def test_load_manifest_checks_the_hash_first() -> None:
    data = data_manifest([1])[0].encode()
    assert load_manifest(sha256(data), data) == Manifest.decode(data)
    with pytest.raises(CorruptBlock, match="does not match its hash"):
        load_manifest(bytes(32), data)
    # Garbage that does not match its ID is corrupt, not malformed: another holder may have it.
    with pytest.raises(CorruptBlock):
        load_manifest(bytes(32), b"\xc1 not msgpack")
    with pytest.raises(IntegrityError, match=r"manifest block .*: malformed"):
        load_manifest(sha256(b"\xc1"), b"\xc1")


def test_redundancy_validation() -> None:
    assert Redundancy() == Redundancy("replicate", 3)
    with pytest.raises(ValueError, match="unsupported"):
        Redundancy("zfec", 3)
    with pytest.raises(ValueError, match="replicas"):
        Redundancy("replicate", 0)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (1, "version 1 is a pre-release format that this Shoal no longer reads"),
        (3, "version 3 is newer than this Shoal reads"),
        (0, "unknown manifest format version 0"),
        (2**64 - 1, "newer than this Shoal reads"),
    ],
)
def test_other_versions_are_refused_clearly(version: int, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        Manifest.decode(raw(v=version))


def test_a_real_version_1_manifest_is_refused_as_such() -> None:
    v1 = msgpack.packb(
        {"v": 1, "d": 0, "r": {"t": "replicate", "r": 3}, "c": [[ID, 20]], "s": bytes(40)},
        use_bin_type=True,
    )
    with pytest.raises(IntegrityError, match="pre-release format"):
        Manifest.decode(v1)


DEEP = b"\x91" * 1000 + b"\x00"  # a 1000-deep array: msgpack's own nesting is up to 1023


MALFORMED = [
    (b"", "truncated at byte 0"),
    (b"\xc1", "found the unused byte 0xc1"),
    (raw() + b"\x00", "1 unexpected byte"),
    (msgpack.packb([1, 2]), "expected a small map at byte 0, found an array"),
    (raw(x=1), "8 fields, expected 7"),
    (raw(v=DROP), "expected the field 'v'"),
    (raw(d=DROP), "6 fields, expected 7"),
    (raw(v="2"), "version: expected an unsigned integer"),
    (raw(v=True), "version: expected an unsigned integer at byte 3, found a boolean"),
    (raw(v=-1), "found a negative integer"),
    (raw(d=9), "depth: 9 at byte 6 is out of range 0..8"),
    (raw(d=1.0), "depth: expected an unsigned integer at byte 6, found a float"),
    (raw(d=1, c=[]), "inner manifest .* must have children"),
    (raw(z=0), "chunk size: 0"),
    (raw(z=MAX_CHUNK_SIZE + 1), "chunk size"),
    (raw(f=1), "fanout: 1"),
    (raw(f=32769), "fanout: 32769"),
    (raw(r=[3]), "expected a small map"),
    (raw(r={"t": "zfec", "k": 3, "n": 5}), "unsupported redundancy kind"),
    (raw(r={"t": "replicate"}), "1 fields, expected 2"),
    (raw(r={"t": "replicate", "r": 3, "x": 1}), "3 fields, expected 2"),
    (raw(r={"t": "replicate", "r": 0}), "replicas: 0"),
    (raw(r={"r": 3, "t": "replicate"}), "expected the field 't'"),
    (raw(c={}), "children: expected an array"),
    (raw(c=[[ID[:31], 1]]), "entry 0 .* is not \\[32-byte id, size\\]"),
    (raw(c=[[ID, 0]]), "size 0 of entry 0 is out of range"),
    (raw(c=[[ID, 20], [ID, 2.0]]), "size of entry 1 .* found a float"),
    (raw(c=[[ID, 1, 2]]), "entry 0"),
    (raw(c=[[ID.hex(), 1]]), "entry 0"),
    (raw(c=[[ID, 21]]), "out of range 1..20"),  # a depth-0 child bigger than a full chunk
    (raw(c=[[ID, 16]]), "a data block of 0 bytes"),
    (raw(c=[[ID, 19], [ID, 20]]), "other than the last is not a full chunk"),
    (raw(c=[[ID, 20]] * 5), "5 entries at byte 33, at most 4 allowed"),
    (raw(s=bytes(15)), "sealed part: 15 bytes"),
    (raw(s="text"), "sealed part: expected a byte string at byte 72, found a string"),
    (raw(s=DROP), "6 fields, expected 7"),
    (b"\x87\xa1v\x02\xa1v\x02", "expected the field 'd'"),  # a duplicate key
    (msgpack.packb({1: 1}), "expected the field 'v'"),
    (msgpack.packb(msgpack.ExtType(1, b"x")), "found an extension type"),
    (b"\x87\xa1v\x02\xa1d" + DEEP, "depth: expected an unsigned integer at byte 6, found an array"),
    (b"\x87\xa1v" + DEEP, "version: expected an unsigned integer at byte 3, found an array"),
    (b"\x87\xa1v\xcc\x02", "not in its shortest form"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_manifests_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message) as info:
        Manifest.decode(data)
    assert len(str(info.value)) < 200


def test_too_many_children_is_rejected_before_reading_them() -> None:
    data = raw(f=32768, c=[[ID, 20]] * 32769)
    with pytest.raises(IntegrityError, match=r"32769 entries .* at most 32768"):
        Manifest.decode(data)


def test_oversized_manifest_is_rejected() -> None:
    with pytest.raises(IntegrityError, match="larger than"):
        Manifest.decode(bytes(MAX_MANIFEST_SIZE + 1))


def sealed_root(obj_bytes: bytes, children: int = 1) -> tuple[Manifest, bytes]:
    key = manifest_key(SECRET, obj_bytes)
    refs = [ChildRef(ID, 20)] * children
    return Manifest.build(0, 4, 4, Redundancy(), refs, encrypt(key, obj_bytes)), key


SEALED_MALFORMED = [
    ({"t": "file", "z": 4, "k": [KEY], "x": 1}, "4 fields, expected 3"),
    ({"t": "file", "z": 4}, "2 fields, expected 3"),
    ({"z": 4, "t": "file", "k": [KEY]}, "expected the field 't'"),
    ({"t": "file", "z": 4, "k": [KEY[:31]]}, "1 entries at byte 13 cannot fit"),
    ({"t": "file", "z": 4, "k": [KEY + b"x"]}, "entry 0 at byte 14 is not a 32-byte string"),
    ({"t": "file", "z": 4, "k": [KEY, KEY]}, "2 keys for 1 children"),
    ({"t": "file", "z": -1, "k": [KEY]}, "file size: expected an unsigned integer"),
    ({"t": "file", "z": MAX_FILE_SIZE + 1, "k": [KEY]}, "file size: .* out of range"),
    ({"t": "file", "z": 4.0, "k": [KEY]}, "found a float"),
    ({"t": "dir", "z": 4, "k": [KEY]}, "names a directory"),
    ({"t": "fileX", "z": 4, "k": [KEY]}, "unsupported object kind"),
    ({"t": b"file", "z": 4, "k": [KEY]}, "expected a short string"),
    ({"t": "file", "z": 4, "k": {}}, "keys: expected an array"),
]


@pytest.mark.parametrize(("obj", "message"), SEALED_MALFORMED)
def test_malformed_sealed_parts_are_rejected(obj: dict[str, Any], message: str) -> None:
    manifest, key = sealed_root(msgpack.packb(obj, use_bin_type=True))
    with pytest.raises(IntegrityError, match=message):
        open_sealed(manifest, key, root=True)


@pytest.mark.parametrize(
    "plain",
    [
        b"\x83\xa1t" + DEEP,
        b"\x83\xa1t\xa4file\xa1z" + DEEP,
        b"\x83\xa1t\xa4file\xa1z\x04\xa1k" + DEEP,
        b"\x83\xa1t\xa4file\xa1z\x04\xa1k\x91" + DEEP,
        b"\x81\xa1k\x91" + DEEP,
    ],
)
def test_deeply_nested_sealed_parts_are_integrity_errors(plain: bytes) -> None:
    manifest, key = sealed_root(plain)
    for root in (True, False):
        with pytest.raises(IntegrityError) as info:
            open_sealed(manifest, key, root=root)
        assert "[[" not in str(info.value)
        assert len(str(info.value)) < 200
