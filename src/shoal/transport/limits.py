"""The transport's limits, and the small tools that enforce them.

Every limit has a default in ``shoal.defaults``, a field here (``RuntimeOptions.limits`` in the
node), and one log line (WARNING, at most once a minute per limit) when it is hit. Why each
limit exists and how it was chosen: ``docs/decisions/0004-transport-limits.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shoal import defaults
from shoal.clock import SYSTEM_CLOCK, Clock
from shoal.errors import ConfigError

__all__ = ["Admission", "Backoff", "LimitLog", "TokenBucket", "TransportLimits", "limits_with"]


@dataclass(frozen=True)
class TransportLimits:
    """What one node allows itself and its peers. The defaults are what ``shoal run`` uses.

    Attributes:
        max_connections: Open node-to-node connections (inbound and outbound together). An
            inbound connection over the cap is closed right after the TCP accept; no dial
            starts while the cap is reached.
        max_pending: Inbound connections being set up (TCP accepted, TLS or HELLO/AUTH not
            finished), in total. TLS (and its 256 KiB buffers) only starts below this cap.
        max_pending_per_address: The same, per source IP address.
        max_connections_per_address: Open inbound connections from one source IP address.
        idle_grace: Seconds a connection must have been idle (no request either way) before
            the connection limit may close it, least recently used first, to make room for
            a dial on demand.
        inbound_idle_grace: The same for an inbound connection at the cap (default 0: any
            connection with no request open either way). A node that dials us needs a slot
            now, and our idle connection can be dialed again when we need it; with the
            dialer's longer grace, two nodes at their caps never refuse each other for long.
        handshake_timeout: Seconds from an inbound TCP accept to a finished HELLO/AUTH (TLS
            and our handshake each get this long).
        connect_timeout: Seconds a dial may take to connect and finish TLS.
        max_known_peers: Peers remembered (with their addresses) in total.
        max_addresses_per_peer: Addresses remembered per peer.
        max_learnt_per_peer: Peers that one peer may tell us about (peer exchange) and that we
            have not reached ourselves yet.
        dial_rate: Dials per second of the background dial loops (bootstrap, mDNS, the
            full mesh), all peers together (token bucket).
        dial_burst: Dials allowed at once above ``dial_rate`` (the bucket's size).
        demand_dial_rate: Dials on demand per second (a request needs a peer that is not
            connected: puts, gets, lookups, repair, handoff), a bucket of its own.
        demand_dial_burst: Dials on demand allowed at once above ``demand_dial_rate``.
        forget_after: Seconds after which a peer that could not be reached during all that
            time is forgotten (and removed from the catalog). Bootstrap peers are kept.
        max_uploads_per_connection: PUT_BLOCK payloads in service per connection.
        max_downloads_per_connection: Data answers (GET_BLOCK) produced at once per
            connection, each once the previous ones drained to the peer.
        max_queued_requests_per_connection: Other requests queued per connection before
            reading from it pauses.
        max_unflushed_answers: Bytes of small answers the peer has not read yet, per
            connection, before serving pauses.
        stall_timeout: Seconds of silence with requests pending before the peer is PINGed.
        stall_ping_timeout: Seconds that PING may take before the peer counts as frozen and
            its pending requests fail at once.
    """

    max_connections: int = defaults.MAX_CONNECTIONS
    max_pending: int = defaults.MAX_PENDING_CONNECTIONS
    max_pending_per_address: int = defaults.MAX_PENDING_PER_ADDRESS
    max_connections_per_address: int = defaults.MAX_CONNECTIONS_PER_ADDRESS
    idle_grace: float = defaults.IDLE_GRACE
    inbound_idle_grace: float = defaults.INBOUND_IDLE_GRACE
    handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT
    connect_timeout: float = defaults.CONNECT_TIMEOUT
    max_known_peers: int = defaults.MAX_KNOWN_PEERS
    max_addresses_per_peer: int = defaults.MAX_ADDRESSES_PER_PEER
    max_learnt_per_peer: int = defaults.MAX_LEARNT_PER_PEER
    dial_rate: float = defaults.DIAL_RATE
    dial_burst: int = defaults.DIAL_BURST
    demand_dial_rate: float = defaults.DEMAND_DIAL_RATE
    demand_dial_burst: int = defaults.DEMAND_DIAL_BURST
    forget_after: float = defaults.FORGET_AFTER
    max_uploads_per_connection: int = defaults.MAX_UPLOADS_PER_CONNECTION
    max_downloads_per_connection: int = defaults.MAX_DOWNLOADS_PER_CONNECTION
    max_queued_requests_per_connection: int = defaults.MAX_QUEUED_REQUESTS_PER_CONNECTION
    max_unflushed_answers: int = defaults.MAX_UNFLUSHED_ANSWERS
    stall_timeout: float = defaults.STALL_TIMEOUT
    stall_ping_timeout: float = defaults.STALL_PING_TIMEOUT

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_pending",
            "max_pending_per_address",
            "max_connections_per_address",
            "max_known_peers",
            "max_addresses_per_peer",
            "dial_burst",
            "demand_dial_burst",
            "max_uploads_per_connection",
            "max_downloads_per_connection",
            "max_queued_requests_per_connection",
            "max_unflushed_answers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.idle_grace < 0 or self.inbound_idle_grace < 0:
            raise ValueError("idle_grace and inbound_idle_grace must not be negative")
        if self.max_learnt_per_peer < 0:
            raise ValueError("max_learnt_per_peer must not be negative")
        for name in (
            "handshake_timeout",
            "connect_timeout",
            "dial_rate",
            "demand_dial_rate",
            "forget_after",
            "stall_timeout",
            "stall_ping_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


def limits_with(
    overrides: Mapping[str, object], *, base: TransportLimits | None = None, source: str
) -> TransportLimits:
    """``base`` (default: the defaults) with the limits named in ``overrides`` changed.

    For config files (``[limits]``) and ``shoal run --limit NAME=VALUE``.

    Raises:
        ConfigError: An unknown name or a value of the wrong kind or range; the message names
            ``source`` and the limit.
    """
    known = {f.name: f.type for f in dataclasses.fields(TransportLimits)}
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in known:
            raise ConfigError(
                f"{source}: unknown limit {name[:40]!r}; known limits: {', '.join(sorted(known))}"
            )
        integer = known[name] in (int, "int")
        if isinstance(value, str):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                raise ConfigError(f"{source}: limit {name} must be a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: limit {name} must be a number")
        if integer and not (isinstance(value, int) or value.is_integer()):
            raise ConfigError(f"{source}: limit {name} must be a whole number")
        changes[name] = int(value) if integer else float(value)
    try:
        return dataclasses.replace(base or TransportLimits(), **changes)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**attempt`` capped, times U(0.5, 1)."""

    base: float = defaults.BACKOFF_BASE
    cap: float = defaults.BACKOFF_CAP

    def delay(self, attempt: int, rng: random.Random) -> float:
        scaled: float = self.base * 2.0 ** min(attempt, 32)
        return min(self.cap, scaled) * rng.uniform(0.5, 1.0)


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, ``burst`` at once.

    Waiters are served in arrival order. ``on_wait`` is called each time a caller has to wait
    (to log that the limit was hit).
    """

    def __init__(self, rate: float, burst: int, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._lock = asyncio.Lock()
        self.waits = 0

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self) -> bool:
        """Take one token, waiting for it if needed; return True if the caller had to wait."""
        async with self._lock:
            self._refill()
            waited = False
            # The epsilon absorbs float rounding, which could otherwise leave the bucket a
            # hair short of a token forever on a clock that only moves when asked to.
            while self._tokens < 1.0 - 1e-9:
                waited = True
                await self._clock.sleep(max(1e-6, (1.0 - self._tokens) / self._rate))
                self._refill()
            self._tokens = max(0.0, self._tokens - 1.0)
            if waited:
                self.waits += 1
            return waited


class LimitLog:
    """One WARNING per limit and interval, however often the limit is hit.

    The line says which limit, what happened, and how many more times it was hit since the
    previous line; ``counts`` keeps the totals (for tests and status).
    """

    def __init__(
        self, logger: logging.Logger, *, clock: Clock = SYSTEM_CLOCK, interval: float = 60.0
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def hit(self, limit: str, message: str, *args: object) -> None:
        """Record that ``limit`` was hit; log ``message % args`` unless logged recently."""
        self.counts[limit] = self.counts.get(limit, 0) + 1
        now = self._clock.monotonic()
        last = self._last.get(limit)
        if last is not None and now - last < self._interval:
            self._suppressed[limit] = self._suppressed.get(limit, 0) + 1
            return
        self._last[limit] = now
        more = self._suppressed.pop(limit, 0)
        suffix = f" ({more} more since the last such line)" if more else ""
        self._logger.warning(f"limit {limit}: {message}{suffix}", *args)


class Admission:
    """Which inbound connections may start their handshake: the connection limits, decided
    right after the TCP accept, before TLS allocates anything.

    ``begin(host)`` when a connection is admitted, ``end(host)`` when its handshake is over
    (either way); ``refusal`` says which limit keeps a new one out, if any.
    """

    def __init__(self, limits: TransportLimits) -> None:
        self._limits = limits
        self._by_host: Counter[str] = Counter()
        self.pending = 0

    def refusal(
        self, host: str, *, established: int, established_from_host: int
    ) -> tuple[str, str] | None:
        """``(limit name, why)`` if a new connection from ``host`` must be closed, else None.

        Args:
            host: The source IP address.
            established: Open connections (in and out).
            established_from_host: Open inbound connections from ``host``.
        """
        limits = self._limits
        if established >= limits.max_connections:
            return "max_connections", f"{limits.max_connections} connections are open"
        if self.pending >= limits.max_pending:
            return "max_pending", f"{limits.max_pending} connections are being set up"
        if self._by_host[host] >= limits.max_pending_per_address:
            return (
                "max_pending_per_address",
                f"{limits.max_pending_per_address} connections from {host} are being set up",
            )
        if established_from_host >= limits.max_connections_per_address:
            return (
                "max_connections_per_address",
                f"{limits.max_connections_per_address} connections from {host} are open",
            )
        return None

    def begin(self, host: str) -> None:
        self.pending += 1
        self._by_host[host] += 1

    def end(self, host: str) -> None:
        self.pending -= 1
        self._by_host[host] -= 1
        if self._by_host[host] <= 0:
            del self._by_host[host]
