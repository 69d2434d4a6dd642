"""The ftrace reader's bulk path: the lines it takes without the line-at-a-time rules.

:func:`scan` reads the lines of a chunk (lines joined by ``\\n`` in ``chunk[:end]``, see
``lines.Chunk``) from offset ``pos`` while each line is no longer than ``limit`` and is one of:

- ``<prefix> <stamp>: [kvm:]kvm_exit:<payload>`` whose task prefix the reader has already
  checked and remembered (``dotted``/``raw``/``perf``: prefix -> thread, by timestamp kind),
  whose payload is remembered (``payloads``: payload -> (packed record, the payload's own vCPU
  or -1)) or is remembered now by ``remember(payload)`` (the reader's parser of payloads; None
  when it does not take one; ``reasons`` holds the reason spellings it knows), with a timestamp
  that parses: the exit is appended to
  ``records``, ``stamps`` and ``who``;
- ``<prefix> <stamp>: kvm_entry: vcpu N...`` of a remembered prefix whose thread already runs
  vCPU N: counted;
- a line of no ``kvm_e...`` event that cannot be half of a wrapped record: passed over;

and returns ``(pos, lines, exits, entries)``: the offset of the first line it did not take (the
reader hands that line to ``ftrace_lines``' rules, then calls :func:`scan` again after it; past
the end when it took them all), and what it counted.
These are the rules of ``FtraceReader._line``'s bulk branches, nothing more: whichever of the
two implementations runs, the reader's output is the same.

Two implementations, one contract: the C extension ``_scan`` (built by hatch_build.py at
install time when a C compiler is there; it is what makes the reader keep up with the disk)
and :func:`scan_chunk` below, the readable twin, used when the extension is absent or
``VMXSIM_PURE_PYTHON=1`` is set. tests/test_traces_native.py runs both on the same lines.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable
from typing import Any

__all__ = [
    "DOTTED",
    "NATIVE",
    "PERF",
    "RAW",
    "Scan",
    "columns",
    "columns_of",
    "new_memo",
    "scan",
    "scan_chunk",
    "split_head",
    "timestamp",
]

Thread = Any  # identity.Thread: .current, .identity(vcpu), .entry_vcpu
Scan = Callable[
    [
        bytes,
        int,
        int,
        int,
        object,
        dict[bytes, tuple[bytes, int]],
        Callable[[bytes], "tuple[bytes, int] | None"],
        dict[str, int],
        dict[bytes, Any],
        dict[bytes, Any],
        dict[bytes, Any],
        float,
        bytearray,
        "array[float]",
        bytearray,
    ],
    tuple[int, int, int, int],
]
_INFINITY = float("inf")
_RISKY_END = frozenset(range(0x1C, 0x20)) | frozenset(range(0x80, 0x100))  # str.rstrip() strips
DOTTED, RAW, PERF = 0, 1, 2
"""Timestamp kinds, each with its table of task prefixes: ``sec.usec:``, ``[cpu]clock:`` (a raw
clock glued to the CPU field), perf script's ``sec.usec: kvm:``; -1: never read in bulk."""
_MAX_RAW_DIGITS = 19  # below 2**64: C's (double) and Python's int / float round alike


def split_head(head: bytes) -> tuple[bytes, bytes, int]:
    """The task prefix of a header (the text before the event name), its timestamp token (with
    its ':') and timestamp kind (-1 for perf script with a raw clock, which has no table)."""
    text = head.rstrip()
    kind = DOTTED
    if text.endswith(b" kvm:"):  # perf script: kvm:kvm_exit
        text, kind = text[:-5], PERF
    prefix, _, stamp = text.rpartition(b" ")
    if stamp[:1] == b"[":  # raw clock glued to the CPU field
        kind = RAW if kind == DOTTED else -1
    return prefix, stamp, kind


def _task(
    head: bytes, tables: tuple[dict[bytes, Any], dict[bytes, Any], dict[bytes, Any]]
) -> tuple[Thread | None, bytes, int]:
    """The remembered thread of a header, its timestamp token and kind; None when the header is
    not remembered."""
    prefix, stamp, kind = split_head(head)
    return (tables[kind].get(prefix) if kind >= 0 else None), stamp, kind


def timestamp(stamp: bytes, kind: int, raw_clock_hz: float) -> float:
    """Seconds of a timestamp token ending in ':', or -1.0 when the bulk path does not take it."""
    if kind == RAW:
        close = stamp.find(b"]")
        digits = stamp[close + 1 : -1]
        if close < 0 or not (digits.isdigit() and len(digits) <= _MAX_RAW_DIGITS):
            return -1.0
        return int(digits) / raw_clock_hz
    if stamp.find(b".") < 0:
        return -1.0
    try:
        return float(stamp[:-1])
    except ValueError:
        return -1.0


