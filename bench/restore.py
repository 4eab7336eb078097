"""Time to restore full redundancy after losing a node, as ratios to the machine's own limits.

Run alone with ``.venv/bin/python bench/restore.py [--size 1GiB]``; ``make bench`` runs it after
``bench/bench.py``. Two runs, each on real ``shoal run`` processes on 127.0.0.1:

- replicated, R=3 on five nodes: files totalling ``--size`` are put through the first node;
- erasure-coded, 3-of-5 on six nodes: the same, with ``--erasure 3-of-5``.

Then the node (not the first) holding the most bytes is killed with SIGKILL, and the clock runs
until every file's health check (``GET /v1/health/{cap}`` on the first node: only live nodes
count) reports ``min_copies`` >= R (or N shares). The nodes run with a short ``--repair-delay``
and an unthrottled ``--repair-rate`` (0) so the copying itself is timed; the time at the
default rate is printed as a prediction from the bytes each node's repair moved. At the end
every file is read back through another surviving node and compared by SHA-256: a restore
that made garbage fails the run.

The limits come from ``bench.py`` (same functions, same run): the disk storing 1 MiB blocks as
Shoal does, and one TLS 1.3 connection over loopback. Timings live here only, never in test
asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import MiB, NodeProcess, limit_disk, limit_tls_loopback, make_file, nodes

from shoal.content import parse_cap
from shoal.defaults import REPAIR_RATE
from shoal.units import format_size, parse_size

POLL = 0.5
"""Seconds between two rounds of health checks."""
SAMPLE = 0.2
"""Seconds between two looks at the survivors' stores for new copies."""
FILES = 8
"""How many files the size is split into."""


@dataclass(frozen=True)
class Scheme:
    """One redundancy scheme to measure."""

    label: str
    nodes: int
    put_args: dict[str, object]
    wanted: int  # min_copies of a healthy file: R, or N shares


SCHEMES = {
    "replicated": Scheme("R=3, 5 nodes", 5, {"replicas": 3}, 3),
    "erasure": Scheme("3-of-5 erasure, 6 nodes", 6, {"erasure": "3-of-5"}, 5),
}


@dataclass(frozen=True)
class Restore:
    """What one restore measured."""

    held: int  # bytes of blocks in the lost node's store
    seconds: float  # from the kill to the last new copy of a lost block on a survivor's disk
    waited: float  # from the kill to the first such copy
    confirmed: float  # from the kill to the health checks seeing every file healthy
    restored: int  # bytes of new copies of the lost node's blocks on the survivors
    moved_total: int  # repair_bytes (copies sent to other nodes), all survivors together
    moved_max: int  # repair_bytes of the busiest survivor


def digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.digest()


def stored_blocks(node: NodeProcess) -> dict[str, int]:
    """Block ID -> size of the block files in a node's store (``blocks/<2>/<2>/<id>``)."""
    return {
        p.name: p.stat().st_size for p in (node.data_dir / "blocks").glob("??/??/*") if p.is_file()
    }


def stored_bytes(node: NodeProcess) -> int:
    return sum(stored_blocks(node).values())


def repair_bytes(node: NodeProcess) -> int:
    return int(node.client.status().get("repair_bytes", 0))


class CopyWatch(threading.Thread):
    """Samples ``landed()`` (bytes of new copies of the lost blocks) every ``SAMPLE`` seconds:
    when the first copy landed and when the last one did. The health checks only confirm the
    end, and a round of them can take many seconds (each erasure-coded stripe is counted on
    its own), so the disks are the finer clock."""

    def __init__(self, landed: Callable[[], int]) -> None:
        super().__init__(daemon=True)  # daemon: it only reads; never keeps the bench alive
        self.landed = landed
        self.first: float | None = None
        self.last: float | None = None
        self.value = 0
        self.done = threading.Event()

    def sample(self) -> None:
        value = self.landed()
        now = time.perf_counter()  # after the scan: a scan of a large store takes a while
        if value != self.value:
            self.value = value
            self.last = now
            if self.first is None:
                self.first = now

    def run(self) -> None:
        while not self.done.wait(SAMPLE):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()  # a copy that landed since the last sample counts from now


def wait_healthy(checker: NodeProcess, caps: list[str], wanted: int, timeout: float) -> float:
    """Poll every file's health through ``checker`` until each has ``min_copies >= wanted``;
    return when (``perf_counter``) the checks first saw them all healthy.

    The first round must find some file short of ``wanted``: else the kill took nothing away
    and there was nothing to time.
    """
    pending = {str(parse_cap(cap).verify_cap) for cap in caps}  # type: ignore[union-attr]
    first_round = True
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while True:
        for verify_cap in sorted(pending):
            last = checker.client.check(verify_cap)
            if last["wanted"] != wanted:
                raise SystemExit(f"restore: a file wants {last['wanted']} copies, not {wanted}")
            if int(last["min_copies"]) >= wanted:
                pending.discard(verify_cap)
        if first_round and not pending:
            raise SystemExit("restore: every file was healthy right after the kill")
        first_round = False
        if not pending:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise SystemExit(
                f"restore: {len(pending)} of {len(caps)} files still short of {wanted} copies "
                f"after {timeout:.0f} s; last report: {last}"
            )
        time.sleep(POLL)


