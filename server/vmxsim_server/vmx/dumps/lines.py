"""The reader shared by the line-oriented dumps (KVM's and Xen's ``dump_vmcs``): a mapping table
of line patterns per section, applied to the cleaned and re-joined lines of the input.

A format is data (``LineFormat``): its section headers, the patterns that start a new dump and
its rows ``(section, pattern, fields)``. A pattern's ``X`` is a number, its spaces any white
space (see ``text.compile_row``); the i-th number goes to the i-th field, None skips it. Every
row is searched in every line of its section, so the rows of several kernel versions (which
moved values between lines) live side by side in one table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .dump import CURRENT_VMCS, Dump
from .text import Joiner, Line, clean_lines, compile_row, label_of

__all__ = ["REPORTED_EXIT_REASON", "LineFormat", "Row", "parse_lines", "segment_rows"]

GUEST, HOST, CONTROL, START = "guest", "host", "control", "start"
REPORTED_EXIT_REASON = "@reported_exit_reason"
"""A row's field name for the exit reason a log line reports (not a VMCS value of the dump)."""

SEGMENTS = ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")
"""The guest segment registers, by the field table's names (GUEST_<NAME>_SELECTOR ...)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line (or part of a line) of a dump and the fields its numbers are."""

    section: str
    pattern: str
    fields: tuple[str | None, ...]
    unless: tuple[str, ...] = ()
    """Skip a line that contains any of these (e.g. EFER "(effective)": not the VMCS field)."""


def segment_rows(pattern: str, labels: dict[str, str] | None = None) -> tuple[Row, ...]:
    """Guest segment rows from one pattern with ``{seg}`` for the printed name; the numbers are
    selector, access rights, limit, base (the order both KVM and Xen print)."""
    names = labels or {}
    return tuple(
        Row(
            GUEST,
            pattern.format(seg=names.get(seg, seg)),
            (f"GUEST_{seg}_SELECTOR", f"GUEST_{seg}_AR_BYTES", f"GUEST_{seg}_LIMIT",
             f"GUEST_{seg}_BASE"),
        )
        for seg in SEGMENTS
    )  # fmt: skip


@dataclass(frozen=True)
class LineFormat:
    """A line-oriented dump format: name, section headers, dump starts and mapping rows."""

    name: str
    headers: dict[str, str]
    """Header line -> the section it opens (e.g. ``*** Guest State ***`` -> guest)."""
    rows: tuple[Row, ...]
    """Rows of section START begin a new dump (and may carry values)."""
    _compiled: list[tuple[Row, re.Pattern[str]]] = field(
        init=False, repr=False, default_factory=list
    )

    def __post_init__(self) -> None:
        self._compiled.extend((row, compile_row(row.pattern)) for row in self.rows)

    def compiled(self, section: str) -> Iterator[tuple[Row, re.Pattern[str]]]:
        """The rows of one section with their regexes."""
        return ((row, rx) for row, rx in self._compiled if row.section == section)

    def parse(self, text: str) -> list[Dump]:
        """Every dump of this format in ``text`` (``parse_lines``)."""
        return parse_lines(text, self)

    def joiner(self) -> Joiner:
        """A Joiner that knows every row's line label, per section."""
        labels: dict[str, list[str]] = {}
        for row in self.rows:
            labels.setdefault(row.section, []).append(label_of(row.pattern))
        starts = [label_of(row.pattern) for row in self.rows if row.section == START]
        return Joiner(labels, [*self.headers, *starts])


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _logical_lines(text: str, fmt: LineFormat) -> Iterator[tuple[str, Line]]:
    """(section, line) for each line after re-joining the wrapped ones."""
    headers = {_squash(h): s for h, s in fmt.headers.items()}
    joiner = fmt.joiner()
    section = START
    sections: list[str] = []
    for line in clean_lines(text):
        opened = headers.get(_squash(line.text))
        if opened is None and any(rx.search(line.text) for _, rx in fmt.compiled(START)):
            opened = START
        if opened is not None:
            section = opened
        joiner.feed(section, line, new=opened is not None)
        if len(joiner.lines) > len(sections):
            sections.append(section)
    yield from zip(sections, joiner.lines, strict=True)


def parse_lines(text: str, fmt: LineFormat) -> list[Dump]:
    """Every dump in ``text``, in order: a START row or a guest-section header after a guest
    section begins the next dump."""
    headers = {_squash(h): s for h, s in fmt.headers.items()}
    dumps: list[Dump] = []
    current: Dump | None = None
    seen: set[str] = set()
    for section, line in _logical_lines(text, fmt):
        opened = headers.get(_squash(line.text))
        begins = section == START and any(rx.search(line.text) for _, rx in fmt.compiled(START))
        if (begins or opened == GUEST) and (
            current is None or (begins and seen - {START}) or (opened == GUEST and GUEST in seen)
        ):
            current = Dump(fmt.name, line.number, pseudo={CURRENT_VMCS: 1})  # read by VMREAD
            dumps.append(current)
            seen = set()
        if current is None:
            continue  # lines before the first dump
        if opened is not None:
            seen.add(opened)
            continue
        seen.add(section)
        for row, rx in fmt.compiled(section):
            match = rx.search(line.text)
            if match is None or any(word in line.text for word in row.unless):
                continue
            for name, number in zip(row.fields, match.groups(), strict=True):
                if name is not None:
                    where = f"line {line.number}"
                    value = int(number, 16)
                    if name == REPORTED_EXIT_REASON:
                        current.reported_exit_reason = value
                    else:
                        current.set(name, value, where)
    return [d for d in dumps if d.values]
