"""Reader for the text renderings of the ``kvm:kvm_exit`` tracepoint: raw ftrace
(``/sys/kernel/tracing/trace``, ``trace_pipe``), ``trace-cmd report`` and ``perf script``.

The event is defined in Linux ``arch/x86/kvm/trace.h`` (``TRACE_EVENT(kvm_exit, ...)``); its
``TP_printk`` payload changed over the years, and libtraceevent's kvm plugin
(``plugins/plugin_kvm.c``, used by trace-cmd and perf) prints its own:

1. 2.6.3x:                 ``reason apic_access rip 0xc011518c`` (lower-case names, no info)
2. 3.x-5.15 and plugin:    ``reason EXTERNAL_INTERRUPT rip 0x22da info 0 800000fd``, where
   ``info <info1> <info2>`` is hex without 0x; ``vmx_get_exit_info()`` then returned the exit
   qualification and VM_EXIT_INTR_INFO, so the second number becomes ``intr_info``. Some
   kernels print ``vcpu N`` first.
3. 5.16+ (``vcpu %u reason %s%s%s rip 0x%lx info1 0x%016llx info2 0x%016llx intr_info 0x%08x
   error_code 0x%08x``): info1 = exit qualification, info2 = IDT-vectoring info. Words from
   ``VMX_EXIT_REASON_FLAGS`` may follow the name and further fields may follow the last one;
   both are accepted (the record keeps the basic reason).

The line header is ``<comm>-<tid> [<cpu>] [<flags>] <timestamp>: <event>: <payload>`` (ftrace
``print_trace_fmt``); comm may contain blanks and dashes, the flags column is absent
(trace-cmd) or 4-5 characters, and a raw-clock integer timestamp may be glued to the CPU field
(``[005]303280081900681:``, read as nanoseconds: ``raw_clock_hz``). ``perf script`` prints
``<comm> <tid> [<cpu>] <timestamp>: kvm:kvm_exit: <payload>``. Records hard-wrapped by mail
clients (header on one line, event on the next) are joined.

``kvm_entry`` lines (``vcpu 0``, ``vcpu 0, rip 0x..``, ``vcpu 0 rip 0x..``) give the vCPU of a
thread for formats whose exits lack one; ``kvm_nested_vmexit[_inject]`` lines are counted
(``nested_exits``) but not yielded: every hardware exit of an L2 guest is already a ``kvm_exit``
line. SVM reason names (``EXIT_NPF``, ``EXIT_CPUID``...) are counted as unknown reasons. Lines
of other events, ``#`` comments, ``cpus=N`` and ``CPU N is empty`` headers are passed over; a
kvm_exit/kvm_entry line that does not parse is malformed. Each exit carries its vCPU and VM
(``identity.py``; the ``vcpu``/``vm`` batch columns, ``threads``).

How it keeps up with the disk: the input is split into lines a block (4 MiB) at a time.
Payloads repeat (reason, rip and info recur), so a payload is parsed once and remembered as its
packed column values; task prefixes (``comm-tid [cpu] flags``) are checked once and remembered
as their thread. A line with a remembered payload and prefix only has its timestamp parsed, in
bulk by ``scan.py`` (a C extension, or its Python twin without a compiler); every other line
goes through the line-at-a-time rules of ``ftrace_lines.py``. Packed records and identities are
appended to ``bytearray``s and cut into ``array.array`` columns per batch: no per-exit tuple or
record is built.
"""

from __future__ import annotations

import itertools
import re
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

from vmxsim_server.vmx.records import ExitBatch

from .base import Row, TraceReader
from .ftrace_lines import Exit, LineParser, exit_fields, split_header, thread_id
from .ftrace_lines import thread_key as _thread_key
from .identity import Thread, named_vcpu, parse_task
from .lines import TOO_LONG, Chunk, LineSource, Span, long_line_problem
from .scan import columns as scan_columns
from .scan import new_memo, scan, split_head, timestamp

__all__ = ["FtraceReader"]

_RECORD = struct.Struct("=6Q")  # reason, rip, qualification, info2, intr_info, error_code
_IDENTITY_BYTES = 16  # vcpu, vm (identity.Thread.identity)
_INFINITY = float("inf")
_PRINTABLE = re.compile(rb"[ -~]*\Z").match
_CACHE_LIMIT = 1 << 16  # distinct payloads / task prefixes remembered per reader
_TEXT_LIST = 4096  # str lines per list when the input is an iterable of str
_NEVER: dict[bytes, Thread | None] = {}  # the table of timestamp kinds never read in bulk


