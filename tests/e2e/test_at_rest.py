"""No plaintext at rest: after a put, no file of any node contains a 32-byte run of the file.

How the scan works, and why it is sound (it cannot miss a 32-byte run):

Compare 8-byte windows as native 64-bit integers (``memoryview.cast("Q")`` makes that C-speed).

- Index: the plaintext's 8-byte windows at the offsets that are multiples of 8 (a set of ints).
- Scan: each file's 8-byte windows at the offsets that are multiples of 3.

Suppose a file holds a run ``P[i:i+32]`` of the plaintext ``P`` at file offset ``f``. For each
``t`` in ``0..24`` the 8 bytes at ``P[i+t]`` equal the 8 bytes at file offset ``f+t``. We need one
``t`` with ``i+t`` a multiple of 8 (so the window is indexed) and ``f+t`` a multiple of 3 (so the
scan reads it). Since 8 and 3 are coprime, the Chinese remainder theorem says the ``t`` meeting
both form one residue class modulo 24, and ``0..24`` (25 consecutive integers) holds a member of
every class. So every 32-byte run produces an index hit: no hit means no run. (In general:
plaintext stride ``a``, file stride ``b``, window ``w``, run ``L`` are sound when ``gcd(a, b) = 1``
and ``a * b <= L - w + 1``; 8 and 3 make the scan read a third of the windows.)

A hit is only a candidate (8 bytes may match by chance, about 1e-5 over this whole test): each
one is confirmed by extending the match both ways and counts as a leak only if the common run
reaches 32 bytes. For 20 MiB the index holds 2.6 million integers (about 250 MB for the few
seconds of the scan); the scan looks up about a third of an integer per byte of files, a few
seconds for the ~64 MB of three nodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ShoalNet

pytestmark = pytest.mark.e2e

SIZE = 20 * 1024 * 1024
RUN = 32  # the shortest run of plaintext that must not appear anywhere
WINDOW = 8  # bytes per compared window (one uint64); also the plaintext stride
FILE_STRIDE = 3  # coprime with WINDOW, and WINDOW * FILE_STRIDE <= RUN - WINDOW + 1


@dataclass(frozen=True)
class Leak:
    path: Path
    file_offset: int
    plain_offset: int
    length: int


class PlaintextFinder:
    """Finds any run of ``RUN`` or more plaintext bytes in other data (see the module doc)."""

    def __init__(self, plaintext: bytes) -> None:
        self.plaintext = plaintext
        # The windows at offsets 0, 8, 16, ...
        self.index = set(memoryview(plaintext)[: len(plaintext) // WINDOW * WINDOW].cast("Q"))

    def find(self, data: bytes, path: Path) -> list[Leak]:
        """Every run of at least ``RUN`` plaintext bytes in ``data``."""
        view = memoryview(data)
        leaks: list[Leak] = []
        for phase in range(WINDOW):
            usable = (len(data) - phase) // WINDOW * WINDOW
            if usable <= 0:
                continue
            # Word k of this pass is at offset phase + 8k: keep those at multiples of 3.
            first = next(k for k in range(FILE_STRIDE) if (phase + k * WINDOW) % FILE_STRIDE == 0)
            words = view[phase : phase + usable].cast("Q")[first::FILE_STRIDE]
            if self.index.isdisjoint(words):  # the fast path: C-speed, no hit at all
                continue
            for m, word in enumerate(words):  # rare: locate and confirm each candidate
                if word in self.index:
                    offset = phase + (first + m * FILE_STRIDE) * WINDOW
                    leaks.extend(self._confirm(data, offset, path))
        # A long run holds several indexed windows: report it once.
        return sorted(set(leaks), key=lambda leak: (leak.file_offset, leak.plain_offset))

    def _confirm(self, data: bytes, offset: int, path: Path) -> Iterator[Leak]:
        window = data[offset : offset + WINDOW]
        plain = self.plaintext
        start = plain.find(window)
        while start != -1:
            back = 0
            while (
                back < offset
                and back < start
                and data[offset - back - 1] == plain[start - back - 1]
            ):
                back += 1
            ahead = WINDOW
            while (
                offset + ahead < len(data)
                and start + ahead < len(plain)
                and data[offset + ahead] == plain[start + ahead]
            ):
                ahead += 1
            if back + ahead >= RUN:
                yield Leak(path, offset - back, start - back, back + ahead)
            start = plain.find(window, start + 1)


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                yield Path(folder) / name


def test_the_finder_finds_any_planted_run_and_nothing_shorter() -> None:
    """The scanner itself can fail: a planted 32-byte run is found at every alignment."""
    plaintext = os.urandom(64 * 1024)
    finder = PlaintextFinder(plaintext)
    noise = os.urandom(1000)

    def differ(offset: int) -> bytes:
        # A byte that cannot extend the match (the plaintext byte at offset, flipped).
        return bytes([plaintext[offset] ^ 0xFF]) if 0 <= offset < len(plaintext) else b"!"

    for shift in range(WINDOW * FILE_STRIDE):
        for start in (0, 1, 7, 23, 24, 25, 1000 + shift, len(plaintext) - RUN):
            run = plaintext[start : start + RUN]
            before = noise[: 100 + shift] + differ(start - 1)
            data = before + run + differ(start + RUN) + noise[: 37 + shift]
            leaks = finder.find(data, Path("planted"))
            found = [(leak.file_offset, leak.plain_offset, leak.length) for leak in leaks]
            assert found == [(len(before), start, RUN)], (shift, start, found)
            # At the very edges of the data too.
            assert finder.find(run, Path("edge"))
            # 31 bytes are not a leak.
            short = noise[:shift] + differ(start - 1) + run[:-1] + differ(start + RUN - 1)
            assert finder.find(short, Path("short")) == [], (shift, start)


def test_no_data_dir_holds_32_plaintext_bytes(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]]
) -> None:
    n1, n2, n3 = shoal_net.quick_start()
    src, data = random_file("secret.bin", SIZE)
    n3.cli("put", str(src)).ok()
    # Every block is on every node (R=3, three nodes), already fsynced when put returns.
    for node in (n1, n2, n3):
        assert node.status()["bytes"] >= SIZE, node.status()

    finder = PlaintextFinder(data)
    scanned = 0
    leaks: list[Leak] = []
    # Blocks, shoal.db and its WAL/SHM files, config, keys, api.json: and the nodes' own logs.
    for path in files_under(shoal_net.data_root, shoal_net.log_root):
        content = path.read_bytes()
        scanned += len(content)
        leaks.extend(finder.find(content, path))
    assert leaks == [], leaks[:20]
    # Not vacuous: the three encrypted copies of the file were among what we read.
    assert scanned >= 3 * SIZE, scanned
