"""The DHT simulation: how lookups do in networks of 100 to 10,000 nodes, with nodes failed.

Run ``python -m shoal.dht.sim`` (or ``make sim``); ``--help`` lists the options. What it does,
for each network size N:

1. **Build.** N nodes join one after the other, ``JOIN_INTERVAL`` virtual seconds apart, each
   through one node that joined before it (chosen at random), exactly as a real node joins:
   self-lookup, then a refresh lookup per stale bucket (see ``sim_network``).
2. **Measure**, for each share of failed nodes (0%, 10%, 30% by default; cumulative, the 30%
   include the 10%): that share of the nodes stops answering at once, without a word. Then
   ``keys`` random keys are each looked up from ``origins`` random live nodes, all in the same
   stretch of virtual time. Per lookup: its rounds (``Lookup.rounds``), FIND_NODE requests sent,
   requests timed out. A lookup's *view* of a key is the 3 closest among the nodes it found and
   its origin itself (the origin never asks itself, but places on itself like any node). A
   lookup *succeeds* when its view is the key's true 3 closest live nodes; a key's origins
   *agree* when all their views are the same.

The figures depend on the seed alone: the same seed gives the same figures (timings aside).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from shoal.dht.sim_network import QUERY_TIMEOUT, LookupRecord, SimNetwork, SimNode

__all__ = ["LevelFigures", "SimFigures", "build", "main", "measure", "simulate"]

#: Virtual seconds between two nodes joining: 10,000 nodes join within 500 s, before the
#: first periodic bucket refresh (every 600 s) would be due.
JOIN_INTERVAL = 0.05
#: Virtual seconds between two keys' lookups starting.
KEY_INTERVAL = 0.01
#: How many of a key's closest live nodes a lookup must find (the replicas of a block).
VIEW = 3
FAILED_SHARES = (0.0, 0.1, 0.3)
SIZES = (100, 1000, 10000)


@dataclass
class LevelFigures:
    """What the lookups did with ``failed_share`` of the nodes failed.

    Attributes:
        failed_share: Share of the nodes that had stopped answering.
        lookups: Lookups run.
        rounds_median: Median of ``Lookup.rounds``.
        rounds_p99: Its 99th percentile (nearest rank).
        messages: FIND_NODE requests per lookup (mean).
        timeouts: Requests per lookup that timed out (mean).
        seconds_median: Median virtual time a lookup took.
        success: Share of lookups whose view was the key's true closest live nodes.
        agreement: Share of keys whose lookups all had the same view.
    """

    failed_share: float
    lookups: int
    rounds_median: float
    rounds_p99: int
    messages: float
    timeouts: float
    seconds_median: float
    success: float
    agreement: float


@dataclass
class SimFigures:
    """One network size: how it was built and how its lookups did.

    Attributes:
        nodes: N.
        seed: The seed.
        join_messages: FIND_NODE requests per node while the network was built.
        table_size: Mean routing-table entries per node once built.
        pings: Pings sent in all (checks of full buckets' stalest entries).
        levels: One entry per share of failed nodes.
        cpu_seconds: Process CPU time the whole run took (not part of the seeded figures).
        wall_seconds: Wall-clock time it took (likewise).
    """

    nodes: int
    seed: int
    join_messages: float
    table_size: float
    pings: int
    levels: list[LevelFigures] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def seeded(self) -> dict[str, object]:
        """The figures that depend only on the seed (everything but the timings)."""
        figures = asdict(self)
        del figures["cpu_seconds"], figures["wall_seconds"]
        return figures


def build(
    size: int,
    seed: int,
    *,
    timeout: float = QUERY_TIMEOUT,
    progress: Callable[[int], None] | None = None,
) -> SimNetwork:
    """A network of ``size`` nodes that joined one by one (see the module docstring).

    Args:
        size: Nodes.
        seed: The seed.
        timeout: Seconds a FIND_NODE to a failed node takes to time out.
        progress: Called with the number of nodes joined so far, every tenth of them.
    """
    network = SimNetwork(seed, timeout=timeout)
    network.add_node()
    joined = [1]
    step = max(1, size // 10)

    def done() -> None:
        joined[0] += 1
        if progress is not None and joined[0] % step == 0:
            progress(joined[0])

    for number in range(1, size):
        node = network.add_node()
        via = network.nodes[network.rng.randrange(number)]
        network.at(number * JOIN_INTERVAL, _joiner(network, node, via, done))
    network.run()
    return network


def _joiner(
    network: SimNetwork, node: SimNode, via: SimNode, done: Callable[[], None]
) -> Callable[[], None]:
    return lambda: network.join(node, via, done)


def _view(record: LookupRecord) -> tuple[bytes, ...]:
    key = int.from_bytes(record.target, "big")
    ids = [*record.found[:VIEW], record.origin.node_id]
    ids.sort(key=lambda n: int.from_bytes(n, "big") ^ key)
    return tuple(ids[:VIEW])


def _true_closest(target: bytes, live_values: Sequence[tuple[int, bytes]]) -> tuple[bytes, ...]:
    key = int.from_bytes(target, "big")
    return tuple(n for _, n in heapq.nsmallest(VIEW, ((v ^ key, n) for v, n in live_values)))


def _percentile(values: Sequence[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def measure(network: SimNetwork, failed_share: float, keys: int, origins: int) -> LevelFigures:
    """Fail nodes up to ``failed_share``, then look ``keys`` keys up from ``origins`` nodes each."""
    rng = network.rng
    alive = [n for n in network.nodes if n.alive]
    to_fail = round(failed_share * len(network.nodes)) - (len(network.nodes) - len(alive))
    for node in rng.sample(alive, max(0, to_fail)):
        network.fail(node)
    alive = [n for n in network.nodes if n.alive]
    records: list[list[LookupRecord]] = []
    for number in range(keys):
        target = rng.randbytes(32)
        found: list[LookupRecord] = []
        records.append(found)
        for origin in rng.sample(alive, min(origins, len(alive))):
            network.at(number * KEY_INTERVAL, _looker(network, origin, target, found))
    network.run()
    live_values = [(int.from_bytes(n.node_id, "big"), n.node_id) for n in alive]
    flat = [r for key_records in records for r in key_records]
    succeeded = 0
    for key_records in records:
        truth = _true_closest(key_records[0].target, live_values)
        succeeded += sum(_view(r) == truth for r in key_records)
    agreed = sum(len({_view(r) for r in key_records}) == 1 for key_records in records)
    return LevelFigures(
        failed_share=failed_share,
        lookups=len(flat),
        rounds_median=statistics.median(r.rounds for r in flat),
        rounds_p99=_percentile([r.rounds for r in flat], 0.99),
        messages=statistics.fmean(r.queries for r in flat),
        timeouts=statistics.fmean(r.timeouts for r in flat),
        seconds_median=statistics.median(r.seconds for r in flat),
        success=succeeded / len(flat),
        agreement=agreed / len(records),
    )


def _looker(
    network: SimNetwork, origin: SimNode, target: bytes, found: list[LookupRecord]
) -> Callable[[], None]:
    return lambda: network.lookup(origin, target, found.append)


def simulate(
    size: int,
    seed: int,
    *,
    failed_shares: Sequence[float] = FAILED_SHARES,
    keys: int = 200,
    origins: int = 5,
    timeout: float = QUERY_TIMEOUT,
    progress: Callable[[int], None] | None = None,
) -> SimFigures:
    """Build a network of ``size`` nodes and measure lookups at each share of failed nodes.

    Args:
        size: Nodes.
        seed: The seed.
        failed_shares: Shares of failed nodes to measure at (cumulative).
        keys: Keys looked up at each share.
        origins: Lookups per key, each from another live node.
        timeout: Seconds a FIND_NODE to a failed node takes to time out.
        progress: Called with the number of nodes joined, every tenth of them.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    with _without_cyclic_gc():
        return _simulate(size, seed, failed_shares, keys, origins, timeout, progress, wall, cpu)


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """The run makes millions of objects and no reference cycles: the cyclic collector would
    only scan them again and again (a fifth of the run time at 2,000 nodes)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _simulate(
    size: int,
    seed: int,
    failed_shares: Sequence[float],
    keys: int,
    origins: int,
    timeout: float,
    progress: Callable[[int], None] | None,
    wall: float,
    cpu: float,
) -> SimFigures:
    network = build(size, seed, timeout=timeout, progress=progress)
    figures = SimFigures(
        nodes=size,
        seed=seed,
        join_messages=network.find_node_sent / size,
        table_size=statistics.fmean(len(n.table) for n in network.nodes),
        pings=0,
    )
    for share in sorted(failed_shares):
        figures.levels.append(measure(network, share, keys, origins))
    figures.pings = network.pings_sent
    figures.cpu_seconds = time.process_time() - cpu
    figures.wall_seconds = time.perf_counter() - wall
    return figures


# -- command line ------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected sizes like 100,1000,10000") from None
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("every network needs at least 2 nodes")
    return sizes


def _shares(text: str) -> list[float]:
    try:
        shares = [float(part) / 100 for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected percentages like 0,10,30") from None
    if not shares or not all(0 <= s < 1 for s in shares):
        raise argparse.ArgumentTypeError("failed shares are percentages from 0 to below 100")
    return shares


def format_table(results: Sequence[SimFigures]) -> str:
    """The figures as a plain-text table, one row per network size and share of failed nodes."""
    lines = [
        "  nodes  failed  lookups  rounds p50  p99  msgs/lookup  timeouts  success  agreement"
        "  time p50"
    ]
    for figures in results:
        for level in figures.levels:
            lines.append(
                f"{figures.nodes:7,d}  {level.failed_share:6.0%}  {level.lookups:7,d}"
                f"  {level.rounds_median:10g}  {level.rounds_p99:3d}  {level.messages:11.1f}"
                f"  {level.timeouts:8.1f}  {level.success:7.1%}  {level.agreement:9.1%}"
                f"  {level.seconds_median:6.2f} s"
            )
    lines.append("")
    for figures in results:
        lines.append(
            f"{figures.nodes:7,d} nodes: built with {figures.join_messages:.0f} FIND_NODE per"
            f" join, {figures.table_size:.0f} table entries per node, {figures.pings:,d} pings;"
            f" run took {figures.cpu_seconds:.1f} s CPU, {figures.wall_seconds:.1f} s wall"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shoal.dht.sim``: run the simulation and print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m shoal.dht.sim", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--nodes", type=_sizes, default=list(SIZES), help="network sizes (default 100,1000,10000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--failed",
        type=_shares,
        default=list(FAILED_SHARES),
        help="percentages of nodes failed, cumulative (default 0,10,30)",
    )
    parser.add_argument("--keys", type=int, default=200, help="keys looked up per level")
    parser.add_argument(
        "--origins", type=int, default=5, help="lookups per key, from as many nodes"
    )
    parser.add_argument(
        "--timeout", type=float, default=QUERY_TIMEOUT, help="FIND_NODE timeout, s (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.keys < 1 or args.origins < 1 or args.timeout <= 0:
        parser.error("--keys and --origins must be at least 1, --timeout above 0")
    results = []
    for size in args.nodes:
        started = time.perf_counter()

        def progress(joined: int, size: int = size, started: float = started) -> None:
            seconds = time.perf_counter() - started
            print(f"{size:,d} nodes: {joined:,d} joined after {seconds:.0f} s", file=sys.stderr)

        figures = simulate(
            size,
            args.seed,
            failed_shares=args.failed,
            keys=args.keys,
            origins=args.origins,
            timeout=args.timeout,
            progress=progress if size >= 1000 else None,
        )
        results.append(figures)
        print(f"{size:,d} nodes done in {figures.wall_seconds:.1f} s", file=sys.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        document = {"peak_rss_mib": round(peak_mib), "runs": [asdict(r) for r in results]}
        print(json.dumps(document, indent=2))
        return
    print(
        f"DHT simulation, seed {args.seed}: k=20, alpha=3; one-way latency 10-100 ms, FIND_NODE"
        f" timeout {args.timeout:g} s, lookup timeout 30 s (virtual time)"
    )
    print(format_table(results))
    print(f"peak memory {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
