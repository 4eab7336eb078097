"""Folders through the Python API (``shoal.Node``) on real nodes: put, list, restore, limits."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from shoal import Node
from shoal.content.caps import ReadCap
from shoal.content.directory import EntryKind
from shoal.content.manifest import KIND_DIRECTORY
from shoal.errors import ConfigError, IntegrityError, NotFound
from shoal.node import folder_disk
from shoal.node.folders import FOLDER_MEDIA_TYPE
from shoal.node.put import place_object
from tests.integration.conftest import Cluster

MTIME = 1_600_000_000_123_456_789


def make_tree(root: Path) -> dict[str, bytes]:
    """A small tree with nesting, an empty folder, odd names, modes and times."""
    files = {
        "a.txt": b"hello\n",
        "sub/big.bin": os.urandom(2 * 1024 * 1024 + 77),
        "sub/deeper/ünïcødé name.txt": b"x" * 10,
        "empty.dat": b"",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty dir").mkdir()
    os.chmod(root / "a.txt", 0o600)
    os.chmod(root / "sub" / "big.bin", 0o755)
    os.chmod(root / "sub" / "deeper", 0o750)
    for path in sorted(root.rglob("*"), reverse=True):  # children first: dirs keep their time
        os.utime(path, ns=(MTIME, MTIME))
    return files


def tree_state(root: Path) -> dict[str, tuple[bool, int, int, bytes]]:
    """Every entry under ``root``: (is dir, mode, mtime ns, bytes)."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        is_dir = stat.S_ISDIR(info.st_mode)
        data = b"" if is_dir else path.read_bytes()
        state[str(path.relative_to(root))] = (
            is_dir,
            stat.S_IMODE(info.st_mode),
            info.st_mtime_ns,
            data,
        )
    return state


async def test_folder_round_trip_keeps_bytes_times_and_modes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    (src / "link").symlink_to("a.txt")
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        result = await node.store_folder("photos", src)
        assert result.skipped == ["link"]
        assert (result.files, result.directories) == (4, 4)
        assert result.size == sum(len(d) for d in files.values())
        entries = await node.list_folder("photos")
        assert [(e.name, e.kind) for e in entries] == [
            ("a.txt", EntryKind.FILE),
            ("empty dir", EntryKind.DIRECTORY),
            ("empty.dat", EntryKind.FILE),
            ("sub", EntryKind.DIRECTORY),
        ]
        assert entries[0].mtime_ns == MTIME
        assert entries[0].mode == 0o600
        assert entries[3].size == 2 * 1024 * 1024 + 77 + 10
        catalog = {e.name: e for e in await node.list_files()}
        assert catalog["photos"].media_type == FOLDER_MEDIA_TYPE
        assert catalog["photos"].cap == result.cap

        out = tmp_path / "out"
        restored = await node.get_folder(result.cap, out)
        assert restored.files == 4
        expected = tree_state(src)
        del expected["link"]
        assert tree_state(out) == expected
        # Nothing but the output was left next to it (no staging folder).
        assert sorted(p.name for p in tmp_path.iterdir()) == ["n1", "out", "src"]


