"""The CLI's contract as scripts see it: exit codes, one error line, no half-written output."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.ids import encode_id
from tests.e2e.conftest import SHOAL, Result, ShoalNet, ShoalNode, run_shoal, shoal_env

pytestmark = pytest.mark.e2e


def corrupt_files(node: ShoalNode) -> list[Path]:
    """Blocks the node moved aside as corrupt (``blocks/corrupt/``)."""
    return list(node.data_dir.rglob("corrupt/*"))


def assert_one_error_line(result: Result, *needles: str) -> str:
    """Exit code 1 and exactly one line on stderr, ``error: ...``, holding each needle."""
    assert result.code == 1, result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.describe()
    assert lines[0].startswith("error: "), result.describe()
    for needle in needles:
        assert needle in lines[0], result.describe()
    return lines[0]


@pytest.mark.parametrize("exists", [True, False], ids=["empty-dir", "no-dir"])
def test_commands_without_a_running_node_say_to_start_one(
    tmp_path: Path, exists: bool, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> None:
    data_dir = tmp_path / "idle"
    if exists:
        data_dir.mkdir()
    src, _ = random_file("a.bin", 1000)
    out = tmp_path / "out.bin"
    for command in (
        ["status"],
        ["peers", "--json"],
        ["ls", "--json"],
        ["rm", "a.bin"],
        ["get", "a.bin", "-o", str(out)],
        ["put", str(src)],
        ["gc", "--json"],
        ["pin", "shoal:r:x:y", "--name", "kept"],
        ["check", "a.bin"],
        ["repair", "--json"],
    ):
        result = run_shoal(command[0], "--data-dir", str(data_dir), *command[1:])
        assert_one_error_line(result, "shoal run")
    assert not out.exists()


def address_in_use(sock: socket.socket) -> str:
    return "{}:{}".format(*sock.getsockname())


def test_run_on_an_address_in_use_says_which_and_creates_nothing(
    shoal_net: ShoalNet, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "mine.txt").write_text("keep me")
    kept = tmp_path / "kept"
    node_id = run_shoal("init", "--data-dir", str(kept)).ok().last_line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "{}:{}".format(*taken.getsockname())
        result = run_shoal("run", "--data-dir", str(tmp_path / "x"), "--listen", address)
        others = [
            run_shoal("run", "--data-dir", str(data_dir), "--listen", address)
            for data_dir in (tmp_path / "empty", tmp_path / "a" / "b" / "c", kept)
        ]
    assert result.code != 0, result.describe()
    errors = result.error_lines
    assert len(errors) == 1, result.describe()
    assert address in errors[0], result.describe()
    assert "in use" in errors[0], result.describe()
    assert "Traceback" not in result.stderr, result.describe()
    # The failed start created nothing: no data dir, no key.
    assert not (tmp_path / "x").exists(), list((tmp_path / "x").rglob("*"))
    # In an existing dir it removes only what it made; missing parents it made go too; a
    # data dir that was initialized before is left as it was.
    for other in others:
        assert_one_error_line(other, address)
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["mine.txt"]
    assert not (tmp_path / "a").exists()
    assert run_shoal("init", "--data-dir", str(kept)).ok().last_line == node_id

    # The same when the port is another running node's.
    n1 = shoal_net.start("n1")
    assert n1.listen is not None
    result = run_shoal("run", "--data-dir", str(tmp_path / "y"), "--listen", n1.listen)
    assert result.code != 0, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert n1.listen in result.error_lines[0], result.describe()
    assert not (tmp_path / "y").exists()
    assert n1.alive
    assert n1.status()["node_id"] == n1.node_id


def fill_disk(path: Path) -> None:
    """Write zeros to ``path`` until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, bytes(4096))
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    return
                raise
    finally:
        os.close(fd)


