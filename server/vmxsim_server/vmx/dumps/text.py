"""Undoing what logs, mail archives and issue trackers do to a pasted dump.

A dump as people paste it went through some of: a log prefix per line (dmesg timestamps
``[  673.85]`` or ``[Tue Dec  1 20:31:24 2026]``, syslog ``Sep  8 22:52:20 host kernel:``,
module names ``kvm_intel:``/``kvm:``, Xen's ``(XEN)`` and its ``[timestamp]``), mail quoting
(``> `` markers, several levels), quoted-printable encoding in raw archives (``=3D``, soft line
breaks), HTML escaping, Markdown code fences, and hard wrapping at 72-80 columns, which cuts a
long line at a space and puts the rest on a line of its own without any prefix.

``clean_lines`` removes the per-line decorations; ``Joiner`` puts wrapped lines back together:
a line that does not start with one of the format's line labels continues the line before.
"""

from __future__ import annotations

import html
import json
import quopri
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HEX",
    "Joiner",
    "Line",
    "clean_lines",
    "compile_row",
    "json_object",
    "label_of",
    "unescape",
]

HEX = r"(?:0x)?([0-9a-fA-F]+)"
"""A number as dumps print it: hex, with or without 0x (``%016lx``, ``0x%08x``)."""

# Leading decorations, removed repeatedly in any order until none is left.
_PREFIXES = re.compile(
    r"""^(?:
      \s*(?:>\s?)+                                       # mail quote markers, any depth
    | [A-Z][a-z]{2}\s+\d{1,2}\s+\d\d:\d\d:\d\d\s+\S+\s+   # syslog: "Sep  8 22:52:20 host "
    | \d{4}-\d\d-\d\d[T\ ]\d\d:\d\d:\d\d\S*\s+             # ISO time (journalctl short-iso)
    | (?:\S+\s+)?(?:kernel|vmunix|/netbsd)(?:\[\d+\])?:\s* # syslog tag: "kernel: ", "kernel[0]: "
    | \[\s*\d+[.,]\d+\]\s*                                 # dmesg: "[  673.850218] "
    | \[[A-Z][a-z]{2}\ [^\]]*\d{4}\]\s*                    # dmesg -T: "[Tue Dec  1 20:31:24 2026] "
    | \(XEN\)\s?(?:\[[^\]]*\]\s)?                          # Xen console: "(XEN) [2018-04-26 ...] "
    | (?:kvm_intel|kvm-intel|kvm|kvm_amd)(?:\s\[\d+\])?:\s # module prefix: "kvm_intel: "
    )""",
    re.VERBOSE,
)


def json_object(text: str, what: str, error: type[Exception]) -> dict[str, Any]:
    """The JSON object ``text`` holds; ``error`` naming ``what`` when it holds anything else."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise error(f"{what}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{what}: a JSON document must hold one object")
    return doc


def unescape(text: str) -> str:
    """Undo quoted-printable (raw mail archives) and HTML escaping (web archives) when present."""
    if re.search(r"=3D|=\r?\n", text) and text.count("=3D") >= 2:
        text = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    if "&gt;" in text or "&lt;" in text or "&amp;" in text:
        text = html.unescape(text)
    return text


@dataclass(frozen=True, slots=True)
class Line:
    """One cleaned line and its 1-based number in the input."""

    number: int
    text: str


def _strip(line: str) -> str:
    while True:
        match = _PREFIXES.match(line)
        if match is None or not match.group(0):
            return line.strip()
        line = line[match.end() :]


def clean_lines(text: str) -> Iterator[Line]:
    """The input's non-empty lines without log prefixes, quote markers and code fences."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw.replace("\t", " "))
        if line and not line.startswith("```"):
            yield Line(number, line)


def compile_row(pattern: str) -> re.Pattern[str]:
    """A mapping-table pattern as a regex: ``X`` is a number, a space is any (or no) white
    space, everything else is literal; a leading ``^`` anchors it at the start of the line."""
    anchored = pattern.startswith("^")
    parts = []
    for token in pattern.lstrip("^").split(" "):
        pieces = token.split("X")
        parts.append(HEX.join(re.escape(piece) for piece in pieces))
    return re.compile(("^" if anchored else "") + r"\s*".join(parts))


def label_of(pattern: str) -> str:
    """The literal text a mapping-table row starts with (up to its first number)."""
    return pattern.lstrip("^").split("X", 1)[0].strip()


class Joiner:
    """Rebuilds the lines that wrapping cut: ``feed`` a cleaned line and the section it is in;
    a line that starts with none of that section's labels is appended to the line before."""

    def __init__(self, labels: Mapping[str, Iterable[str]], headers: Iterable[str]) -> None:
        self._labels = {
            section: tuple(sorted({_squash(label) for label in found}, key=len, reverse=True))
            for section, found in labels.items()
        }
        self._headers = tuple(_squash(h) for h in headers)
        self.lines: list[Line] = []

    def starts_line(self, section: str, text: str) -> bool:
        """Whether ``text`` begins a line of its own in ``section`` (else it continues one)."""
        squashed = _squash(text)
        if squashed.startswith(self._headers):
            return True
        return squashed.startswith(self._labels.get(section, ()))

    def feed(self, section: str, line: Line, new: bool = False) -> None:
        """Add a cleaned line: a new logical line (always with ``new``), or the rest of the
        previous one."""
        if self.lines and not new and not self.starts_line(section, line.text):
            last = self.lines[-1]
            glue = "" if last.text.endswith(("=", "0x")) else " "
            self.lines[-1] = Line(last.number, last.text + glue + line.text)
        else:
            self.lines.append(line)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)