def measure(
    root: Path, sources: list[Path], scheme: Scheme, delay: float, rate: str, timeout: float
) -> Restore:
    """Put ``sources`` through the first node, kill the fullest other one, time the restore,
    and read every file back through a survivor."""
    extra = ("--repair-delay", str(delay), "--repair-rate", rate, "--replicas", "3")
    with nodes(root, scheme.nodes, extra) as cluster:
        first = cluster[0]
        caps = [
            first.client.put(src, src.name, **scheme.put_args)["cap"]  # type: ignore[arg-type]
            for src in sources
        ]
        victim = max(cluster[1:], key=stored_bytes)
        lost = stored_blocks(victim)  # a rebuilt share has the ID of the one lost, as a copy
        held = sum(lost.values())
        survivors = [n for n in cluster if n is not victim]
        before = [repair_bytes(n) for n in survivors]
        had = [set(stored_blocks(n)) for n in survivors]

        def landed() -> int:
            """Bytes of new copies of the lost node's blocks on the survivors (not other
            growth, such as a share the put could not place that repair adds)."""
            return sum(
                lost[b]
                for n, old in zip(survivors, had, strict=True)
                for b in set(stored_blocks(n)) - old
                if b in lost
            )

        watch = CopyWatch(landed)
        victim.kill9()
        start = time.perf_counter()
        watch.start()
        try:
            confirmed = wait_healthy(first, caps, scheme.wanted, timeout) - start
        finally:
            watch.stop()
        if watch.first is None or watch.last is None:
            raise SystemExit("restore: healthy again, yet no lost block was copied anywhere")
        moved = [repair_bytes(n) - b for n, b in zip(survivors, before, strict=True)]
        reader = survivors[-1]
        for src, cap in zip(sources, caps, strict=True):
            out = root / "readback.bin"
            reader.client.get(cap, out)
            if digest(out) != digest(src):
                raise SystemExit(f"restore: {src.name} read back through a survivor differs")
            out.unlink()
    return Restore(
        held,
        watch.last - start,
        watch.first - start,
        confirmed,
        watch.value,
        sum(moved),
        max(moved),
    )


def report(scheme: Scheme, r: Restore, delay: float, rate: str, disk: float, tls: float) -> None:
    held_mib = r.held / MiB
    copying = max(r.seconds - r.waited, SAMPLE)  # samples are SAMPLE apart: no finer
    restored = held_mib / copying
    overall = held_mib / r.seconds
    print(f"\n{scheme.label}: {FILES} files put through n1, the fullest other node killed (-9)")
    print(f"  the lost node held                         {format_size(r.held):>10}")
    print(f"  new copies of its blocks on the survivors  {format_size(r.restored):>10}")
    print(f"  seconds from kill -9 to full redundancy    {r.seconds:10.1f}  (the last copy landed)")
    print(
        f"    of which before the first copy landed    {r.waited:10.1f}  "
        f"(--repair-delay {delay:g} s, counted from when the node was last heard from)"
    )
    print(f"    health checks saw every file healthy at  {r.confirmed:10.1f}")
    print(
        f"  MiB/s restored while copying               {restored:10.1f}  "
        f"{restored / disk:6.1%} of disk, {restored / tls:6.1%} of TLS loopback"
    )
    print(
        f"  MiB/s restored, kill to full redundancy    {overall:10.1f}  "
        f"{overall / disk:6.1%} of disk, {overall / tls:6.1%} of TLS loopback"
    )
    print(
        f"  repair_bytes (copies sent to other nodes): {format_size(r.moved_total)} in all, "
        f"{format_size(r.moved_max)} on the busiest node "
        f"(--repair-rate {rate}{' = no limit' if parse_size(rate) == 0 else ''})"
    )
    # Each node has its own budget: the busiest one must still send what it sent here, and the
    # throttle books its reads from peers too, so this is a lower bound.
    predicted = r.waited + max(r.seconds - r.waited, r.moved_max / REPAIR_RATE)
    print(
        f"  PREDICTION, not measured: at the default --repair-rate {format_size(REPAIR_RATE)}/s "
        f"per node, at least {predicted:.0f} s (the wait + the busiest node's repair_bytes / rate)"
    )


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit, so the ``finally`` blocks stop every node."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB", help="bytes in all files (default 1GiB)")
    parser.add_argument("--repair-delay", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument(
        "--repair-rate", default="0", help="background repair's rate (default 0: no limit)"
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per restore")
    parser.add_argument(
        "--only", choices=sorted(SCHEMES), default=None, help="one scheme only (default both)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to put data (default tmp)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    piece = max(size // FILES, 1)
    base = args.dir or Path(tempfile.gettempdir())
    with sigterm_as_exit():
        root = Path(tempfile.mkdtemp(prefix="shoal-restore-", dir=base))
        try:
            sources = []
            for i in range(FILES):
                sources.append(root / f"restore-{i}.bin")
                make_file(sources[-1], piece)
            probe = min(max(size, 64 * MiB), 256 * MiB)
            _, disk = limit_disk(root, probe)
            tls = limit_tls_loopback(root, probe)
            print(f"restore after losing a node: {format_size(piece * FILES)} in {FILES} files")
            print(f"limit  disk, 1 MiB blocks stored as Shoal does  {disk:8.0f} MiB/s")
            print(f"limit  TLS 1.3 over 127.0.0.1, one connection   {tls:8.0f} MiB/s", flush=True)
            for key in [args.only] if args.only else list(SCHEMES):
                scheme = SCHEMES[key]
                result = measure(
                    root / key, sources, scheme, args.repair_delay, args.repair_rate, args.timeout
                )
                report(scheme, result, args.repair_delay, args.repair_rate, disk, tls)
                shutil.rmtree(root / key)
                sys.stdout.flush()
            print("\nevery file read back bit for bit (SHA-256) through a surviving node")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
