"""The GC grace period in config.toml (node.gc_grace), flags and Node.start."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shoal import Node, defaults
from shoal.errors import ConfigError
from shoal.node.datadir import NodeConfig, init_data_dir

SOURCE = Path("/etc/shoal/config.toml")


def test_gc_grace_is_read_written_and_checked() -> None:
    config = NodeConfig.from_mapping({"node": {"gc_grace": 90}}, SOURCE)
    assert config.gc_grace == 90.0
    again = NodeConfig.from_mapping(tomllib.loads(config.to_toml()), SOURCE)
    assert again.gc_grace == 90.0
    assert NodeConfig.from_mapping({"node": {}}, SOURCE).gc_grace is None
    for bad in (-1, "1h", True, [1]):
        with pytest.raises(ConfigError, match=r"node\.gc_grace"):
            NodeConfig.from_mapping({"node": {"gc_grace": bad}}, SOURCE)


async def test_a_flag_wins_over_config_which_wins_over_the_default(tmp_path: Path) -> None:
    data_dir = tmp_path / "n"
    init_data_dir(data_dir, open_network=True)
    async with Node.start(data_dir, listen="127.0.0.1:0") as node:
        assert node._rt.options.gc_grace == defaults.GC_GRACE
    config = data_dir / "config.toml"
    config.write_text(config.read_text().replace("[node]\n", "[node]\ngc_grace = 120\n", 1))
    async with Node.start(data_dir, listen="127.0.0.1:0") as node:
        assert node._rt.options.gc_grace == 120.0
    async with Node.start(data_dir, listen="127.0.0.1:0", gc_grace=5) as node:
        assert node._rt.options.gc_grace == 5.0
