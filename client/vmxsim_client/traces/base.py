"""What every trace reader shares: the error type, the counters and the row -> record step.

A reader turns the lines of one trace into exits. :meth:`TraceReader.batches` hands them out
as packed columns (``array.array``, the replay stream's shape: DESIGN.md "Performance facts");
:meth:`TraceReader.rows` as plain tuples in ``ExitRecord`` field order; iterating a reader
yields ``ExitRecord`` objects.

Malformed input never ends a run unless ``strict=True``: the line is skipped and counted
(``skipped``), and the first :data:`MAX_ERRORS` problems are kept as :class:`TraceParseError`
values (``errors``) that name the file and the 1-based line. Lines longer than the line limit
(``lines.MAX_LINE_BYTES``) are malformed lines of their own. Exits whose reason is not in the
exit-reason table are not yielded; their spellings are counted in ``unknown_reasons``.

Some problems always end the read with :class:`TraceParseError`, strict or not, because the
rest of the trace cannot be trusted: damaged compressed input (truncated, failed check; the
message names the compressed byte offset) and a format forced by ``format=`` (``--format``)
of which nothing was found. Readers are single-pass iterators over a stream: iterate once.
"""

from __future__ import annotations

import itertools
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from vmxsim_server.vmx.exceptions import InvalidArgument
from vmxsim_server.vmx.exit_reasons import lookup_reason
from vmxsim_server.vmx.records import ExitBatch, ExitRecord

from .compression import CorruptInput
from .lines import TOO_LONG_TEXT, LineSource, long_line_problem
from .tools import ToolError

__all__ = ["MAX_ERRORS", "Row", "TraceParseError", "TraceReader", "parse_u64"]

MAX_ERRORS = 20
"""How many problems a reader keeps in ``errors``; later ones are only counted."""

U64_LIMIT = 1 << 64
_BASE_NAMES = {10: "decimal", 16: "hex"}
_REASON_CACHE_LIMIT = 4096  # distinct spellings remembered per reader (bounds memory on garbage)

Row = tuple[int, int, int, int, int, int, int, int, float | None, int]
"""One exit in ``ExitRecord`` field order: reason, rip, qualification, info2, intr_info,
error_code, guest_physical_address, instruction_len, timestamp, vcpu."""


