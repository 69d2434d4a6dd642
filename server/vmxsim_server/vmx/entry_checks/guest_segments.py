"""Checks on the guest's segment registers (SDM 27.3.1.2) and descriptor-table registers
(27.3.1.3); a failure is a VM exit with basic reason 33 and bit 31 set.

The guest "will be virtual-8086" when RFLAGS.VM is 1; then CS, SS, DS, ES, FS and GS must look
like real-mode segments (base = selector * 16, limit FFFFH, access rights F3H) and none of the
access-rights rules for protected mode applies to them. A segment register is "unusable" when
bit 16 of its access rights is 1; then only CS (always checked) and TR (never unusable) keep
their rules. With "unrestricted guest", CS may be a read/write accessed data segment (type 3,
real-address mode after CR0.PE = 0) and the RPL/DPL rules relax as written in each row.
"""

from __future__ import annotations

from collections.abc import Callable

from ..capabilities import Capabilities
from .bits import CR0_PE, RFLAGS_VM, Explain, Holds, canonical, ia32e_guest, rows_for, unrestricted
from .table import Check, Stage, Values

_row = rows_for(Stage.GUEST)

_UNUSABLE = 1 << 16
_V86_SEGMENTS = ("CS", "SS", "DS", "ES", "FS", "GS")
_DATA_SEGMENTS = ("DS", "ES", "FS", "GS")
_PROTECTED = ("CS", "SS", "DS", "ES", "FS", "GS")  # the access-rights rules for CS and usable ones
_PARTS = ("SELECTOR", "BASE", "LIMIT", "AR_BYTES")
_CONTROLS = ("CPU_BASED_VM_EXEC_CONTROL", "SECONDARY_VM_EXEC_CONTROL")


def _ar(v: Values, seg: str) -> int:
    return v(f"GUEST_{seg}_AR_BYTES")


def _usable(v: Values, seg: str) -> bool:
    return not _ar(v, seg) & _UNUSABLE


def _type(v: Values, seg: str) -> int:
    return _ar(v, seg) & 0xF


def _dpl(v: Values, seg: str) -> int:
    return _ar(v, seg) >> 5 & 3


def _rpl(v: Values, seg: str) -> int:
    return v(f"GUEST_{seg}_SELECTOR") & 3


def _v86(v: Values) -> bool:
    return bool(v("GUEST_RFLAGS") & RFLAGS_VM)


def granularity_ok(limit: int, access_rights: int) -> bool:
    """G must be 0 if any of limit bits 11:0 is 0, and 1 if any of bits 31:20 is 1."""
    g = access_rights >> 15 & 1
    return not (limit & 0xFFF != 0xFFF and g) and not (limit >> 20 and not g)


def _fields(
    segs: tuple[str, ...], parts: tuple[str, ...], extra: tuple[str, ...]
) -> tuple[str, ...]:
    return tuple(f"GUEST_{s}_{p}" for s in segs for p in parts) + extra


SegmentTest = Callable[[Values, Capabilities, str], bool]


def _each(
    id: str, section: str, segs: tuple[str, ...], parts: tuple[str, ...], bad: SegmentTest,
    what: str, extra: tuple[str, ...] = (), applies: Holds | None = None,
) -> Check:  # fmt: skip
    """A row that fails when ``bad`` holds for one of ``segs``; the message names the first."""

    def holds(v: Values, c: Capabilities) -> bool:
        if applies is not None and not applies(v, c):
            return True
        return not any(bad(v, c, seg) for seg in segs)

    def explain(v: Values, c: Capabilities) -> str:
        for seg in segs:
            if bad(v, c, seg):
                shown = ", ".join(f"{p.lower()} {v(f'GUEST_{seg}_{p}'):#x}" for p in parts)
                return f"guest {seg} ({shown}) {what}"
        return f"a guest segment {what}"  # pragma: no cover - called on failure only

    return _row(id, section, _fields(segs, parts, extra), holds, explain)


def _not_v86(v: Values, c: Capabilities) -> bool:
    return not _v86(v)


