"""Limits from config.toml ([limits], node.advertise) and from flags reach the node."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shoal import Node
from shoal.errors import ConfigError
from shoal.node.datadir import NodeConfig, init_data_dir, load_data_dir
from shoal.node.runtime import RuntimeOptions
from shoal.transport.limits import TransportLimits, limits_with


def write_config(data_dir: Path, text: str) -> None:
    init_data_dir(data_dir)
    (data_dir / "config.toml").write_text(text)


def test_limits_table_and_advertise_round_trip(tmp_path: Path) -> None:
    config = NodeConfig(
        advertise=["192.0.2.7:3000"], limits={"max_connections": 12, "dial_rate": 2.5}
    )
    init_data_dir(tmp_path / "n", config)
    loaded = load_data_dir(tmp_path / "n").config
    assert loaded.advertise == ["192.0.2.7:3000"]
    assert loaded.limits == {"max_connections": 12, "dial_rate": 2.5}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[limits]\nno_such_limit = 3\n", "unknown limit 'no_such_limit'"),
        ("[limits]\nmax_connections = 0\n", "max_connections must be at least 1"),
        ("[limits]\nmax_connections = 2.5\n", "whole number"),
        ("[limits]\nmax_connections = true\n", "must be a number"),
        ("[limits]\nstall_timeout = -1\n", "stall_timeout must be positive"),
        ("limits = 3\n", r"\[limits\] must be a table"),
        ('[node]\nadvertise = "1.2.3.4:5"\n', "node.advertise must be a list"),
    ],
)
def test_bad_limits_in_config_are_one_clear_error(tmp_path: Path, table: str, message: str) -> None:
    write_config(tmp_path / "n", table)
    with pytest.raises(ConfigError, match=message) as info:
        load_data_dir(tmp_path / "n")
    assert "config.toml" in str(info.value)


def test_flags_override_config_which_overrides_defaults() -> None:
    config = limits_with({"max_connections": 10, "max_pending": 3}, source="config")
    flags = limits_with({"max_connections": "20"}, base=config, source="--limit")
    assert (flags.max_connections, flags.max_pending) == (20, 3)
    assert flags.max_known_peers == TransportLimits().max_known_peers


async def test_limits_reach_the_running_node(tmp_path: Path) -> None:
    write_config(tmp_path / "n", "[limits]\nmax_pending = 5\nmax_connections = 9\n")
    async with Node.start(
        tmp_path / "n", listen="127.0.0.1:0", limits={"max_connections": 7}, max_storage=1 << 30
    ) as node:
        limits = node._rt.manager.limits
        assert (limits.max_connections, limits.max_pending) == (7, 5)
        assert node._rt.blocks.max_bytes == 1 << 30


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chunk_size": 0}, "chunk size"),
        ({"chunk_size": 5 << 20}, "chunk size"),
        ({"manifest_fanout": 1}, "fanout"),
        ({"window": 0}, "window"),
    ],
)
async def test_settings_a_put_would_trip_over_are_refused_at_start(
    tmp_path: Path, change: dict[str, int], message: str
) -> None:
    options = dataclasses.replace(RuntimeOptions(), **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        async with Node.start(tmp_path / "n", listen="127.0.0.1:0", options=options):
            pass


async def test_too_many_replicas_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replicas must be 1 to 255"):
        async with Node.start(tmp_path / "n", listen="127.0.0.1:0", replicas=300):
            pass


async def test_advertised_addresses_reach_hello_status_and_invites(tmp_path: Path) -> None:
    async with Node.start(
        tmp_path / "n", listen="127.0.0.1:0", advertise=["192.0.2.9:7000", "[2001:db8::1]:7000"]
    ) as node:
        assert node.advertised_addresses == ("192.0.2.9:7000", "[2001:db8::1]:7000")
        assert (await node.status()).advertise == ["192.0.2.9:7000", "[2001:db8::1]:7000"]
        assert node.invite().endswith("@192.0.2.9:7000,[2001:db8::1]:7000")
    with pytest.raises(ConfigError, match="invalid --advertise address"):
        async with Node.start(tmp_path / "m", listen="127.0.0.1:0", advertise=["0.0.0.0:7000"]):
            pass
