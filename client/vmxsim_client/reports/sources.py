"""Where the exits of a run come from: a trace file (``-`` = standard input) or a shipped
``mix:NAME[:EXITS[:SEED]]`` spec, opened once per run or read once when it is standard input."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from ..errors import CliError
from ..traces import open_trace

__all__ = ["exit_opener", "exit_source"]


@contextmanager
def exit_source(spec: str, trace_format: str | None = None, strict: bool = False) -> Iterator[Any]:
    """A trace reader for a file (``-`` = stdin) or a ``mix:NAME[:EXITS[:SEED]]`` spec; it has
    ``skipped``/``unknown_reasons``/``errors`` counters. CliError when the file cannot be read."""
    try:
        reader = open_trace(spec, format=trace_format, strict=strict)
    except OSError as exc:
        raise CliError(f"cannot read {spec}: {exc.strerror or exc}") from None
    with reader:
        yield reader


class _ReadExits(list[Any]):
    """Exits read into memory, with the reader's counters (sent when each replay ends)."""

    def __init__(self, exits: Iterable[Any], skipped: int, unknown_reasons: Counter[str]) -> None:
        super().__init__(exits)
        self.skipped = skipped
        self.unknown_reasons = unknown_reasons


@contextmanager
def exit_opener(
    spec: str, trace_format: str | None = None, strict: bool = False
) -> Iterator[Callable[[], AbstractContextManager[Any]]]:
    """A function giving the exits of one of several runs: a fresh reader per run for a file or
    a mix (memory stays flat), the same in-memory list for standard input (read only once)."""
    if spec != "-":
        yield lambda: exit_source(spec, trace_format, strict)
        return
    with exit_source(spec, trace_format, strict) as source:
        exits = _ReadExits(
            source, getattr(source, "skipped", 0), Counter(getattr(source, "unknown_reasons", {}))
        )
    yield lambda: nullcontext(exits)
