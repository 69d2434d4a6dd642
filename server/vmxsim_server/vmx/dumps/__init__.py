"""VMCS dumps as people paste them into bug reports, read into field-table values.

One module per format, each with its mapping table (dump label -> field-table name) as data:

    kvm-dump_vmcs    Linux KVM's dump_vmcs from dmesg (kvm.py)
    xen-vmcs_dump    Xen's vmcs_dump_vcpu from xl dmesg (xen.py)
    haxm-dump_vmcs   HAXM's dump_vmcs, one ENCODING NAME: VALUE per line (haxm.py)
    qemu-cpu_dump    QEMU's register dump after "KVM: entry failed", guest state only (qemu.py)
    vmxsim-snapshot  vmxsim's own vCPU snapshot, binary or its JSON document (snapshot.py)
    plain            FIELD=VALUE / FIELD: VALUE lines or a JSON object (plain.py)

``read_dumps`` detects the format (the one that reads the most values wins) unless it is
given, and returns every dump in the input in order. Input is at most ``MAX_DUMP_BYTES``;
anything that is no dump raises ``DumpError`` with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import haxm, kvm, plain, qemu, snapshot, xen
from .dump import MAX_DUMP_BYTES, Dump, DumpError, DumpTooLarge, check_size
from .text import unescape

__all__ = [
    "FORMATS",
    "MAX_DUMP_BYTES",
    "Dump",
    "DumpError",
    "DumpTooLarge",
    "read_dumps",
    "values_dump",
]

_TEXT_PARSERS: dict[str, Callable[[str], list[Dump]]] = {
    kvm.NAME: kvm.parse,
    xen.NAME: xen.parse,
    haxm.NAME: haxm.parse,
    qemu.NAME: qemu.parse,
    plain.NAME: plain.parse,
}
_MARKERS = {xen.NAME: "(XEN)", haxm.NAME: "haxm", qemu.NAME: "KVM: entry failed"}
"""Text that breaks a tie: two formats reading as many values (e.g. a Xen excerpt of CR lines)."""
FORMATS: tuple[str, ...] = (*_TEXT_PARSERS, snapshot.NAME)
"""Every format name ``--format`` accepts."""

_HINTS = (
    ("dump_invalid_vmcs=1", "KVM printed no dump: load kvm_intel with dump_invalid_vmcs=1 "
     "(e.g. modprobe kvm_intel dump_invalid_vmcs=1) and reproduce"),
)  # fmt: skip


def values_dump(values: Mapping[str, object]) -> Dump:
    """A dump from field values given directly (name or encoding -> number)."""
    return plain.parse_values(values)


def _decode(data: bytes) -> str:
    return unescape(data.decode("utf-8", errors="replace").replace("\r\n", "\n"))


def read_dumps(data: bytes | str, format: str | None = None) -> list[Dump]:
    """Every VMCS dump in ``data``, in order, in the given or the detected format."""
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else data
    check_size(len(raw))
    if format is not None and format not in FORMATS:
        raise DumpError(f"unknown dump format {format!r} (one of {', '.join(FORMATS)})")
    if format == snapshot.NAME or (format is None and snapshot.is_snapshot(raw)):
        return snapshot.parse(raw)
    text = _decode(raw)
    if format is not None:
        dumps = _TEXT_PARSERS[format](text)
        if not dumps:
            raise DumpError(f"no {format} dump found in the input")
        return dumps
    return _detect(text)


def _detect(text: str) -> list[Dump]:
    best: list[Dump] = []
    best_score = (0, False)
    errors: list[DumpError] = []
    for name, parser in _TEXT_PARSERS.items():
        try:
            dumps = parser(text)
        except DumpError as exc:
            if name != plain.NAME:  # plain rejects any other text; that says nothing
                errors.append(exc)
            continue
        score = (sum(len(d.values) for d in dumps), _MARKERS.get(name, "\0") in text)
        if score[0] and score > best_score:
            best, best_score = dumps, score
    if best:
        return best
    if errors:
        raise errors[0]
    for marker, hint in _HINTS:
        if marker in text:
            raise DumpError(hint)
    raise DumpError(
        "no VMCS dump found: the input is in none of the formats "
        f"{', '.join(FORMATS)} (--format forces one)"
    )
