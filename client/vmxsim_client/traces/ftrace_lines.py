"""The ftrace reader's line-at-a-time path: every line the bulk path of ``ftrace.py`` does not
take (wrapped mail copies, perf script's wrapped payloads, first sightings of a payload or a
task, malformed lines) is read here, one ``str`` at a time, with the rules of the reader before
issue 15 (kept verbatim in tests/reference_ftrace.py, the oracle of the property test).

The header and payload grammar is described in ``ftrace.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .base import parse_u64

__all__ = [
    "EXIT_EVENT",
    "Exit",
    "LineParser",
    "exit_fields",
    "is_header",
    "split_header",
    "thread_id",
    "thread_key",
]

EXIT_EVENT = "kvm_exit"
_EXIT_EVENT_COLON = "kvm_exit:"
_NESTED_EVENT = "kvm_nested_vmexit"  # and kvm_nested_vmexit_inject
_PAIR_KEYS = {"info1": 1, "info2": 2, "intr_info": 3, "error_code": 4}  # key -> value index
_HEX_CACHE_LIMIT = 1 << 16  # distinct hex tokens remembered per reader
_PAYLOAD_CACHE_LIMIT = 1 << 16  # distinct exit payloads remembered per reader
_INFINITY = float("inf")
_HEADER_PREFIXES = ("#", "cpus=", "version =", "CPU:", "[...]", "...")

Payload = tuple[int, int, int, int, int, int, int]
"""A parsed kvm_exit payload: reason number, rip, info1, info2, intr_info, error_code and the
payload's own vCPU (-1 when it names none)."""

Exit = tuple[Payload, float, str, str]
"""One exit of a line: its payload, timestamp, thread key and the header text before it."""


def is_header(stripped: str) -> bool:
    """Blank lines, comments and trace-cmd/ftrace banners that are not events."""
    if not stripped or stripped.startswith(_HEADER_PREFIXES):
        return True
    return stripped.startswith("CPU ") and stripped.endswith(" is empty")


def split_header(head: str) -> tuple[str, list[str]]:
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


def thread_key(tokens: list[str]) -> str:
    """The thread id of a header (digits after the last '-' of comm-tid, or perf's tid)."""
    for token in reversed(tokens):
        if token.startswith("["):
            continue
        tid = token.rpartition("-")[2]
        if tid.isdigit():
            return tid
    return ""


def thread_id(header: str) -> str:
    """The thread id of a trace header: the digits after the last '-' before the CPU field."""
    return header[: header.rfind("[")].rstrip().rpartition("-")[2]


def _hex16(text: str) -> int:
    return parse_u64(text, 16)


def exit_fields(
    p: list[str], hex: Callable[[str], int] = _hex16
) -> tuple[str, int, int, int, int, int, int]:
    """(name, rip, info1, info2, intr_info, error_code, vcpu or -1) of a kvm_exit payload;
    ``hex`` reads a hex token as ``parse_u64(text, 16)`` does (a caching one, say)."""
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
    out = [hex(p[i + 1]), 0, 0, 0, 0]  # rip, info1, info2, intr_info, error_code
    i += 2
    if i + 2 < n and p[i] == "info":  # the 3.x-5.15 'info <info1> <intr_info>'
        out[1], out[3] = hex(p[i + 1]), hex(p[i + 2])
    elif i + 1 < n and p[i] == "info":
        raise ValueError("'info' needs two hex numbers")
    for j in range(i, n - 1):  # 5.16+: 'info1 0x.. info2 0x.. ...' and extra trailing pairs
        index = _PAIR_KEYS.get(p[j])
        if index is not None:
            out[index] = hex(p[j + 1])
    return (name, out[0], out[1], out[2], out[3], out[4], vcpu)


class _Reader(Protocol):
    """What the parser needs of its reader (``ftrace.FtraceReader``)."""

    raw_clock_hz: float
    nested_exits: int

    def _reason(self, spelling: str) -> int: ...

    def _malformed(self, line: int, problem: str) -> None: ...

    def _entered(self, key: str, vcpu: int) -> None: ...