def test_run_on_a_full_disk_is_one_error_line(
    small_disk: Callable[[int], Path], shoal_net: ShoalNet
) -> None:
    disk = small_disk(1024 * 1024)
    existing = disk / "existing"
    node_id = run_shoal("init", "--data-dir", str(existing)).ok().last_line
    filler = disk / "filler"
    fill_disk(filler)
    for data_dir in (disk / "new", existing):
        result = run_shoal("run", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
        line = assert_one_error_line(result)
        assert "full" in line or "No space" in line, result.describe()
    assert not (disk / "new").exists()  # what the failed start began is gone

    # Nothing broke: with space again, the existing node starts with its own key.
    filler.unlink()
    node = shoal_net.node("existing")
    node.data_dir = existing
    node.start()
    assert node.node_id == node_id


def test_file_commands_through_shoal_data_dir(
    shoal_net: ShoalNet, tmp_path: Path, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> None:
    # SHOAL_DATA_DIR in place of --data-dir, for `run` and for every other command.
    node = shoal_net.node("env")
    node.start(data_dir_from_env=True)
    env = {"SHOAL_DATA_DIR": str(node.data_dir)}

    def shoal(*args: str) -> Result:
        return run_shoal(*args, env=env)

    src, data = random_file("doc.txt", 1024 * 1024 + 17)
    put = shoal("put", str(src)).ok()
    cap = put.last_line
    # A lone node cannot place 3 copies: the put succeeds with 1 and says so.
    assert "warning: only 1 of 3 copies of some blocks could be stored" in put.stderr, (
        put.describe()
    )
    listing = node.files()  # through --data-dir: the same node
    assert [(f["name"], f["cap"], f["size"]) for f in listing] == [("doc.txt", cap, len(data))]
    out = tmp_path / "out.txt"
    shoal("get", "doc.txt", "-o", str(out)).ok()
    assert out.read_bytes() == data
    out.unlink()

    # A missing file to put: exit 1, one line, nothing stored.
    assert_one_error_line(shoal("put", str(tmp_path / "no-such-file")), "no-such-file")
    # An unknown name to get: exit 1, one line, no output file.
    assert_one_error_line(shoal("get", "nope.txt", "-o", str(out)), "nope.txt")
    assert not out.exists()
    # Bad caps: malformed, a verify cap (cannot read), well formed but unknown, wrong key.
    cid, key = cap.removeprefix("shoal:r:").split(":")
    for bad in (
        "shoal:r:abc:def",
        f"shoal:v:{cid}",
        f"shoal:r:{encode_id(os.urandom(32))}:{key}",
        f"shoal:r:{cid}:{encode_id(os.urandom(32))}",
    ):
        assert_one_error_line(shoal("get", bad, "-o", str(out)))
        assert not out.exists(), bad
    assert [f["name"] for f in node.files()] == ["doc.txt"]
    # Nothing broke: the right cap and the name still read the file, no block moved aside.
    for source in (cap, "doc.txt"):
        shoal("get", source, "-o", str(out)).ok()
        assert out.read_bytes() == data
        out.unlink()
    assert corrupt_files(node) == []

    # rm, then it is gone from ls --json and from get; a second rm is an error.
    shoal("rm", "doc.txt").ok()
    assert node.files() == []
    assert_one_error_line(shoal("get", "doc.txt", "-o", str(out)), "doc.txt")
    assert not out.exists()
    assert_one_error_line(shoal("rm", "doc.txt"), "doc.txt")


def test_a_wrong_key_breaks_nothing_on_any_node(
    shoal_net: ShoalNet, tmp_path: Path, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> None:
    # Once, a get with a one-character-wrong key moved the healthy root block to corrupt/ on
    # the node asked, and one such get per node lost the file everywhere.
    n1, n2, n3 = shoal_net.quick_start()
    src, data = random_file("doc.bin", 3 * 1024 * 1024 + 1)
    cap = n3.cli("put", str(src)).ok().last_line
    # n4 joins after the put: it held no block, so what it reads comes from its peers (by the
    # gets, or by the repair that gives it the copies it is now among the closest to).
    n4 = shoal_net.start("n4", peers=[n1])
    nodes = (n1, n2, n3, n4)
    shoal_net.wait_states(n4, {n1: "up", n2: "up", n3: "up"})

    prefix, key = cap.rsplit(":", 1)
    flipped = "a" if key[10] != "a" else "b"
    wrong_keys = [
        f"{prefix}:{key[:10]}{flipped}{key[11:]}",  # one character off
        f"{prefix}:{encode_id(os.urandom(32))}",  # another key altogether
    ]
    out = tmp_path / "out.bin"
    for node in nodes:
        for wrong in wrong_keys:
            line = assert_one_error_line(node.cli("get", wrong, "-o", str(out)), "cap")
            assert key not in line  # no key is ever shown
            assert wrong.rsplit(":", 1)[1] not in line
            assert not out.exists()
    # Nothing broke: the right cap reads the file on every node, nothing was moved aside.
    for node in nodes:
        node.cli("get", cap, "-o", str(out)).ok()
        assert out.read_bytes() == data, node.name
        out.unlink()
        assert corrupt_files(node) == [], node.name


def test_put_several_files_and_standard_input(
    shoal_net: ShoalNet, tmp_path: Path, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> None:
    node = shoal_net.start("n1")
    a, a_data = random_file("a.txt", 1000)
    b, b_data = random_file("b.txt", 2 * 1024 * 1024)
    missing = tmp_path / "missing.txt"
    put = node.cli("put", str(a), str(missing), str(b))
    # The missing file is reported; the others are stored, one cap per line; exit code 1.
    assert put.code == 1, put.describe()
    assert [line.split(":")[0] for line in put.error_lines] == ["error"], put.describe()
    assert f"error: {missing}: no such file: {missing}" in put.stderr, put.describe()
    caps = put.stdout.split()
    assert len(caps) == 2, put.describe()
    assert "stored a.txt (1000 B)" in put.stderr, put.describe()
    assert "stored b.txt (2.0 MiB)" in put.stderr, put.describe()
    assert put.stderr.count("warning: only 1 of 3 copies") == 1, put.describe()
    listing = {f["name"]: (f["cap"], f["size"]) for f in node.files()}
    assert listing == {"a.txt": (caps[0], 1000), "b.txt": (caps[1], len(b_data))}

    # Standard input, with --name (through a pipe: no length known in advance).
    stdin_data = os.urandom(1024 * 1024 + 3)
    piped = subprocess.run(
        [*SHOAL, "put", "--data-dir", str(node.data_dir), "-", "--name", "from stdin.bin"],
        input=stdin_data,
        capture_output=True,
        env=shoal_env(),
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    stdin_cap = piped.stdout.decode().strip()
    out = tmp_path / "stdin.out"
    node.cli("get", stdin_cap, "-o", str(out)).ok()
    assert out.read_bytes() == stdin_data
    node.cli("get", "a.txt", "-o", str(out), "--force").ok()
    assert out.read_bytes() == a_data


def test_get_writes_where_it_is_told_and_never_replaces_without_force(
    shoal_net: ShoalNet, tmp_path: Path, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> None:
    node = shoal_net.start("n1")
    src, data = random_file("pic.png", 5000)
    cap = node.cli("put", str(src), "--name", "albums/2024/pic.png").ok().last_line
    node.cli("put", str(src), "--name", "../../escape.png").ok()
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)

    def get(*args: str) -> Result:
        return run_shoal("get", "--data-dir", str(node.data_dir), *args, cwd=work)

    # By name: the name's last part, in the current directory.
    assert "wrote pic.png (4.9 KiB)" in get("albums/2024/pic.png").ok().stderr.splitlines()
    assert (work / "pic.png").read_bytes() == data
    # By cap: a file named after the CID.
    get(cap).ok()
    cid = cap.split(":")[2]
    assert (work / cid).read_bytes() == data
    # A name that climbs out of the directory lands inside it, under its last part.
    get("../../escape.png").ok()
    assert (work / "escape.png").read_bytes() == data
    assert not (tmp_path / "escape.png").exists()

    # An existing file is never replaced without --force, and is left as it was.
    (work / "pic.png").write_bytes(b"mine")
    for args in (
        ["albums/2024/pic.png"],
        ["albums/2024/pic.png", "-o", "pic.png"],
        [cap, "-o", "."],
    ):
        refused = get(*args)
        if args[-1] == ".":
            assert_one_error_line(refused, cid, "--force")
        else:
            assert_one_error_line(refused, "pic.png", "already exists", "--force")
    assert (work / "pic.png").read_bytes() == b"mine"
    get("albums/2024/pic.png", "--force").ok()
    assert (work / "pic.png").read_bytes() == data

    # -o DIR/ and -o an existing directory write into it; DIR/ must exist.
    (work / "out").mkdir()
    get("albums/2024/pic.png", "-o", "out/").ok()
    get(cap, "-o", "out").ok()
    assert sorted(p.name for p in (work / "out").iterdir()) == sorted([cid, "pic.png"])
    assert_one_error_line(get(cap, "-o", "nowhere/"), "no such directory")
    assert not (work / "nowhere").exists()
    # Every failure above left no stray temporary file behind.
    assert sorted(p.name for p in work.iterdir()) == sorted([cid, "escape.png", "out", "pic.png"])
