"""``shoal scrub``'s helpers and ``shoal run``'s scrub and handoff flags, with no node running."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.cli.scrub import format_scrub, parse_rate


def test_rates_are_sizes_per_second() -> None:
    assert parse_rate("10MiB", what="--scrub-rate") == 10 * 2**20
    assert parse_rate("512KiB/s", what="--scrub-rate") == 512 * 1024
    assert parse_rate(None, what="--scrub-rate") is None


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--scrub-rate", "0"], 2, "more than 0"),
        (["--handoff-rate", "fast"], 1, "--handoff-rate"),
        (["--scrub-interval", "0"], 2, "--scrub-interval"),
        (["--handoff-interval", "-5"], 2, "--handoff-interval"),
    ],
)
def test_bad_timers_fail_before_anything_starts(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    data_dir = tmp_path / "node"
    result = CliRunner().invoke(cli, ["run", "--data-dir", str(data_dir), *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not data_dir.exists()


def test_status_line_shows_progress_the_last_pass_and_the_next() -> None:
    last = {
        "pass": 2,
        "started": 0.0,
        "finished": 60.0,
        "checked": 10,
        "bytes": 2048,
        "corrupt": 1,
        "replaced": 1,
        "unreplaced": 0,
    }
    running = {"running": True, "pass": 3, "checked": 4, "blocks": 10, "corrupt": 0,
               "replaced": 0, "last": last}  # fmt: skip
    line = format_scrub(running)
    assert line.startswith("pass 3 running: 4 of about 10 block(s) checked")
    assert "pass 2 finished" in line
    assert "10 block(s) checked (2.0 KiB), 1 corrupt, 1 replaced" in line
    idle = format_scrub({"running": False, "pass": 0, "next_pass": None, "last": None})
    assert idle == "next pass -; no pass finished yet"
    assert format_scrub(None) == "-"
