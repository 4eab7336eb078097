"""Fifty ``shoal run`` processes on 127.0.0.1, each with ``--max-connections 8`` and one bootstrap
address (the first node's): within a minute every node holds at most 8 connections and knows at
least 30 others, and files put through any node get through any other (3 files put through
random nodes, each read through 6 random others).

The nodes' HTTP APIs are polled in this process (``shoal.Client``), not with 50 CLI
subprocesses a round. Figures (connections, time to converge, put/get MiB/s, and lookups,
FIND_NODE messages and dials per MiB put and got, all nodes together) are printed; run with
``-s`` to see them.
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path

import pytest

from shoal import Client
from shoal.node.network import Invite
from shoal.node.service import init_data_dir
from tests.e2e.conftest import MiB, ShoalNet, ShoalNode

# 50 processes load both cores: never beside the flood tests, which race a flood against a put.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.xdist_group("heavy")]

NODES = 50
MAX_CONNECTIONS = 8
KNOWS = 30
CONVERGE_WITHIN = 60.0


def costs(clients: list[Client]) -> dict[str, int]:
    """Lookups, FIND_NODE messages and dials of all nodes together, since they started."""
    total = {"lookups": 0, "messages": 0, "dials": 0}
    for client in clients:
        info = client.status()
        total["lookups"] += int(info["lookups"])
        total["messages"] += int(info["lookup_messages"])
        with client._request("GET", "/metrics") as response:
            for line in response.read().decode().splitlines():
                if line.startswith("shoal_dials_total "):
                    total["dials"] += int(float(line.split()[1]))
    return total


def per_mib(before: dict[str, int], after: dict[str, int], size: int) -> str:
    return ", ".join(f"{(after[k] - before[k]) / (size / MiB):.1f} {k}" for k in before)


def test_fifty_nodes_bounded_connections_and_files_through_any_node(
    shoal_net: ShoalNet, tmp_path: Path
) -> None:
    rng = random.Random(50)
    network = Invite(secrets.token_bytes(32), ())
    nodes: list[ShoalNode] = []
    for i in range(NODES):
        node = shoal_net.node(f"n{i:02d}")
        init_data_dir(node.data_dir, join=network)  # in-process: no 50 `shoal init`s
        nodes.append(node)
    args = ("--max-connections", str(MAX_CONNECTIONS))
    launched = time.monotonic()
    nodes[0].start(args=args)
    assert nodes[0].listen is not None
    for node in nodes[1:]:
        node.launch(peers=[nodes[0].listen], args=args)
    for node in nodes[1:]:
        node.wait_ready()
    started = time.monotonic()
    clients = [Client.from_data_dir(n.data_dir) for n in nodes]
    try:
        most_connections = 0

        def converged() -> tuple[bool, list[tuple[str, int, int]]]:
            """Every node's (name, routing-table size, open connections)."""
            nonlocal most_connections
            found = []
            for node, client in zip(nodes, clients, strict=True):
                info = client.status()
                found.append((node.name, int(info["routing_table"]), int(info["connections"])))
            connections = [c for _, _, c in found]
            most_connections = max(most_connections, *connections)
            assert max(connections) <= MAX_CONNECTIONS, found
            return min(t for _, t, _ in found) >= KNOWS, found

        found = shoal_net.wait(
            converged,
            what=f"every node to know {KNOWS} others (name, table, connections)",
            timeout=CONVERGE_WITHIN,
        )
        converge_time = time.monotonic() - started
        since_launch = time.monotonic() - launched
        tables = sorted(t for _, t, _ in found)
        connections = sorted(c for _, _, c in found)

        # Files put through some nodes get through every other one.
        files: list[tuple[str, bytes]] = []
        put_seconds = 0.0
        before_puts = costs(clients)
        for n in range(3):
            size = 2 * MiB + n
            data = rng.randbytes(size)
            path = tmp_path / f"src{n}.bin"
            path.write_bytes(data)
            origin = rng.randrange(NODES)
            begin = time.monotonic()
            result = clients[origin].put(path, name=f"f{n}.bin")
            put_seconds += time.monotonic() - begin
            assert result["replicas"] == result["replicas_wanted"] == 3, result
            files.append((str(result["cap"]), data))
        after_puts = costs(clients)
        get_seconds = 0.0
        got = 0
        # Each file through 6 other nodes, 18 readers in all, drawn at random.
        readers = rng.sample(range(NODES), 18)
        for r, i in enumerate(readers):
            client = clients[i]
            for n, (cap, data) in enumerate(files):
                if n != r % len(files):
                    continue
                dest = tmp_path / f"got-{i}-{n}.bin"
                begin = time.monotonic()
                client.get(cap, dest)
                get_seconds += time.monotonic() - begin
                assert dest.read_bytes() == data, f"n{i:02d} returned other bytes"
                got += len(data)
                dest.unlink()
        after_gets = costs(clients)
        put_bytes = sum(len(d) for _, d in files)
        for c in clients:
            assert int(c.status()["connections"]) <= MAX_CONNECTIONS  # type: ignore[call-overload]
        print(
            f"\n50 nodes: converged {converge_time:.1f} s after the last was ready "
            f"({since_launch:.1f} s after the first launch); routing tables "
            f"min/median/max {tables[0]}/{tables[len(tables) // 2]}/{tables[-1]}; "
            f"connections per node min/median/max {connections[0]}/"
            f"{connections[len(connections) // 2]}/{connections[-1]} (most seen "
            f"{most_connections}); put {put_bytes / MiB / put_seconds:.1f} MiB/s, get "
            f"{got / MiB / get_seconds:.1f} MiB/s ({len(readers)} gets of 2 MiB); per MiB put "
            f"(all nodes): {per_mib(before_puts, after_puts, put_bytes)}; per MiB got: "
            f"{per_mib(after_puts, after_gets, got)}"
        )
    finally:
        for c in clients:
            c.close()
