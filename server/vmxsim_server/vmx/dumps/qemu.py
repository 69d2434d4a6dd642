"""QEMU's register dump (``x86_cpu_dump_state`` in qemu target/i386/cpu-dump.c), as QEMU prints
it after ``KVM: entry failed, hardware error 0x80000021``: guest state only, as KVM reported it
back through KVM_GET_REGS/KVM_GET_SREGS (no controls, no host state).

Layout (cpu-dump.c): ``EAX=... EBX=...`` or ``RAX=...`` lines, ``EIP=... EFL=...`` /
``RIP=... RFL=...``, one line per segment ``%-3s=%04x %08x %08x %08x`` (selector, base, limit,
flags; the base is 16 digits in 64-bit mode), ``LDT=``, ``TR =``, ``GDT=     base limit``,
``IDT=``, ``CR0=... CR2=... CR3=... CR4=...``, ``DR6=... DR7=...``, ``EFER=...``.

Translations, each from the code that produced the value:
- a segment's flags word is the descriptor's high dword (bits 8-23: type, S, DPL, P, AVL, L,
  D/B, G); the VMCS access-rights layout (SDM 25.4.1, table 25-2) is the same bits shifted down
  by 8: ``(flags >> 8) & 0xf0ff``. A segment without P is unusable (AR bit 16): QEMU's
  ``set_seg`` (target/i386/kvm/kvm.c) sets ``unusable = !present`` for KVM, and KVM's
  ``vmx_segment_access_rights`` (arch/x86/kvm/vmx/vmx.c) writes AR = 1 << 16 for it;
- CR0 and CR4 are the guest's view, which KVM keeps in the read shadows (``vmx_set_cr0`` and
  ``vmx_set_cr4`` write the whole value to CR0_READ_SHADOW/CR4_READ_SHADOW and force bits such
  as CR0.NE into GUEST_CR0), so they are CR0_READ_SHADOW and CR4_READ_SHADOW here; GUEST_CR0
  and GUEST_CR4 stay unknown;
- CR2, the general registers, CPL/II/A20/SMM/HLT have no VMCS field (or none they state).
"""

from __future__ import annotations

import re

from .dump import Dump
from .text import clean_lines, unescape

__all__ = ["parse", "qemu_access_rights"]

NAME = "qemu-cpu_dump"

UNUSABLE = 1 << 16
_P = 1 << 15

_SEGMENTS = {"ES": "ES", "CS": "CS", "SS": "SS", "DS": "DS", "FS": "FS", "GS": "GS",
             "LDT": "LDTR", "TR": "TR"}  # fmt: skip
"""QEMU's segment names -> the field table's."""

_H = r"([0-9a-fA-F]+)"
_ROWS: tuple[tuple[re.Pattern[str], tuple[str | None, ...]], ...] = (
    (re.compile(rf"^[ER]IP={_H} (?:EFL|RFL)={_H}"), ("GUEST_RIP", "GUEST_RFLAGS")),
    (re.compile(rf"\b[ER]SP={_H}"), ("GUEST_RSP",)),
    (re.compile(rf"^GDT= *{_H} {_H}"), ("GUEST_GDTR_BASE", "GUEST_GDTR_LIMIT")),
    (re.compile(rf"^IDT= *{_H} {_H}"), ("GUEST_IDTR_BASE", "GUEST_IDTR_LIMIT")),
    (re.compile(rf"^CR0={_H} CR2={_H} CR3={_H} CR4={_H}"),
     ("CR0_READ_SHADOW", None, "GUEST_CR3", "CR4_READ_SHADOW")),
    (re.compile(rf"\bDR7={_H}"), ("GUEST_DR7",)),
    (re.compile(rf"^EFER={_H}"), ("GUEST_IA32_EFER",)),
)  # fmt: skip
"""Line pattern -> the fields of its numbers (None: no VMCS field)."""

_SEGMENT = re.compile(rf"^(ES|CS|SS|DS|FS|GS|LDT|TR) *={_H} {_H} {_H} {_H}")
_FIRST = re.compile(r"^[ER]AX=")
_FAILED = re.compile(r"KVM: entry failed, hardware error (?:0x)?([0-9a-fA-F]+)")


def qemu_access_rights(flags: int) -> int:
    """A QEMU segment flags word as VMCS access rights (see the module docstring)."""
    return (flags >> 8) & 0xF0FF if flags & _P else UNUSABLE


def parse(text: str) -> list[Dump]:
    """Every QEMU register dump in ``text`` (each starts at its ``EAX=``/``RAX=`` line)."""
    dumps: list[Dump] = []
    reported: int | None = None
    for line in clean_lines(unescape(text)):
        where = f"line {line.number}"
        failed = _FAILED.search(line.text)
        if failed:
            reported = int(failed[1], 16)
            continue
        if _FIRST.match(line.text):
            dumps.append(Dump(NAME, line.number, reported_exit_reason=reported))
            reported = None
        if not dumps:
            continue
        dump = dumps[-1]
        segment = _SEGMENT.match(line.text)
        if segment:
            name = _SEGMENTS[segment[1]]
            dump.set(f"GUEST_{name}_SELECTOR", int(segment[2], 16), where)
            dump.set(f"GUEST_{name}_BASE", int(segment[3], 16), where)
            dump.set(f"GUEST_{name}_LIMIT", int(segment[4], 16), where)
            dump.set(f"GUEST_{name}_AR_BYTES", qemu_access_rights(int(segment[5], 16)), where)
            continue
        for pattern, names in _ROWS:
            match = pattern.search(line.text)
            if match:
                for field, number in zip(names, match.groups(), strict=True):
                    if field is not None:
                        dump.set(field, int(number, 16), where)
    if reported is not None and dumps and dumps[-1].reported_exit_reason is None:
        dumps[-1].reported_exit_reason = reported  # the message came after the dump
    return dumps
