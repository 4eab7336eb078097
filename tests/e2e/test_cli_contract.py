"""The CLI's contract as scripts see it: exit codes, one error line, no half-written output."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.ids import encode_id
from tests.e2e.conftest import Result, ShoalNet, run_shoal

pytestmark = pytest.mark.e2e


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
    ):
        result = run_shoal(command[0], "--data-dir", str(data_dir), *command[1:])
        assert_one_error_line(result, "shoal run")
    assert not out.exists()


def test_run_on_an_address_in_use_says_which(shoal_net: ShoalNet, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "{}:{}".format(*taken.getsockname())
        result = run_shoal("run", "--data-dir", str(tmp_path / "x"), "--listen", address)
    assert result.code != 0, result.describe()
    errors = result.error_lines
    assert len(errors) == 1, result.describe()
    assert address in errors[0], result.describe()
    assert "in use" in errors[0], result.describe()
    assert "Traceback" not in result.stderr, result.describe()

    # The same when the port is another running node's.
    n1 = shoal_net.start("n1")
    assert n1.listen is not None
    result = run_shoal("run", "--data-dir", str(tmp_path / "y"), "--listen", n1.listen)
    assert result.code != 0, result.describe()
    assert len(result.error_lines) == 1, result.describe()
    assert n1.listen in result.error_lines[0], result.describe()
    assert n1.alive


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
    assert "warning: only 1 of 3 copies stored" in put.stderr, put.describe()
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

    # rm, then it is gone from ls --json and from get; a second rm is an error.
    shoal("rm", "doc.txt").ok()
    assert node.files() == []
    assert_one_error_line(shoal("get", "doc.txt", "-o", str(out)), "doc.txt")
    assert not out.exists()
    assert_one_error_line(shoal("rm", "doc.txt"), "doc.txt")
