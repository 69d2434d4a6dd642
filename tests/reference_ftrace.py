"""Today's ftrace reader (before issue 15), kept as the oracle of the fast reader (its loop and
methods verbatim; the pure helpers it used are imported from the package, where they moved
unchanged):
tests/test_traces_fast.py checks that both give the same rows on every fixture and on random
traces. Do not optimise or fix this file; the package's reader is the one to change.

(Its format notes are those of client/vmxsim_client/traces/ftrace.py.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from vmxsim_client.traces.base import Row, TraceReader, parse_u64

# the pure helpers were moved unchanged to the package; the reader's loop below is the old one
from vmxsim_client.traces.ftrace_lines import exit_fields
from vmxsim_client.traces.ftrace_lines import is_header as _is_header
from vmxsim_client.traces.ftrace_lines import split_header as _split_header
from vmxsim_client.traces.ftrace_lines import thread_id as _thread_id
from vmxsim_client.traces.ftrace_lines import thread_key as _thread_key

__all__ = ["ReferenceFtraceReader"]

_EXIT_EVENT = "kvm_exit"
_EXIT_EVENT_COLON = "kvm_exit:"
_NESTED_EVENT = "kvm_nested_vmexit"  # and kvm_nested_vmexit_inject
_HEX_CACHE_LIMIT = 1 << 16  # distinct hex tokens remembered per reader
_PAYLOAD_CACHE_LIMIT = 1 << 16  # distinct exit payloads remembered per reader
_INFINITY = float("inf")


class ReferenceFtraceReader(TraceReader):
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

    _exit_fields = staticmethod(exit_fields)

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
