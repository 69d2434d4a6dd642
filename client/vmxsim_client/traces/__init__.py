"""Trace readers: real VM-exit traces in, packed columns (or ``ExitRecord`` objects) out.

Formats (docs/trace-formats.md): ``ftrace`` (kvm_exit of raw ftrace, trace-cmd report, perf
script), ``perf-kvm-stat`` (an exit mix made into a seeded synthetic sequence), ``haxm-log``
(the seed's HAXM measurement log) and ``jsonl`` (vmxsim's own, written by ``write_jsonl``).
gzip, xz and zstd input is decompressed transparently; ``-`` is standard input; binary
``trace.dat``/``perf.data`` files are read through ``trace-cmd report``/``perf script``.

    with open_trace("trace.txt.gz") as reader:
        for batch in reader.batches(4096):      # the fast view: packed columns
            batch.reason, batch.rip, batch.timestamp, batch.vcpu, batch.vm
        print(reader.skipped, reader.unknown_reasons)

Columns are ``array.array`` (``Q``: unsigned 64-bit; ``d``: float seconds) supporting ``len``,
indexing and the buffer protocol (``numpy.asarray(batch.reason)`` makes no copy); an all-zero
column is empty. ``reader.rows()`` gives tuples and iterating the reader ``ExitRecord`` objects
(slower, for convenience).

Who made each exit (ftrace family): ``batch.vcpu[i]`` is the exit's vCPU and ``batch.vm[i]``
its VM key, and ``reader.threads`` maps each traced thread id (text) to a ``Thread`` with its
``comm``, ``tid``, ``tgid`` (when the trace prints one), ``vcpu`` and ``vm(vcpu)``. The vCPU
is the exit's own ``vcpu N`` (5.16+), else the thread's last ``kvm_entry: vcpu N``, else the
QEMU thread name ``CPU N/KVM``, else 0; the VM is the tgid where the trace shows one (ftrace
``record-tgid``, ``perf script -F pid,tid``), else ``tid - vcpu`` (QEMU's vCPU threads have
consecutive ids: HIP24's ``CPU 0/KVM-453724`` and ``CPU 1/KVM-453725`` are VM 453724,
``qemu-system-x86-483882`` VM 483882). A per-VM, per-vCPU count of a trace::

    counts = Counter()
    for batch in reader.batches(4096):
        counts.update(zip(batch.vm, batch.vcpu))

Limits (``limits.py``): lines over ``MAX_LINE_BYTES`` are malformed lines of their own;
perf-kvm-stat tables and mixes over ``MAX_SAMPLES`` exits are refused; damaged compressed input
and a forced format of which nothing is found end the read with ``TraceParseError``.
"""

from .base import MAX_ERRORS, Row, TraceParseError, TraceReader
from .detect import FORMATS, READERS, detect_format, open_trace
from .ftrace import FtraceReader
from .haxmlog import HaxmLogReader
from .identity import Thread
from .jsonl import JsonlReader, write_jsonl
from .limits import LIMITS, MAX_LINE_BYTES, MAX_SAMPLES, ReaderLimits, add_limit_options
from .perfstat import MixRow, PerfKvmStatReader

__all__ = [
    "FORMATS",
    "LIMITS",
    "MAX_ERRORS",
    "MAX_LINE_BYTES",
    "MAX_SAMPLES",
    "READERS",
    "FtraceReader",
    "HaxmLogReader",
    "JsonlReader",
    "MixRow",
    "PerfKvmStatReader",
    "ReaderLimits",
    "Row",
    "Thread",
    "TraceParseError",
    "TraceReader",
    "add_limit_options",
    "detect_format",
    "open_trace",
    "write_jsonl",
]
