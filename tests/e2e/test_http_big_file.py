"""A large file up and down through a real node's HTTP API, in bounded memory.

Two ``shoal run`` processes with ``--replicas 1``: each block of the file goes to the one node
closest to its ID, so about half of it is sent on to n2 during the upload and fetched back from
n2 during the download. The file goes up through n1's HTTP API with :class:`shoal.Client` (which
streams it from disk in 1 MiB pieces) and comes back the same way into a file; neither this test
nor the node ever holds it whole.
What is bounded is n1's peak resident set (``VmHWM`` from /proc, since the process started:
the interpreter, libraries, thread pools, TLS, allocator effects, everything) after both
transfers: under 200 MiB, the bound the web UI issue sets for a 1 GiB file. A node that
buffered the upload or the download would pass it at once with a 256 MiB file.

The size is 256 MiB so that ``make test`` stays quick; ``SHOAL_E2E_BIG_FILE_MIB=1024`` runs the
issue's 1 GiB case by hand. The MiB/s are printed (``-s``), never asserted.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from shoal import Client
from tests.e2e.conftest import MiB, ShoalNet

pytestmark = pytest.mark.e2e

SIZE_MIB = int(os.environ.get("SHOAL_E2E_BIG_FILE_MIB", "256"))
PEAK_BOUND = 200 * MiB
WRITE_CHUNK = 4 * MiB
READ_TIMEOUT = 120.0
"""How long the client waits for the node to answer or send more bytes (not a timing assert:
a loaded machine may pause a transfer for a while, and the test waits it out)."""


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` a chunk at a time; return their SHA-256."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(left, WRITE_CHUNK))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(WRITE_CHUNK):
            digest.update(piece)
    return digest.hexdigest()


@pytest.mark.timeout(max(300, SIZE_MIB * 2))
def test_a_large_file_up_and_down_the_http_api_keeps_the_node_under_200_mib(
    shoal_net: ShoalNet, tmp_path: Path
) -> None:
    size = SIZE_MIB * MiB + 12345  # not a whole number of chunks: the last one is short
    source = tmp_path / "src" / "big.bin"
    expected = write_random_file(source, size)
    n1, n2 = shoal_net.mesh("n1", "n2", args=("--replicas", "1"))
    before = n1.memory()
    blocks_before = n1.block_ids() | n2.block_ids()

    with Client.from_data_dir(n1.data_dir, read_timeout=READ_TIMEOUT) as client:
        started = time.monotonic()
        answer = client.put(source, name="big.bin")
        put_seconds = time.monotonic() - started
        assert answer["size"] == size
        assert answer["replicas"] == answer["replicas_wanted"] == 1, answer
        after_put = n1.memory()
        on_n2 = n2.block_ids() - blocks_before
        # Part of the file is only on n2: the download must fetch it over the network.
        assert on_n2 - n1.block_ids(), "every block of the file is on n1"
        assert n1.block_ids() - blocks_before, "every block of the file is on n2"

        dest = tmp_path / "out" / "big.bin"
        dest.parent.mkdir()
        started = time.monotonic()
        assert client.get("big.bin", dest) == size
        get_seconds = time.monotonic() - started
    after_get = n1.memory()

    assert dest.stat().st_size == size
    assert sha256_of(dest) == expected, "the bytes that came back are not the bytes sent"
    assert any(f["name"] == "big.bin" for f in n1.files())

    print(
        f"\nHTTP API, {SIZE_MIB} MiB file: put {size / MiB / put_seconds:.1f} MiB/s "
        f"({put_seconds:.1f} s), get {size / MiB / get_seconds:.1f} MiB/s ({get_seconds:.1f} s); "
        f"n1 memory: started {before}, after put {after_put}, after get {after_get}"
    )
    assert after_put.peak < PEAK_BOUND, f"n1 after the put: {after_put}"
    assert after_get.peak < PEAK_BOUND, f"n1 after the get: {after_get}"
