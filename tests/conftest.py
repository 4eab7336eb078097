"""Fixtures shared by every kind of test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SmallDisk = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """Make real, small file systems (tmpfs of a given size in bytes) that fill up for real.

    Needs root (CI runs as root), like the network-namespace tests.
    """
    mounts: list[Path] = []

    def make(size: int) -> Path:
        mount_point = tmp_path / f"disk{len(mounts)}"
        mount_point.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
            check=True,
            capture_output=True,
        )
        mounts.append(mount_point)
        return mount_point

    yield make
    for mount_point in reversed(mounts):
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
