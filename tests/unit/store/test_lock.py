"""The data dir lock: one running node per data dir, across processes and within one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import ConfigError
from shoal.store import DataDirLock

# A second process that takes the lock, says so, and holds it until its stdin closes.
_HOLDER = """
import sys
from pathlib import Path
from shoal.store import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
lock.release()
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real subprocess holding the lock on ``tmp_path``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def expected_message(data_dir: Path, pid: int) -> str:
    return f"data dir {data_dir} is in use by another running node (pid {pid}); stop it first"


def test_a_second_process_is_refused_at_once_with_the_holders_pid(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = DataDirLock(tmp_path)
    with pytest.raises(ConfigError) as info:
        lock.acquire()
    assert str(info.value) == expected_message(tmp_path, holder.pid)
    assert not lock.held

    # The holder lets go: the lock is free for us.
    assert holder.stdin is not None
    assert holder.stdout is not None
    holder.stdin.close()
    assert holder.stdout.readline() == "released\n"
    assert holder.wait(timeout=30) == 0
    with lock:
        assert lock.held
        assert (tmp_path / "node.lock").read_text() == f"{os.getpid()}\n"


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(ConfigError):
        DataDirLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    # The kernel dropped the lock with the process; the pid it left behind is not trusted.
    assert (tmp_path / "node.lock").read_text() == f"{holder.pid}\n"
    with DataDirLock(tmp_path) as lock:
        assert lock.held
        assert (tmp_path / "node.lock").read_text() == f"{os.getpid()}\n"


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    second = DataDirLock(tmp_path)
    with pytest.raises(ConfigError) as info:
        second.acquire()
    assert str(info.value) == expected_message(tmp_path, os.getpid())
    with pytest.raises(ConfigError, match="already locked"):
        first.acquire()
    assert first.held

    first.release()
    first.release()  # twice is fine
    assert (tmp_path / "node.lock").exists()  # never deleted, only unlocked
    assert (tmp_path / "node.lock").read_text() == ""
    second.acquire()
    assert second.held
    second.release()


def test_unknown_pid_still_gives_one_clear_line(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        # A holder that crashed between locking and writing its pid.
        (tmp_path / "node.lock").write_text("")
        with pytest.raises(ConfigError, match=r"in use by another running node \(pid unknown\)"):
            DataDirLock(tmp_path).acquire()


def test_missing_data_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does-not-exist"):
        DataDirLock(tmp_path / "does-not-exist").acquire()
