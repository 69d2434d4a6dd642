"""``open_trace``: open a file, standard input or binary stream and pick its reader.

Detection reads the first :data:`HEAD_LINES` lines (they are replayed to the reader, nothing
is lost; an over-long one is passed over, later line numbers stay exact) and asks each reader,
in :data:`FORMATS` order, whether a non-empty line marks its format (``TraceReader.sniff``).
``format=`` skips detection; a forced format of which the trace holds nothing is an error at
its end. Binary ``trace.dat`` and ``perf.data`` files are read through their tools
(``tools.py``).
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from .base import TraceParseError, TraceReader
from .compression import CorruptInput, open_input
from .ftrace import FtraceReader
from .haxmlog import HaxmLogReader
from .jsonl import JsonlReader
from .limits import LIMITS
from .lines import TOO_LONG, LineSource
from .mix import MIX_PREFIX, open_mix
from .perfstat import PerfKvmStatReader
from .tools import binary_format, tool_blocks

__all__ = ["FORMATS", "READERS", "detect_format", "open_trace"]

READERS: dict[str, type[TraceReader]] = {
    reader.format_name: reader
    for reader in (FtraceReader, PerfKvmStatReader, HaxmLogReader, JsonlReader)
}
FORMATS: tuple[str, ...] = tuple(READERS)
"""The format names ``open_trace(format=...)`` and ``vmxsim convert --format`` accept."""

HEAD_LINES = 1000


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
    max_line_bytes: int | None = None,
    **options: Any,
) -> TraceReader:
    """A reader for ``path`` (``-`` = standard input), gzip/xz/zstd decompressed; a path of the
    form ``mix:NAME[:EXITS[:SEED]]`` is a shipped exit mix synthesised (``traces/mix.py``); a
    ``trace.dat`` or ``perf.data`` file is read through ``trace-cmd report`` / ``perf script``.

    ``max_line_bytes`` caps a line's length (``lines.py``; default ``LIMITS``); ``options`` go
    to the reader (``seed``/``exits``/``table``/``max_samples`` for perf-kvm-stat,
    ``raw_clock_hz`` for ftrace). Raises TraceParseError when the format is unknown or cannot
    be detected, OSError when the file cannot be opened (or its tool is missing).
    """
    if isinstance(path, str) and path.startswith(MIX_PREFIX):
        return open_mix(path, strict=strict)
    if format is not None and format not in READERS:
        raise TraceParseError(str(path), 0, f"unknown format {format!r} (one of {FORMATS})")
    source = open_input(path)
    try:
        blocks = source.blocks()
        binary = binary_format(source.magic) if source.compression is None else None
        if binary is not None:
            if not isinstance(path, str | os.PathLike) or os.fspath(path) == "-":
                raise TraceParseError(
                    source.name, 1, f"a {binary.name} file is read by its tool: give its name"
                )
            source.close()
            blocks, close = tool_blocks(binary, path, source.name)
        else:
            close = source.close
        limit = LIMITS.max_line_bytes if max_line_bytes is None else max_line_bytes
        lines = LineSource(blocks, limit)
        forced = format is not None
        if format is None:
            head = lines.head(HEAD_LINES)
            text = [line.decode("utf-8", "replace") for line in head if line is not TOO_LONG]
            format = detect_format(text)
            if format is None:
                raise TraceParseError(
                    source.name,
                    1,
                    f"cannot tell the trace format from the first {len(head)} lines "
                    f"(give one of {', '.join(FORMATS)})",
                )
        return READERS[format](
            lines,
            source=source.name,
            strict=strict,
            forced=forced,
            bytes_read=source.bytes_read,
            close=close,
            **options,
        )
    except CorruptInput as exc:
        source.close()
        raise TraceParseError(source.name, 1, str(exc)) from None
    except BaseException:
        source.close()
        raise
