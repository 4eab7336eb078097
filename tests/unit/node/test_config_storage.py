"""Storage limits in config.toml (node.max_storage, node.reserved_space) and how they reach the
block store."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shoal.errors import ConfigError
from shoal.node.datadir import NodeConfig, init_data_dir, load_data_dir
from shoal.node.runtime import NodeRuntime, RuntimeOptions

SOURCE = Path("/etc/shoal/config.toml")


def parse(**node: object) -> NodeConfig:
    return NodeConfig.from_mapping({"node": node}, SOURCE)


def test_sizes_are_parsed_with_binary_units() -> None:
    config = parse(max_storage="50GiB", reserved_space=1_000_000)
    assert config.max_storage == 50 << 30
    assert config.reserved_space == 1_000_000
    assert parse(max_storage="512 MiB").max_storage == 512 << 20
    assert parse(reserved_space=0).reserved_space == 0
    default = parse()
    assert (default.max_storage, default.reserved_space) == (None, None)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_storage", "50GB"),  # decimal units are refused, not guessed
        ("max_storage", "lots"),
        ("max_storage", -1),
        ("max_storage", 1.5),
        ("max_storage", True),
        ("reserved_space", ["1GiB"]),
        ("reserved_space", "1 GiB free"),
    ],
)
def test_bad_sizes_name_the_file_and_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**{key: value})
    message = str(info.value)
    assert str(SOURCE) in message
    assert f"node.{key}" in message


@pytest.mark.parametrize(
    ("max_storage", "reserved_space"),
    [(None, None), (50 << 30, None), (None, 0), (12345, (3 << 40) + 1), (1 << 20, 3 << 10)],
)
def test_to_toml_round_trips_and_writes_limits_only_when_set(
    max_storage: int | None, reserved_space: int | None
) -> None:
    config = NodeConfig(max_storage=max_storage, reserved_space=reserved_space)
    text = config.to_toml()
    assert ("max_storage" in text) == (max_storage is not None)
    assert ("reserved_space" in text) == (reserved_space is not None)
    assert NodeConfig.from_mapping(tomllib.loads(text), SOURCE) == config


def test_readable_units_in_the_written_file() -> None:
    text = NodeConfig(max_storage=50 << 30, reserved_space=12345).to_toml()
    assert 'max_storage = "50GiB"\n' in text
    assert "reserved_space = 12345\n" in text


async def test_limits_reach_the_block_store(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "node", NodeConfig(max_storage=64 << 20, reserved_space=0))
    data = load_data_dir(tmp_path / "node")

    from_config = NodeRuntime(data, RuntimeOptions())
    try:
        assert from_config.blocks.max_bytes == 64 << 20
        assert from_config.blocks.reserve_bytes == 0
    finally:
        await from_config.aclose()

    # Options (the flags) win over config.toml.
    from_flags = NodeRuntime(data, RuntimeOptions(max_storage=1 << 20, reserved_space=4096))
    try:
        assert from_flags.blocks.max_bytes == 1 << 20
        assert from_flags.blocks.reserve_bytes == 4096
    finally:
        await from_flags.aclose()
