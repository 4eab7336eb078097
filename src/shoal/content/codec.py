"""A strict reader for the canonical msgpack subset that manifests are made of.

How it works: manifests are written by ``msgpack.packb`` (shortest forms, maps with their keys
in a fixed order), so a reader does not need a general msgpack decoder: it reads exactly the
structure the schema expects, one typed item at a time, and refuses anything else at the first
byte that differs. That gives, by construction, what a general decoder needs limits for:

- nothing is built that the schema does not ask for: a map where an integer belongs, a nested
  array, an unknown or misplaced key is refused before any object is made for it;
- no recursion: the schema is flat, nesting is never followed;
- every length is checked against the bytes left (and a per-field maximum) before anything is
  allocated, so the memory a decode takes is bounded by the input it was given;
- only the canonical (shortest) encoding of each value is accepted, so one meaning has one
  encoding and therefore one block ID;
- error messages say what was expected, what kind of item was found and at which byte; they
  never contain the untrusted value itself.

:class:`Malformed` is internal: the manifest module turns it into ``IntegrityError`` with the
block's name.
"""

from __future__ import annotations

from array import array

__all__ = ["Malformed", "Reader", "describe"]


class Malformed(ValueError):
    """The bytes are not the expected canonical item (the message says where and why)."""


def describe(first: int) -> str:
    """Name the kind of msgpack item that starts with byte ``first`` (never its value)."""
    if first <= 0x7F or 0xCC <= first <= 0xCF:
        return "an unsigned integer"
    if first >= 0xE0 or 0xD0 <= first <= 0xD3:
        return "a negative integer"
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return "a map"
    if 0x90 <= first <= 0x9F or first in (0xDC, 0xDD):
        return "an array"
    if 0xA0 <= first <= 0xBF or first in (0xD9, 0xDA, 0xDB):
        return "a string"
    if first in (0xC4, 0xC5, 0xC6):
        return "a byte string"
    if first == 0xC0:
        return "nil"
    if first in (0xC2, 0xC3):
        return "a boolean"
    if first in (0xCA, 0xCB):
        return "a float"
    if first == 0xC1:
        return "the unused byte 0xc1"
    return "an extension type"


# Smallest value each wide form may carry: anything smaller has a shorter canonical form.
_UINT_FORMS = {0xCC: (1, 0x80), 0xCD: (2, 0x100), 0xCE: (4, 0x10000), 0xCF: (8, 0x1_0000_0000)}
_BIN_FORMS = {0xC4: (1, 0), 0xC5: (2, 0x100), 0xC6: (4, 0x10000)}
_ARRAY_FORMS = {0xDC: (2, 16), 0xDD: (4, 0x10000)}
# Signed forms: each holds values below the largest one a shorter form could (negative only).
_INT_FORMS = {0xD0: (1, -32), 0xD1: (2, -0x80), 0xD2: (4, -0x8000), 0xD3: (8, -0x8000_0000)}
_ID_ENTRY = 35  # 0x92, 0xc4 0x20, 32 bytes: the fixed part of one [id, uint] pair
_KEY_ENTRY = 34  # 0xc4 0x20, 32 bytes


