"""What placement by lookup costs in a network larger than k: lookups, FIND_NODE messages and
dials per GiB stored and per GiB read.

50 whole nodes (``shoal.Node``) in this process over the in-memory network on virtual time,
each with at most 8 connections (the 50-process test's setting) and one bootstrap address.
Once they know each other and their start-up lookups are over (and the closest-set caches
have expired), one node puts a file of random bytes and another reads it back. The counts
are those of all nodes together, during the put and during the get; they depend on the
network, not on this machine (the virtual time is printed too: the waits for connection
slots and dial tokens, since messages themselves take no time here).

Run alone with ``python bench/dht_placement.py [--nodes N] [--size MiB]``; ``make bench``
runs it after the three-node figures.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
from pathlib import Path

from shoal import Node
from shoal.clock import VirtualClock, run_virtual
from shoal.node.runtime import RuntimeOptions
from shoal.transport import MemoryNetwork, TransportLimits

MiB = 1 << 20


async def _measure(
    root: Path, clock: VirtualClock, nodes: int, size: int, max_connections: int
) -> dict[str, float]:
    network = MemoryNetwork()
    limits = TransportLimits(max_connections=max_connections)
    async with contextlib.AsyncExitStack() as stack:
        everyone: list[Node] = []
        for number in range(nodes):
            host = f"10.0.{number // 200}.{number % 200 + 1}"
            options = RuntimeOptions(
                listen=f"{host}:7000",
                clock=clock,
                backend=network.interface(host),
                limits=limits,
                peers=("10.0.0.1:7000",) if number else (),
                replicas=3,
            )
            node = await stack.enter_async_context(
                Node.start(
                    root / f"n{number}", listen=f"{host}:7000", open_network=True, options=options
                )
            )
            everyone.append(node)
        runtimes = [n._rt for n in everyone]
        dhts = [rt.dht for rt in runtimes if rt.dht is not None]
        deadline = clock.monotonic() + 600
        while clock.monotonic() < deadline and (
            any(d._running_lookups for d in dhts) or min(len(d.table) for d in dhts) < 30
        ):
            await clock.sleep(1)
        await clock.sleep(70)  # past the closest-set caches' lifetime: a put after a while

        def totals() -> tuple[int, int, int]:
            return (
                sum(d.stats.lookups for d in dhts),
                sum(d.stats.messages for d in dhts),
                sum(rt.manager.stats.dials for rt in runtimes),
            )

        data = random.Random(1).randbytes(size)
        before = totals()
        started = clock.monotonic()
        cap = await everyone[3].store("bench.bin", data)
        put_seconds = clock.monotonic() - started
        after_put = totals()
        started = clock.monotonic()
        async with everyone[17].get(cap) as reader:
            if await reader.read() != data:
                raise AssertionError("the file read back differs")
        get_seconds = clock.monotonic() - started
        after_get = totals()
    gib = size / (1 << 30)
    names = ("lookups", "messages", "dials")
    figures = {
        f"put_{n}_per_gib": (a - b) / gib for n, b, a in zip(names, before, after_put, strict=True)
    }
    figures.update(
        {
            f"get_{n}_per_gib": (a - b) / gib
            for n, b, a in zip(names, after_put, after_get, strict=True)
        }
    )
    figures.update(put_virtual_seconds=put_seconds, get_virtual_seconds=get_seconds)
    return figures


def measure(
    *, nodes: int = 50, size_mib: int = 32, max_connections: int = 8, root: Path | None = None
) -> dict[str, float]:
    """Run the measurement; the figures by name (per GiB, and virtual seconds)."""
    with tempfile.TemporaryDirectory(prefix="shoal-dht-bench-", dir=root) as tmp:

        async def main(clock: VirtualClock) -> dict[str, float]:
            return await _measure(Path(tmp), clock, nodes, size_mib * MiB, max_connections)

        return run_virtual(main)


def report(figures: dict[str, float], *, nodes: int, size_mib: int) -> None:
    print(
        f"DHT placement, {nodes} in-process nodes at 8 connections each, a {size_mib} MiB file"
        " (all nodes' counts):"
    )
    for kind, verb in (("put", "stored"), ("get", "read")):
        print(
            f"       per GiB {verb}: {figures[f'{kind}_lookups_per_gib']:.0f} lookups, "
            f"{figures[f'{kind}_messages_per_gib']:.0f} FIND_NODE messages, "
            f"{figures[f'{kind}_dials_per_gib']:.0f} dials "
            f"({figures[f'{kind}_virtual_seconds']:.1f} s of virtual time)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--size", type=int, default=32, help="file size, MiB")
    args = parser.parse_args()
    figures = measure(nodes=args.nodes, size_mib=args.size)
    report(figures, nodes=args.nodes, size_mib=args.size)


if __name__ == "__main__":
    main()