class TraceParseError(InvalidArgument):
    """A trace line that cannot be read: ``"file:line: problem"``."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        super().__init__(f"{source}:{line}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


def parse_u64(text: str, base: int) -> int:
    """An unsigned 64-bit integer in ``base`` (16 accepts a ``0x`` prefix); ValueError otherwise.

    Signs, underscores and blanks that ``int()`` would accept are rejected.
    """
    try:
        value = int(text, base)
    except ValueError:
        value = -1
    if not 0 <= value < U64_LIMIT or not text.isalnum():
        kind = _BASE_NAMES.get(base, f"base-{base}")
        raise ValueError(f"not an unsigned 64-bit {kind} number: {text!r}")
    return value


class TraceReader:
    """Base class: counters, error policy and the record/batch views over ``_rows()``."""

    format_name: ClassVar[str] = ""
    guards_itself: ClassVar[bool] = False

    def __init__(
        self,
        lines: Iterable[str] | LineSource,
        *,
        source: str = "<trace>",
        strict: bool = False,
        forced: bool = False,
        bytes_read: Callable[[], int] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.strict = strict
        self.forced = forced
        """Whether the format was forced (``format=``): finding nothing of it is an error."""
        self.lines = 0
        """Lines consumed so far (updated at each exit and at the end)."""
        self.exits = 0
        """Exits yielded so far."""
        self.skipped = 0
        """Malformed lines (or records) skipped."""
        self.unknown_reasons: Counter[str] = Counter()
        self.errors: list[TraceParseError] = []
        self._line_source = lines if isinstance(lines, LineSource) else None
        self._lines: Iterable[str] = self._text(lines) if isinstance(lines, LineSource) else lines
        self._bytes_read = bytes_read
        self._close = close
        self._reasons: dict[str, int] = {}

    @classmethod
    def sniff(cls, line: str) -> bool:
        """Whether ``line`` (one of the first non-empty lines of a file) marks this format."""
        raise NotImplementedError

    def _rows(self) -> Iterator[Row]:
        raise NotImplementedError

    # -- public views -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ExitRecord]:
        return itertools.starmap(ExitRecord, self.rows())

    def rows(self) -> Iterator[Row]:
        """The exits as plain tuples in ``ExitRecord`` field order (the fastest view).

        The input is closed when the rows are exhausted (or the iteration is closed).
        """
        if self.guards_itself:
            return self._rows()
        return self._guarded_rows()

    def _guarded_rows(self) -> Iterator[Row]:
        with self._reading():
            yield from self._rows()

    def _reading(self) -> _Reading:
        """Wrap a reader's loop: reports corrupt compressed input, closes the input at the end.
        A reader whose ``_rows`` does this itself sets ``guards_itself`` (one generator fewer
        per exit on the hottest path)."""
        return _Reading(self)

    def batches(self, size: int = 1000) -> Iterator[ExitBatch]:
        """The exits as the core's packed-column batches of ``size`` exits (the last may be
        shorter), numbered from 1; timestamps only when the trace has them. Columns are
        ``array.array`` (``Q`` integers, ``d`` timestamps): ``len``, indexing and the buffer
        protocol (``numpy.asarray``) work on them."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        rows = self.rows()
        sequence = 0
        while chunk := list(itertools.islice(rows, size)):
            sequence += 1
            columns: list[array[int]] = [
                array("Q", [row[i] for row in chunk])  # type: ignore[misc]
                for i in range(8)
            ]
            reason, rip, qual, info2, intr, error, gpa, length = columns
            stamps = [row[8] for row in chunk]
            yield ExitBatch(
                reason, rip, qual, info2, intr, error, gpa, length,
                timestamp=array("d", [t or 0.0 for t in stamps]) if any(stamps) else array("d"),
                sequence=sequence,
                vcpu=array("Q", [row[9] for row in chunk]),
            )  # fmt: skip

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the input as stored (compressed bytes for compressed input)."""
        return self._bytes_read() if self._bytes_read is not None else 0

    def summary(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (the shape of a run summary's input keys)."""
        return {
            "source": self.source,
            "format": self.format_name,
            "lines": self.lines,
            "exits": self.exits,
            "skipped": self.skipped,
            "unknown_reasons": dict(self.unknown_reasons),
            "errors": [str(e) for e in self.errors],
        }

    def close(self) -> None:
        """Close the underlying input (not standard input)."""
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers for subclasses ---------------------------------------------------------------

    def _text(self, lines: LineSource) -> Iterator[str]:
        """``str`` lines of a line source; an over-long line is malformed (and read as blank)."""
        problem = long_line_problem(lines.max_line_bytes)
        for lineno, line in enumerate(lines.text(), 1):
            if line is TOO_LONG_TEXT:
                self._malformed(lineno, problem)
            yield line

    def _matched(self) -> bool:
        """Whether anything of this format was found (for a forced format at the end)."""
        return self.exits > 0

    def _finished(self) -> None:
        """At the end of the input: a forced format that matched nothing is an error."""
        if self.forced and not self._matched():
            raise TraceParseError(
                self.source,
                self.lines,
                f"nothing in {self.lines:,} lines is {self.format_name} input "
                f"(the format was forced; leave --format out to detect it)",
            )

    def _malformed(self, line: int, problem: str) -> None:
        """Record a malformed line; raise it instead when strict."""
        error = TraceParseError(self.source, line, problem)
        if self.strict:
            raise error
        self.skipped += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    def _reason(self, spelling: str) -> int:
        """The basic reason number for a spelling, or -1 (counted as unknown)."""
        number = self._reasons.get(spelling)
        if number is None:
            number = self._resolve(spelling)
            if len(self._reasons) < _REASON_CACHE_LIMIT:
                self._reasons[spelling] = number
        if number < 0:
            self.unknown_reasons[spelling] += 1
        return number

    def _resolve(self, spelling: str) -> int:
        """Look a spelling up in the exit-reason table; subclasses narrow what they accept."""
        found = lookup_reason(spelling)
        return -1 if found is None else found.number


class _Reading:
    """The context of a reader's loop (see ``TraceReader._reading``)."""

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        reader = self.reader
        try:
            if isinstance(error, CorruptInput | ToolError):  # never a short trace
                raise TraceParseError(reader.source, reader.lines + 1, str(error)) from None
            if error is None:
                reader._finished()
        finally:
            reader.close()
