"""The pure decisions of repair: what counts as a copy, where copies go, when, and how fast.

How it works (``docs/repair.md``, why: ``docs/decisions/0010-repair.md``):

- A block's *placement* is the R nodes closest to its ID among the nodes not considered lost.
  Each candidate node has a :class:`Presence`: ``HOLDS`` (it answered HAS_BLOCKS yes: a
  verified copy), ``LACKS`` (it answered no), ``ABSENT`` (it could not be asked, but was heard
  from less than ``repair_delay`` ago: it still counts as holding what it held) or ``LOST``
  (unreachable longer than that, or never heard from). Lost nodes are not part of the
  placement: the next closest node takes their place.
- :func:`plan_block` counts the live copies on the R closest live nodes (``HOLDS``) and the
  presumed ones (``ABSENT`` nodes among the R closest not lost), and names the nodes to copy
  to now: the live nodes lacking it among the R closest not lost (waiting), or among the R
  closest live ones (not waiting: a repair asked for now, or a block down to its last live
  copy, which is copied at once).
- :class:`ByteBudget` is the bytes-per-second throttle (a token bucket that may run into
  debt: a large block waits for the bytes it overdrew).
- :func:`roots_in_cursor_order` starts a pass after the root finished last (the cursor).

No I/O and no clock: times are passed in, so every decision is tested directly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BlockPlan",
    "ByteBudget",
    "Presence",
    "plan_block",
    "presence_of_unreachable",
    "rank_by_distance",
    "roots_in_cursor_order",
]


class Presence(enum.Enum):
    """What repair knows about one node's copy of one block."""

    HOLDS = "holds"  # answered HAS_BLOCKS yes (the holder verified its copy)
    LACKS = "lacks"  # answered no (or its copy failed --verify)
    ABSENT = "absent"  # unreachable, heard from within the repair delay: presumed to hold it
    LOST = "lost"  # unreachable longer than the repair delay (or never heard from)


def presence_of_unreachable(last_heard: float | None, now: float, delay: float) -> Presence:
    """``ABSENT`` while a node unreachable now was heard from less than ``delay`` ago."""
    if last_heard is None or now - last_heard >= delay:
        return Presence.LOST
    return Presence.ABSENT


def rank_by_distance(target: bytes, nodes: Iterable[bytes]) -> list[bytes]:
    """``nodes`` (deduplicated) closest to ``target`` first (XOR distance)."""
    key = int.from_bytes(target, "big")
    return sorted(set(nodes), key=lambda n: int.from_bytes(n, "big") ^ key)


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """What one block needs.

    Attributes:
        placement: The nodes that should hold it now (closest first), at most R.
        copies: Live, verified copies on the R closest live nodes.
        presumed: Placement nodes unreachable within the repair delay (counted as holding):
            while there are any, repair waits for them.
        targets: Live nodes to copy the block to now.
        last_copy: The block was down to its last live copy, so absent nodes were not waited
            for.
    """

    placement: tuple[bytes, ...]
    copies: int
    presumed: int
    targets: tuple[bytes, ...]
    last_copy: bool = False

    @property
    def waiting(self) -> bool:
        """Copies are missing but presumed held: repair waits for the repair delay."""
        return self.presumed > 0


def plan_block(
    ranked: Sequence[tuple[bytes, Presence]], replicas: int, *, wait_for_absent: bool = True
) -> BlockPlan:
    """Plan one block from its candidates, closest to the block first.

    Copies are counted on the R closest *live* nodes (so a block copied past an absent node
    is healthy). Absent nodes matter only for what to copy now: while waiting, the placement
    is the R closest nodes not lost (absent ones included), and only its live nodes that lack
    the block get a copy; the copies absent nodes presumably hold are made when they count
    as lost. A block with at most one live copy is not waited for.

    Args:
        ranked: Candidate nodes and what is known of their copies, closest first.
        replicas: R, the copies wanted.
        wait_for_absent: Count absent nodes as holding (background repair). False: an absent
            node is treated as lost (a repair asked for now).
    """
    live = [(n, p) for n, p in ranked if p in (Presence.HOLDS, Presence.LACKS)][:replicas]
    copies = sum(1 for _, p in live if p is Presence.HOLDS)
    missing = [n for n, p in live if p is Presence.LACKS]
    if copies >= replicas or not wait_for_absent:
        return BlockPlan(tuple(n for n, _ in live), copies, 0, tuple(missing))
    waiting = [(n, p) for n, p in ranked if p is not Presence.LOST][:replicas]
    presumed = sum(1 for _, p in waiting if p is Presence.ABSENT)
    if not presumed:
        return BlockPlan(tuple(n for n, _ in live), copies, 0, tuple(missing))
    if copies <= 1:
        # At most one live copy: waiting could lose the block. Copy at once.
        return BlockPlan(tuple(n for n, _ in live), copies, 0, tuple(missing), last_copy=True)
    targets = tuple(n for n, p in waiting if p is Presence.LACKS)
    return BlockPlan(tuple(n for n, _ in waiting), copies, presumed, targets)


class ByteBudget:
    """A bytes-per-second budget (token bucket) that lets one transfer run into debt.

    ``take(n, now)`` books ``n`` bytes and returns the seconds to wait before moving them (0
    when the budget had them). At most ``burst`` bytes accumulate while idle. ``rate`` None or
    0: no limit.
    """

    def __init__(self, rate: float | None, *, burst: float | None = None) -> None:
        self.rate = rate if rate else None
        self.burst = float(burst if burst is not None else (rate or 0))
        self._tokens = self.burst
        self._stamp: float | None = None

    def take(self, nbytes: int, now: float) -> float:
        if self.rate is None:
            return 0.0
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


def roots_in_cursor_order(roots: Iterable[bytes], cursor: bytes | None) -> list[bytes]:
    """Every root once, in ID order, starting after ``cursor`` (the last root finished) and
    wrapping around; so a pass cut short by a restart resumes where it stopped."""
    ordered = sorted(set(roots))
    if cursor is None:
        return ordered
    after = [r for r in ordered if r > cursor]
    return after + [r for r in ordered if r <= cursor]
