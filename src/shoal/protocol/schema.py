"""Header schemas: what a message's msgpack header may hold, and a decoder bounded by it.

How it works: each message type declares its header as a tuple of ``Field``\\ s (a key and a
kind: ``Bin``, ``Text``, ``UInt``, ``Bool``, ``Array``, ``Record``). A ``HeaderSchema`` built
from that declaration gives

- the checks of every value, when sending (a ``FieldError`` the caller turns into
  ``LocalProtocolError``) and when receiving (``RemoteProtocolError``);
- the limits the msgpack decoder runs with, all computed from the declaration: the largest
  header a valid message can have, the longest str and bin, the longest array and map, and the
  number of containers (arrays and maps) a valid header holds. msgpack checks each length
  before it allocates anything; the container budget is counted by the hooks msgpack calls for
  every finished array and map, and the decode stops as soon as it is exceeded. So a 64 KiB
  header of 65,000 empty maps, or a 1,000-deep nested list, is refused after a few objects,
  and never reaches a recursive function.

Received headers are strict: a key the schema does not name, a missing key, a duplicate key,
a non-str key or a value of the wrong type or size is refused. Error messages describe a bad
value by its type and size only; they never format the value itself (``repr`` of a deeply
nested list raises ``RecursionError``, and a peer's text has no place in our messages).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import msgpack

from shoal.errors import RemoteProtocolError

__all__ = [
    "Array",
    "Bin",
    "Bool",
    "Field",
    "FieldError",
    "HeaderLimits",
    "HeaderSchema",
    "Kind",
    "Record",
    "Text",
    "UInt",
    "describe",
    "peek_uint",
    "safe_text",
]

#: Worst-case bytes of a msgpack type-and-length prefix (str32, bin32, array32, map32).
_PREFIX_MAX: Final = 5
#: Worst-case bytes of a msgpack integer (uint64).
_INT_MAX: Final = 9
#: UTF-8 needs at most 4 bytes per character.
_UTF8_MAX: Final = 4


class FieldError(ValueError):
    """A value does not fit its schema; the caller maps it to Local/RemoteProtocolError."""


def describe(value: object) -> str:
    """A value's type and size, for error messages: never the value itself."""
    if isinstance(value, bytes | str | list | tuple | dict):
        unit = "characters" if isinstance(value, str) else "entries"
        if isinstance(value, bytes):
            unit = "bytes"
        return f"{type(value).__name__} of {len(value)} {unit}"
    return type(value).__name__


