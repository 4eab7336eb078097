"""A bytes-per-second budget for background work (scrub reads, handoff sends).

How it works: a token bucket kept as one number, the time at which the budget is next free
(``_free_at``, on the clock's monotonic seconds). ``take(n)`` waits until at most ``burst``
bytes' worth of time is owed (``_free_at - now <= burst / rate``), then books ``n`` bytes
(``_free_at += n / rate``). So, from the first take on, the bytes granted *before* any grant
at time ``t`` never exceed ``burst + rate * (t - t0)``: the budget holds over every window,
whatever the sizes asked for (a take larger than the burst is granted whole, once the budget
has caught up, and the next waits for it). ``granted`` counts the bytes granted and
``waits`` the takes that had to wait, for status and for tests, which check the bound by
counting bytes on a virtual clock rather than by measuring time.
"""

from __future__ import annotations

from shoal.clock import SYSTEM_CLOCK, Clock

__all__ = ["ByteBudget"]


class ByteBudget:
    """At most ``rate`` bytes per second on average, ``burst`` at once.

    Args:
        rate: Bytes per second (> 0).
        burst: Bytes that may go at once after a quiet spell (default: one second's worth).
        clock: The clock waits follow (virtual in simulations).

    Raises:
        ValueError: ``rate`` or ``burst`` is not positive.
    """

    def __init__(self, rate: float, *, burst: float | None = None, clock: Clock = SYSTEM_CLOCK):
        if rate <= 0:
            raise ValueError(f"a byte budget needs a positive rate, got {rate}")
        burst = rate if burst is None else burst
        if burst <= 0:
            raise ValueError(f"a byte budget needs a positive burst, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._free_at: float | None = None
        #: Bytes granted so far, and takes that had to wait.
        self.granted = 0
        self.waits = 0

    async def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit in the budget, then count them as spent.

        Cancellation-safe: a take cancelled while waiting books nothing.
        """
        if nbytes <= 0:
            return
        credit = self.burst / self.rate
        waited = False
        while True:
            now = self._clock.monotonic()
            # Paid up to here; idle time is credit only up to ``burst`` (never below now).
            paid_until = now if self._free_at is None else max(self._free_at, now)
            wait = paid_until - now - credit
            if wait <= 0:
                break
            if not waited:
                self.waits += 1
                waited = True
            await self._clock.sleep(wait)  # others may book meanwhile: check again
        self._free_at = paid_until + nbytes / self.rate
        self.granted += nbytes