class FtraceReader(TraceReader):
    """``kvm_exit`` events of ftrace, trace-cmd report and perf script text."""

    format_name = "ftrace"
    guards_itself = True

    def __init__(
        self, lines: Iterable[str] | LineSource, *, raw_clock_hz: float = 1e9, **kwargs: Any
    ) -> None:
        super().__init__(lines, **kwargs)
        if not raw_clock_hz > 0:
            raise ValueError("raw_clock_hz must be positive")
        self.raw_clock_hz = raw_clock_hz
        self.nested_exits = 0
        """kvm_nested_vmexit / kvm_nested_vmexit_inject events seen (not yielded)."""
        self.entries = 0
        """kvm_entry events read."""
        self.threads: dict[str, Thread] = {}
        """The traced threads by thread id (text), with their comm, vCPU and VM."""
        self._vcpu_of_thread: dict[str, int] = {}
        self._payloads: dict[bytes, tuple[bytes, int]] = {}  # payload -> (record, own vcpu)
        # task prefix -> its thread (None: read such lines line at a time), by timestamp kind
        self._dotted: dict[bytes, Thread | None] = {}  # before 'sec.usec:'
        self._raw: dict[bytes, Thread | None] = {}  # before '[cpu]clock:'
        self._perf: dict[bytes, Thread | None] = {}  # before 'sec.usec: kvm:'
        self._tables = (self._dotted, self._raw, self._perf)  # by scan's timestamp kind
        self._parser = LineParser(self)
        self._errors = "replace" if self._line_source is not None else "surrogatepass"

    @classmethod
    def sniff(cls, line: str) -> bool:
        if line.lstrip().startswith(("kvm_exit: reason ", "kvm_entry: vcpu ")):
            return True  # the event half of a hard-wrapped record
        for event in ("kvm_exit:", "kvm_entry:"):
            k = line.find(event)
            if k >= 0:
                try:
                    split_header(line[:k])
                except ValueError:
                    return False
                return True
        return False

    def _resolve(self, spelling: str) -> int:
        upper = spelling.upper()
        if upper.startswith("EXIT_") and not upper.startswith("EXIT_REASON_"):
            return -1  # an SVM exit code name (AMD host): not a VMX exit
        return super()._resolve(spelling)

    def _matched(self) -> bool:
        return bool(self.exits or self.entries or self.nested_exits or self.unknown_reasons)

    # --- views -------------------------------------------------------------------------------

    def rows(self) -> Iterator[Row]:
        for batch in self.batches(4096):
            yield from zip(
                batch.reason, batch.rip or itertools.repeat(0), batch.qualification or
                itertools.repeat(0), batch.info2 or itertools.repeat(0), batch.intr_info or
                itertools.repeat(0), batch.error_code or itertools.repeat(0),
                itertools.repeat(0), itertools.repeat(0), batch.timestamp, batch.vcpu,
            )  # fmt: skip

    def batches(self, size: int = 1000) -> Iterator[ExitBatch]:
        """Packed columns straight from the lines (see the module docstring); ``vcpu`` and
        ``vm`` columns say who made each exit."""
        if size < 1:
            raise ValueError("batch size must be at least 1")
        records = bytearray()  # _RECORD.size bytes an exit
        stamps = array("d")
        who = bytearray()  # 16 bytes an exit: vcpu, vm
        sequence = 0
        cut, cut_who = size * _RECORD.size, size * _IDENTITY_BYTES
        with self._reading():
            for _ in self._read(records, stamps, who):
                while len(stamps) >= size:
                    sequence += 1
                    yield _batch(records, stamps[:size], who, size, sequence)
                    del records[:cut], stamps[:size], who[:cut_who]
            if stamps:
                yield _batch(records, stamps, who, len(stamps), sequence + 1)

    # --- the bulk path -------------------------------------------------------------------------

    def _chunks(self) -> Iterator[Chunk]:
        if self._line_source is not None:
            yield from self._line_source.chunks()
            return
        lines = iter(self._lines)
        while piece := list(itertools.islice(lines, _TEXT_LIST)):
            yield [line.encode("utf-8", "surrogatepass") for line in piece]

    def _read(self, records: bytearray, stamps: array[float], who: bytearray) -> Iterator[None]:
        """Fill the three columns from the input, yielding after each chunk of lines.

        ``scan`` (the C extension, or its Python twin) takes the common lines in bulk and stops
        at the first it cannot take; ``_line`` reads that one, and ``scan`` goes on after it.
        While a wrapped header waits in the parser every line goes to ``_line``."""
        parser = self._parser
        tables = (self._payloads, self._remember, self._reasons, *self._tables)
        limit = self._limit() or sys.maxsize
        memo = new_memo()
        hz = self.raw_clock_hz
        lineno = exits = 0

        def bulk(chunk: bytes, pos: int, size: int) -> int:
            nonlocal lineno, exits
            pos, lines, taken, entered = scan(
                chunk, pos, size, limit, memo, *tables, hz, records, stamps, who
            )
            lineno += lines
            exits += taken
            self.entries += entered
            return pos

        for chunk in self._chunks():
            if isinstance(chunk, list):  # lines already split (text input, the input's end)
                for line in chunk:
                    plain = parser.pending is None and line is not TOO_LONG
                    if plain and line.find(b"\n") < 0 and bulk(line, 0, len(line)) > len(line):
                        continue
                    lineno += 1
                    exits += self._line(lineno, line, records, stamps, who)
            else:  # whole lines in chunk[pos:size]
                if isinstance(chunk, Span):
                    chunk, pos, size = chunk
                else:
                    pos, size = 0, len(chunk)
                while pos <= size:
                    if parser.pending is None:
                        pos = bulk(chunk, pos, size)
                        if pos > size:
                            break
                    end = chunk.find(b"\n", pos, size)
                    end = size if end < 0 else end
                    line = chunk[pos:end] if end - pos <= limit else TOO_LONG
                    lineno += 1
                    exits += self._line(lineno, line, records, stamps, who)
                    pos = end + 1
            self.lines, self.exits = lineno, exits
            yield None
        parser.end(lineno)
        self.lines, self.exits = lineno, exits

    def _line(
        self, lineno: int, line: bytes, records: bytearray, stamps: array[float], who: bytearray
    ) -> bool:
        """A line ``scan`` did not take; True when it added an exit."""
        was_pending = self._parser.pending is not None
        head, sep, payload = line.partition(b"kvm_exit:")
        if sep and not was_pending:
            known = self._payloads.get(payload)
            if known is None and self._task(head, check_new=False)[0] is not None:
                known = self._remember(payload)  # a new payload of a known thread: parse it once
            if known is not None and self._bulk_exit(head, known, records, stamps, who):
                return True
        elif not sep and not was_pending and self._entry(line):
            return False
        if line is TOO_LONG:
            self._malformed(lineno, long_line_problem(self._limit()))
            return False
        found = self._parser.line(lineno, line.decode("utf-8", self._errors))
        if found is None:
            return False
        self._add(found, records, stamps, who)
        if sep and not was_pending:
            self._remember(payload)
        return True

    def _bulk_exit(
        self,
        head: bytes,
        known: tuple[bytes, int],
        records: bytearray,
        stamps: array[float],
        who: bytearray,
    ) -> bool:
        """An exit with a remembered payload after any checked prefix and timestamp kind."""
        thread, stamp, kind = self._task(head)
        if thread is None or stamp[-1:] != b":":
            return False
        when = timestamp(stamp, kind, self.raw_clock_hz)
        if not 0.0 <= when < _INFINITY:
            return False
        records += known[0]
        stamps.append(when)
        who += thread.current if known[1] < 0 else thread.identity(known[1])
        return True

    def _entry(self, line: bytes) -> bool:
        """A plain ``kvm_entry: vcpu N...`` line read in bulk (False: read it line at a time)."""
        head, sep, payload = line.partition(b"kvm_entry:")
        if not sep or b"kvm_exit" in line:
            return False
        thread, stamp, _kind = self._task(head)
        fields = payload.split(None, 2)
        if thread is None or stamp[-1:] != b":" or len(fields) < 2 or fields[0] != b"vcpu":
            return False
        text = fields[1].rstrip(b",")
        if not (text.isdigit() and len(text) < 20):
            return False
        self._entered(thread.key, int(text))
        return True

    # --- the line-at-a-time path ---------------------------------------------------------------

    def _add(self, found: Exit, records: bytearray, stamps: array[float], who: bytearray) -> None:
        known, timestamp, key, header = found
        records += _RECORD.pack(*known[:6])
        stamps.append(timestamp)
        thread = self._thread(key, header)
        vcpu = known[6]
        if vcpu < 0:  # the reference's rule (kvm_entry mapping, else 0), then the thread's name
            vcpu = self._vcpu_of_thread.get(key, -1)
            who += thread.current if vcpu < 0 else thread.identity(vcpu)
        else:
            who += thread.identity(vcpu)

    def _remember(self, payload: bytes) -> tuple[bytes, int] | None:
        """Remember a payload for the bulk path (known reason spellings only); its value."""
        known = self._payloads.get(payload)
        if known is not None or len(self._payloads) >= _CACHE_LIMIT or b"kvm_e" in payload:
            return known
        try:
            fields = exit_fields(payload.decode("utf-8", self._errors).split(), self._parser.hex)
        except ValueError:
            return None
        number = self._reasons.get(fields[0], -1)  # no side effect: spellings seen before
        if number < 0:
            return None
        known = self._payloads[payload] = (_RECORD.pack(number, *fields[1:6]), fields[6])
        return known

    def _task(self, head: bytes, check_new: bool = True) -> tuple[Thread | None, bytes, int]:
        """The thread of a header (the text before the event name), its timestamp token and
        timestamp kind (``scan.split_head``); a prefix not seen before is checked, unless
        ``check_new`` is false (then None)."""
        prefix, stamp, kind = split_head(head)
        table = self._tables[kind] if kind >= 0 else _NEVER
        thread = table.get(prefix)
        if thread is None and check_new and prefix not in table:
            thread = self._prefix(prefix, table)
        return thread, stamp, kind

    def _prefix(self, prefix: bytes, table: dict[bytes, Thread | None]) -> Thread | None:
        """Check a task prefix (the header before its timestamp) once, for the timestamp kind of
        ``table``: its thread when every rule of the line-at-a-time path reads the same thread
        id from such headers and accepts them, else None (such lines are read line at a time)."""
        if table is _NEVER or len(table) >= _CACHE_LIMIT:
            return None
        thread: Thread | None = None
        if _PRINTABLE(prefix) and b"kvm_e" not in prefix:
            text = prefix.decode("ascii")
            if table is self._raw:
                key = _header_key(text + " [0]0:")
            elif table is self._perf:
                key = _header_key(text + " 0.0: kvm:")
            else:  # the remembered-payload and 7-word rules read the id with thread_id()
                key = _header_key(text + " 0.0:")
                if not ("[" in text and thread_id(text) == key):
                    key = None
            if key:
                thread = self._thread(key, text)
        table[prefix] = thread
        return thread

    def _thread(self, key: str, header: str) -> Thread:
        thread = self.threads.get(key)
        if thread is None:
            comm, tid, tgid = parse_task(header)
            if tid is None:
                tid = int(key) if key.isdigit() and key.isascii() and len(key) < 20 else 0
            thread = Thread(key, comm, tid, tgid, named_vcpu(comm), self._vcpu_of_thread.get(key))
            self.threads[key] = thread
        return thread

    def _entered(self, key: str, vcpu: int) -> None:
        """A ``kvm_entry`` line: thread ``key`` runs ``vcpu`` from now on."""
        self.entries += 1
        self._vcpu_of_thread[key] = vcpu
        thread = self.threads.get(key)
        if thread is not None and thread.entry_vcpu != vcpu:
            thread.entry_vcpu = vcpu
            thread.refresh()

    def _limit(self) -> int:
        source = self._line_source
        return source.max_line_bytes if source is not None else 0


def _header_key(header: str) -> str | None:
    """The thread key the line-at-a-time rules read from ``header``, or None if they reject it."""
    try:
        _, tokens = split_header(header)
    except ValueError:
        return None
    return _thread_key(tokens)


def _batch(
    records: bytearray, stamps: array[float], who: bytearray, count: int, sequence: int
) -> ExitBatch:
    """One batch of the first ``count`` packed records (``scan.columns`` transposes them)."""
    columns: list[array[int]] = []
    for data in scan_columns(records, who, count):
        column = array("Q")
        if data is not None:  # an all-zero column stays empty
            column.frombytes(data)
        columns.append(column)
    vm, vcpu = columns.pop(), columns.pop()
    columns += [array("Q"), array("Q")]  # guest_physical_address, instruction_len: none
    reason, rip, qualification, info2, intr_info, error_code, gpa, length = columns
    return ExitBatch(
        reason, rip, qualification, info2, intr_info, error_code, gpa, length,
        timestamp=array("d", stamps), sequence=sequence, vcpu=vcpu, vm=vm,
    )  # fmt: skip
