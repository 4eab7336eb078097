"""DHT settings from config.toml ([dht]) and from Node.start(dht=) reach the node's DHT."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from shoal import Node, defaults
from shoal.dht.routing import DhtOptions
from shoal.errors import ConfigError
from shoal.node.datadir import DHT_SETTINGS, NodeConfig, init_data_dir, load_data_dir
from shoal.node.runtime import RuntimeOptions
from shoal.protocol.messages import MAX_NODES


def write_config(data_dir: Path, text: str) -> None:
    """A data dir whose config.toml is the default one plus ``text``."""
    init_data_dir(data_dir)
    config = data_dir / "config.toml"
    config.write_text(config.read_text() + "\n" + text)


def test_every_dht_setting_is_a_dht_option_with_its_default_documented() -> None:
    fields = {f.name for f in dataclasses.fields(DhtOptions)}
    assert set(DHT_SETTINGS) <= fields
    assert {
        "k",
        "alpha",
        "refresh_interval",
        "query_timeout",
        "lookup_timeout",
        "max_per_subnet",
        "find_node_rate",
        "find_node_burst",
    } <= set(DHT_SETTINGS)
    # Each key and its default are in the DHT doc's settings section and the config reference.
    root = Path(__file__).resolve().parents[3]
    dht_doc = (root / "docs" / "dht.md").read_text().split("## Settings", 1)[1].split("\n## ")[0]
    reference = (root / "docs" / "configuration.md").read_text()
    # Each doc's [dht] table: one row per key, with the code's default.
    for table in (dht_doc, reference.split("## `[dht]`", 1)[1]):
        rows = dict(re.findall(r"^\| `(\w+)` \| ([0-9.]+)", table, flags=re.MULTILINE))
        assert set(rows) == set(DHT_SETTINGS)
        for name, default in rows.items():
            assert float(default) == getattr(DhtOptions(), name), name


def test_dht_table_round_trips_and_reads_back_typed(tmp_path: Path) -> None:
    settings: dict[str, int | float] = {
        "k": 8,
        "alpha": 2,
        "refresh_interval": 120.0,
        "query_timeout": 2.5,
        "lookup_timeout": 10.0,
        "cache_ttl": 0.0,
        "max_per_subnet": 4,
        "find_node_rate": 5.0,
        "find_node_burst": 10,
    }
    init_data_dir(tmp_path / "n", NodeConfig(dht=settings))
    assert "[dht]\nk = 8\n" in (tmp_path / "n" / "config.toml").read_text()
    loaded = load_data_dir(tmp_path / "n").config
    assert loaded.dht == settings
    assert all(isinstance(loaded.dht[n], int) for n in ("k", "alpha", "find_node_burst"))
    # Whole numbers for timers are accepted and read as seconds (floats).
    write_config(tmp_path / "m", "[dht]\nquery_timeout = 2\nk = 24\n")
    assert load_data_dir(tmp_path / "m").config.dht == {"query_timeout": 2.0, "k": MAX_NODES}
    # No [dht] table: nothing changed, nothing written.
    init_data_dir(tmp_path / "d")
    assert load_data_dir(tmp_path / "d").config.dht == {}
    assert "[dht]" not in (tmp_path / "d" / "config.toml").read_text()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("k = 0", f"dht.k must be an integer from 1 to {MAX_NODES}"),
        (f"k = {MAX_NODES + 1}", f"dht.k must be an integer from 1 to {MAX_NODES}"),
        ("k = true", "dht.k must be an integer"),
        ("k = 8.0", "dht.k must be an integer"),
        ('k = "8"', "dht.k must be an integer"),
        ("alpha = 0", "dht.alpha must be an integer, 1 or more"),
        ("alpha = false", "dht.alpha must be an integer"),
        ("alpha = 1.5", "dht.alpha must be an integer"),
        ("refresh_interval = 0", "dht.refresh_interval must be a number of seconds above 0"),
        ("query_timeout = -1", "dht.query_timeout must be a number of seconds above 0"),
        ("query_timeout = true", "dht.query_timeout must be a number of seconds"),
        ("lookup_timeout = 0.0", "dht.lookup_timeout must be a number of seconds above 0"),
        ("lookup_timeout = inf", "dht.lookup_timeout must be a number of seconds above 0"),
        ("lookup_timeout = nan", "dht.lookup_timeout must be a number of seconds above 0"),
        ('lookup_timeout = "30"', "dht.lookup_timeout must be a number of seconds"),
        ("cache_ttl = -0.5", "dht.cache_ttl must be a number of seconds, 0 or more"),
        ("max_per_subnet = 0", "dht.max_per_subnet must be an integer, 1 or more"),
        ("find_node_rate = 0", "dht.find_node_rate must be a number of requests per second"),
        ("find_node_burst = 0", "dht.find_node_burst must be an integer, 1 or more"),
        ("find_node_burst = [1]", "dht.find_node_burst must be an integer"),
        ("kk = 8", r"unknown key 'kk' in \[dht\]; known keys: k, alpha, "),
        ("cache_entries = 8", r"unknown key 'cache_entries' in \[dht\]"),
    ],
)
def test_bad_dht_settings_are_one_clear_error_naming_key_and_file(
    tmp_path: Path, table: str, message: str
) -> None:
    write_config(tmp_path / "n", f"[dht]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_data_dir(tmp_path / "n")
    assert str(tmp_path / "n" / "config.toml") in str(info.value)
    # The same file without the bad line loads: only that line was refused.
    (tmp_path / "n" / "config.toml").write_text(
        (tmp_path / "n" / "config.toml").read_text().replace(table, "")
    )
    assert load_data_dir(tmp_path / "n").config.dht == {}


def test_dht_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    init_data_dir(tmp_path / "n")
    config = tmp_path / "n" / "config.toml"
    config.write_text("dht = 3\n" + config.read_text())
    with pytest.raises(ConfigError, match=r"config.toml: \[dht\] must be a table"):
        load_data_dir(tmp_path / "n")


async def test_dht_settings_reach_the_running_node_and_its_status(tmp_path: Path) -> None:
    write_config(tmp_path / "n", "[dht]\nk = 8\nalpha = 2\nquery_timeout = 2.5\n")
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0") as node:
        assert node._rt.dht is not None
        options = node._rt.dht.options
        assert (options.k, options.alpha, options.query_timeout) == (8, 2, 2.5)
        assert node._rt.dht.table.k == 8
        # The others keep their defaults.
        assert options.lookup_timeout == defaults.DHT_LOOKUP_TIMEOUT
        assert options.refresh_interval == defaults.DHT_REFRESH_INTERVAL
        status = await node.status()
        assert (status.dht_k, status.dht_alpha) == (8, 2)
        assert status.to_json()["dht_k"] == 8
        assert status.to_json()["dht_alpha"] == 2


async def test_node_without_dht_settings_runs_and_shows_the_defaults(tmp_path: Path) -> None:
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0") as node:
        status = (await node.status()).to_json()
        assert (status["dht_k"], status["dht_alpha"]) == (defaults.DHT_K, defaults.DHT_ALPHA)


async def test_arguments_override_config_which_overrides_options(tmp_path: Path) -> None:
    write_config(tmp_path / "n", "[dht]\nk = 8\nalpha = 2\n")
    options = dataclasses.replace(
        RuntimeOptions(), dht=DhtOptions(k=12, alpha=5, find_node_burst=7)
    )
    async with Node.start(
        tmp_path / "n", listen="127.0.0.1:0", options=options, dht={"k": 5}
    ) as node:
        assert node._rt.dht is not None
        got = node._rt.dht.options
        # k from the argument, alpha from config.toml, find_node_burst from the options.
        assert (got.k, got.alpha, got.find_node_burst) == (5, 2, 7)


@pytest.mark.parametrize(
    ("dht", "message"),
    [
        ({"k": 0}, "dht.k must be an integer from 1"),
        ({"alpha": True}, "dht.alpha must be an integer"),
        ({"nope": 1}, "unknown key 'nope'"),
    ],
)
async def test_bad_dht_arguments_stop_the_start(
    tmp_path: Path, dht: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        async with Node.start(tmp_path / "n", listen="127.0.0.1:0", dht=dht):
            pass
    # The data dir is still fine: a start without the bad setting works.
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0") as node:
        assert (await node.status()).dht_k == defaults.DHT_K


async def test_a_bad_dht_setting_in_config_stops_the_start(tmp_path: Path) -> None:
    write_config(tmp_path / "n", "[dht]\nalpha = 0\n")
    with pytest.raises(
        ConfigError, match=r"config\.toml: dht\.alpha must be an integer, 1 or more"
    ):
        async with Node.start(tmp_path / "n", listen="127.0.0.1:0"):
            pass


async def test_a_k_too_small_for_the_redundancy_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """dht.k = 2 finds at most 3 nodes: R = 5 would be under-placed; the node still starts."""
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0", dht={"k": 2}, replicas=5) as node:
        assert (await node.status()).dht_k == 2
    assert "files will be under-placed" in caplog.text
    caplog.clear()
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0", dht={"k": 4}, replicas=5):
        pass
    assert "under-placed" not in caplog.text
