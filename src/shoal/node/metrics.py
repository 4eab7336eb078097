"""Prometheus metrics of one node, in a registry of its own.

How it works: each :class:`~shoal.node.service.Node` owns a :class:`NodeMetrics` with its own
``CollectorRegistry`` (never the global one, so several nodes in one process do not collide).
Counters and histograms are updated where the work happens (puts and gets of the service);
gauges that describe state (peers, connections, blocks stored) are read from the node when a
scrape asks, by a collector, so they are never stale and cost nothing between scrapes. Every
read there is O(1) and in memory: a scrape never touches the disk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shoal.node.runtime import NodeRuntime

__all__ = ["CONTENT_TYPE", "NodeGauges", "NodeMetrics", "runtime_gauges"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Media type of the Prometheus text exposition format."""

# Seconds: a small put on one machine takes milliseconds, a large one minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


@dataclass(frozen=True, slots=True)
class NodeGauges:
    """A snapshot of the node's state, taken at each scrape."""

    peers_up: int
    peers_down: int
    connections_open: int
    connections_pending: int
    connections_accepted: int
    connections_rejected: int
    dials: int
    blocks_stored: int
    bytes_stored: int


def runtime_gauges(rt: NodeRuntime) -> NodeGauges:
    """The state of a running node, from memory only (connections, peers, store usage)."""
    manager = rt.manager
    records = manager.records()
    up = sum(1 for r in records if r.up)
    blocks, size = rt.blocks.usage()
    return NodeGauges(
        peers_up=up,
        peers_down=len(records) - up,
        connections_open=manager.open_connections(),
        connections_pending=manager.pending(),
        connections_accepted=manager.stats.accepted,
        connections_rejected=manager.stats.rejected,
        dials=manager.stats.dials,
        blocks_stored=blocks,
        bytes_stored=size,
    )


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], NodeGauges]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        peers = GaugeMetricFamily("shoal_peers", "Known peers by state.", labels=["state"])
        peers.add_metric(["up"], s.peers_up)
        peers.add_metric(["down"], s.peers_down)
        yield peers
        conns = GaugeMetricFamily(
            "shoal_connections",
            "Node-to-node connections: open (or being dialed), and inbound being set up.",
            labels=["state"],
        )
        conns.add_metric(["open"], s.connections_open)
        conns.add_metric(["pending"], s.connections_pending)
        yield conns
        yield CounterMetricFamily(
            "shoal_connections_accepted",
            "Inbound connections admitted to the handshake.",
            value=s.connections_accepted,
        )
        yield CounterMetricFamily(
            "shoal_connections_rejected",
            "Inbound connections closed at once by a connection limit.",
            value=s.connections_rejected,
        )
        yield CounterMetricFamily("shoal_dials", "Dial attempts to peers.", value=s.dials)
        yield GaugeMetricFamily(
            "shoal_blocks_stored", "Blocks in this node's store.", value=s.blocks_stored
        )
        yield GaugeMetricFamily(
            "shoal_stored_bytes", "Bytes of blocks in this node's store.", value=s.bytes_stored
        )


class NodeMetrics:
    """The metrics of one node: counters, histograms, and the state read at scrape time.

    Attributes:
        registry: This node's registry (pass it to ``prometheus_client`` functions).
    """

    def __init__(self, snapshot: Callable[[], NodeGauges]) -> None:
        """Make the registry; ``snapshot`` is called at every scrape (must be cheap)."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.bytes_in = Counter(
            "shoal_bytes_received",
            "Plaintext bytes taken in by puts through this node (files and folders).",
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "shoal_bytes_sent",
            "Plaintext bytes handed out by gets through this node.",
            registry=self.registry,
        )
        self.puts = Counter(
            "shoal_puts",
            "Puts (files and folders) by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.gets = Counter("shoal_gets", "Gets by outcome.", ["outcome"], registry=self.registry)
        self.put_seconds = Histogram(
            "shoal_put_duration_seconds",
            "Time of each put, from its first byte to its catalog entry.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.get_seconds = Histogram(
            "shoal_get_duration_seconds",
            "Time of each get, from opening the file to its last byte.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        for outcome in ("ok", "error"):  # present from the start, so rates work at once
            self.puts.labels(outcome)
            self.gets.labels(outcome)
        self.registry.register(_StateCollector(snapshot))

    def record_put(self, seconds: float, *, ok: bool) -> None:
        """Count one put and its duration."""
        self.puts.labels("ok" if ok else "error").inc()
        self.put_seconds.observe(seconds)

    @contextlib.contextmanager
    def timed_put(self) -> Iterator[None]:
        """Count the put done in the block (an error if it raises) and its duration."""
        started = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record_put(time.monotonic() - started, ok=ok)

    def record_get(self, seconds: float, *, ok: bool) -> None:
        """Count one get and its duration."""
        self.gets.labels("ok" if ok else "error").inc()
        self.get_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        data: bytes = generate_latest(self.registry)
        return data
