"""mDNS in a real node: off on loopback (no socket at all), and the ``node.mdns`` config key."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import psutil
import pytest

from shoal import Node
from shoal.errors import ConfigError
from shoal.node.datadir import NodeConfig
from shoal.node.runtime import RuntimeOptions

MDNS_PORT = 5353


def udp_sockets_on_mdns_port() -> list[object]:
    process = psutil.Process()
    list_sockets = getattr(process, "net_connections", None) or process.connections
    return [c for c in list_sockets(kind="udp") if c.laddr and c.laddr.port == MDNS_PORT]


async def test_a_node_on_loopback_announces_and_queries_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.discovery")
    assert udp_sockets_on_mdns_port() == []
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0") as node:
        mdns = node._rt.mdns
        assert mdns is not None
        assert not mdns.plan.enabled
        assert not mdns.running
        assert "mDNS is off: this node listens on loopback" in caplog.text
        # Not a single mDNS socket: nothing is sent, nothing is listened to.
        assert udp_sockets_on_mdns_port() == []


async def test_config_can_turn_mdns_off(tmp_path: Path) -> None:
    config = NodeConfig(mdns=False)
    assert "mdns = false" in config.to_toml()
    again = NodeConfig.from_mapping(tomllib.loads(config.to_toml()), tmp_path / "config.toml")
    assert again.mdns is False
    assert NodeConfig.from_mapping({}, tmp_path / "config.toml").mdns is True
    with pytest.raises(ConfigError, match=r"node\.mdns must be true or false"):
        NodeConfig.from_mapping({"node": {"mdns": "no"}}, tmp_path / "config.toml")

    # Read by the node: off, and it says why.
    data_dir = tmp_path / "n"
    async with Node.start(data_dir):
        pass
    (data_dir / "config.toml").write_text(
        (data_dir / "config.toml").read_text().replace("[node]\n", "[node]\nmdns = false\n")
    )
    async with Node.start(data_dir) as node:
        mdns = node._rt.mdns
        assert mdns is not None
        assert mdns.plan.off_reason is not None
        assert "node.mdns = false" in mdns.plan.off_reason
    # And by the runtime option (what --no-mdns sets), whatever config.toml says.
    async with Node.start(tmp_path / "m", options=RuntimeOptions(mdns=False)) as node:
        mdns = node._rt.mdns
        assert mdns is not None
        assert mdns.plan.off_reason is not None
        assert "--no-mdns" in mdns.plan.off_reason
