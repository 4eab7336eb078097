"""Cut a stream that arrives in pieces of any size into fixed-size chunks.

How it works: pieces are sliced through a ``memoryview`` (no copy); whole chunks that lie inside
one piece are copied out once, and only the tail that does not fill a chunk is kept in a
``bytearray`` (amortised appends), which is topped up by the next piece. Each input byte is thus
copied at most twice whatever the split, so feeding many tiny pieces stays linear.
"""

from __future__ import annotations

from shoal.content.crypto import CHUNK_SIZE, Buffer

__all__ = ["Chunker"]


class Chunker:
    """Stateful splitter: ``feed`` pieces, collect whole chunks, ``finish`` for the tail.

    Every chunk but the last has exactly ``chunk_size`` bytes; the last has 1 to ``chunk_size``
    bytes, and there is none for an empty input.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        """Create a chunker.

        Args:
            chunk_size: Size of every chunk but the last; at least 1.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._pending = bytearray()
        self._fed = 0
        self._finished = False

    @property
    def bytes_fed(self) -> int:
        """Total number of bytes fed so far (the file size once finished)."""
        return self._fed

    def feed(self, data: Buffer) -> list[bytes]:
        """Add the next piece of input.

        Args:
            data: Any number of bytes (an empty piece is fine).

        Returns:
            The chunks completed by this piece, in order (often none).
        """
        if self._finished:
            raise ValueError("feed() after finish()")
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        size = len(view)
        self._fed += size
        size_per_chunk = self.chunk_size
        chunks: list[bytes] = []
        offset = 0
        if self._pending:
            need = size_per_chunk - len(self._pending)
            if size < need:
                self._pending += view
                return chunks
            self._pending += view[:need]
            chunks.append(bytes(self._pending))
            self._pending.clear()
            offset = need
        if offset == 0 and size == size_per_chunk and isinstance(data, bytes):
            # The common case of a reader that already yields whole chunks: no copy at all.
            chunks.append(data)
            return chunks
        while size - offset >= size_per_chunk:
            chunks.append(bytes(view[offset : offset + size_per_chunk]))
            offset += size_per_chunk
        if offset < size:
            self._pending += view[offset:]
        return chunks

    def finish(self) -> bytes | None:
        """End the input.

        Returns:
            The last, partial chunk, or None if nothing is left (empty input, or the input was a
            whole number of chunks). Later calls return None.
        """
        self._finished = True
        if not self._pending:
            return None
        tail = bytes(self._pending)
        self._pending = bytearray()
        return tail
