"""The DHT simulation at small sizes: lookups meet the issue's targets, and runs are seeded."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

from shoal.dht.sim import SimFigures, main, simulate


@pytest.fixture(scope="module")
def figures() -> SimFigures:
    return simulate(150, seed=11, keys=40, origins=4)


def test_every_lookup_finds_the_closest_live_nodes_with_none_or_a_tenth_failed(
    figures: SimFigures,
) -> None:
    by_share = {level.failed_share: level for level in figures.levels}
    assert sorted(by_share) == [0.0, 0.1, 0.3]
    for share in (0.0, 0.1):
        assert by_share[share].lookups == 160
        assert by_share[share].success == 1.0
    assert by_share[0.3].success >= 0.99
    assert by_share[0.0].timeouts == 0  # nobody failed: nothing timed out
    assert by_share[0.3].timeouts > by_share[0.1].timeouts > 0


def test_lookups_from_different_nodes_agree_in_few_rounds(figures: SimFigures) -> None:
    for level in figures.levels:
        assert level.agreement >= 0.99
        assert 1 <= level.rounds_median <= 4
        assert level.rounds_p99 <= 8
        assert 0 < level.messages <= 8 * 20  # the lookup's own ceiling
    assert figures.table_size >= 20
    assert figures.join_messages > 0


def test_the_same_seed_gives_the_same_figures_and_another_seed_others() -> None:
    first = simulate(50, seed=5, keys=10, origins=3)
    again = simulate(50, seed=5, keys=10, origins=3)
    other = simulate(50, seed=6, keys=10, origins=3)
    assert first.seeded() == again.seeded()
    assert first.seeded() != other.seeded()
    assert gc.isenabled()  # the run turns the cyclic collector off, and back on


def test_figures_do_not_depend_on_the_process_hash_seed() -> None:
    """Set iteration order changes with PYTHONHASHSEED; the figures must not."""
    runs = []
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "shoal.dht.sim", "--nodes", "50", "--keys", "10", "--json"],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        (run,) = json.loads(done.stdout)["runs"]
        del run["cpu_seconds"], run["wall_seconds"]
        runs.append(run)
    assert runs[0] == runs[1]
    assert runs[0]["nodes"] == 50


def test_the_command_prints_a_table_and_rejects_bad_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["--nodes", "30,40", "--keys", "5", "--origins", "2", "--failed", "0,20"])
    out = capsys.readouterr().out
    rows = [row for row in map(str.split, out.splitlines()) if len(row) > 1 and row[1][-1] == "%"]
    assert [(row[0], row[1]) for row in rows] == [
        ("30", "0%"),
        ("30", "20%"),
        ("40", "0%"),
        ("40", "20%"),
    ]
    assert "agreement" in out
    with pytest.raises(SystemExit):
        main(["--nodes", "ten"])
    with pytest.raises(SystemExit):
        main(["--failed", "100"])
    assert "every network" not in capsys.readouterr().out
