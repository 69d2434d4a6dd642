"""Lines of a trace from blocks of bytes: split in bulk, numbered exactly, capped in length.

Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` (Python's universal newlines, as ``open()`` reads
text), without the line break. A line longer than ``max_line_bytes`` (default
:data:`MAX_LINE_BYTES`, ``--max-line-bytes``) is never held in memory: its bytes are dropped as
they arrive and the line is replaced by :data:`TOO_LONG`, which readers count as one malformed
line ("line N: longer than the limit of M bytes"); later line numbers stay exact. Text for the
readers that want ``str`` lines is UTF-8 with undecodable bytes replaced, so binary garbage
becomes malformed lines, not a ``UnicodeDecodeError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = [
    "MAX_LINE_BYTES",
    "TOO_LONG",
    "TOO_LONG_TEXT",
    "Chunk",
    "LineSource",
    "Span",
    "long_line_problem",
]

MAX_LINE_BYTES = 1 << 20
"""The longest line a reader accepts (1 MiB; a kvm_exit line is ~100-200 bytes)."""

TOO_LONG = b"\n(line too long)\n"
"""Stands in for an over-long line (compared by identity; no split line holds a line break)."""
TOO_LONG_TEXT = "\n(line too long)\n"
"""The same for ``str`` lines."""


class Span(NamedTuple):
    """Whole lines joined by ``\\n`` in ``data[start:end]``: a block read from the input, with
    no copy of it made (the part before ``start`` ended the previous block's last line)."""

    data: bytes
    start: int
    end: int


Chunk = bytes | Span | list[bytes]
"""Consecutive lines: either their text joined by ``\\n`` (not yet split, and without the
over-long check: a line longer than the limit in it stands for :data:`TOO_LONG`), as bytes or as
a :class:`Span` of a block, or a list of lines already split and checked."""


def long_line_problem(limit: int) -> str:
    """The malformed-line message of an over-long line."""
    return f"line longer than the limit of {limit:,} bytes (--max-line-bytes)"


class LineSource:
    """The lines of a stream of byte blocks, in lists (one list per block)."""

    def __init__(self, blocks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self._blocks = iter(blocks)
        self._held: list[Chunk] = []  # lists peeked at by head(), handed out first
        self._rest: Iterator[Chunk] | None = None

    def head(self, count: int) -> list[bytes]:
        """The first ``count`` lines (or fewer); they are still handed out by :meth:`lists`."""
        lines: list[bytes] = []
        for held in self._held:
            lines.extend(self._lines_of(held))
        source = self._rest or self._split()
        while len(lines) < count:
            piece = next(source, None)
            if piece is None:
                break
            self._held.append(piece)
            lines.extend(self._lines_of(piece))
        self._rest = source
        return lines[:count]

    def chunks(self) -> Iterator[Chunk]:
        """Every line, in chunks of consecutive lines (see :data:`Chunk`): for readers that
        split and check lines themselves (the ftrace reader's bulk path)."""
        held, self._held = self._held, []
        yield from held
        yield from self._rest or self._split()

    def lists(self) -> Iterator[list[bytes]]:
        """Every line, in lists of consecutive lines."""
        for chunk in self.chunks():
            yield self._lines_of(chunk)

    def _lines_of(self, chunk: Chunk) -> list[bytes]:
        if isinstance(chunk, list):
            return chunk
        if isinstance(chunk, Span):
            chunk = chunk.data[chunk.start : chunk.end]
        lines = chunk.split(b"\n")
        limit = self.max_line_bytes
        if max(map(len, lines)) > limit:
            lines = [TOO_LONG if len(line) > limit else line for line in lines]
        return lines

    def text(self) -> Iterator[str]:
        """Every line as ``str`` (``TOO_LONG_TEXT`` for an over-long one)."""
        for piece in self.lists():
            for line in piece:
                yield TOO_LONG_TEXT if line is TOO_LONG else line.decode("utf-8", "replace")

    def _split(self) -> Iterator[Chunk]:
        limit = self.max_line_bytes
        carry = b""
        dropping = False  # inside an over-long line: drop bytes up to its end
        skip_lf = False  # the dropped line ended with \r at the end of a block
        for block in self._blocks:
            if skip_lf:
                skip_lf, block = False, block[1:] if block.startswith(b"\n") else block
            if dropping:
                end = _first_break(block)
                if end < 0:
                    continue
                if block[end] == 13 and end == len(block) - 1:
                    skip_lf = True
                skip = 2 if block.startswith(b"\r\n", end) else 1
                block, dropping, carry = block[end + skip :], False, b""
                yield [TOO_LONG]
            data, start = block, 0
            if carry:
                first = _first_break(block)
                ends_pair = first >= 0 and block[first] == 13 and first == len(block) - 1
                if first < 0 or ends_pair or carry.endswith(b"\r"):
                    data = carry + block  # the rare cases: joined as they come
                else:  # the line the last block began, ended here: no copy of the block
                    line = carry + block[:first]
                    yield [TOO_LONG if len(line) > limit else line]
                    start = first + (2 if block.startswith(b"\r\n", first) else 1)
                carry = b""
            cut = max(data.rfind(b"\n", start), data.rfind(b"\r", start))
            if cut >= 0 and cut == len(data) - 1 and data[cut] == 13:  # may pair with a \n next
                cut = max(data.rfind(b"\n", start, cut), data.rfind(b"\r", start, cut))
            if cut < 0:
                carry = data[start:] if start else data
                if len(carry) - carry.endswith(b"\r") > limit:
                    if carry.endswith(b"\r"):  # the line has ended: a \n may follow
                        skip_lf = True
                        yield [TOO_LONG]
                    else:
                        dropping = True
                    carry = b""
                continue
            carry = data[cut + 1 :]
            end = cut - 1 if data[cut] == 10 and cut > start and data[cut - 1] == 13 else cut
            if data.find(b"\r", start, end) >= 0:
                yield data[start:end].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            else:
                yield Span(data, start, end)
            if len(carry) - carry.endswith(b"\r") > limit:
                if carry.endswith(b"\r"):
                    skip_lf = True
                    yield [TOO_LONG]
                else:
                    dropping = True
                carry = b""
        if dropping:
            yield [TOO_LONG]
        elif carry:
            if b"\r" in carry:
                carry = carry.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = carry.split(b"\n")
            if not lines[-1]:  # the text ended with a lone \r: no empty line after it
                lines.pop()
            yield [TOO_LONG if len(line) > limit else line for line in lines]


def _first_break(block: bytes) -> int:
    ends = [k for k in (block.find(b"\n"), block.find(b"\r")) if k >= 0]
    return min(ends) if ends else -1
