"""Trace readers: real VM-exit traces in, ``ExitRecord`` objects (or packed columns) out.

Formats (docs/trace-formats.md): ``ftrace`` (kvm_exit of raw ftrace, trace-cmd report, perf
script), ``perf-kvm-stat`` (an exit mix made into a seeded synthetic sequence), ``haxm-log``
(the seed's HAXM measurement log) and ``jsonl`` (vmxsim's own, written by ``write_jsonl``).
gzip, xz and zstd input is decompressed transparently; ``-`` is standard input.

    with open_trace("trace.txt.gz") as reader:
        for record in reader:
            ...
        print(reader.skipped, reader.unknown_reasons)
"""

from .base import MAX_ERRORS, Row, TraceParseError, TraceReader
from .detect import FORMATS, READERS, detect_format, open_trace
from .ftrace import FtraceReader
from .haxmlog import HaxmLogReader
from .jsonl import JsonlReader, write_jsonl
from .perfstat import MixRow, PerfKvmStatReader

__all__ = [
    "FORMATS",
    "MAX_ERRORS",
    "READERS",
    "FtraceReader",
    "HaxmLogReader",
    "JsonlReader",
    "MixRow",
    "PerfKvmStatReader",
    "Row",
    "TraceParseError",
    "TraceReader",
    "detect_format",
    "open_trace",
    "write_jsonl",
]
