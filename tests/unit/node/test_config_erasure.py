"""node.erasure in config.toml, `shoal run --erasure` and `shoal put --replicas/--erasure`
argument checks (no node running)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.errors import ConfigError
from shoal.node.datadir import NodeConfig, parse_erasure

SOURCE = Path("/etc/shoal/config.toml")


def parse(**node: object) -> NodeConfig:
    return NodeConfig.from_mapping({"node": node}, SOURCE)


def test_node_erasure_is_parsed_and_written_back() -> None:
    config = parse(erasure="3-of-5")
    assert config.erasure == (3, 5)
    assert parse().erasure is None
    again = NodeConfig.from_mapping(tomllib.loads(config.to_toml()), SOURCE)
    assert again.erasure == (3, 5)
    assert 'erasure = "3-of-5"' in config.to_toml()
    assert "erasure" not in parse().to_toml()


@pytest.mark.parametrize("value", ["5-of-3", "3-of-3", "0-of-2", "1-of-33", "three", 35, True])
def test_bad_node_erasure_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"node\.erasure"):
        parse(erasure=value)


def test_parse_erasure() -> None:
    assert parse_erasure("2-of-4") == (2, 4)
    with pytest.raises(ConfigError, match="--erasure: erasure coding is written K-of-N"):
        parse_erasure("2/4", "--erasure")


def invoke(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, list(args), env={"SHOAL_DATA_DIR": None})
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--erasure", "5-of-3"], "error: --erasure: erasure coding needs 1 <= k < n <= 32"),
        (["--erasure", "3of5"], "error: --erasure: erasure coding is written K-of-N"),
        (["--erasure", "3-of-99"], "error: --erasure: erasure coding needs"),
        (["--replicas", "0"], "error: --replicas must be a whole number from 1 to 255"),
        (["--replicas", "256"], "error: --replicas must be a whole number from 1 to 255"),
        (["--replicas", "x" * 5000], "error: --replicas must be a whole number from 1 to 255"),
        (["--replicas", "9" * 5000], "error: --replicas must be a whole number from 1 to 255"),
        (["--replicas", "2", "--erasure", "3-of-5"], "error: give --replicas or --erasure"),
        (["-r", "--erasure", "3-of-5"], "error: --replicas and --erasure apply to files"),
    ],
)
def test_bad_put_redundancy_is_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, lines = invoke("put", "--data-dir", str(tmp_path), *args, "some-file")
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(message)
    assert not (tmp_path / "api.json").exists()


def test_run_refuses_a_bad_erasure_before_starting(tmp_path: Path) -> None:
    code, lines = invoke("run", "--data-dir", str(tmp_path / "d"), "--erasure", "4-of-2")
    assert code == 1
    assert lines == ["error: --erasure: erasure coding needs 1 <= k < n <= 32, got 4-of-2"]
    assert not (tmp_path / "d").exists()
