"""Fixtures shared by every kind of test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Generating examples competes for two cores with the rest of the suite (pytest -n 2 and the
# node subprocesses of e2e tests), so the time hypothesis takes to *generate* inputs says
# nothing about our code, and its too_slow health check made runs flaky under load. What our
# code costs per example stays bounded: the default deadline (200 ms), or a test's own, still
# fails a slow decoder.
settings.register_profile("shoal", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shoal")

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
