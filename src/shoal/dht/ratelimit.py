"""Per-peer token buckets: how often each peer may ask this node something (FIND_NODE).

Pure: times are passed in. Memory is bounded: at most ``max_peers`` buckets, the least
recently used dropped (a dropped peer starts again with a full bucket, which is no more than a
new peer gets).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_RATE_BUCKETS", "PeerRateLimit"]

#: Peers with a rate-limit bucket at once (the least recently seen are dropped).
MAX_RATE_BUCKETS = 1024


class PeerRateLimit:
    """Token buckets per peer (``rate`` per second, ``burst`` at once), at most ``max_peers``
    buckets (least recently used dropped: a dropped peer starts again with a full bucket,
    which is no more than a new peer gets). Pure: times are passed in."""

    def __init__(self, rate: float, burst: int, *, max_peers: int = MAX_RATE_BUCKETS) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_peers = max_peers
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, peer: bytes, now: float) -> bool:
        """Take a token for ``peer``; False when its bucket is empty."""
        tokens, stamp = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[peer] = (tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed
