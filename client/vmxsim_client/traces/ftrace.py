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

``kvm_entry`` lines give the vCPU of a thread for formats whose exits lack one;
``kvm_nested_vmexit[_inject]`` lines are counted (``nested_exits``) but not yielded: every
hardware exit of an L2 guest is already a ``kvm_exit`` line. SVM reason names (``EXIT_NPF``,
``EXIT_CPUID``...) are counted as unknown reasons. Lines of other events, ``#`` comments,
``cpus=N`` and ``CPU N is empty`` headers are passed over; a kvm_exit/kvm_entry line that does
not parse is malformed. One ``split()`` per part of the line, no regular expressions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .base import Row, TraceReader, parse_u64

__all__ = ["FtraceReader"]

_EXIT_EVENT = "kvm_exit"
_EXIT_EVENT_COLON = "kvm_exit:"
_NESTED_EVENT = "kvm_nested_vmexit"  # and kvm_nested_vmexit_inject
_PAIR_KEYS = {"info1": 1, "info2": 2, "intr_info": 3, "error_code": 4}  # key -> value index
_HEX_CACHE_LIMIT = 1 << 16  # distinct hex tokens remembered per reader
_PAYLOAD_CACHE_LIMIT = 1 << 16  # distinct exit payloads remembered per reader
_INFINITY = float("inf")
_HEADER_PREFIXES = ("#", "cpus=", "version =", "CPU:", "[...]", "...")


def _is_header(stripped: str) -> bool:
    """Blank lines, comments and trace-cmd/ftrace banners that are not events."""
    if not stripped or stripped.startswith(_HEADER_PREFIXES):
        return True
    return stripped.startswith("CPU ") and stripped.endswith(" is empty")


def _split_header(head: str) -> tuple[str, list[str]]:
    """The timestamp text and header tokens of ``head`` (the text before the event name)."""
    tokens = head.split()
    if tokens and tokens[-1] == "kvm:":  # perf script: kvm:kvm_exit
        tokens.pop()
    if len(tokens) < 2 or not tokens[-1].endswith(":"):
        raise ValueError("no '<timestamp>:' before the event")
    stamp = tokens[-1][:-1]
    if stamp.startswith("["):  # raw clock glued to the CPU field: [005]303280081900681:
        stamp = stamp[stamp.find("]") + 1 :]
    elif not (tokens[-2].startswith("[") or (len(tokens) > 2 and tokens[-3].startswith("["))):
        raise ValueError("no '[cpu]' field")
    return stamp, tokens


def _thread_key(tokens: list[str]) -> str:
    """The thread id of a header (digits after the last '-' of comm-tid, or perf's tid)."""
    for token in reversed(tokens):
        if token.startswith("["):
            continue
        tid = token.rpartition("-")[2]
        if tid.isdigit():
            return tid
    return ""


