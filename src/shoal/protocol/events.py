"""What a ``Connection`` reports: its states and its events (sans-I/O).

``next_event`` returns one of the events below, or ``NEED_DATA`` when every received byte has
been used. After ``HandshakeComplete`` the peer's requests come as ``RequestReceived`` (never a
PING: the connection answers those itself) and the answers to ours as ``ResponseReceived``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from shoal.protocol.messages import Hello, Message

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "Event",
    "HandshakeComplete",
    "NeedData",
    "RequestReceived",
    "ResponseReceived",
    "State",
]


class State(enum.Enum):
    """Where a ``Connection`` is in its life."""

    IDLE = "idle"  # dialer before start()
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    ESTABLISHED = "established"
    CLOSED = "closed"  # the peer closed cleanly (EOF between frames)
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The peer proved its key; requests may flow. ``peer`` is its HELLO."""

    peer: Hello


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request from the established peer; answer it with ``send_response(request_id, ...)``.

    Never a PING: the connection answers those itself.
    """

    request_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The answer to our request ``request_id``: its expected response type, or ``Error``."""

    request_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection cleanly (EOF on a frame boundary)."""


class NeedData(enum.Enum):
    """Type of the ``NEED_DATA`` sentinel."""

    NEED_DATA = "need-data"


#: Returned by ``next_event`` when every received byte has been used.
NEED_DATA: Final = NeedData.NEED_DATA

Event: TypeAlias = HandshakeComplete | RequestReceived | ResponseReceived | ConnectionClosed
