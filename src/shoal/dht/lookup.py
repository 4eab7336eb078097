"""The iterative Kademlia lookup as a state machine: pure, no I/O, no clock.

API (what the node's DHT service and a simulation both drive):

- ``Lookup(target, seeds, *, k=20, alpha=3, exclude=(), max_candidates=4*k,
  max_queries=8*k)``; ``seeds`` are ``(node_id, addresses)`` pairs (addresses may be empty
  in a simulation), usually the table's ``closest(target, k)``.
- ``next_queries() -> list[Candidate]``: the nodes to send FIND_NODE(target) to now (each is
  marked in flight). Call it after every answer or failure.
- ``succeeded(node_id, found)``: that node answered with ``found``, ``(node_id, addresses)``
  pairs; ``failed(node_id)``: it did not (timeout, refused, an error answer).
- ``done``: the lookup is over; ``result() -> list[Candidate]``: the ``k`` closest nodes that
  answered, closest first. ``cancel_pending() -> list[bytes]``: queries still in flight
  (whose answers no longer matter).
- Figures: ``queries`` (FIND_NODE messages sent), ``failures``, ``rounds`` (the longest chain
  of answers the result depended on: a seed that answers is round 1, a node it named is round
  2, ...).

How it works (libp2p's kad-dht query): candidates are kept by XOR distance to the target. At
most ``alpha`` queries are in flight, always to the closest candidates not yet asked among the
``k`` closest candidates that have not failed. The lookup ends when those ``k`` closest have
all answered (nodes farther away cannot change the result), or when nothing is left to ask, or
after ``max_queries`` queries. A node that fails drops out, so the next candidate moves into
the closest ``k`` and gets asked. Memory is bounded: at most ``max_candidates`` candidates not
yet asked are kept (the farthest are dropped), and the IDs seen are at most ``max_queries``
answers' worth.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "CandidateState", "Lookup"]


class CandidateState(enum.Enum):
    WAITING = "waiting"  # known, not asked yet
    IN_FLIGHT = "in flight"
    RESPONDED = "responded"
    FAILED = "failed"


@dataclass(slots=True)
class Candidate:
    """A node a lookup knows of.

    Attributes:
        node_id: Its ID.
        addresses: Where it said (or was said) to be reachable.
        distance: XOR distance to the target.
        hop: 1 for a seed, else one more than the node that named it first.
        state: Where it stands in this lookup.
    """

    node_id: bytes
    addresses: tuple[str, ...]
    distance: int
    hop: int
    state: CandidateState = CandidateState.WAITING


class Lookup:
    """One iterative lookup of ``target`` (see the module docstring).

    Args:
        target: The 32-byte ID looked up.
        seeds: ``(node_id, addresses)`` to start from.
        k: How many closest nodes the lookup finds.
        alpha: Queries in flight at once.
        exclude: IDs never to ask or return (this node itself).
        max_candidates: Candidates not yet asked that are kept (default ``4 * k``).
        max_queries: Queries after which the lookup ends anyway (default ``8 * k``).
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[tuple[bytes, Sequence[str]]],
        *,
        k: int = 20,
        alpha: int = 3,
        exclude: Iterable[bytes] = (),
        max_candidates: int | None = None,
        max_queries: int | None = None,
    ) -> None:
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be at least 1")
        self.target = target
        self.k = k
        self.alpha = alpha
        self.max_candidates = 4 * k if max_candidates is None else max_candidates
        self.max_queries = 8 * k if max_queries is None else max_queries
        self._key = int.from_bytes(target, "big")
        self._excluded = set(exclude)
        self._seen: set[bytes] = set(self._excluded)
        self._by_distance: dict[int, Candidate] = {}
        self._by_id: dict[bytes, Candidate] = {}  # the same candidates, by ID
        self._order: list[int] = []  # distances of candidates that have not failed, sorted
        self._waiting = 0  # candidates not asked yet (kept: not pruned)
        self._in_flight = 0
        self.queries = 0
        self.failures = 0
        for node_id, addresses in seeds:
            self._add(node_id, addresses, hop=1)
        self._prune()

    # -- candidates ----------------------------------------------------------------------------

    def _add(self, node_id: bytes, addresses: Sequence[str], *, hop: int) -> bool:
        if len(node_id) != len(self.target):
            return False
        if node_id in self._seen:
            candidate = self._by_id.get(node_id)
            if candidate is not None and candidate.state is CandidateState.WAITING:
                candidate.hop = min(candidate.hop, hop)
                if not candidate.addresses and addresses:
                    candidate.addresses = tuple(addresses)
            return False
        self._seen.add(node_id)
        d = self._key ^ int.from_bytes(node_id, "big")
        candidate = Candidate(node_id, tuple(addresses), d, hop)
        self._by_distance[d] = candidate
        self._by_id[node_id] = candidate
        bisect.insort(self._order, d)
        self._waiting += 1
        return True

    def _prune(self) -> None:
        """Drop the farthest candidates not yet asked beyond ``max_candidates``."""
        if self._waiting <= self.max_candidates:
            return
        waiting = 0
        keep: list[int] = []
        for d in self._order:
            candidate = self._by_distance[d]
            if candidate.state is CandidateState.WAITING:
                waiting += 1
                if waiting > self.max_candidates:
                    del self._by_distance[d]
                    del self._by_id[candidate.node_id]
                    continue
            keep.append(d)
        self._order = keep
        self._waiting = self.max_candidates

    def _closest_live(self) -> list[Candidate]:
        """The ``k`` closest candidates that have not failed."""
        return [self._by_distance[d] for d in self._order[: self.k]]

    def candidate(self, node_id: bytes) -> Candidate | None:
        """What the lookup knows of ``node_id`` (None if never seen or dropped)."""
        return self._by_id.get(node_id)

    # -- driving -------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def done(self) -> bool:
        """Whether the ``k`` closest live candidates have all answered (or nothing is left)."""
        if self.queries >= self.max_queries and self._in_flight == 0:
            return True
        by_distance = self._by_distance
        all_answered = True
        for d in self._order[: self.k]:
            state = by_distance[d].state
            if state is not CandidateState.RESPONDED:
                all_answered = False
                if state is CandidateState.WAITING:
                    return False  # one of the k closest is still to be asked
        return all_answered or self._in_flight == 0

    def next_queries(self) -> list[Candidate]:
        """The candidates to ask now (marked in flight); empty when none may be asked yet."""
        if self.done:
            return []
        chosen: list[Candidate] = []
        for candidate in self._closest_live():
            if self._in_flight >= self.alpha or self.queries >= self.max_queries:
                break
            if candidate.state is CandidateState.WAITING:
                candidate.state = CandidateState.IN_FLIGHT
                self._waiting -= 1
                self._in_flight += 1
                self.queries += 1
                chosen.append(candidate)
        return chosen

    def succeeded(self, node_id: bytes, found: Iterable[tuple[bytes, Sequence[str]]]) -> int:
        """``node_id`` answered, naming ``found``; returns how many nodes were new."""
        candidate = self._take(node_id)
        if candidate is None:
            return 0
        candidate.state = CandidateState.RESPONDED
        hop = candidate.hop + 1
        added = 0
        seen, by_id = self._seen, self._by_id
        for node_id_found, addresses in found:
            if node_id_found in seen:  # most of an answer, late in a lookup: inlined
                known = by_id.get(node_id_found)
                if known is not None and known.state is CandidateState.WAITING:
                    known.hop = min(known.hop, hop)
                    if not known.addresses and addresses:
                        known.addresses = tuple(addresses)
            elif self._add(node_id_found, addresses, hop=hop):
                added += 1
        self._prune()
        return added

    def failed(self, node_id: bytes) -> None:
        """``node_id`` did not answer usefully: it drops out of the lookup."""
        candidate = self._take(node_id)
        if candidate is None:
            return
        candidate.state = CandidateState.FAILED
        self.failures += 1
        index = bisect.bisect_left(self._order, candidate.distance)
        if index < len(self._order) and self._order[index] == candidate.distance:
            del self._order[index]

    def _take(self, node_id: bytes) -> Candidate | None:
        candidate = self.candidate(node_id)
        if candidate is None or candidate.state is not CandidateState.IN_FLIGHT:
            return None  # not asked, or already settled: a late or unasked answer is ignored
        self._in_flight -= 1
        return candidate

    def cancel_pending(self) -> list[bytes]:
        """Node IDs still in flight (the lookup is done; their answers are ignored)."""
        pending = [
            c.node_id for c in self._by_distance.values() if c.state is CandidateState.IN_FLIGHT
        ]
        for node_id in pending:
            self.failed(node_id)
        self.failures -= len(pending)  # cancelled, not failed
        return pending

    # -- results -------------------------------------------------------------------------------

    def result(self, count: int | None = None) -> list[Candidate]:
        """The closest nodes that answered (up to ``count``, default ``k``), closest first."""
        limit = self.k if count is None else count
        answered = []
        for d in self._order:
            candidate = self._by_distance[d]
            if candidate.state is CandidateState.RESPONDED:
                answered.append(candidate)
                if len(answered) == limit:
                    break
        return answered

    @property
    def rounds(self) -> int:
        """The longest chain of answers behind the result (0 if nobody answered)."""
        return max((c.hop for c in self.result()), default=0)
