"""CLI argument handling and error reporting, with no node running."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shoal.cli.main import cli
from shoal.client.api_info import API_FILE_NAME
from shoal.client.http import Client
from shoal.errors import ShoalError
from shoal.ids import encode_id

CID = encode_id(b"\x01" * 32)
GOOD_CAP = f"shoal:r:{CID}:{encode_id(bytes([2]) * 32)}"


def invoke(
    *args: str, env: dict[str, str | None] | None = None, input: bytes | None = None
) -> Result:
    runner = CliRunner()
    return runner.invoke(cli, list(args), env={"SHOAL_DATA_DIR": None, **(env or {})}, input=input)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith("shoal, version ")


@pytest.mark.parametrize(
    "args",
    [
        ["init"],
        ["run"],
        ["put", "README.md"],
        ["get", "x", "-o", "out"],
        ["get", "x"],
        ["ls"],
        ["rm", "x"],
        ["peers"],
        ["status"],
    ],
)
def test_missing_data_dir_is_a_usage_error(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert "--data-dir" in result.stderr


def test_get_refuses_to_replace_a_file_before_asking_the_node(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious")
    for target in (["-o", str(out)], ["-o", f"{tmp_path}/"]):
        result = invoke("get", "--data-dir", str(tmp_path / "d"), "out.bin", *target)
        assert result.exit_code == 1, result.output
        assert error_lines(result) == [
            f"error: {out} already exists: use --force to replace it, or -o elsewhere"
        ]
    assert out.read_bytes() == b"precious"
    # With --force the same command goes on to the node (none is running here).
    result = invoke("get", "--data-dir", str(tmp_path / "d"), "out.bin", "-o", str(out), "-f")
    assert result.exit_code == 1
    assert "no running node" in result.stderr
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["..", "dir/", "a/."])
def test_get_of_a_name_without_a_file_name_asks_for_o(tmp_path: Path, name: str) -> None:
    result = invoke("get", "--data-dir", str(tmp_path), name)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "-o FILE" in line


def test_get_into_a_missing_directory(tmp_path: Path) -> None:
    result = invoke("get", "--data-dir", str(tmp_path), "x", "-o", f"{tmp_path}/nope/")
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: no such directory: {tmp_path}/nope/ (create it first)"]


def test_put_needs_a_file() -> None:
    result = invoke("put", "--data-dir", "d")
    assert result.exit_code == 2
    assert "FILE" in result.stderr


def test_put_of_standard_input_needs_a_name(tmp_path: Path) -> None:
    result = invoke("put", "--data-dir", str(tmp_path), "-", input=b"data")
    assert result.exit_code == 2
    assert "--name" in result.stderr


def test_one_name_for_several_files_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("put", "--data-dir", str(tmp_path), "a", "b", "--name", "x")
    assert result.exit_code == 2
    assert "--name" in result.stderr


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "a --name must not be empty"),
        ("fake\nrow", "a --name must not contain a control character: U+000A at position 5"),
        ("\x1b[2J", "control character: U+001B"),
        ("x" * 1025, "at most 1024 bytes"),
    ],
)
def test_bad_names_are_refused_before_anything_is_read(
    tmp_path: Path, name: str, fragment: str
) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    result = invoke("put", "--data-dir", str(tmp_path / "d"), str(src), "--name", name)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith("error: a --name must ")
    assert fragment in line
    assert not (tmp_path / "d").exists()


def test_files_that_would_share_a_name_are_refused(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.txt").write_bytes(b"x")
    result = invoke(
        "put", "--data-dir", str(tmp_path), f"{tmp_path}/a/x.txt", f"{tmp_path}/b/x.txt"
    )
    assert result.exit_code == 1
    assert error_lines(result) == [
        "error: several files would be named x.txt: store them one by one"
    ]


def test_put_of_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    result = invoke("put", "--data-dir", str(tmp_path), str(tmp_path / "nope"))
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line == f"error: no such file: {tmp_path / 'nope'}"


def test_unknown_command_is_a_usage_error() -> None:
    assert invoke("frobnicate").exit_code == 2


@pytest.mark.parametrize("command", [["ls"], ["peers"], ["status"], ["rm", "x"], ["ls", "--json"]])
def test_no_running_node_is_one_line(tmp_path: Path, command: list[str]) -> None:
    result = invoke(*command, "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: no running node for data dir {tmp_path}: start it with "
        f"`shoal run --data-dir {tmp_path}`"
    ]
    assert result.stdout == ""


def test_data_dir_from_environment(tmp_path: Path) -> None:
    result = invoke("ls", env={"SHOAL_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert f"no running node for data dir {tmp_path}" in result.stderr


def test_put_with_no_running_node(tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    result = invoke("put", "--data-dir", str(tmp_path / "d"), str(src))
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1
    assert "no running node" in result.stderr


def test_stale_api_file_is_reported(tmp_path: Path) -> None:
    info = {"url": f"http://127.0.0.1:{free_port()}", "token": "t", "pid": 1, "node_id": "n"}
    (tmp_path / API_FILE_NAME).write_text(json.dumps(info))
    result = invoke("status", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith("error: ")
    assert "stale" in line
    assert f"shoal run --data-dir {tmp_path}" in line


def test_malformed_api_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / API_FILE_NAME).write_text("{not json")
    result = invoke("ls", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert API_FILE_NAME in line


@pytest.mark.parametrize(
    "cap",
    [
        "shoal:r:not-a-cap",
        f"shoal:r:{CID}",
        f"shoal:v:{CID}",  # a verify cap cannot read
        f"shoal:x:{CID}",
        GOOD_CAP + "x",
    ],
)
def test_bad_cap_is_one_line_and_writes_nothing(tmp_path: Path, cap: str) -> None:
    out = tmp_path / "out.bin"
    result = invoke("get", "--data-dir", str(tmp_path), cap, "-o", str(out))
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith("error: ")
    assert "cap" in line
    assert list(tmp_path.iterdir()) == []


def test_good_cap_gets_as_far_as_the_node(tmp_path: Path) -> None:
    result = invoke("get", "--data-dir", str(tmp_path), GOOD_CAP, "-o", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "no running node" in result.stderr


def test_init_prints_the_node_id(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    first = invoke("init", "--data-dir", str(data_dir))
    assert first.exit_code == 0, first.output
    node_id = first.stdout.strip()
    assert len(node_id) == 52
    again = invoke("init", "--data-dir", str(data_dir))
    assert again.exit_code == 0
    assert again.stdout.strip() == node_id
    assert "already initialized" in again.stderr


def test_shoal_errors_become_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(data_dir: Path) -> None:
        raise ShoalError("first line\nsecond line")

    monkeypatch.setattr(Client, "from_data_dir", fail)
    result = invoke("peers", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert error_lines(result) == ["error: first line second line"]


def test_keyboard_interrupt_exits_130_without_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupt(data_dir: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "from_data_dir", interrupt)
    result = invoke("ls", "--data-dir", str(tmp_path))
    assert result.exit_code == 130
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "nonsense"], "expected NAME=VALUE"),
        (["--limit", "no_such=1"], "unknown limit 'no_such'"),
        (["--limit", "max_pending=zero"], "must be a number"),
        (["--max-storage", "lots"], "invalid --max-storage"),
        (["--reserved-space", "1GB"], "invalid --reserved-space"),
        (["--advertise", "no-port"], "expected HOST:PORT"),
    ],
)
def test_run_refuses_bad_limit_flags_before_creating_anything(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    data_dir = tmp_path / "node"
    result = invoke("run", "--data-dir", str(data_dir), *flags)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not data_dir.exists()


def test_init_join_and_invite_errors(tmp_path: Path) -> None:
    bad = invoke("init", "--data-dir", str(tmp_path / "a"), "--join", "shoal:invite:xyz@h:1")
    assert bad.exit_code == 1
    assert "invite's secret is damaged" in bad.stderr
    assert not (tmp_path / "a").exists()
    both = invoke("init", "--data-dir", str(tmp_path / "b"), "--open", "--join", "x")
    assert both.exit_code == 2
    opened = invoke("init", "--data-dir", str(tmp_path / "c"), "--open")
    assert opened.exit_code == 0
    assert "open network" in opened.stderr
    no_invite = invoke("invite", "--data-dir", str(tmp_path / "c"))
    assert no_invite.exit_code == 1
    assert "open network" in no_invite.stderr
    closed = invoke("init", "--data-dir", str(tmp_path / "d"))
    assert "new closed network" in closed.stderr
    made = invoke("invite", "--data-dir", str(tmp_path / "d"), "--address", "192.0.2.1:3000")
    assert made.exit_code == 0
    assert made.stdout.startswith("shoal:invite:")
    assert made.stdout.strip().endswith("@192.0.2.1:3000")
    joined = invoke("init", "--data-dir", str(tmp_path / "e"), "--join", made.stdout.strip())
    assert joined.exit_code == 0
    assert "joined the invite's closed network" in joined.stderr
    assert (tmp_path / "d" / "network.key").read_text() == (
        tmp_path / "e" / "network.key"
    ).read_text()
