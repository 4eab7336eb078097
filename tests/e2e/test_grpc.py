"""``shoal run --grpc``: the gRPC API of a real node process, driven by a real grpcio client.

The flag and ``api.json``, the example of docs/grpc.md run as a program, a bad or taken address,
and streaming with bounded memory: a file far larger than the bound goes in through a Put and
out through a Get whose client stops reading for a while, without the node holding it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from shoal.v1 import storage_pb2 as pb
from shoal.v1 import storage_pb2_grpc as pb_grpc
from tests.e2e.conftest import COMMAND_TIMEOUT, MiB, ShoalNet, ShoalNode, run_shoal, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FILE_SIZE = 256 * MiB  # well above the bound: buffering the file anywhere would break it
RSS_BOUND = 200 * MiB
STALLED_READ_BOUND = 64 * MiB
"""Most bytes the node may read from its store for a Get whose client has taken one message:
its get window (12 chunks) and gRPC's flow-control windows, far less than the file."""


def grpc_of(node: ShoalNode) -> tuple[str, tuple[tuple[str, str]]]:
    info = json.loads((node.data_dir / "api.json").read_text())
    return info["grpc"], (("authorization", f"Bearer {info['token']}"),)


def docs_example() -> str:
    text = (ROOT / "docs" / "grpc.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/grpc.md has one Python example"
    return str(blocks[0])


def test_run_with_grpc_serves_it_and_the_docs_example_runs(
    shoal_net: ShoalNet, tmp_path: Path
) -> None:
    node = shoal_net.start("n1", args=("--grpc", ":0"))
    address, auth = grpc_of(node)
    assert address.startswith("127.0.0.1:")
    banner = node.log_files()[0].read_text()
    assert f"gRPC {address})" in banner, banner
    with grpc.insecure_channel(address) as channel:
        status = pb_grpc.StorageStub(channel).Status(pb.StatusRequest(), metadata=auth)
    assert status.node_id == node.node_id

    example = tmp_path / "example.py"
    example.write_text(docs_example())
    photo = tmp_path / "photo.jpg"
    data = os.urandom(3 * MiB + 17)
    photo.write_bytes(data)
    done = subprocess.run(
        [sys.executable, str(example), str(photo)],
        env={**os.environ, "SHOAL_DATA_DIR": str(node.data_dir)},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"stored photo.jpg: {len(data)} bytes, 1 of 3 copies"
    assert re.fullmatch(r"shoal:r:[a-z2-7]{52}:[a-z2-7]{52}", lines[1])
    assert lines[2] == f"read back {len(data)} bytes"
    assert lines[3] == f"first 4 bytes: {data[:4].hex()}"
    assert lines[4].startswith("NOT_FOUND: no file named 'no-such-file'")
    assert (tmp_path / "photo.jpg.copy").read_bytes() == data
    assert [(f["name"], f["cap"]) for f in node.files()] == [("photo.jpg", lines[1])]


def test_grpc_is_off_by_default_and_a_bad_or_taken_address_is_one_error_line(
    shoal_net: ShoalNet, tmp_path: Path
) -> None:
    plain = shoal_net.start("plain")  # no --grpc: no gRPC API
    assert "grpc" not in json.loads((plain.data_dir / "api.json").read_text())
    assert "gRPC" not in plain.log_files()[0].read_text()

    bad = run_shoal("run", "--data-dir", str(tmp_path / "bad"), "--grpc", "no-port")
    assert bad.code != 0
    assert len(bad.error_lines) == 1, bad.describe()
    assert "invalid --grpc address" in bad.error_lines[0]
    assert not (tmp_path / "bad").exists()

    first = shoal_net.start("n1", args=("--grpc", ":0"))
    taken, _ = grpc_of(first)
    second = run_shoal("run", "--data-dir", str(tmp_path / "second"), "--grpc", taken)
    assert second.code != 0
    assert len(second.error_lines) == 1, second.describe()
    assert f"cannot listen on {taken} for the gRPC API" in second.error_lines[0]
    assert not (tmp_path / "second").exists()  # the failed start removed the dir it made
    assert first.status()["node_id"] == first.node_id  # the first node is unaffected


def read_chars(node: ShoalNode) -> int:
    """Bytes the node process has read so far (``rchar``: files and sockets)."""
    for line in Path(f"/proc/{node.pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/<pid>/io")


def wait_until_idle(node: ShoalNode) -> int:
    """Wait until the node reads (almost) nothing for a second; return its ``rchar`` then."""
    seen: list[int] = []

    def idle() -> tuple[bool, list[int]]:
        seen.append(read_chars(node))
        del seen[:-11]  # the last second, at 0.1 s a poll
        return len(seen) == 11 and seen[-1] - seen[0] < MiB, seen

    wait_for(idle, what="the node to stop reading", timeout=120)
    return seen[-1]


def test_grpc_put_and_a_stalled_get_keep_node_memory_bounded(shoal_net: ShoalNet) -> None:
    node = shoal_net.start("n1", args=("--grpc", ":0"))
    address, auth = grpc_of(node)
    sent = hashlib.sha256()

    def requests() -> Iterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(name="big.bin"))
        for _ in range(FILE_SIZE // MiB):
            piece = os.urandom(MiB)  # every chunk differs: nothing dedups
            sent.update(piece)
            yield pb.PutRequest(chunk=piece)

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.StorageStub(channel)
        reply = stub.Put(requests(), metadata=auth, timeout=300)
        assert reply.size == FILE_SIZE
        assert node.memory().peak < RSS_BOUND, f"the put peaked at {node.memory().peak / MiB:.0f}"

        before = read_chars(node)
        replies = stub.Get(pb.GetRequest(ref="big.bin"), metadata=auth, timeout=300)
        got = hashlib.sha256(next(replies).chunk)
        # The client reads nothing more for now: the node must stop after its windows.
        stalled_at = wait_until_idle(node)
        assert stalled_at - before < STALLED_READ_BOUND, (
            f"the node read {(stalled_at - before) / MiB:.0f} MiB for a client that took 1 MiB"
        )
        for part in replies:  # and the rest still comes, in order, once it reads again
            got.update(part.chunk)
        assert got.hexdigest() == sent.hexdigest()
        peak = node.memory().peak
        assert peak < RSS_BOUND, f"the node peaked at {peak / MiB:.0f} MiB"

        # A client that holds a Get open without reading does not keep the node from
        # stopping: SIGTERM gives calls in flight a second, then cancels them.
        held = stub.Get(pb.GetRequest(ref="big.bin"), metadata=auth, timeout=300)
        next(held)
        assert node.terminate() == 0
        with pytest.raises(grpc.RpcError):
            for _ in held:
                pass
    assert not (node.data_dir / "api.json").exists()
