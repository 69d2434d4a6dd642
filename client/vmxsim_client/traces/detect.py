"""``open_trace``: open a file, standard input or binary stream and pick its reader.

Detection reads the first :data:`HEAD_LINES` lines (they are replayed to the reader, nothing
is lost) and asks each reader, in :data:`FORMATS` order, whether a non-empty line marks its
format (``TraceReader.sniff``). ``format=`` skips detection.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, BinaryIO

from .base import TraceParseError, TraceReader
from .compression import DECODE_ERRORS, open_input
from .ftrace import FtraceReader
from .haxmlog import HaxmLogReader
from .jsonl import JsonlReader
from .mix import MIX_PREFIX, open_mix
from .perfstat import PerfKvmStatReader

__all__ = ["FORMATS", "READERS", "detect_format", "open_trace"]

READERS: dict[str, type[TraceReader]] = {
    reader.format_name: reader
    for reader in (FtraceReader, PerfKvmStatReader, HaxmLogReader, JsonlReader)
}
FORMATS: tuple[str, ...] = tuple(READERS)
"""The format names ``open_trace(format=...)`` and ``vmxsim convert --format`` accept."""

HEAD_LINES = 1000
_HEAD_LINE_CHARS = 1 << 16  # a longer first line is read in pieces (it is malformed anyway)


def detect_format(lines: list[str]) -> str | None:
    """The format the first lines of a trace belong to, or None."""
    for line in lines:
        if line.isspace() or line.lstrip().startswith("#"):
            continue
        for name, reader in READERS.items():
            if reader.sniff(line):
                return name
    return None


def open_trace(
    path: str | os.PathLike[str] | BinaryIO,
    format: str | None = None,
    strict: bool = False,
    **options: Any,
) -> TraceReader:
    """A reader for ``path`` (``-`` = standard input), gzip/xz/zstd decompressed; a path of the
    form ``mix:NAME[:EXITS[:SEED]]`` is a shipped exit mix synthesised (``traces/mix.py``).

    ``options`` go to the reader (``seed``/``exits``/``table`` for perf-kvm-stat,
    ``raw_clock_hz`` for ftrace). Raises TraceParseError when the format is unknown or cannot
    be detected, OSError when the file cannot be opened.
    """
    if isinstance(path, str) and path.startswith(MIX_PREFIX):
        return open_mix(path, strict=strict)
    if format is not None and format not in READERS:
        raise TraceParseError(str(path), 0, f"unknown format {format!r} (one of {FORMATS})")
    source = open_input(path)
    try:
        head: list[str] = []
        if format is None:
            read_line = source.text.readline
            head = list(itertools.islice(iter(lambda: read_line(_HEAD_LINE_CHARS), ""), HEAD_LINES))
            format = detect_format(head)
            if format is None:
                raise TraceParseError(
                    source.name,
                    1,
                    f"cannot tell the trace format from the first {len(head)} lines "
                    f"(give one of {', '.join(FORMATS)})",
                )
        return READERS[format](
            itertools.chain(head, source.text),
            source=source.name,
            strict=strict,
            bytes_read=source.bytes_read,
            close=source.close,
            **options,
        )
    except DECODE_ERRORS as exc:
        source.close()
        raise TraceParseError(source.name, 1, f"unreadable compressed input: {exc}") from None
    except BaseException:
        source.close()
        raise
