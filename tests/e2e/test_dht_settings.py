"""`shoal run` with DHT settings: config.toml's [dht] and --dht-k/--dht-alpha, as real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import defaults
from tests.e2e.conftest import ShoalNet, run_shoal

pytestmark = pytest.mark.e2e


def add_to_config(data_dir: Path, text: str) -> None:
    config = data_dir / "config.toml"
    config.write_text(config.read_text() + "\n" + text)


def test_config_and_flags_set_k_and_alpha_and_status_shows_them(
    shoal_net: ShoalNet,
) -> None:
    n1 = shoal_net.node("n1")
    run_shoal("init", "--data-dir", str(n1.data_dir)).ok()
    add_to_config(n1.data_dir, "[dht]\nk = 8\nalpha = 2\n")
    n1.start()
    shoal_net.founder = n1  # later nodes join n1's network
    status = n1.status()
    assert (status["dht_k"], status["dht_alpha"]) == (8, 2), status
    assert "routing_table" in status, status
    assert "max_connections" in status, status

    # A flag overrides config.toml's key; the key it does not name still comes from the file.
    n2 = shoal_net.node("n2")
    invite = n1.cli("invite").ok().last_line
    run_shoal("init", "--data-dir", str(n2.data_dir), "--join", invite).ok()
    add_to_config(n2.data_dir, "[dht]\nk = 12\nalpha = 4\n")
    n2.start(args=("--dht-k", "8"))
    status = n2.status()
    assert (status["dht_k"], status["dht_alpha"]) == (8, 4), status

    # A third with flags only; all three find each other and `shoal peers` works.
    n3 = shoal_net.start("n3", peers=[n1], args=("--dht-k", "8", "--dht-alpha", "1"))
    assert (n3.status()["dht_k"], n3.status()["dht_alpha"]) == (8, 1)
    for node in (n1, n2, n3):
        shoal_net.wait_states(node, {o: "up" for o in (n1, n2, n3) if o is not node})
    table = shoal_net.wait(
        lambda: ((s := n3.status())["routing_table"] >= 2, s), what="n3's table to hold 2 nodes"
    )
    assert table["routing_table"] == 2, table

    # The human status shows k and alpha right after the routing-table size.
    lines = n1.cli("status").ok().stdout.splitlines()
    keys = [line.split(":", 1)[0] for line in lines]
    at = keys.index("routing_table")
    assert keys[at + 1 : at + 3] == ["dht_k", "dht_alpha"], lines
    assert lines[at + 1 : at + 3] == ["dht_k: 8", "dht_alpha: 2"], lines


def test_a_bad_dht_value_in_config_stops_the_start_with_the_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "n"
    run_shoal("init", "--data-dir", str(data_dir)).ok()
    for table, message in [
        ("[dht]\nk = 0\n", "dht.k must be an integer from 1 to 24"),
        ("[dht]\nalpha = true\n", "dht.alpha must be an integer"),
        ("[dht]\nquery_timeout = -1\n", "dht.query_timeout must be a number of seconds above 0"),
        ("[dht]\nkay = 8\n", "unknown key 'kay' in [dht]"),
    ]:
        original = (data_dir / "config.toml").read_text()
        add_to_config(data_dir, table)
        result = run_shoal("run", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
        assert result.code == 1, result.describe()
        assert len(result.error_lines) == 1, result.describe()
        assert message in result.error_lines[0], result.describe()
        assert "config.toml" in result.error_lines[0], result.describe()
        assert "Traceback" not in result.stderr, result.describe()
        assert not (data_dir / "api.json").exists()
        (data_dir / "config.toml").write_text(original)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dht-k", "0"), "Invalid value for '--dht-k'"),
        (("--dht-k", "25"), "Invalid value for '--dht-k'"),
        (("--dht-k", "eight"), "Invalid value for '--dht-k'"),
        (("--dht-alpha", "0"), "Invalid value for '--dht-alpha'"),
    ],
)
def test_bad_dht_flags_are_usage_errors(
    tmp_path: Path, args: tuple[str, str], message: str
) -> None:
    result = run_shoal("run", "--data-dir", str(tmp_path / "n"), "--listen", "127.0.0.1:0", *args)
    assert result.code == 2, result.describe()
    assert message in result.stderr, result.describe()
    assert not (tmp_path / "n").exists()  # nothing started, nothing created


def test_default_status_shows_the_default_k_and_alpha(shoal_net: ShoalNet) -> None:
    status = shoal_net.start("n1").status()
    assert (status["dht_k"], status["dht_alpha"]) == (defaults.DHT_K, defaults.DHT_ALPHA)
