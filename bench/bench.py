"""Throughput and memory of Shoal on this machine, as ratios to the machine's own limits.

Run with ``make bench``. Measured in one run:
- limits: one thread doing SHA-256 + AES-256-GCM over the same bytes (the issue's reference),
  the disk (one file written and fsynced; 1 MiB files fsynced from 8 threads), and one TLS 1.3
  connection over 127.0.0.1 (``limit_tls_loopback``; ``bench/restore.py`` reuses these);
- single node: ``shoal run`` in a subprocess, put and get through its HTTP API (what the CLI
  does) and through its gRPC API (``--grpc``, a grpcio client streaming 1 MiB messages), and
  the in-process Python API;
- three nodes (R=3): three ``shoal run`` subprocesses, put through one, get through another;
- five nodes: erasure coding 3-of-5 beside R=3 on the same five nodes (put through one, get
  through another; ``--erasure-only`` runs just this part, ``--erasure-rss-size`` adds the
  peak RSS of each node for a 3-of-5 put and get of a larger file);
- peak RSS (VmHWM) of every node process, also for a larger file (``--rss-size``);
- what placement by lookup costs in 50 in-process nodes at 8 connections each: lookups,
  FIND_NODE messages and dials per GiB stored and read (``bench/dht_placement.py``);
- the DHT simulation (``make sim``) at 100, 1,000 and 10,000 nodes (``--no-sim`` skips both).

``make bench`` then runs ``bench/restore.py``: the time to restore full redundancy after a node
is lost.

Timings live here only, never in test asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import dht_placement  # bench/dht_placement.py, beside this script
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal import Client, Node
from shoal.transport.identity import Identity
from shoal.transport.tls import client_context, server_context

MiB = 1 << 20
SHOAL = [sys.executable, "-m", "shoal.cli.main"]


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


def limit_crypto(path: Path) -> float:
    """MiB/s of one thread hashing (SHA-256) and encrypting (AES-256-GCM) the file's bytes."""
    aead = AESGCM(bytes(32))
    nonce = bytes(12)
    buf = bytearray(MiB)
    view = memoryview(buf)
    total = 0
    elapsed = 0.0
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            start = time.perf_counter()
            hashlib.sha256(aead.encrypt(nonce, view[:n], None)).digest()
            elapsed += time.perf_counter() - start
            total += n
    return total / MiB / elapsed


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def limit_disk(directory: Path, size: int) -> tuple[float, float]:
    """MiB/s of the disk for the two patterns Shoal uses.

    One file written then fsynced (a get to a file), and 1 MiB files each written, fsynced,
    renamed into a new fan-out directory and that directory fsynced, 8 threads at a time (how
    blocks are stored). Measured with plain os calls, not Shoal's code.
    """
    buf = os.urandom(MiB)
    target = directory / "disk-probe"
    start = time.perf_counter()
    with target.open("wb") as f:
        for _ in range(size // MiB):
            f.write(buf)
        f.flush()
        os.fsync(f.fileno())
    one_file = size / MiB / (time.perf_counter() - start)
    target.unlink()
    probe = directory / "disk-probe-dir"
    (probe / "tmp").mkdir(parents=True)

    def write(i: int) -> None:
        tmp = probe / "tmp" / str(i)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, buf)
            os.fsync(fd)
        finally:
            os.close(fd)
        leaf = probe / f"{i:04x}"
        leaf.mkdir()
        _fsync_path(probe)
        os.replace(tmp, leaf / "block")
        _fsync_path(leaf)

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(size // MiB)))
    many_files = size / MiB / (time.perf_counter() - start)
    shutil.rmtree(probe)
    return one_file, many_files


def limit_tls_loopback(directory: Path, size: int) -> float:
    """MiB/s of one TLS 1.3 connection over 127.0.0.1, with Shoal's TLS contexts and a node
    certificate: a sender thread and a receiver thread in this process, 1 MiB writes. The
    clock stops when the receiver has every byte (it answers one byte)."""
    cert, key, _ = Identity.generate().write_tls_files(_fresh_dir(directory / "tls-probe"))
    buf = os.urandom(MiB)
    total = (size // MiB) * MiB

    def receive(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.settimeout(60)
        with server_context(cert, key).wrap_socket(conn, server_side=True) as tls:
            sink = bytearray(MiB)
            got = 0
            while got < total:
                n = tls.recv_into(sink)
                if not n:
                    raise RuntimeError("TLS probe: the sender closed early")
                got += n
            tls.sendall(b"k")

    with socket.create_server(("127.0.0.1", 0)) as listener, ThreadPoolExecutor(1) as pool:
        listener.settimeout(60)
        receiver = pool.submit(receive, listener)
        with (
            socket.create_connection(listener.getsockname(), timeout=60) as raw,
            client_context().wrap_socket(raw) as tls,
        ):
            start = time.perf_counter()
            for _ in range(total // MiB):
                tls.sendall(buf)
            if tls.recv(1) != b"k":
                raise RuntimeError("TLS probe: no answer from the receiver")
            elapsed = time.perf_counter() - start
        receiver.result(timeout=60)
    shutil.rmtree(directory / "tls-probe")
    return total / MiB / elapsed


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def init_node(data_dir: Path, invite: str | None) -> None:
    """``shoal init`` (a new closed network) or ``shoal init --join INVITE``."""
    args = [*SHOAL, "init", "--data-dir", str(data_dir)]
    if invite is not None:
        args += ["--join", invite]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True, capture_output=True)


def invite_of(data_dir: Path) -> str:
    done = subprocess.run(
        [*SHOAL, "invite", "--data-dir", str(data_dir)], check=True, capture_output=True
    )
    return done.stdout.decode().strip().splitlines()[-1]


class NodeProcess:
    def __init__(
        self, data_dir: Path, listen: str, peers: list[str], extra: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        args = [*SHOAL, "run", "--data-dir", str(data_dir), "--listen", listen, *extra]
        for peer in peers:
            args += ["--peer", peer]
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with data_dir.with_suffix(".log").open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not (data_dir / "api.json").exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node on {data_dir} did not start; see its .log")
                time.sleep(0.05)
            self.client = Client.from_data_dir(data_dir)
            self.listen = self.client.status()["listen"]
        except BaseException:  # Ctrl-C too: never leave a half-started node running
            self.proc.kill()
            self.proc.wait()
            raise

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill9(self) -> None:
        """SIGKILL: the node gets no chance to say goodbye."""
        self.proc.kill()
        self.proc.wait()


@contextmanager
def nodes(root: Path, count: int, extra: tuple[str, ...] = ()) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        init_node(root / "n1", None)
        first = NodeProcess(root / "n1", "127.0.0.1:0", [], extra)
        started.append(first)
        invite = invite_of(first.data_dir)
        for i in range(2, count + 1):
            init_node(root / f"n{i}", invite)
            started.append(NodeProcess(root / f"n{i}", "127.0.0.1:0", [first.listen], extra))
        deadline = time.monotonic() + 30
        while any(sum(p["state"] == "up" for p in n.client.peers()) < count - 1 for n in started):
            if time.monotonic() > deadline:
                raise RuntimeError("nodes did not all connect")
            time.sleep(0.1)
        yield started
    finally:
        for node in started:
            node.proc.terminate()  # all at once: a slow one does not keep the rest waiting
        for node in started:
            node.stop()


def timed_put_get(
    put_node: NodeProcess, get_node: NodeProcess, src: Path, **redundancy: object
) -> tuple[float, float]:
    """MiB/s of a put through one node and a get through another; ``redundancy`` is
    ``replicas=R`` or ``erasure="K-of-N"`` (default: the node's)."""
    size = src.stat().st_size
    start = time.perf_counter()
    name = "-".join([src.stem, *(f"{k}{v}" for k, v in redundancy.items())]) + src.suffix
    cap = put_node.client.put(src, name, **redundancy)["cap"]  # type: ignore[arg-type]
    put_rate = size / MiB / (time.perf_counter() - start)
    return put_rate, timed_get(get_node, cap, src)


def erasure_rows(
    root: Path, src: Path, row: Callable[[str, float, str], None], figures: dict[str, float]
) -> None:
    """3-of-5 erasure coding beside R=3, on the same five nodes (put through the last, get
    through the first); their ratios."""
    with nodes(root / "five", 5) as five:
        put, get = timed_put_get(five[4], five[0], src, replicas=3)
        row("five nodes, R=3, HTTP API: put", put, "five_r3_put")
        row("five nodes, R=3, HTTP API: get (other node)", get, "five_r3_get")
        eput, eget = timed_put_get(five[4], five[0], src, erasure="3-of-5")
        row("five nodes, 3-of-5 erasure, HTTP API: put", eput, "five_ec_put")
        row("five nodes, 3-of-5 erasure, HTTP API: get", eget, "five_ec_get")
        figures.update(ec_put_vs_r3=eput / put, ec_get_vs_r3=eget / get)
        print(
            f"       (3-of-5 vs R=3 on the same nodes: put {eput / put:.2f}x, "
            f"get {eget / get:.2f}x)"
        )


def erasure_rss(root: Path, size_mib: int, figures: dict[str, float]) -> None:
    """Peak RSS of each of five nodes for a 3-of-5 put and get of a ``size_mib`` file."""
    src = root / "ec-rss.bin"
    make_file(src, size_mib * MiB)
    with nodes(root / "ec-rss", 5) as five:
        put, get = timed_put_get(five[4], five[0], src, erasure="3-of-5")
        rss = [n.peak_rss_mib() for n in five]
    src.unlink()
    figures["ec_rss_max"] = max(rss)
    print(
        f"peak RSS of each node ({size_mib} MiB file, 3-of-5): "
        + ", ".join(f"{r:.0f} MiB" for r in rss)
        + f"  (put {put:.0f}, get {get:.0f} MiB/s)"
    )


def timed_reput(put_node: NodeProcess, src: Path) -> float:
    """Seconds to store the same bytes again under another name (holders have every block)."""
    start = time.perf_counter()
    put_node.client.put(src, name="again-" + src.name)
    return time.perf_counter() - start


def timed_get(get_node: NodeProcess, cap: str, src: Path) -> float:
    size = src.stat().st_size
    out = src.with_name("out.bin")
    start = time.perf_counter()
    get_node.client.get(cap, out)
    get_rate = size / MiB / (time.perf_counter() - start)
    if not same_file(src, out):
        raise SystemExit("bench: the file read back differs from the one stored")
    out.unlink()
    return get_rate


def timed_grpc_put_get(node: NodeProcess, src: Path) -> tuple[float, float]:
    """MiB/s of a put and a get (to a file, fsynced, as the HTTP client does) over gRPC."""
    import grpc

    from shoal.store.files import AtomicFile
    from shoal.v1 import storage_pb2 as pb
    from shoal.v1 import storage_pb2_grpc as pb_grpc

    info = json.loads((node.data_dir / "api.json").read_text())
    auth = (("authorization", f"Bearer {info['token']}"),)
    size = src.stat().st_size

    def requests() -> Iterator[pb.PutRequest]:
        yield pb.PutRequest(header=pb.PutHeader(name=src.name))
        with src.open("rb") as f:
            while chunk := f.read(MiB):
                yield pb.PutRequest(chunk=chunk)

    out = src.with_name("out.bin")
    with grpc.insecure_channel(info["grpc"]) as channel:
        stub = pb_grpc.StorageStub(channel)
        start = time.perf_counter()
        cap = stub.Put(requests(), metadata=auth).cap
        put_rate = size / MiB / (time.perf_counter() - start)
        start = time.perf_counter()
        atomic = AtomicFile(out)
        for reply in stub.Get(pb.GetRequest(ref=cap), metadata=auth):
            atomic.write(reply.chunk)
        atomic.commit()
        get_rate = size / MiB / (time.perf_counter() - start)
    if not same_file(src, out):
        raise SystemExit("bench: the file read back over gRPC differs from the one stored")
    out.unlink()
    return put_rate, get_rate


def same_file(a: Path, b: Path) -> bool:
    def digest(p: Path) -> bytes:
        h = hashlib.sha256()
        with p.open("rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        return h.digest()

    return digest(a) == digest(b)


async def in_process(root: Path, src: Path, size: int) -> tuple[float, float, float]:
    async with Node.start(root / "inproc") as node:
        start = time.perf_counter()
        cap = await node.store("bench.bin", src)
        put_rate = size / MiB / (time.perf_counter() - start)
        start = time.perf_counter()
        async with node.get(cap) as reader:
            async for _ in reader:
                pass
        stream_rate = size / MiB / (time.perf_counter() - start)
        start = time.perf_counter()
        await node.get_to_file(cap, root / "inproc.out")
        file_rate = size / MiB / (time.perf_counter() - start)
    os.unlink(root / "inproc.out")
    return put_rate, stream_rate, file_rate


def grpc_rows(root: Path, src: Path, row: Callable[[str, float, str], None]) -> None:
    """The gRPC API's put and get, on a node of its own (a node that holds the file already
    would only check that its blocks are there)."""
    with nodes(root / "grpc", 1, ("--grpc", ":0")) as (single,):
        put, get = timed_grpc_put_get(single, src)
        row("single node, gRPC API: put", put, "grpc_put")
        row("single node, gRPC API: get (to file, fsync)", get, "grpc_get")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument(
        "--rss-size", type=int, default=1024, help="file size for the RSS check (0 to skip)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to put data (default: tmp)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--grpc-only", action="store_true", help="only the gRPC API figures (one node)"
    )
    parser.add_argument(
        "--erasure-only",
        action="store_true",
        help="only the 3-of-5 erasure coding vs R=3 figures (five nodes)",
    )
    parser.add_argument(
        "--erasure-rss-size",
        type=int,
        default=0,
        help="file size in MiB for the 3-of-5 RSS check (default 0: skip)",
    )
    parser.add_argument(
        "--no-sim", action="store_true", help="skip the DHT figures (placement costs, make sim)"
    )
    args = parser.parse_args()
    base = args.dir or Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir=base))
    figures: dict[str, float] = {}
    try:
        src = root / "bench.bin"
        make_file(src, args.size * MiB)
        limit = limit_crypto(src)
        figures["limit"] = limit
        print(f"file: {args.size} MiB of random bytes, 1 MiB chunks; {os.cpu_count()} cores")
        print(f"limit  SHA-256 + AES-256-GCM, one thread        {limit:8.0f} MiB/s  (= 100%)")

        def row(label: str, rate: float, key: str) -> None:
            figures[key] = rate
            print(f"{label:48s} {rate:8.0f} MiB/s  {rate / limit:6.0%}")

        if args.grpc_only:
            grpc_rows(root, src, row)
            if args.json:
                print(json.dumps(figures, indent=2))
            return
        if args.erasure_only:
            erasure_rows(root, src, row, figures)
            if args.erasure_rss_size:
                erasure_rss(root, args.erasure_rss_size, figures)
            if args.json:
                print(json.dumps(figures, indent=2))
            return
        one_file, many_files = limit_disk(root, args.size * MiB)
        figures.update(disk_one_file=one_file, disk_many_files=many_files)
        print(f"disk   one file written + fsync                 {one_file:8.0f} MiB/s")
        print(f"disk   1 MiB blocks stored as Shoal does, 8 threads {many_files:8.0f} MiB/s")
        print("       (write, fsync, rename, dir fsync; three nodes here share this one disk)")
        tls = limit_tls_loopback(root, args.size * MiB)
        figures["tls_loopback"] = tls
        print(f"TLS 1.3 over 127.0.0.1, one connection          {tls:8.0f} MiB/s")
        put, stream, to_file = asyncio.run(in_process(root, src, args.size * MiB))
        row("single node, Python API: put", put, "api_put")
        row("single node, Python API: get (stream)", stream, "api_get_stream")
        row("single node, Python API: get to file (fsync)", to_file, "api_get_file")
        with nodes(root / "one", 1) as (single,):
            put, get = timed_put_get(single, single, src)
            row("single node, HTTP API (CLI path): put", put, "single_put")
            row("single node, HTTP API (CLI path): get", get, "single_get")
            figures["single_rss"] = single.peak_rss_mib()
        grpc_rows(root, src, row)
        with nodes(root / "three", 3) as trio:
            before = trio[2].client.status()
            put, get = timed_put_get(trio[2], trio[0], src)
            after = trio[2].client.status()
            row("three nodes, R=3, HTTP API: put", put, "three_put")
            gib = args.size / 1024
            lookups = (after.get("lookups", 0) - before.get("lookups", 0)) / gib
            messages = (after.get("lookup_messages", 0) - before.get("lookup_messages", 0)) / gib
            figures["lookups_per_gib"] = lookups
            print(
                f"       (DHT placement: {lookups:.1f} lookups and {messages:.1f} FIND_NODE "
                "messages per GiB stored)"
            )
            row("three nodes, R=3, HTTP API: get (other node)", get, "three_get")
            reput_seconds = timed_reput(trio[2], src)
            first_seconds = args.size / put
            row("three nodes, R=3, HTTP API: same bytes again", args.size / reput_seconds, "reput")
            figures["reput_time_ratio"] = reput_seconds / first_seconds
            print(
                f"       (second put took {reput_seconds / first_seconds:.0%} of the first's time)"
            )
            rss = [n.peak_rss_mib() for n in trio]
        print(
            f"peak RSS of each node ({args.size} MiB file): " + ", ".join(f"{r:.0f}" for r in rss)
        )
        erasure_rows(root, src, row, figures)
        if args.rss_size:
            src.unlink()
            make_file(src, args.rss_size * MiB)
            with nodes(root / "rss", 3) as trio:
                put, get = timed_put_get(trio[2], trio[0], src)
                rss = [n.peak_rss_mib() for n in trio]
            figures["rss_file_put"] = put
            figures["rss_max"] = max(rss)
            print(
                f"peak RSS of each node ({args.rss_size} MiB file, R=3): "
                + ", ".join(f"{r:.0f} MiB" for r in rss)
                + f"  (put {put:.0f}, get {get:.0f} MiB/s)"
            )
        if args.erasure_rss_size:
            erasure_rss(root, args.erasure_rss_size, figures)
        if args.json:
            print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not args.no_sim:  # after the RSS figures: its 50 nodes' memory is not counted there
        print()
        placement = dht_placement.measure()
        dht_placement.report(placement, nodes=50, size_mib=32)
        if args.json:
            print(json.dumps(placement, indent=2))
    if not args.no_sim:  # in its own process: its memory is not counted above
        print("\nDHT simulation (make sim, docs/simulation.md):", flush=True)
        sim = [sys.executable, "-m", "shoal.dht.sim", *(["--json"] if args.json else [])]
        subprocess.run(sim, check=True)


if __name__ == "__main__":
    main()
