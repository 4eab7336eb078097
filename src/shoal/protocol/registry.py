"""The message registry: the base class every message type derives from, and its table.

How it works: a message type is a frozen dataclass that subclasses ``Message``, declares its
``CODE``, ``NAME``, ``HEADER`` (schema), ``PAYLOAD`` and, for a request, ``RESPONSE``, and is
registered with ``@MESSAGES.register`` (``messages.py``). Registration checks the declaration
at import time and computes the header schema; everything else that depends on the set of
message types (decode dispatch, known frame types, the request/response table, which requests
carry or produce bulk data) asks the registry.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from shoal.errors import LocalProtocolError
from shoal.protocol.schema import Field, FieldError, HeaderSchema, describe

__all__ = ["AnswerCheck", "IdListPayload", "Message", "Payload", "RawPayload", "Registry"]


class Payload(abc.ABC):
    """How one field of a message travels as the frame's raw payload."""

    field: str

    @abc.abstractmethod
    def from_wire(self, payload: bytes) -> Any:
        """The field's value from a received payload. Raises ``FieldError``."""

    @abc.abstractmethod
    def to_wire(self, value: object) -> bytes:
        """The payload for the field's value. Raises ``FieldError``."""


@dataclass(frozen=True)
class RawPayload(Payload):
    """A ``bytes`` field sent as it is (block data): never copied on send."""

    field: str

    def from_wire(self, payload: bytes) -> bytes:
        return payload

    def to_wire(self, value: object) -> bytes:
        if type(value) is not bytes:
            raise FieldError(f"{self.field} must be bytes, got {describe(value)}")
        return value


@dataclass(frozen=True)
class IdListPayload(Payload):
    """A tuple of fixed-size byte strings, concatenated (HAS_BLOCKS: 4096 ids = 128 KiB)."""

    field: str
    item_size: int
    max_items: int

    def from_wire(self, payload: bytes) -> tuple[bytes, ...]:
        size = self.item_size
        if len(payload) % size or len(payload) > self.max_items * size:
            raise FieldError(
                f"{self.field} of {len(payload)} bytes is not a multiple of {size} "
                f"up to {self.max_items} entries"
            )
        return tuple(payload[i : i + size] for i in range(0, len(payload), size))

    def to_wire(self, value: object) -> bytes:
        if type(value) is not tuple:
            raise FieldError(f"{self.field} must be a tuple, got {describe(value)}")
        if len(value) > self.max_items:
            raise FieldError(
                f"{self.field} has {len(value)} entries, the limit is {self.max_items}"
            )
        for item in value:
            if type(item) is not bytes or len(item) != self.item_size:
                raise FieldError(
                    f"{self.field} entries must be {self.item_size} bytes, got {describe(item)}"
                )
        return b"".join(value)


class Message:
    """Base class of every message; each subclass is one registered message type.

    Class attributes (declared by each message): ``CODE``, ``NAME``, ``HEADER``, ``PAYLOAD``,
    ``RESPONSE``; ``schema`` is set by ``Registry.register``.
    """

    __slots__ = ()
    CODE: ClassVar[int]
    NAME: ClassVar[str]
    HEADER: ClassVar[tuple[Field, ...]] = ()
    PAYLOAD: ClassVar[Payload | None] = None
    RESPONSE: ClassVar[type[Message] | None] = None
    schema: ClassVar[HeaderSchema]

    @classmethod
    def is_request(cls) -> bool:
        """Whether this message opens a request (it has a ``RESPONSE``)."""
        return cls.RESPONSE is not None

    @classmethod
    def carries_bulk(cls) -> bool:
        """Whether this message has a payload (block data or an id list)."""
        return cls.PAYLOAD is not None

    def answer_check(self) -> AnswerCheck | None:
        """For a request: a check of its answer beyond its type, or ``None``.

        The connection keeps it while the request is outstanding (not the request itself,
        whose payload may be large) and refuses an answer it returns a problem for.
        """
        return None

    @classmethod
    def answer_carries_bulk(cls) -> bool:
        """For a request: whether its answer has a payload (GET_BLOCK's block data)."""
        return cls.RESPONSE is not None and cls.RESPONSE.PAYLOAD is not None


M = TypeVar("M", bound=type[Message])
#: Returns why an answer does not fit its request, or ``None`` if it does.
AnswerCheck = Callable[[Message], str | None]


class Registry:
    """The message types of one protocol version, by frame type code."""

    def __init__(self) -> None:
        self._by_code: dict[int, type[Message]] = {}

    def register(self, cls: M) -> M:
        """Class decorator: add a message type (checks its declaration at import time)."""
        code, name = cls.CODE, cls.NAME
        if not 0 < code <= 0xFF or code in self._by_code:
            raise LocalProtocolError(f"message {name}: frame type {code} is taken or invalid")
        if cls.RESPONSE is not None and self._by_code.get(cls.RESPONSE.CODE) is not cls.RESPONSE:
            raise LocalProtocolError(f"message {name}: register its response type first")
        declared = {f.name for f in cls.HEADER}
        if cls.PAYLOAD is not None:
            declared.add(cls.PAYLOAD.field)
        if declared != {f.name for f in fields(cls)}:  # type: ignore[arg-type]
            raise LocalProtocolError(f"message {name}: HEADER and PAYLOAD must name every field")
        cls.schema = HeaderSchema(name, cls.HEADER)
        self._by_code[code] = cls
        return cls

    def get(self, code: int) -> type[Message] | None:
        """The message type of a frame type code, or ``None``."""
        return self._by_code.get(code)

    @property
    def codes(self) -> frozenset[int]:
        """Every known frame type code."""
        return frozenset(self._by_code)

    @property
    def classes(self) -> tuple[type[Message], ...]:
        """Every message type, by code."""
        return tuple(self._by_code[c] for c in sorted(self._by_code))

    def responses(self) -> dict[type[Message], type[Message]]:
        """Each request type and the response it expects."""
        return {c: c.RESPONSE for c in self.classes if c.RESPONSE is not None}
