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
        Redundancy("lrc", 3)
    with pytest.raises(ValueError, match="1 <= k < n"):
        Redundancy("zfec", 3)
    with pytest.raises(ValueError, match="n - k \\+ 1 copies"):
        Redundancy("zfec", 2, 3, 5)
    with pytest.raises(ValueError, match="for kind 'zfec' only"):
        Redundancy("replicate", 3, 3, 5)
    assert Redundancy.erasure(3, 5) == Redundancy("zfec", 3, 3, 5)
    assert Redundancy.parse_erasure(" 3-OF-5 ") == Redundancy.erasure(3, 5)
    for bad in ("3of5", "3-of-", "5-of-3", "0-of-2", "3-of-33", "-1-of-5", "3-of-5-of-6", "३-of-5"):
        with pytest.raises(ValueError):
            Redundancy.parse_erasure(bad)
    assert Redundancy.erasure(3, 5).wanted == 5
    assert Redundancy.replicate(2).wanted == 2
    assert str(Redundancy.erasure(3, 5)) == "3-of-5"
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
    (raw(r={"t": "lrc", "k": 3, "n": 5}), "unsupported redundancy kind"),
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


ZFEC = {"t": "zfec", "k": 3, "n": 5}
SHARES = ID * 5  # a stripe's 5 share IDs; with z = 4: full shares are 4 + ceil(20 / 3) = 11

MALFORMED_ERASURE = [
    (raw(r={"t": "zfec", "k": 3}), "2 fields, expected 3"),
    (raw(r={"t": "zfec", "k": 3, "n": 5, "r": 3}), "4 fields, expected 3"),
    (raw(r={"t": "zfec", "n": 5, "k": 3}), "expected the field 'k'"),
    (raw(r={"t": "zfec", "k": 0, "n": 5}), "k: 0 .* out of range 1..31"),
    (raw(r={"t": "zfec", "k": 3, "n": 3}), "n: 3 .* out of range 4..32"),
    (raw(r={"t": "zfec", "k": 3, "n": 33}), "n: 33"),
    (raw(r={"t": "zfec", "k": 3, "n": 5.0}), "n: expected an unsigned integer"),
    (raw(r=ZFEC, c=[[ID, 11]]), "children: 1 entries at byte 31 cannot fit"),
    (raw(r=ZFEC, c=[[SHARES + ID, 11]]), "child 0 share ids: 192 bytes"),
    (raw(r=ZFEC, c=[[SHARES, 12]]), "child 0 share size: 12 .* out of range 1..11"),
    (raw(r=ZFEC, c=[[SHARES, 9]]), "a data block of 0 bytes"),
    (raw(r=ZFEC, c=[[SHARES, 10], [SHARES, 11]]), "other than the last is not a full chunk"),
    (raw(r=ZFEC, c=[[SHARES, 11, 1]]), "child 0: 3 entries .* at most 2"),
    (raw(r=ZFEC, c=[[SHARES]]), "child 0: expected \\[share ids, share size\\]"),
    (raw(r=ZFEC, c=[[SHARES.hex(), 11]]), "child 0 share ids: expected a byte string"),
    (raw(r=ZFEC, c=[SHARES]), "child 0: expected an array"),
    (raw(r={"t": "zfec", "k": 1, "n": 32}, f=32768), "fanout 32768 is larger than 3930"),
]


def test_erasure_manifests_round_trip() -> None:
    good = Manifest.decode(raw(r=ZFEC, c=[[SHARES, 11], [SHARES, 10]]))
    assert good.redundancy == Redundancy.erasure(3, 5)
    assert good.stripes
    assert good.id_width == 160
    assert good.child_id(1) == SHARES
    assert list(good.stored_sizes) == [11, 10]
    assert Manifest.decode(good.encode()) == good
    assert good.encode() == raw(r=ZFEC, c=[[SHARES, 11], [SHARES, 10]])
    # Above depth 0 the children are manifests: plain [id, size] entries, replicated.
    inner = Manifest.decode(raw(d=1, r=ZFEC, c=[[ID, 300]]))
    assert not inner.stripes
    assert inner.child_id(0) == ID


def test_erasure_fanout_keeps_full_manifests_in_a_block() -> None:
    for n in (2, 5, 8, 32):
        redundancy = Redundancy.erasure(1, n)
        f = redundancy.max_fanout
        full = Manifest.build(
            0, MAX_CHUNK_SIZE, f, redundancy,
            [ChildRef(bytes(32 * n), redundancy.data_size(MAX_CHUNK_SIZE))] * f,
            bytes(f * 34 + 64),
        )  # fmt: skip
        assert len(full.encode()) <= MAX_MANIFEST_SIZE
    assert Redundancy.erasure(3, 5).max_fanout >= 16384  # the default fanout fits


@pytest.mark.parametrize(("data", "message"), MALFORMED_ERASURE)
def test_malformed_erasure_manifests_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=message) as info:
        Manifest.decode(data)
    assert len(str(info.value)) < 200


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
