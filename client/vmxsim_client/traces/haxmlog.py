"""Reader for the HAXM VMCS-cache measurement log of intel/haxm PR #130 (the seed).

The format is given in that PR's discussion (see /work/shared/seed/haxm-pr130-vmcs-cache.txt
and DESIGN.md "The problem, in numbers"), one exit per record:

    <guest rip> <= <exit reason>!
    delta: <TSC cycles from the exit to the next entry>
    vmread_ctr: <VMREADs between the exit and the next entry>
    vmwrite_ctr: <VMWRITEs between the exit and the next entry>

The rip is hex (with or without ``0x``); the reason is a basic exit reason number (decimal, or
hex with ``0x``) or a name. The counter lines may come in any order; a record is complete
when all three have been seen. Each yielded exit's counters are kept in ``recorded`` as
``(vmread_ctr, vmwrite_ctr, delta)``, so a report can compare them with a model. A record that
is cut short, repeats a counter, or carries an unknown key is malformed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .base import Row, TraceReader, parse_u64

__all__ = ["HaxmLogReader"]

_COUNTERS = ("vmread_ctr", "vmwrite_ctr", "delta")
_ARROW = "<="


def _exit_line(stripped: str) -> tuple[int, str]:
    """(rip, reason spelling) of ``<rip> <= <reason>!``; ValueError if it is not one."""
    rip_text, arrow, reason = stripped.partition(_ARROW)
    reason = reason.strip()
    if not arrow or not reason.endswith("!") or len(reason) < 2:
        raise ValueError("expected '<guest rip> <= <exit reason>!'")
    return parse_u64(rip_text.strip(), 16), reason[:-1].strip()


class HaxmLogReader(TraceReader):
    """Exits of a HAXM measurement log, with the logged VMREAD/VMWRITE counts."""

    format_name = "haxm-log"

    def __init__(self, lines: Iterable[str], **kwargs: Any) -> None:
        super().__init__(lines, **kwargs)
        self.recorded: list[tuple[int, int, int]] = []
        """(vmread_ctr, vmwrite_ctr, delta) of each yielded exit, in order."""

    @classmethod
    def sniff(cls, line: str) -> bool:
        try:
            _exit_line(line.strip())
        except ValueError:
            return False
        return True

    def _rows(self) -> Iterator[Row]:
        rip, reason, start = 0, "", 0  # the open record, if start > 0
        counters: dict[str, int] = {}
        lineno = 0
        for lineno, line in enumerate(self._lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if _ARROW in stripped:
                if start:
                    self._malformed(start, f"record ends before {_missing(counters)}")
                try:
                    rip, reason = _exit_line(stripped)
                    start, counters = lineno, {}
                except ValueError as exc:
                    self._malformed(lineno, str(exc))
                    start = 0
                continue
            key, colon, value = stripped.partition(":")
            key = key.strip()
            try:
                if not colon or key not in _COUNTERS:
                    raise ValueError(f"expected one of {', '.join(_COUNTERS)}: N")
                if not start:
                    raise ValueError(f"{key} outside a '<rip> <= <reason>!' record")
                if key in counters:
                    raise ValueError(f"{key} given twice in one record")
                counters[key] = parse_u64(value.strip(), 10)
            except ValueError as exc:
                self._malformed(lineno, str(exc))
                continue
            if len(counters) == len(_COUNTERS):
                start = 0
                number = self._reason(reason)
                if number >= 0:
                    self.recorded.append((counters["vmread_ctr"], counters["vmwrite_ctr"],
                                          counters["delta"]))  # fmt: skip
                    self.lines = lineno
                    self.exits += 1
                    yield (number, rip, 0, 0, 0, 0, 0, 0, None, 0)
        if start:
            self._malformed(start, f"record ends before {_missing(counters)}")
        self.lines = lineno


def _missing(counters: dict[str, int]) -> str:
    return ", ".join(key for key in _COUNTERS if key not in counters)
