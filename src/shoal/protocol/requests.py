"""Request/response pairing for one connection (sans-I/O).

How it works: request ids come from two disjoint sets, so the two sides never collide: the
dialer opens requests with odd ids, the listener with even ids, both wrapping below 2**32 and
never using 0. ``RequestTable`` keeps

- our outstanding requests: id -> the response type we expect. An answer must carry one of
  these ids (else ``unknown-response``) and be of the expected type or ``Error`` (else
  ``unexpected-response``, also when the request's own check of its answer fails, e.g. a
  HAVE_BLOCKS whose length is not the number of ids asked); it then closes the request;
- the ids we cancelled (the caller gave up, e.g. after a timeout) while an answer may still
  come: such an answer is checked the same way and then dropped silently. Only the
  ``max_cancelled`` most recently cancelled ids are remembered; past that the oldest is
  forgotten, and a late answer to it is then ``unknown-response`` (the connection ends). A
  peer that owes more answers than that to requests we gave up on is too far behind to be
  worth keeping;
- the peer's open requests: id -> the response type the peer expects from us. A request whose
  id is still open is ``duplicate-request-id``.
  ``check_answer`` and ``answered`` check our response and close it. How many of the peer's
  requests are open is bounded by the caller, who receives each one as an event.

Everything raises: ``RemoteProtocolError`` for what the peer did, ``LocalProtocolError`` for
our own mistakes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol.frames import MAX_U32
from shoal.protocol.messages import Error, Message
from shoal.protocol.registry import AnswerCheck

__all__ = ["DEFAULT_MAX_CANCELLED_REQUESTS", "RequestTable"]

#: Cancelled request ids remembered so that their late answers are dropped quietly.
DEFAULT_MAX_CANCELLED_REQUESTS: Final = 1024


class RequestTable:
    """Outstanding, cancelled and peer-opened requests of one connection.

    Args:
        dialer: Whether this side dialed (its ids are odd) or listened (even).
        max_cancelled: How many cancelled ids to remember (see the module docstring).
    """

    def __init__(
        self, *, dialer: bool, max_cancelled: int = DEFAULT_MAX_CANCELLED_REQUESTS
    ) -> None:
        if max_cancelled < 0:
            raise LocalProtocolError("max_cancelled must be 0 or more")
        self._dialer = dialer
        self._own_parity = 1 if dialer else 0
        self._last_id = -1 if dialer else 0
        self._max_cancelled = max_cancelled
        self._outstanding: dict[int, type[Message]] = {}
        self._checks: dict[int, AnswerCheck] = {}  # only for requests that have one
        self._cancelled: OrderedDict[int, type[Message]] = OrderedDict()
        self._peer_open: dict[int, type[Message]] = {}

    # -- ours ---------------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """How many of our requests await an answer (cancelled ones not counted)."""
        return len(self._outstanding)

    def open(self, request: Message) -> int:
        """Allocate an id for a new request of ours and remember what its answer must be."""
        response = type(request).RESPONSE
        if response is None:
            raise LocalProtocolError(f"{type(request).NAME} is not a request")
        request_id = self._next_id()
        self._outstanding[request_id] = response
        check = request.answer_check()
        if check is not None:
            self._checks[request_id] = check
        return request_id

    def cancel(self, request_id: int) -> None:
        """Give up on one of our requests: a late answer to it is dropped silently.

        A no-op for an id that is not outstanding (already answered or cancelled).
        """
        expected = self._outstanding.pop(request_id, None)
        self._checks.pop(request_id, None)
        if expected is None or self._max_cancelled == 0:
            return
        self._cancelled[request_id] = expected
        if len(self._cancelled) > self._max_cancelled:
            self._cancelled.popitem(last=False)

    def close_answered(
        self, request_id: int, answer: type[Message]
    ) -> tuple[bool, AnswerCheck | None]:
        """Account for an answer of type ``answer`` (before it is decoded).

        Returns:
            Whether to deliver it (False: its request was cancelled), and the check to run
            on the decoded answer, if its request has one.

        Raises:
            RemoteProtocolError: ``bad-request-id`` (an id we could never have opened),
                ``unknown-response`` or ``unexpected-response``.
        """
        if not self._ours(request_id):
            raise RemoteProtocolError(
                self._bad_id_text(request_id, answer.NAME, ours=True), code="bad-request-id"
            )
        expected = self._outstanding.pop(request_id, None)
        check = self._checks.pop(request_id, None)
        deliver = expected is not None
        if expected is None:
            expected = self._cancelled.pop(request_id, None)
        if expected is None:
            raise RemoteProtocolError(
                f"{answer.NAME} answers request {request_id}, which this node has not sent or "
                "which was already answered",
                code="unknown-response",
            )
        if not issubclass(answer, (expected, Error)):
            raise RemoteProtocolError(
                f"{answer.NAME} answers request {request_id}, which expects {expected.NAME} "
                "or ERROR",
                code="unexpected-response",
            )
        return deliver, check

    def abandon(self, request_id: int) -> None:
        """Forget one of our requests that could not be sent at all."""
        self._outstanding.pop(request_id, None)
        self._checks.pop(request_id, None)

    def fail_all(self) -> list[int]:
        """Forget every outstanding request (the connection ended); return their ids."""
        ids = list(self._outstanding)
        self._outstanding.clear()
        self._checks.clear()
        self._cancelled.clear()
        return ids

    # -- theirs -------------------------------------------------------------------------------

    @property
    def peer_open(self) -> int:
        """How many of the peer's requests we have not answered yet."""
        return len(self._peer_open)

    def peer_opened(self, request_id: int, request: type[Message]) -> None:
        """Account for a request from the peer.

        Raises:
            RemoteProtocolError: ``bad-request-id`` (0 or our parity) or
                ``duplicate-request-id`` (that id is still open).
        """
        if not self._theirs(request_id):
            raise RemoteProtocolError(
                self._bad_id_text(request_id, request.NAME, ours=False), code="bad-request-id"
            )
        if request_id in self._peer_open:
            raise RemoteProtocolError(
                f"{request.NAME} reuses request id {request_id}, which is still open",
                code="duplicate-request-id",
            )
        response = request.RESPONSE
        assert response is not None
        self._peer_open[request_id] = response

    def check_answer(self, request_id: int, message: Message) -> None:
        """Check that ``message`` may answer the peer's request ``request_id``.

        Raises:
            LocalProtocolError: No such open request, or the wrong response type.
        """
        expected = self._peer_open.get(request_id)
        if expected is None:
            raise LocalProtocolError(
                f"cannot send {type(message).NAME} for request {request_id}: the peer has no "
                "open request with that id"
            )
        if not isinstance(message, (expected, Error)):
            raise LocalProtocolError(
                f"request {request_id} must be answered with {expected.NAME} or ERROR, "
                f"not {type(message).NAME}"
            )

    def answered(self, request_id: int) -> None:
        """Close the peer's request ``request_id`` (its answer was sent)."""
        self._peer_open.pop(request_id, None)

    # -- ids ----------------------------------------------------------------------------------

    def _next_id(self) -> int:
        # After a wrap (2**31 requests later), skip ids that are still in use.
        while True:
            nxt = self._last_id + 2
            if nxt > MAX_U32:
                nxt = 1 if self._dialer else 2
            self._last_id = nxt
            if nxt not in self._outstanding and nxt not in self._cancelled:
                return nxt

    def _ours(self, request_id: int) -> bool:
        return 0 < request_id <= MAX_U32 and request_id % 2 == self._own_parity

    def _theirs(self, request_id: int) -> bool:
        return 0 < request_id <= MAX_U32 and request_id % 2 != self._own_parity

    def _bad_id_text(self, request_id: int, name: str, *, ours: bool) -> str:
        opener_is_dialer = self._dialer == ours
        opener = "dialer" if opener_is_dialer else "listener"
        kind = "odd" if opener_is_dialer else "even"
        return (
            f"{name} has request id {request_id}, but requests opened by the {opener} use "
            f"{kind} ids other than 0"
        )