def _checked(v: Values, seg: str) -> bool:
    """The access-rights rules apply to CS and to the usable registers (27.3.1.2)."""
    return seg == "CS" or _usable(v, seg)


def _cs_type_ok(v: Values, c: Capabilities) -> bool:
    kind = _type(v, "CS")
    return kind in (9, 11, 13, 15) or (kind == 3 and unrestricted(v))


def _cs_dpl_ok(v: Values, c: Capabilities) -> bool:
    kind, dpl, ss_dpl = _type(v, "CS"), _dpl(v, "CS"), _dpl(v, "SS")
    if kind == 3:
        return dpl == 0
    if kind in (9, 11):
        return dpl == ss_dpl
    if kind in (13, 15):
        return dpl <= ss_dpl
    return True  # guest.cs.type reports other types


def _tr_type_ok(v: Values, c: Capabilities) -> bool:
    return _type(v, "TR") == 11 or (_type(v, "TR") == 3 and not ia32e_guest(v))


_AR = ("AR_BYTES",)
_SEL_AR = ("SELECTOR", "AR_BYTES")
_LIMIT_AR = ("LIMIT", "AR_BYTES")
_RFLAGS = ("GUEST_RFLAGS",)
_RESERVED_AR = 0xFFFE_0F00  # bits 31:17 and 11:8


def _ldtr_usable(v: Values, c: Capabilities) -> bool:
    return _usable(v, "LDTR")


def _system_rows(
    seg: str, kinds: tuple[int, ...], type_text: str, when: Holds | None
) -> tuple[Check, ...]:
    """TR and LDTR (when usable): type, S, P, reserved bits and granularity (27.3.1.2)."""
    low = seg.lower()
    ia32e = ("VM_ENTRY_CONTROLS",) if seg == "TR" else ()
    type_test: SegmentTest = (
        (lambda v, c, s: not _tr_type_ok(v, c))
        if seg == "TR"
        else (lambda v, c, s: _type(v, s) not in kinds)
    )
    return (
        _each(f"guest.{low}.type", "27.3.1.2", (seg,), _AR, type_test, type_text, ia32e, when),
        _each(f"guest.{low}.s", "27.3.1.2", (seg,), _AR,
              lambda v, c, s: bool(_ar(v, s) >> 4 & 1), "has S = 1 (must be a system segment)",
              (), when),
        _each(f"guest.{low}.present", "27.3.1.2", (seg,), _AR,
              lambda v, c, s: not _ar(v, s) >> 7 & 1, "is not present (P = 0)", (), when),
        _each(f"guest.{low}.reserved", "27.3.1.2", (seg,), _AR,
              lambda v, c, s: bool(_ar(v, s) & _RESERVED_AR), "sets reserved access-rights bits",
              (), when),
        _each(f"guest.{low}.granularity", "27.3.1.2", (seg,), _LIMIT_AR,
              lambda v, c, s: not granularity_ok(v(f"GUEST_{s}_LIMIT"), _ar(v, s)),
              "has a limit that does not match its granularity bit G", (), when),
    )  # fmt: skip