class LineParser:
    """The line-at-a-time reading of one trace (state: a wrapped header waiting for its event
    line, the payloads and hex tokens seen); the thread -> vCPU mapping is the reader's."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.pending: str | None = None
        """A wrapped header waiting for its event line."""
        self._payloads: dict[str, Payload] = {}
        self._hex_cache: dict[str, int] = {}

    def line(self, lineno: int, line: str) -> Exit | None:
        """The exit of one line, or None (another event, a header, a skipped line)."""
        if self.pending is not None:
            line, self.pending = self._unwrap(self.pending, lineno - 1, line), None
        head, event, payload = line.partition(_EXIT_EVENT_COLON)
        known = self._payloads.get(payload)  # the payload "" (no event) is never remembered
        if known is not None:
            header = head.rsplit(None, 1)
            stamp = header[-1] if header else ""
            if len(header) == 2 and stamp[-1] == ":" and "." in stamp and "[" in header[0]:
                try:
                    timestamp = float(stamp[:-1])
                except ValueError:
                    timestamp = -1.0
                if 0.0 <= timestamp < _INFINITY:
                    return known, timestamp, thread_id(header[0]), header[0]
        if not event and EXIT_EVENT not in line:
            self.pending = self._other_line(lineno, line)
            return None
        found = self._plain(line, payload)
        if found is None:
            result = self._exit_line(lineno, line)
            if result is None:
                return None
            if isinstance(result, str):
                self.pending = result
                return None
            found = result
        return found if found[0][0] >= 0 else None

    def end(self, lineno: int) -> None:
        """At the end of the input: a wrapped kvm_exit header never got its payload line."""
        if self.pending is not None and EXIT_EVENT in self.pending:
            self._bad_exit(lineno, self.pending, "kvm_exit record without its payload line")
        self.pending = None

    def _plain(self, line: str, payload: str) -> Exit | None:
        """The 7-word payload of trace-cmd and 3.x-5.15 ftrace after a plain header, split from
        the right so the header (task names with spaces) stays one string; None otherwise."""
        parts = line.rsplit(None, 9)
        if not (
            len(parts) == 10
            and parts[2] == "kvm_exit:"
            and parts[3] == "reason"
            and parts[5] == "rip"
            and parts[7] == "info"
            and parts[1][-1] == ":"
            and "[" in parts[0]
        ):
            return None
        try:
            rip, info1, intr_info = (self.hex(parts[k]) for k in (6, 8, 9))
            number = self.reader._reason(parts[4])
            timestamp = float(parts[1][:-1])
        except ValueError:
            return None
        if not ("." in parts[1] and 0.0 <= timestamp < _INFINITY):
            return None
        known = (number, rip, info1, 0, intr_info, 0, -1)
        if number >= 0 and len(self._payloads) < _PAYLOAD_CACHE_LIMIT:
            self._payloads[payload] = known
        return known, timestamp, thread_id(parts[0]), parts[0]

    def hex(self, text: str) -> int:
        """A hex token as an unsigned 64-bit value, remembered (rips and infos repeat)."""
        value = self._hex_cache.get(text)
        if value is None:
            value = parse_u64(text, 16)
            if len(self._hex_cache) < _HEX_CACHE_LIMIT:
                self._hex_cache[text] = value
        return value

    def _exit_line(self, lineno: int, line: str) -> Exit | str | None:
        """Any kvm_exit line: its exit, a wrapped header to join (str), or None when skipped."""
        k = line.find(EXIT_EVENT)
        payload = line[k + 8 :]
        if not payload.startswith(":"):
            self._bad_exit(lineno, line, "kvm_exit without ':' and payload")
            return None
        fields = payload[1:].split()
        if not fields:
            return line.rstrip()  # perf script wrapped the payload onto the next line
        try:
            stamp, tokens = split_header(line[:k])
            timestamp = float(stamp)
            if not 0.0 <= timestamp < _INFINITY:
                raise ValueError(f"bad timestamp {stamp!r}")
            if "." not in stamp:
                timestamp = parse_u64(stamp, 10) / self.reader.raw_clock_hz
            name, rip, info1, info2, intr_info, error_code, vcpu = exit_fields(fields)
        except ValueError as exc:
            self._bad_exit(lineno, line, str(exc))
            return None
        number = self.reader._reason(name)
        known = (number, rip, info1, info2, intr_info, error_code, vcpu)
        return known, timestamp, thread_key(tokens), line[:k]

    def _bad_exit(self, lineno: int, line: str, problem: str) -> None:
        if not is_header(line.strip()):
            self.reader._malformed(lineno, problem)

    def _unwrap(self, pending: str, pending_at: int, line: str) -> str:
        """Join a wrapped header with its event line, unless the line is a record of its own."""
        stripped = line.strip()
        k = stripped.find("[")
        if stripped and not (k > 0 and stripped[k:].split("]", 1)[0][1:].isdigit()):
            return f"{pending} {stripped}"
        if EXIT_EVENT in pending:
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
            self.reader.nested_exits += 1
            return None
        stripped = line.rstrip()
        if stripped.endswith(":") and "[" in stripped and not is_header(stripped.lstrip()):
            try:
                split_header(stripped)
            except ValueError:
                return None
            return stripped
        return None

    def _entry(self, lineno: int, line: str, k: int) -> None:
        """``kvm_entry: vcpu N[, rip 0x..]``: remember which vCPU this thread runs."""
        fields = line[k + 10 :].split()
        try:
            _stamp, tokens = split_header(line[:k])
            text = fields[1].rstrip(",") if fields[0] == "vcpu" and len(fields) > 1 else ""
            vcpu = parse_u64(text, 10)
        except ValueError as exc:
            self._bad_exit(lineno, line, f"kvm_entry: expected 'vcpu N' ({exc})")
            return
        self.reader._entered(thread_key(tokens), vcpu)
