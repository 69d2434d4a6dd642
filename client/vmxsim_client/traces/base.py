"""What every trace reader shares: the error type, the counters and the row -> record step.

A reader turns the lines of one trace into exit *rows*, plain tuples in ``ExitRecord`` field
order (cheap to build in the hot loop); iterating a reader yields ``ExitRecord`` objects made
from them, and :meth:`TraceReader.batches` hands out the rows as packed columns for the replay
stream (DESIGN.md "Performance facts": batches of packed columns, never one message per exit).

Malformed input never ends a run unless ``strict=True``: the line is skipped and counted
(``skipped``), and the first :data:`MAX_ERRORS` problems are kept as :class:`TraceParseError`
values (``errors``) that name the file and the 1-based line. Exits whose reason is not in the
exit-reason table are not yielded; their spellings are counted in ``unknown_reasons``.
Readers are single-pass iterators over a stream: iterate once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from vmxsim_server.vmx.exceptions import InvalidArgument
from vmxsim_server.vmx.exit_reasons import lookup_reason
from vmxsim_server.vmx.records import ExitBatch, ExitRecord

from .compression import DECODE_ERRORS

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
        lines: Iterable[str],
        *,
        source: str = "<trace>",
        strict: bool = False,
        bytes_read: Callable[[], int] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.strict = strict
        self.lines = 0
        """Lines consumed so far (updated at each exit and at the end)."""
        self.exits = 0
        """Exits yielded so far."""
        self.skipped = 0
        """Malformed lines (or records) skipped."""
        self.unknown_reasons: Counter[str] = Counter()
        self.errors: list[TraceParseError] = []
        self._lines = lines
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
        shorter), numbered from 1; timestamps only when the trace has them."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        rows = self.rows()
        sequence = 0
        while chunk := list(itertools.islice(rows, size)):
            sequence += 1
            columns = list(zip(*chunk, strict=True))
            stamps = columns[8]
            reason, rip, qual, info2, intr, error, gpa, length = (list(c) for c in columns[:8])
            yield ExitBatch(
                reason, rip, qual, info2, intr, error, gpa, length,
                timestamp=[t or 0.0 for t in stamps] if any(stamps) else [],
                sequence=sequence,
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

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> bool:
        try:
            if isinstance(error, DECODE_ERRORS):  # corrupt or truncated compressed input
                reader = self.reader
                reader._malformed(reader.lines + 1, f"unreadable compressed input: {error}")
                return True
            return False
        finally:
            self.reader.close()