GUEST_SEGMENT_CHECKS = (
    # --- selector fields
    _each("guest.tr.ti", "27.3.1.2", ("TR",), ("SELECTOR",),
          lambda v, c, s: bool(v("GUEST_TR_SELECTOR") & 4), "has TI = 1"),
    _each("guest.ldtr.ti", "27.3.1.2", ("LDTR",), _SEL_AR,
          lambda v, c, s: _usable(v, s) and bool(v("GUEST_LDTR_SELECTOR") & 4),
          "is usable with TI = 1"),
    _row("guest.ss.rpl", "27.3.1.2",
         ("GUEST_RFLAGS", *_CONTROLS, "GUEST_SS_SELECTOR", "GUEST_CS_SELECTOR"),
         lambda v, c: _v86(v) or unrestricted(v) or _rpl(v, "SS") == _rpl(v, "CS"),
         "guest SS selector {GUEST_SS_SELECTOR:#x} RPL differs from CS selector "
         "{GUEST_CS_SELECTOR:#x} RPL"),
    # --- base-address fields
    _each("guest.v86.bases", "27.3.1.2", _V86_SEGMENTS, ("SELECTOR", "BASE"),
          lambda v, c, s: v(f"GUEST_{s}_BASE") != v(f"GUEST_{s}_SELECTOR") << 4,
          "has a base that is not selector * 16 in virtual-8086 mode", _RFLAGS,
          lambda v, c: _v86(v)),
    _each("guest.bases.canonical", "27.3.1.2", ("TR", "FS", "GS"), ("BASE",),
          lambda v, c, s: not canonical(v(f"GUEST_{s}_BASE"), c), "has a non-canonical base"),
    _each("guest.ldtr.base", "27.3.1.2", ("LDTR",), ("BASE", "AR_BYTES"),
          lambda v, c, s: _usable(v, s) and not canonical(v("GUEST_LDTR_BASE"), c),
          "is usable with a non-canonical base"),
    _each("guest.cs.base", "27.3.1.2", ("CS",), ("BASE",),
          lambda v, c, s: bool(v("GUEST_CS_BASE") >> 32), "has base bits 63:32 set"),
    _each("guest.bases.high", "27.3.1.2", ("SS", "DS", "ES"), ("BASE", "AR_BYTES"),
          lambda v, c, s: _usable(v, s) and bool(v(f"GUEST_{s}_BASE") >> 32),
          "is usable with base bits 63:32 set"),
    # --- limit fields
    _each("guest.v86.limits", "27.3.1.2", _V86_SEGMENTS, ("LIMIT",),
          lambda v, c, s: v(f"GUEST_{s}_LIMIT") != 0xFFFF,
          "has a limit other than FFFFH in virtual-8086 mode", _RFLAGS, lambda v, c: _v86(v)),
    # --- access-rights fields, virtual-8086 guest
    _each("guest.v86.access_rights", "27.3.1.2", _V86_SEGMENTS, _AR,
          lambda v, c, s: _ar(v, s) != 0xF3,
          "has access rights other than F3H in virtual-8086 mode", _RFLAGS, lambda v, c: _v86(v)),
    # --- access-rights fields, other guests
    _row("guest.cs.type", "27.3.1.2", ("GUEST_RFLAGS", "GUEST_CS_AR_BYTES", *_CONTROLS),
         lambda v, c: _v86(v) or _cs_type_ok(v, c),
         "guest CS access rights {GUEST_CS_AR_BYTES:#x}: type is not an accessed code segment "
         "(9, 11, 13, 15; 3 with 'unrestricted guest')"),
    _each("guest.ss.type", "27.3.1.2", ("SS",), _AR,
          lambda v, c, s: _usable(v, s) and _type(v, s) not in (3, 7),
          "is usable with a type other than 3 or 7 (read/write accessed data)", _RFLAGS,
          _not_v86),
    _each("guest.data.type", "27.3.1.2", _DATA_SEGMENTS, _AR,
          lambda v, c, s: _usable(v, s)
          and (not _type(v, s) & 1 or (_type(v, s) & 8 != 0 and not _type(v, s) & 2)),
          "is usable but not accessed, or is an unreadable code segment", _RFLAGS, _not_v86),
    _each("guest.segments.s", "27.3.1.2", _PROTECTED, _AR,
          lambda v, c, s: _checked(v, s) and not _ar(v, s) >> 4 & 1,
          "has S = 0 (must be a code or data segment)", _RFLAGS, _not_v86),
    _row("guest.cs.dpl", "27.3.1.2", ("GUEST_RFLAGS", "GUEST_CS_AR_BYTES", "GUEST_SS_AR_BYTES"),
         lambda v, c: _v86(v) or _cs_dpl_ok(v, c),
         "guest CS DPL (access rights {GUEST_CS_AR_BYTES:#x}) does not fit its type and SS DPL "
         "(access rights {GUEST_SS_AR_BYTES:#x})"),
    _row("guest.ss.dpl", "27.3.1.2",
         ("GUEST_RFLAGS", *_CONTROLS, "GUEST_SS_SELECTOR", "GUEST_SS_AR_BYTES",
          "GUEST_CS_AR_BYTES", "GUEST_CR0"),
         lambda v, c: _v86(v) or (
             (unrestricted(v) or _dpl(v, "SS") == _rpl(v, "SS"))
             and (_dpl(v, "SS") == 0 or (_type(v, "CS") != 3 and bool(v("GUEST_CR0") & CR0_PE)))),
         "guest SS DPL (access rights {GUEST_SS_AR_BYTES:#x}) differs from its RPL (selector "
         "{GUEST_SS_SELECTOR:#x}), or is not 0 in real-address mode"),
    _each("guest.data.dpl", "27.3.1.2", _DATA_SEGMENTS, _SEL_AR,
          lambda v, c, s: _usable(v, s) and not unrestricted(v) and _type(v, s) <= 11
          and _dpl(v, s) < _rpl(v, s),
          "has DPL below its RPL (data or non-conforming code segment)", (*_RFLAGS, *_CONTROLS),
          _not_v86),
    _each("guest.segments.present", "27.3.1.2", _PROTECTED, _AR,
          lambda v, c, s: _checked(v, s) and not _ar(v, s) >> 7 & 1, "is not present (P = 0)",
          _RFLAGS, _not_v86),
    _each("guest.segments.reserved", "27.3.1.2", _PROTECTED, _AR,
          lambda v, c, s: _checked(v, s) and bool(_ar(v, s) & _RESERVED_AR),
          "sets reserved access-rights bits (11:8 or 31:17)", _RFLAGS, _not_v86),
    _row("guest.cs.l_db", "27.3.1.2", "GUEST_RFLAGS VM_ENTRY_CONTROLS GUEST_CS_AR_BYTES",
         lambda v, c: _v86(v) or not ia32e_guest(v) or not _ar(v, "CS") >> 13 & 1
         or not _ar(v, "CS") >> 14 & 1,
         "guest CS access rights {GUEST_CS_AR_BYTES:#x} set both L and D/B in an IA-32e mode "
         "guest"),
    _each("guest.segments.granularity", "27.3.1.2", _PROTECTED, _LIMIT_AR,
          lambda v, c, s: _checked(v, s) and not granularity_ok(v(f"GUEST_{s}_LIMIT"), _ar(v, s)),
          "has a limit that does not match its granularity bit G", _RFLAGS, _not_v86),
    # --- TR and LDTR
    *_system_rows("TR", (3, 11), "has a type other than a busy TSS (11; 3 outside IA-32e mode)",
                  None),
    _each("guest.tr.unusable", "27.3.1.2", ("TR",), _AR,
          lambda v, c, s: not _usable(v, s), "is marked unusable (access rights bit 16)"),
    *_system_rows("LDTR", (2,), "is usable with a type other than 2 (LDT)", _ldtr_usable),
    # --- 27.3.1.3 GDTR and IDTR
    _row("guest.gdtr_idtr.canonical", "27.3.1.3", "GUEST_GDTR_BASE GUEST_IDTR_BASE",
         lambda v, c: canonical(v("GUEST_GDTR_BASE"), c) and canonical(v("GUEST_IDTR_BASE"), c),
         "guest GDTR base {GUEST_GDTR_BASE:#x} or IDTR base {GUEST_IDTR_BASE:#x} is not "
         "canonical"),
    _row("guest.gdtr_idtr.limit", "27.3.1.3", "GUEST_GDTR_LIMIT GUEST_IDTR_LIMIT",
         lambda v, c: v("GUEST_GDTR_LIMIT") >> 16 == 0 and v("GUEST_IDTR_LIMIT") >> 16 == 0,
         "guest GDTR limit {GUEST_GDTR_LIMIT:#x} or IDTR limit {GUEST_IDTR_LIMIT:#x} sets bits "
         "31:16"),
)  # fmt: skip

_unused: tuple[Explain, ...] = ()
