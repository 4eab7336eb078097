"""Two nodes, one data dir: a second ``shoal run`` on a data dir in use fails at once, even when
the first node's ``api.json`` is gone, and the first node goes on as if nothing happened.

Without the lock, the second process started a second node with the same key: the two replaced
each other's connections tens of thousands of times a minute, at full CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import BANNER, ShoalNet, get_over_network, run_shoal

pytestmark = pytest.mark.e2e

SECOND_RUN_BOUND = 20.0
"""Bound on the refused ``shoal run`` (its command timeout): starting Python and failing takes
a second or two. A second node that started instead would run until killed, and fail the test
here."""


def test_a_second_run_on_a_data_dir_in_use_fails_at_once_and_harms_nothing(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    # No background repair: it would copy the file below to n2 as soon as n2 is up (it has
    # one copy of three), and then n2's get would prove nothing about the network.
    n1 = shoal_net.start("n1", args=["--no-background-repair"])
    # A file only n1 holds (it is alone), for n2 to fetch from it at the end.
    src, data = random_file("before.bin", 3 * 1024 * 1024 + 1)
    cap = n1.cli("put", str(src)).ok().last_line
    only_on_n1 = n1.block_ids()
    n2 = shoal_net.start("n2", peers=[n1])
    shoal_net.wait_states(n1, {n2: "up"})
    shoal_net.wait_states(n2, {n1: "up"})
    assert n1.pid is not None

    # Without api.json nothing answers for the data dir, so the check for a running node that
    # asks the API sees none: only the lock stands in the way.
    api_json = n1.data_dir / "api.json"
    saved_api = api_json.read_bytes()
    api_json.unlink()
    lock_before = (n1.data_dir / "node.lock").read_text()
    assert lock_before.strip() == str(n1.pid), lock_before

    second = run_shoal(
        "run", "--data-dir", str(n1.data_dir), "--listen", "127.0.0.1:0", timeout=SECOND_RUN_BOUND
    )
    assert second.code == 1, second.describe()
    assert BANNER not in second.stdout, second.describe()
    assert "Traceback" not in second.stderr, second.describe()
    # One line, that names the data dir and the process that holds it, and nothing else.
    assert second.stderr.strip().splitlines() == second.error_lines, second.describe()
    assert len(second.error_lines) == 1, second.describe()
    line = second.error_lines[0]
    assert str(n1.data_dir) in line, line
    assert f"pid {n1.pid}" in line, line

    # The refused process wrote nothing: no api.json of its own, the lock still names n1.
    assert not api_json.exists(), "the refused `shoal run` wrote an api.json"
    assert (n1.data_dir / "node.lock").read_text() == lock_before
    api_json.write_bytes(saved_api)  # the test removed it; give the CLI its way back to n1
    api_json.chmod(0o600)

    # n1 goes on: its API answers as itself, its peer sees it up, it serves its blocks to that
    # peer (which held none of them), and it stores new files on it.
    shoal_net.check_running()
    assert n1.status()["node_id"] == n1.node_id
    shoal_net.wait_states(n1, {n2: "up"})
    shoal_net.wait_states(n2, {n1: "up"})
    fetched = get_over_network(n2, cap, data, only_on_n1, tmp_path / "from-n2.bin")
    assert fetched == only_on_n1
    src2, data2 = random_file("after.bin", 2 * 1024 * 1024)
    cap2 = n1.cli("put", str(src2)).ok().last_line
    assert n2.get_bytes(cap2, tmp_path / "after-from-n2.bin") == data2
    assert n1.get_bytes("after.bin", tmp_path / "after-from-n1.bin") == data2
    new_blocks = n1.block_ids() - only_on_n1
    assert new_blocks, "the new file left no block on n1"
    assert new_blocks <= n2.block_ids(), "n1 did not place a copy of every new block on n2"
