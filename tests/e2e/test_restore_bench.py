"""``bench/restore.py`` (part of ``make bench``) runs end to end at a tiny size, so it cannot
rot; and a SIGTERM in the middle leaves no ``shoal run`` behind.

No timing is asserted: only that the run finished, printed its figures for both schemes and
read every file back (the script exits non-zero when a restore never completes or a file reads
back wrong).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import shoal_env, wait_for

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "restore.py"


def restore_command(data: Path, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--dir", str(data), "--repair-delay", "1", *args]


def processes_under(data: Path) -> list[str]:
    """The command lines of running processes that mention ``data`` (nodes' data dirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if str(data) in cmdline and " run " in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_restore_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    done = subprocess.run(
        restore_command(tmp_path, "--size", "8MiB", "--timeout", "120"),
        capture_output=True,
        text=True,
        env=shoal_env(),
        timeout=280,
        check=False,
    )
    report = f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    for label in ("R=3, 5 nodes", "3-of-5 erasure, 6 nodes"):
        assert label in done.stdout, report
    assert done.stdout.count("seconds from kill -9 to full redundancy") == 2, report
    assert done.stdout.count("PREDICTION, not measured") == 2, report
    assert "every file read back bit for bit" in done.stdout, report
    assert processes_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # its data went with it


def test_restore_bench_stops_its_nodes_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "out.txt"
    data = tmp_path / "data"
    data.mkdir()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            restore_command(data, "--size", "8MiB"), stdout=out, stderr=out, env=shoal_env()
        )
    try:

        def nodes_up() -> tuple[bool, list[str]]:
            assert proc.poll() is None, log.read_text()
            found = processes_under(data)
            return len(found) >= 3, found

        wait_for(nodes_up, what="restore.py to start nodes", timeout=120)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGTERM, log.read_text()
    assert processes_under(data) == [], log.read_text()
    assert list(data.iterdir()) == [], log.read_text()