def safe_text(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with control characters escaped.

    For text a peer sent (an ERROR's message) that goes into one of our messages or logs: a
    newline in it cannot fake a log line, and no ``repr`` is involved.
    """
    cut = text[:limit]
    out = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in cut)
    return out + ("..." if len(text) > limit else "")


class Kind(abc.ABC):
    """The type of one header value: its checks and its worst-case size."""

    @property
    @abc.abstractmethod
    def max_size(self) -> int:
        """Largest msgpack encoding of a valid value, in bytes."""

    @property
    def max_containers(self) -> int:
        """Most arrays and maps a valid value holds (itself included)."""
        return 0

    def children(self) -> Iterator[Kind]:
        """The kinds nested in this one (for computing limits)."""
        return iter(())

    @abc.abstractmethod
    def from_wire(self, value: object, name: str) -> Any:
        """Check a decoded msgpack value; return the Python value. Raises ``FieldError``."""

    @abc.abstractmethod
    def to_wire(self, value: object, name: str) -> Any:
        """Check a Python value; return what msgpack encodes. Raises ``FieldError``."""


@dataclass(frozen=True)
class Bin(Kind):
    """msgpack ``bin`` of exactly ``size`` bytes; ``bytes`` in Python."""

    size: int

    @property
    def max_size(self) -> int:
        return _PREFIX_MAX + self.size

    def from_wire(self, value: object, name: str) -> bytes:
        if type(value) is not bytes or len(value) != self.size:
            raise FieldError(f"{name} must be {self.size} bytes, got {describe(value)}")
        return value

    def to_wire(self, value: object, name: str) -> bytes:
        return self.from_wire(value, name)


@dataclass(frozen=True)
class Text(Kind):
    """msgpack ``str`` (UTF-8) of ``min_chars`` to ``max_chars`` characters; ``str``."""

    max_chars: int
    min_chars: int = 0

    @property
    def max_size(self) -> int:
        return _PREFIX_MAX + _UTF8_MAX * self.max_chars

    def from_wire(self, value: object, name: str) -> str:
        if type(value) is not str:
            raise FieldError(f"{name} must be a string, got {describe(value)}")
        if not self.min_chars <= len(value) <= self.max_chars:
            raise FieldError(
                f"{name} must be {self.min_chars} to {self.max_chars} characters, got {len(value)}"
            )
        return value

    def to_wire(self, value: object, name: str) -> str:
        return self.from_wire(value, name)


@dataclass(frozen=True)
class UInt(Kind):
    """msgpack integer from 0 to ``max_value``; ``int`` (not ``bool``)."""

    max_value: int = 2**64 - 1

    @property
    def max_size(self) -> int:
        return _INT_MAX

    def from_wire(self, value: object, name: str) -> int:
        if type(value) is not int or not 0 <= value <= self.max_value:
            raise FieldError(
                f"{name} must be an integer from 0 to {self.max_value}, got {describe(value)}"
            )
        return value

    def to_wire(self, value: object, name: str) -> int:
        return self.from_wire(value, name)


@dataclass(frozen=True)
class Bool(Kind):
    """msgpack ``true`` / ``false``; ``bool``."""

    @property
    def max_size(self) -> int:
        return 1

    def from_wire(self, value: object, name: str) -> bool:
        if type(value) is not bool:
            raise FieldError(f"{name} entries must be booleans, got {describe(value)}")
        return value

    def to_wire(self, value: object, name: str) -> bool:
        return self.from_wire(value, name)


@dataclass(frozen=True)
class Array(Kind):
    """msgpack array of at most ``max_items`` values of one kind; a ``tuple`` in Python."""

    item: Kind
    max_items: int

    @property
    def max_size(self) -> int:
        return _PREFIX_MAX + self.max_items * self.item.max_size

    @property
    def max_containers(self) -> int:
        return 1 + self.max_items * self.item.max_containers

    def children(self) -> Iterator[Kind]:
        yield self.item

    def from_wire(self, value: object, name: str) -> tuple[Any, ...]:
        if type(value) is not list:
            raise FieldError(f"{name} must be an array, got {describe(value)}")
        if len(value) > self.max_items:
            raise FieldError(f"{name} has {len(value)} entries, the limit is {self.max_items}")
        return tuple(self.item.from_wire(v, f"{name} entry") for v in value)

    def to_wire(self, value: object, name: str) -> list[Any]:
        if type(value) is not tuple:
            raise FieldError(f"{name} must be a tuple, got {describe(value)}")
        if len(value) > self.max_items:
            raise FieldError(f"{name} has {len(value)} entries, the limit is {self.max_items}")
        return [self.item.to_wire(v, f"{name} entry") for v in value]


@dataclass(frozen=True)
class Field:
    """One key of a map: its name, its kind, and whether it may be absent.

    An optional field is ``None`` in Python when absent; on the wire it is either absent or
    present with a valid value (``nil`` is refused).
    """

    name: str
    kind: Kind
    optional: bool = False


@dataclass(frozen=True)
class Record(Kind):
    """msgpack map with exactly the keys of ``fields``; in Python an instance of ``cls``.

    ``cls`` is built with the fields as keyword arguments and read back by attribute.
    """

    fields: tuple[Field, ...]
    cls: Callable[..., Any]

    @property
    def max_size(self) -> int:
        return _PREFIX_MAX + sum(
            _PREFIX_MAX + len(f.name.encode()) + f.kind.max_size for f in self.fields
        )

    @property
    def max_containers(self) -> int:
        return 1 + sum(f.kind.max_containers for f in self.fields)

    def children(self) -> Iterator[Kind]:
        return (f.kind for f in self.fields)

    def values_from_wire(self, value: object, name: str) -> dict[str, Any]:
        """Check a decoded map against the fields; return the Python values by name."""
        if type(value) is not dict:
            raise FieldError(f"{name} must be a map, got {describe(value)}")
        known = {f.name for f in self.fields}
        unknown = sum(1 for key in value if key not in known)
        if unknown:
            raise FieldError(f"{name} has {unknown} key(s) this protocol version does not know")
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name in value:
                out[f.name] = f.kind.from_wire(value[f.name], f"{name}.{f.name}")
            elif f.optional:
                out[f.name] = None
            else:
                raise FieldError(f"{name} lacks the key {f.name}")
        return out

    def values_to_wire(self, value: object, name: str) -> dict[str, Any]:
        """Check the fields of a Python object; return the map msgpack encodes."""
        out: dict[str, Any] = {}
        for f in self.fields:
            item = getattr(value, f.name)
            if item is None and f.optional:
                continue
            out[f.name] = f.kind.to_wire(item, f"{name}.{f.name}")
        return out

    def from_wire(self, value: object, name: str) -> Any:
        return self.cls(**self.values_from_wire(value, name))

    def to_wire(self, value: object, name: str) -> dict[str, Any]:
        if type(value) is not self.cls:
            raise FieldError(f"{name} must be a {getattr(self.cls, '__name__', 'record')}")
        return self.values_to_wire(value, name)


@dataclass(frozen=True)
class HeaderLimits:
    """The bounds a header is decoded under, all derived from its schema.

    Attributes:
        max_size: Largest header in bytes (also capped by the connection's header limit).
        max_str_len: Longest msgpack str in bytes (keys included).
        max_bin_len: Longest msgpack bin.
        max_array_len: Most entries in one array.
        max_map_len: Most keys in one map.
        max_containers: Most arrays and maps in the whole header.
    """

    max_size: int
    max_str_len: int
    max_bin_len: int
    max_array_len: int
    max_map_len: int
    max_containers: int


def _walk(kind: Kind) -> Iterator[Kind]:
    yield kind
    for child in kind.children():
        yield from _walk(child)


class _HeaderRefused(Exception):
    """Raised inside the msgpack hooks to stop a decode; carries a safe message."""


class HeaderSchema:
    """The header of one message type: ``fields`` as a top-level msgpack map.

    Args:
        what: The message name, for error messages (``"HELLO"``).
        fields: The header's keys.
    """

    def __init__(self, what: str, fields: tuple[Field, ...]) -> None:
        self.what = what
        self.record = Record(fields, dict)
        kinds = list(_walk(self.record))
        records = [k for k in kinds if isinstance(k, Record)]
        keys = [f.name for r in records for f in r.fields]
        self.limits = HeaderLimits(
            max_size=self.record.max_size,
            max_str_len=max(
                [len(k.encode()) for k in keys]
                + [_UTF8_MAX * k.max_chars for k in kinds if isinstance(k, Text)],
                default=0,
            ),
            max_bin_len=max([k.size for k in kinds if isinstance(k, Bin)], default=0),
            max_array_len=max([k.max_items for k in kinds if isinstance(k, Array)], default=0),
            max_map_len=max(len(r.fields) for r in records),
            max_containers=self.record.max_containers,
        )

    def encode(self, message: object) -> bytes:
        """The header of ``message`` (its fields read by attribute). Raises ``FieldError``."""
        values = self.record.values_to_wire(message, self.what)
        packed: bytes = msgpack.packb(values, use_bin_type=True)
        return packed

    def decode(self, raw: bytes, max_size: int) -> dict[str, Any]:
        """Decode and check a received header; return the Python values by key.

        Args:
            raw: The header bytes.
            max_size: The connection's header limit (the schema's own bound also applies).

        Raises:
            RemoteProtocolError: ``header-too-large`` (above the bound of this message type),
                ``malformed-header`` (not one msgpack map with str keys within the limits),
                ``malformed-message`` (keys or values that do not fit the schema).
        """
        limit = min(max_size, self.limits.max_size)
        if len(raw) > limit:
            raise RemoteProtocolError(
                f"{self.what} header of {len(raw)} bytes exceeds the limit of {limit} bytes "
                "for this message type",
                code="header-too-large",
            )
        value = self._unpack(raw)
        if type(value) is not dict:
            self._refuse(f"is a {describe(value)}, not a map")
        try:
            return self.record.values_from_wire(value, self.what)
        except FieldError as exc:
            raise RemoteProtocolError(
                f"invalid {self.what} message: {exc}", code="malformed-message"
            ) from None

    def _unpack(self, raw: bytes) -> object:
        limits = self.limits
        budget = limits.max_containers
        seen = 0

        def count() -> None:
            nonlocal seen
            seen += 1
            if seen > budget:
                raise _HeaderRefused(f"holds more than {budget} arrays and maps")

        def on_map(pairs: list[tuple[object, object]]) -> dict[str, object]:
            count()
            out: dict[str, object] = {}
            for key, item in pairs:
                if type(key) is not str:
                    raise _HeaderRefused(f"has a {describe(key)} key; keys must be strings")
                if key in out:
                    raise _HeaderRefused("has a duplicate key")
                out[key] = item
            return out

        def on_list(items: list[object]) -> list[object]:
            count()
            return items

        if not raw:
            self._refuse("is empty (an empty header is the one-byte map 0x80)")
        try:
            return msgpack.unpackb(
                raw,
                raw=False,
                use_list=True,
                strict_map_key=True,
                object_pairs_hook=on_map,
                list_hook=on_list,
                max_str_len=limits.max_str_len,
                max_bin_len=limits.max_bin_len,
                max_array_len=limits.max_array_len,
                max_map_len=limits.max_map_len,
                max_ext_len=0,
            )
        except _HeaderRefused as exc:
            self._refuse(str(exc))
        except msgpack.ExtraData:
            self._refuse("has bytes after its map")
        except UnicodeDecodeError:
            self._refuse("has a str that is not UTF-8")
        except (msgpack.StackError, msgpack.FormatError):
            self._refuse("is not valid msgpack")
        except ValueError as exc:
            text = str(exc)
            # msgpack's own limit messages hold numbers only ("20 exceeds max_array_len(16)").
            if "exceeds max_" in text:
                self._refuse(f"is beyond this message type's limits: {text[:120]}")
            self._refuse("is not valid msgpack")
        except Exception:  # msgpack documents that other exceptions may escape
            self._refuse("is not valid msgpack")

    def _refuse(self, why: str) -> NoReturn:
        raise RemoteProtocolError(f"{self.what} header {why}", code="malformed-header")


def peek_uint(raw: bytes, key: str, *, max_size: int) -> int | None:
    """The unsigned integer under ``key`` of a header map, read without decoding the rest.

    For the HELLO version, which must be read before the rest of the HELLO is checked (a later
    protocol version may change the other keys). Bounded: at most ``max_size`` bytes are
    looked at, nested values are skipped without being built, and anything unexpected
    returns ``None`` (the full decode then reports it).
    """
    if not raw or len(raw) > max_size:
        return None
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        max_buffer_size=len(raw),
        max_str_len=len(raw),
        max_bin_len=len(raw),
        max_array_len=len(raw),
        max_map_len=len(raw),
        max_ext_len=len(raw),
    )
    try:
        unpacker.feed(raw)
        entries = unpacker.read_map_header()
        for _ in range(entries):
            offset = unpacker.tell()
            if offset >= len(raw) or not _is_str_type(raw[offset]):
                return None  # a non-str key: the full decode refuses it
            name = unpacker.unpack()
            if name == key:
                value = unpacker.unpack()
                return value if type(value) is int and value >= 0 else None
            unpacker.skip()
    except Exception:  # any malformed input: the full decode reports it
        return None
    return None


def _is_str_type(first_byte: int) -> bool:
    """Whether a msgpack value starting with ``first_byte`` is a str (fixstr, str8/16/32)."""
    return 0xA0 <= first_byte <= 0xBF or first_byte in (0xD9, 0xDA, 0xDB)
