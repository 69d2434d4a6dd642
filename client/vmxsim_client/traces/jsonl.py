"""vmxsim's own trace format: JSON Lines (https://jsonlines.org/), one exit per line.

Version 1, specified in docs/trace-formats.md:

- the first line MAY be a header object ``{"vmxsim_trace": 1, ...}`` (other header keys are
  free-form metadata: ``source``, ``format``...); a header with another version is malformed;
- every other line is an object ``{"reason": "CPUID" | 10, "rip": 4096, "qualification": 0,
  "info2": 0, "intr_info": 0, "error_code": 0, "gpa": 0, "insn_len": 2, "ts": 1.5,
  "vcpu": 0}``; every key but ``reason`` is optional (0, or null for ``ts``); integers are JSON
  numbers or hex strings ``"0x..."`` and must fit 64 unsigned bits; ``ts`` is seconds; keys not
  listed here are ignored (later versions may add keys, never change these).

The writer prints the reason as its table name and the 64-bit values as hex strings (exact in
every JSON implementation, unlike numbers above 2**53), and leaves out zero values. Parsing
uses the standard ``json`` module (DESIGN.md "Performance facts": ~0.6M lines/s; orjson/msgspec
would be faster but are not dependencies).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from vmxsim_server.vmx.exit_reasons import BY_NUMBER
from vmxsim_server.vmx.records import ExitRecord

from .base import Row, TraceReader, parse_u64

__all__ = ["VERSION", "JsonlReader", "write_jsonl"]

VERSION = 1
_HEADER_KEY = "vmxsim_trace"
# JSON key -> Row index of the integer fields after the reason
_INT_KEYS = {
    "rip": 1,
    "qualification": 2,
    "info2": 3,
    "intr_info": 4,
    "error_code": 5,
    "gpa": 6,
    "insn_len": 7,
    "vcpu": 9,
}
_HEX_KEYS = ("rip", "qualification", "info2", "intr_info", "error_code", "gpa")


def _integer(key: str, value: object) -> int:
    if isinstance(value, str) and value[:2].lower() == "0x":
        return parse_u64(value[2:], 16)
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise ValueError(f"{key}: {value!r} is not an unsigned 64-bit integer or '0x..' string")
    return value


class JsonlReader(TraceReader):
    """Exits of a vmxsim JSONL trace."""

    format_name = "jsonl"

    @classmethod
    def sniff(cls, line: str) -> bool:
        stripped = line.lstrip()
        return stripped.startswith("{") and ('"reason"' in line or f'"{_HEADER_KEY}"' in line)

    def _rows(self) -> Iterator[Row]:
        loads = json.loads
        first = True
        lineno = 0
        for lineno, line in enumerate(self._lines, 1):
            if not line or line.isspace():
                continue
            try:
                obj = loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                if _HEADER_KEY in obj:
                    self._header(obj, first)
                    first = False
                    continue
                first = False
                row = self._row(obj)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                self._malformed(lineno, str(exc))
                continue
            if row is not None:
                self.lines = lineno
                self.exits += 1
                yield row
        self.lines = lineno

    @staticmethod
    def _header(obj: dict[str, Any], first: bool) -> None:
        if not first:
            raise ValueError("a vmxsim_trace header is only allowed on the first line")
        if obj[_HEADER_KEY] != VERSION or type(obj[_HEADER_KEY]) is not int:
            raise ValueError(f"unsupported vmxsim_trace version {obj[_HEADER_KEY]!r}")

    def _row(self, obj: dict[str, Any]) -> Row | None:
        reason = obj.get("reason")
        if isinstance(reason, str):
            spelling = reason
        elif type(reason) is int and 0 <= reason < 1 << 32:
            spelling = str(reason)
        else:
            raise ValueError("'reason' must be an exit-reason name or number")
        out: list[Any] = [0, 0, 0, 0, 0, 0, 0, 0, None, 0]
        for key, index in _INT_KEYS.items():
            value = obj.get(key)
            if value is not None:
                out[index] = _integer(key, value)
        ts = obj.get("ts")
        if ts is not None:
            if type(ts) not in (int, float) or not 0 <= ts < math.inf:
                raise ValueError(f"ts: {ts!r} is not a non-negative number of seconds")
            out[8] = float(ts)
        number = self._reason(spelling)
        if number < 0:
            return None
        out[0] = number
        return tuple(out)


def _json_line(record: ExitRecord) -> str:
    reason = BY_NUMBER.get(record.reason)
    parts = [f'{{"reason": {json.dumps(reason.name) if reason else record.reason}']
    for key in _HEX_KEYS:
        value = getattr(record, "guest_physical_address" if key == "gpa" else key)
        if value or key == "rip":
            parts.append(f'"{key}": "0x{value:x}"')
    if record.instruction_len:
        parts.append(f'"insn_len": {record.instruction_len}')
    if record.timestamp is not None and math.isfinite(record.timestamp):
        parts.append(f'"ts": {record.timestamp!r}')
    if record.vcpu:
        parts.append(f'"vcpu": {record.vcpu}')
    return ", ".join(parts) + "}\n"


def write_jsonl(
    records: Iterable[ExitRecord], out: IO[str], *, header: Mapping[str, Any] | None = None
) -> int:
    """Write a version-1 header line and one line per record; returns the records written."""
    meta = {_HEADER_KEY: VERSION, **(header or {})}
    meta[_HEADER_KEY] = VERSION
    out.write(json.dumps(meta, sort_keys=False) + "\n")
    count = 0
    write = out.write
    for record in records:
        write(_json_line(record))
        count += 1
    return count