def scan_chunk(
    chunk: bytes,
    pos: int,
    end: int,
    limit: int,
    memo: object,
    payloads: dict[bytes, tuple[bytes, int]],
    remember: Callable[[bytes], tuple[bytes, int] | None],
    reasons: dict[str, int],
    dotted: dict[bytes, Any],
    raw: dict[bytes, Any],
    perf: dict[bytes, Any],
    raw_clock_hz: float,
    records: bytearray,
    stamps: array[float],
    who: bytearray,
) -> tuple[int, int, int, int]:
    """The Python twin of ``_scan.scan`` (see the module docstring); ``memo`` and ``reasons``
    are not used (``remember`` parses every new payload here; the C scan parses those of
    printable ASCII itself, looking their reason spellings up in ``reasons``)."""
    tables = (dotted, raw, perf)
    payload_of = payloads.get
    add_stamp = stamps.append
    lines = exits = entries = 0
    size = min(end, len(chunk))
    while pos <= size:
        end = chunk.find(b"\n", pos, size)
        if end < 0:
            end = size
        if end - pos > limit:
            break  # over-long: the reader reads it as such
        line = chunk[pos:end]
        head, sep, payload = line.partition(b"kvm_exit:")
        if sep:
            known = payload_of(payload)
            thread, stamp, kind = _task(head, tables)
            if thread is None:
                break
            if known is None:  # a new payload of a known thread
                known = remember(payload)
                if known is None:
                    break
            if stamp[-1:] != b":":
                break
            when = timestamp(stamp, kind, raw_clock_hz)
            if not 0.0 <= when < _INFINITY:
                break
            records += known[0]
            add_stamp(when)
            vcpu = known[1]
            who += thread.current if vcpu < 0 else thread.identity(vcpu)
            exits += 1
        else:
            head, sep, payload = line.partition(b"kvm_entry:")
            if sep:
                if line.find(b"kvm_exit") >= 0:
                    break
                thread, stamp, _kind = _task(head, tables)
                fields = payload.split(None, 2)
                if thread is None or stamp[-1:] != b":" or len(fields) < 2 or fields[0] != b"vcpu":
                    break
                text = fields[1].rstrip(b",")
                if not (text.isdigit() and len(text) < 19) or thread.entry_vcpu != int(text):
                    break  # a new vCPU for the thread: the line-at-a-time rules record it
                entries += 1
            elif line.find(b"kvm_e") >= 0:
                break
            else:
                tail = line.rstrip()
                if tail and (
                    tail[-1] == 58  # ':' (a wrapped header)
                    or tail[-1] in _RISKY_END
                    or line.find(b"kvm_nested_vmexit") >= 0
                ):
                    break
        lines += 1
        pos = end + 1
    return pos, lines, exits, entries


RECORD_VALUES = 6
"""u64 values of a packed record: reason, rip, qualification, info2, intr_info, error_code."""

Columns = tuple["bytes | None", ...]


def columns_of(records: bytes | bytearray, who: bytes | bytearray, count: int) -> Columns:
    """The Python twin of ``_scan.columns``: the first ``count`` packed records (6 native u64
    each) and identities (vcpu, vm: 2 u64 each) as 8 columns of native u64 bytes, None for an
    all-zero column other than the reason (the first)."""
    if count < 0 or len(records) < count * RECORD_VALUES * 8 or len(who) < count * 16:
        raise ValueError("columns: fewer records than count")
    values = memoryview(records)[: count * RECORD_VALUES * 8].cast("Q")
    identity = memoryview(who)[: count * 16].cast("Q")
    out: list[bytes | None] = []
    for k in range(RECORD_VALUES):
        data = values[k::RECORD_VALUES].tobytes()
        out.append(data if k == 0 or data != bytes(len(data)) else None)
    out += [identity[0::2].tobytes(), identity[1::2].tobytes()]
    return tuple(out)


def _no_memo() -> object:
    return None


def _native() -> tuple[Scan, Callable[[], object], Callable[..., Columns]] | None:
    if os.environ.get("VMXSIM_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from ._scan import columns, memo, scan  # type: ignore[import-not-found]
    except ImportError:
        return None
    native: Scan = scan
    return native, memo, columns


_NATIVE = _native()
NATIVE = _NATIVE is not None
"""Whether the C extension is what :data:`scan` runs."""
scan: Scan
new_memo: Callable[[], object]
"""A reader's memo for :data:`scan` (the C extension's table of looked-up strings)."""
columns: Callable[[bytes | bytearray, bytes | bytearray, int], Columns]
"""A batch's columns from the packed records (``_scan.columns``, or :func:`columns_of`)."""
scan, new_memo, columns = _NATIVE or (scan_chunk, _no_memo, columns_of)