class Reader:
    """Reads canonical msgpack items from ``data`` front to back.

    Every method reads one item at the current position and advances past it, or raises
    :class:`Malformed` without advancing.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)

    @property
    def pos(self) -> int:
        """Offset of the next unread byte."""
        return self._pos

    def _fail(self, what: str, expected: str, at: int | None = None) -> Malformed:
        at = self._pos if at is None else at
        if at >= self._end:
            return Malformed(f"{what}: expected {expected} at byte {at}, found the end of the data")
        found = describe(self._data[at])
        return Malformed(f"{what}: expected {expected} at byte {at}, found {found}")

    def _need(self, count: int, what: str) -> None:
        if self._pos + count > self._end:
            raise Malformed(f"{what}: truncated at byte {self._pos}")

    def _big_endian(self, start: int, width: int) -> int:
        return int.from_bytes(self._data[start : start + width], "big")

    def expect_end(self, what: str) -> None:
        """Raise unless every byte was read."""
        if self._pos != self._end:
            raise Malformed(f"{what}: {self._end - self._pos} unexpected byte(s) after the end")

    def map_header(self, what: str) -> int:
        """A map's entry count; only the small maps of the schema exist (fixmap, <= 15)."""
        self._need(1, what)
        first = self._data[self._pos]
        if not 0x80 <= first <= 0x8F:
            raise self._fail(what, "a small map")
        self._pos += 1
        return first - 0x80

    def key(self, encoded: bytes, name: str, what: str) -> None:
        """The next map key, which must be ``encoded`` (the fixstr form of ``name``)."""
        end = self._pos + len(encoded)
        if self._data[self._pos : end] != encoded:
            raise Malformed(f"{what}: expected the field {name!r} at byte {self._pos}")
        self._pos = end

    def uint(self, what: str, low: int, high: int) -> int:
        """An unsigned integer in ``low..high``, in its shortest form."""
        self._need(1, what)
        start = self._pos
        first = self._data[start]
        if first <= 0x7F:
            value, size = first, 1
        elif first in _UINT_FORMS:
            width, smallest = _UINT_FORMS[first]
            self._need(1 + width, what)
            value, size = self._big_endian(start + 1, width), 1 + width
            if value < smallest:
                raise Malformed(f"{what}: integer at byte {start} is not in its shortest form")
        else:
            raise self._fail(what, "an unsigned integer")
        if not low <= value <= high:
            raise Malformed(f"{what}: {value} at byte {start} is out of range {low}..{high}")
        self._pos = start + size
        return value

    def int_(self, what: str, low: int, high: int) -> int:
        """A signed integer in ``low..high`` (at most 64 bits), in its shortest form.

        msgpack writes a value >= 0 as an unsigned integer and a negative one in the shortest
        signed form that holds it (negative fixint, then int8/16/32/64); nothing else is read.
        """
        self._need(1, what)
        start = self._pos
        first = self._data[start]
        if first <= 0x7F or first in _UINT_FORMS:
            return self.uint(what, max(low, 0), high)
        if first >= 0xE0:
            value, size = first - 0x100, 1
        elif first in _INT_FORMS:
            width, largest = _INT_FORMS[first]
            self._need(1 + width, what)
            value = int.from_bytes(self._data[start + 1 : start + 1 + width], "big", signed=True)
            size = 1 + width
            if not value < largest:
                raise Malformed(f"{what}: integer at byte {start} is not in its shortest form")
        else:
            raise self._fail(what, "an integer")
        if not low <= value <= high:
            raise Malformed(f"{what}: {value} at byte {start} is out of range {low}..{high}")
        self._pos = start + size
        return value

    def text(self, what: str, high: int) -> bytes:
        """A string of 1..``high`` (<= 255) bytes, fixstr or str8 as its length asks; raw bytes.

        The caller decodes and checks the UTF-8 (and never echoes it).
        """
        self._need(1, what)
        start = self._pos
        first = self._data[start]
        if 0xA0 <= first <= 0xBF:
            size, header = first - 0xA0, 1
        elif first == 0xD9:
            self._need(2, what)
            size, header = self._data[start + 1], 2
            if size < 32:
                raise Malformed(f"{what}: length at byte {start} is not in its shortest form")
        else:
            raise self._fail(what, f"a string of at most {high} bytes")
        if not 1 <= size <= high:
            raise Malformed(f"{what}: {size} bytes at byte {start}, expected 1..{high}")
        self._need(header + size, what)
        self._pos = start + header + size
        return self._data[start + header : start + header + size]

    def short_str(self, what: str) -> str:
        """A short ASCII string (fixstr, <= 31 bytes), as the schema's names are."""
        self._need(1, what)
        first = self._data[self._pos]
        if not 0xA0 <= first <= 0xBF:
            raise self._fail(what, "a short string")
        size = first - 0xA0
        self._need(1 + size, what)
        raw = self._data[self._pos + 1 : self._pos + 1 + size]
        if not raw.isascii():
            raise Malformed(f"{what}: string at byte {self._pos} is not ASCII")
        self._pos += 1 + size
        return raw.decode("ascii")

    def bin(self, what: str, low: int, high: int) -> bytes:
        """A byte string of ``low..high`` bytes, with the shortest length prefix."""
        self._need(1, what)
        start = self._pos
        first = self._data[start]
        if first not in _BIN_FORMS:
            raise self._fail(what, "a byte string")
        width, smallest = _BIN_FORMS[first]
        self._need(1 + width, what)
        size = self._big_endian(start + 1, width)
        if size < smallest:
            raise Malformed(f"{what}: length at byte {start} is not in its shortest form")
        if not low <= size <= high:
            raise Malformed(f"{what}: {size} bytes at byte {start}, expected {low}..{high}")
        begin = start + 1 + width
        if begin + size > self._end:
            raise Malformed(f"{what}: truncated at byte {start}")
        self._pos = begin + size
        return self._data[begin : begin + size]

    def array_header(self, what: str, high: int, min_item_size: int) -> int:
        """An array's element count, at most ``high`` and at most what the bytes left can hold.

        ``min_item_size`` is the fewest bytes one element takes; the check happens before
        anything is allocated for the elements.
        """
        self._need(1, what)
        start = self._pos
        first = self._data[start]
        if 0x90 <= first <= 0x9F:
            count, header = first - 0x90, 1
        elif first in _ARRAY_FORMS:
            width, smallest = _ARRAY_FORMS[first]
            self._need(1 + width, what)
            count, header = self._big_endian(start + 1, width), 1 + width
            if count < smallest:
                raise Malformed(f"{what}: length at byte {start} is not in its shortest form")
        else:
            raise self._fail(what, "an array")
        if count > high:
            raise Malformed(f"{what}: {count} entries at byte {start}, at most {high} allowed")
        if start + header + count * min_item_size > self._end:
            raise Malformed(f"{what}: {count} entries at byte {start} cannot fit in the data")
        self._pos = start + header
        return count

    def id_size_pairs(self, what: str, count: int, high: int) -> tuple[bytes, array[int]]:
        """``count`` pairs ``[bin(32), uint 1..high]``: the IDs joined, and the integers.

        The hot loop of a manifest decode (up to 32,768 entries), written out flat.
        """
        data, end = self._data, self._end
        ids = bytearray()
        sizes: array[int] = array("L")
        pos = self._pos
        for index in range(count):
            if pos + _ID_ENTRY + 1 > end:
                raise Malformed(f"{what}: truncated in entry {index}")
            if data[pos] != 0x92 or data[pos + 1] != 0xC4 or data[pos + 2] != 0x20:
                raise Malformed(f"{what}: entry {index} at byte {pos} is not [32-byte id, size]")
            ids += data[pos + 3 : pos + _ID_ENTRY]
            pos += _ID_ENTRY
            first = data[pos]
            if first <= 0x7F:
                value = first
                pos += 1
            elif first in _UINT_FORMS:
                width, smallest = _UINT_FORMS[first]
                if pos + 1 + width > end:
                    raise Malformed(f"{what}: truncated in entry {index}")
                value = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
                if value < smallest:
                    raise Malformed(f"{what}: size of entry {index} is not in its shortest form")
                pos += 1 + width
            else:
                raise Malformed(
                    f"{what}: size of entry {index} at byte {pos} must be an unsigned integer, "
                    f"found {describe(first)}"
                )
            if not 1 <= value <= high:
                raise Malformed(f"{what}: size {value} of entry {index} is out of range 1..{high}")
            sizes.append(value)
        self._pos = pos
        return bytes(ids), sizes

    def ids(self, what: str, count: int) -> bytes:
        """``count`` consecutive ``bin(32)`` items, joined."""
        data, pos = self._data, self._pos
        if pos + count * _KEY_ENTRY > self._end:
            raise Malformed(f"{what}: truncated")
        out = bytearray()
        for index in range(count):
            if data[pos] != 0xC4 or data[pos + 1] != 0x20:
                raise Malformed(f"{what}: entry {index} at byte {pos} is not a 32-byte string")
            out += data[pos + 2 : pos + _KEY_ENTRY]
            pos += _KEY_ENTRY
        self._pos = pos
        return bytes(out)