async def test_same_tree_same_cap_and_a_changed_time_changes_it(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_tree(first)
    os.utime(first / "a.txt", ns=(MTIME, MTIME))
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        cap_a = (await node.store_folder("a", first)).cap
        # A copy elsewhere, made at another time, with the same names, bytes, times and modes.
        second.mkdir()
        for path in sorted(first.rglob("*")):
            target = second / path.relative_to(first)
            if path.is_dir():
                target.mkdir()
            else:
                target.write_bytes(path.read_bytes())
            os.chmod(target, stat.S_IMODE(path.stat().st_mode))
        for path in sorted(first.rglob("*"), reverse=True):
            info = path.stat()
            os.utime(second / path.relative_to(first), ns=(info.st_mtime_ns, info.st_mtime_ns))
        assert (await node.store_folder("b", second)).cap == cap_a
        os.utime(second / "a.txt", ns=(MTIME + 1, MTIME + 1))
        assert (await node.store_folder("c", second)).cap != cap_a


async def test_get_folder_refuses_an_existing_output_unless_told(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        cap = (await node.store_folder("f", src)).cap
        with pytest.raises(ConfigError, match="already exists"):
            await node.get_folder(cap, out)
        assert (out / "old.txt").read_text() == "old"
        await node.get_folder(cap, out, overwrite=True)
        assert not (out / "old.txt").exists()
        assert (out / "a.txt").read_bytes() == b"hello\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["n1", "out", "src"]


async def test_a_file_cap_is_not_a_folder_and_a_folder_cap_is_not_a_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        folder = (await node.store_folder("f", src)).cap
        file_cap = await node.store("plain.txt", b"plain")
        with pytest.raises(IntegrityError, match="names a file, not a directory"):
            await node.list_folder(file_cap)
        with pytest.raises(IntegrityError, match="names a file"):
            await node.get_folder(file_cap, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        with pytest.raises(IntegrityError, match="names a directory"):
            async with node.get(folder):
                pass
        # Nothing else broke: the folder still restores.
        await node.get_folder(folder, tmp_path / "out")
        assert (tmp_path / "out" / "a.txt").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [("bad\nname", "control character"), ("bidi\u202etxt", "bidirectional")],
)
async def test_a_local_name_that_cannot_be_stored_stores_nothing(
    tmp_path: Path, name: str, message: str
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    (src / "sub" / name).write_bytes(b"x")
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        with pytest.raises(ConfigError, match=message):
            await node.store_folder("f", src)
        assert await node.list_files() == []
        assert (await node.status()).blocks == 0  # checked before any block was placed


async def test_a_tree_too_deep_stores_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    deep = src.joinpath(*["d"] * 65)
    deep.mkdir(parents=True)
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        with pytest.raises(ConfigError, match="deeper than 64"):
            await node.store_folder("f", src)
        assert await node.list_files() == []
        with pytest.raises(ConfigError, match="not a folder"):
            await node.store_folder("f", make_file(tmp_path))
        with pytest.raises(ConfigError, match="no such folder"):
            await node.store_folder("f", tmp_path / "missing")


def make_file(tmp_path: Path) -> Path:
    path = tmp_path / "file.txt"
    path.write_text("x")
    return path


async def store_raw_listing(node: Node, listing: bytes) -> str:
    """Store hand-made listing bytes as a directory object (what a hostile owner could do)."""

    async def pieces() -> AsyncIterator[bytes]:
        yield listing

    placed = await place_object(node._rt, pieces(), kind=KIND_DIRECTORY)
    return str(placed.cap)


@pytest.mark.parametrize("bad", ["..", ".", "../escape", "/abs", "a\x00b", ""])
async def test_a_hostile_listing_writes_nothing_anywhere(tmp_path: Path, bad: str) -> None:
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        parsed = ReadCap.parse(await node.store("x.txt", b"evil"))
        entry = {
            "n": bad,
            "t": "file",
            "z": 4,
            "m": 0,
            "p": 0o644,
            "i": parsed.cid,
            "k": parsed.key,
        }
        listing = msgpack.packb({"v": 1, "e": [entry]}, use_bin_type=True)
        cap = await store_raw_listing(node, listing)
        before = sorted(str(p) for p in tmp_path.rglob("*") if "n1" not in p.parts)
        with pytest.raises(IntegrityError, match="malformed directory listing"):
            await node.get_folder(cap, tmp_path / "out")
        with pytest.raises(IntegrityError):
            await node.list_folder(cap)
        after = sorted(str(p) for p in tmp_path.rglob("*") if "n1" not in p.parts)
        assert after == before


async def test_a_folder_put_on_one_node_is_restored_by_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    n1 = await cluster.add("n1", replicas=2)
    n2 = await cluster.add("n2", peers=[n1.listen_address], replicas=2)
    await n1.wait_for_peers(1)
    await n2.wait_for_peers(1)
    src = tmp_path / "src"
    make_tree(src)
    cap = (await n1.store_folder("f", src)).cap
    with pytest.raises(NotFound):
        await n2.list_folder("f")  # names are per node; the cap works everywhere
    await n2.get_folder(cap, tmp_path / "out")
    assert tree_state(tmp_path / "out") == tree_state(src)


async def test_a_name_that_is_not_utf8_stores_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    fd = os.open(os.fsencode(src / "sub") + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        with pytest.raises(ConfigError, match=r"cannot store sub/caf\\udce9.txt: .*not UTF-8"):
            await node.store_folder("f", src)
        assert await node.list_files() == []


async def test_too_many_entries_store_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limits are 65,536 per directory and 1,000,000 in all; smaller ones here, same code.
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(12):
        (src / "d" / f"f{i}").write_bytes(b"x")
    async with Node.start(tmp_path / "n1", listen="127.0.0.1:0", replicas=1) as node:
        monkeypatch.setattr(folder_disk, "MAX_ENTRIES", 10)
        with pytest.raises(ConfigError, match="has 12 entries; at most 10"):
            await node.store_folder("f", src)
        monkeypatch.setattr(folder_disk, "MAX_ENTRIES", 100)
        monkeypatch.setattr(folder_disk, "MAX_FOLDER_ENTRIES", 10)
        with pytest.raises(ConfigError, match="at most 10 entries"):
            await node.store_folder("f", src)
        assert await node.list_files() == []
        assert (await node.status()).blocks == 0
        monkeypatch.setattr(folder_disk, "MAX_FOLDER_ENTRIES", 100)
        assert (await node.store_folder("f", src)).files == 12