class FtraceReader(TraceReader):
    """``kvm_exit`` events of ftrace, trace-cmd report and perf script text."""

    format_name = "ftrace"

    def __init__(self, lines: Iterable[str], *, raw_clock_hz: float = 1e9, **kwargs: Any) -> None:
        super().__init__(lines, **kwargs)
        if not raw_clock_hz > 0:
            raise ValueError("raw_clock_hz must be positive")
        self.raw_clock_hz = raw_clock_hz
        self.nested_exits = 0
        """kvm_nested_vmexit / kvm_nested_vmexit_inject events seen (not yielded)."""
        self._vcpu_of_thread: dict[str, int] = {}
        self._hex_cache: dict[str, int] = {}

    @classmethod
    def sniff(cls, line: str) -> bool:
        if line.lstrip().startswith(("kvm_exit: reason ", "kvm_entry: vcpu ")):
            return True  # the event half of a hard-wrapped record
        for event in ("kvm_exit:", "kvm_entry:"):
            k = line.find(event)
            if k >= 0:
                try:
                    _split_header(line[:k])
                except ValueError:
                    return False
                return True
        return False

    def _resolve(self, spelling: str) -> int:
        upper = spelling.upper()
        if upper.startswith("EXIT_") and not upper.startswith("EXIT_REASON_"):
            return -1  # an SVM exit code name (AMD host): not a VMX exit
        return super()._resolve(spelling)

    guards_itself = True

    def _rows(self) -> Iterator[Row]:
        reason_of = self._reasons.get
        hex_of = self._hex_cache.get
        vcpus = self._vcpu_of_thread
        # Exit payloads repeat (the same reason, rip and info recur), so the parsed payload of a
        # line that took the fast path is remembered by its text: a later line with the same
        # payload only needs its header (timestamp, thread) read.
        payloads: dict[str, tuple[int, int, int, int, int, int, int, int]] = {}
        payload_of = payloads.get
        pending: str | None = None  # a wrapped header waiting for its event line
        lineno = 0
        with self._reading():
            for lineno, line in enumerate(self._lines, 1):
                if pending is not None:
                    line, pending = self._unwrap(pending, lineno - 1, line), None
                head, event, payload = line.partition(_EXIT_EVENT_COLON)
                known = payload_of(payload)  # the payload "" (no event) is never remembered
                if known is not None:
                    header = head.rsplit(None, 1)
                    stamp = header[-1]
                    if len(header) == 2 and stamp[-1] == ":" and "." in stamp and "[" in header[0]:
                        try:
                            timestamp = float(stamp[:-1])
                        except ValueError:
                            timestamp = -1.0
                        if 0.0 <= timestamp < _INFINITY:
                            vcpu = vcpus.get(_thread_id(header[0]), 0) if vcpus else 0
                            self.lines = lineno
                            self.exits += 1
                            yield known + (timestamp, vcpu)  # noqa: RUF005 (faster than unpacking)
                            continue
                if not event and _EXIT_EVENT not in line:
                    pending = self._other_line(lineno, line)
                    continue
                row: Row | None = None
                # Fast path: the 7-word payload of trace-cmd and 3.x-5.15 ftrace after a plain
                # header, split from the right so the header (task names with spaces) stays one
                # string. Anything else, and every problem, goes to _exit_line (which reports it).
                parts = line.rsplit(None, 9)
                if (
                    len(parts) == 10
                    and parts[2] == "kvm_exit:"
                    and parts[3] == "reason"
                    and parts[5] == "rip"
                    and parts[7] == "info"
                    and parts[1][-1] == ":"
                    and "[" in parts[0]
                ):
                    try:
                        rip = hex_of(parts[6])
                        if rip is None:
                            rip = self._hex(parts[6])
                        info1 = hex_of(parts[8])
                        if info1 is None:
                            info1 = self._hex(parts[8])
                        intr_info = hex_of(parts[9])
                        if intr_info is None:
                            intr_info = self._hex(parts[9])
                        number = reason_of(parts[4])
                        if number is None or number < 0:
                            number = self._reason(parts[4])
                        timestamp = float(parts[1][:-1])
                        vcpu = vcpus.get(_thread_id(parts[0]), 0) if vcpus else 0
                        if "." in parts[1] and 0.0 <= timestamp < _INFINITY:
                            row = (number, rip, info1, 0, intr_info, 0, 0, 0, timestamp, vcpu)
                            if number >= 0 and len(payloads) < _PAYLOAD_CACHE_LIMIT:
                                payloads[payload] = (number, rip, info1, 0, intr_info, 0, 0, 0)
                    except ValueError:
                        pass
                if row is None:
                    result = self._exit_line(lineno, line)
                    if result is None:
                        continue
                    if isinstance(result, str):
                        pending = result
                        continue
                    row = result
                if row[0] >= 0:
                    self.lines = lineno
                    self.exits += 1
                    yield row
            if pending is not None and _EXIT_EVENT in pending:
                self._bad_exit(lineno, pending, "kvm_exit record without its payload line")
            self.lines = lineno

    def _hex(self, text: str) -> int:
        """A hex token as an unsigned 64-bit value, remembered (rips and infos repeat)."""
        value = self._hex_cache.get(text)
        if value is None:
            value = parse_u64(text, 16)
            if len(self._hex_cache) < _HEX_CACHE_LIMIT:
                self._hex_cache[text] = value
        return value

    def _exit_line(self, lineno: int, line: str) -> Row | str | None:
        """Any kvm_exit line: its row, a wrapped header to join (str), or None when skipped."""
        k = line.find(_EXIT_EVENT)
        payload = line[k + 8 :]
        if not payload.startswith(":"):
            self._bad_exit(lineno, line, "kvm_exit without ':' and payload")
            return None
        fields = payload[1:].split()
        if not fields:
            return line.rstrip()  # perf script wrapped the payload onto the next line
        try:
            stamp, tokens = _split_header(line[:k])
            timestamp = float(stamp)
            if not 0.0 <= timestamp < _INFINITY:
                raise ValueError(f"bad timestamp {stamp!r}")
            if "." not in stamp:
                timestamp = parse_u64(stamp, 10) / self.raw_clock_hz
            name, rip, info1, info2, intr_info, error_code, vcpu = self._exit_fields(fields)
        except ValueError as exc:
            self._bad_exit(lineno, line, str(exc))
            return None
        number = self._reason(name)
        if vcpu < 0:
            vcpu = self._vcpu_of_thread.get(_thread_key(tokens), 0)
        return (number, rip, info1, info2, intr_info, error_code, 0, 0, timestamp, vcpu)

    @staticmethod
    def _exit_fields(p: list[str]) -> tuple[str, int, int, int, int, int, int]:
        """(name, rip, info1, info2, intr_info, error_code, vcpu or -1) of a kvm_exit payload."""
        n = len(p)
        vcpu, i = -1, 0
        if n > 1 and p[0] == "vcpu":
            vcpu, i = int(p[1].rstrip(",")), 2
            if vcpu < 0 or not p[1].rstrip(",").isdigit():
                raise ValueError(f"bad vcpu {p[1]!r}")
        if i + 1 >= n or p[i] != "reason":
            raise ValueError("expected 'reason <NAME> rip 0x<hex>'")
        name, i = p[i + 1], i + 2
        while i < n and p[i] != "rip":  # VMX_EXIT_REASON_FLAGS words after the name
            i += 1
        if i + 1 >= n:
            raise ValueError("no 'rip 0x<hex>'")
        out = [parse_u64(p[i + 1], 16), 0, 0, 0, 0]  # rip, info1, info2, intr_info, error_code
        i += 2
        if i + 2 < n and p[i] == "info":  # the 3.x-5.15 'info <info1> <intr_info>'
            out[1], out[3] = parse_u64(p[i + 1], 16), parse_u64(p[i + 2], 16)
        elif i + 1 < n and p[i] == "info":
            raise ValueError("'info' needs two hex numbers")
        for j in range(i, n - 1):  # 5.16+: 'info1 0x.. info2 0x.. ...' and extra trailing pairs
            index = _PAIR_KEYS.get(p[j])
            if index is not None:
                out[index] = parse_u64(p[j + 1], 16)
        return (name, out[0], out[1], out[2], out[3], out[4], vcpu)

    def _bad_exit(self, lineno: int, line: str, problem: str) -> None:
        if not _is_header(line.strip()):
            self._malformed(lineno, problem)

    def _unwrap(self, pending: str, pending_at: int, line: str) -> str:
        """Join a wrapped header with its event line, unless the line is a record of its own."""
        stripped = line.strip()
        k = stripped.find("[")
        if stripped and not (k > 0 and stripped[k:].split("]", 1)[0][1:].isdigit()):
            return f"{pending} {stripped}"
        if _EXIT_EVENT in pending:
            self._bad_exit(pending_at, pending, "kvm_exit record without its payload line")
        return line

    def _other_line(self, lineno: int, line: str) -> str | None:
        """A line without kvm_exit: kvm_entry/nested events, headers, other events.

        Returns the line when it is a header wrapped away from its event, else None.
        """
        k = line.find("kvm_entry")
        if k >= 0 and line.startswith(":", k + 9):
            if not line[k + 10 :].strip():
                return line.rstrip()  # perf script wrapped the payload onto the next line
            self._entry(lineno, line, k)
            return None
        if _NESTED_EVENT in line:
            self.nested_exits += 1
            return None
        stripped = line.rstrip()
        if stripped.endswith(":") and "[" in stripped and not _is_header(stripped.lstrip()):
            try:
                _split_header(stripped)
            except ValueError:
                return None
            return stripped
        return None

    def _entry(self, lineno: int, line: str, k: int) -> None:
        """``kvm_entry: vcpu N[, rip 0x..]``: remember which vCPU this thread runs."""
        fields = line[k + 10 :].split()
        try:
            _stamp, tokens = _split_header(line[:k])
            text = fields[1].rstrip(",") if fields[0] == "vcpu" and len(fields) > 1 else ""
            vcpu = parse_u64(text, 10)
        except ValueError as exc:
            self._bad_exit(lineno, line, f"kvm_entry: expected 'vcpu N' ({exc})")
            return
        self._vcpu_of_thread[_thread_key(tokens)] = vcpu


def _thread_id(header: str) -> str:
    """The thread id of a trace header: the digits after the last '-' before the CPU field."""
    return header[: header.rfind("[")].rstrip().rpartition("-")[2]
