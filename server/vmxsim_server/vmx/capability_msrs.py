"""A vCPU's capabilities as IA32_VMX_* MSR values: applied on top of others, checked the way a
real processor reports them, and listed as ``rdmsr`` would read them (SDM Vol. 3D appendix A).

- ``with_msrs(base, msrs)``: ``base`` with MSR values (index -> value, as ``rdmsr`` prints them;
  also ``IA32_FEATURE_CONTROL`` and the ``MAXPHYADDR`` pseudo-index of ``capability_file``)
  applied on top through ``Capabilities.from_msrs``. A control MSR and its TRUE_* twin share
  one allowed-1 set in the model (and on a processor: both report the settings VM entry allows),
  so giving one of them moves the other's bits 63:32 with it.
- ``check_msrs(caps)``: values no processor can report are an ``InvalidArgument`` naming the MSR:
  a control that must be 1 (allowed-0 bit X set) but may not be 1 (allowed-1 bit 32+X clear,
  A.3-A.5); a default1 control (A.2) that the plain control MSR reports as 0 (those bits "are
  always read as 1"); a TRUE_* MSR that differs from its plain MSR outside the default1 class
  (A.3.1: the TRUE MSR reports the same for every other control); a CR0/CR4 bit fixed to 1 by
  FIXED0 but to 0 by FIXED1 (A.7, A.8). ``with_msrs`` also rejects, in the values given,
  IA32_VMX_BASIC bit 31 set or a VMCS region over 4096 bytes (A.1), PROCBASED_CTLS2 bits 31:0
  set (the model has no must-be-1 secondary control) and TRUE_* twins whose bits 63:32 differ.
- ``readable_msrs(caps)``: the MSRs that exist on such a processor (A.1: TRUE_* only with
  IA32_VMX_BASIC bit 55; PROCBASED_CTLS2 with the 1-setting of "activate secondary controls";
  EPT_VPID_CAP with EPT or VPID; VMFUNC with "enable VM functions"; PROCBASED_CTLS3 and
  EXIT_CTLS2 with the controls that activate them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields

from .capabilities import MSR_NAMES, Capabilities
from .capability_file import FEATURE_CONTROL, MAXPHYADDR
from .exceptions import InvalidArgument

__all__ = ["DEFAULT1_CLASS", "check_msrs", "readable_msrs", "with_msrs"]

_U32 = 0xFFFF_FFFF
_TRUE_OF = {0x48D: 0x481, 0x48E: 0x482, 0x48F: 0x483, 0x490: 0x484}
"""Each TRUE_* control MSR and its plain MSR (SDM A.3.1, A.3.2, A.4, A.5)."""
DEFAULT1_CLASS = {
    0x481: 0x0000_0016,  # pin-based: bits 1, 2, 4
    0x482: 0x0401_E172,  # primary processor-based: bits 1, 4-6, 8, 13-16, 26
    0x483: 0x0003_6DFF,  # VM-exit: bits 0-8, 10, 11, 13, 14, 16, 17
    0x484: 0x0000_11FF,  # VM-entry: bits 0-8, 12
}
"""The default1 controls of each plain control MSR (SDM A.2), which it always reads as 1."""
_CONTROLS = (0x481, 0x482, 0x483, 0x484, 0x48B)
_BASIC, _SECONDARY = 0x480, 0x48B

_EXISTS: dict[int, Callable[[Capabilities], bool]] = {
    **{index: lambda c: c.true_controls for index in _TRUE_OF},
    0x48B: lambda c: bool(c.proc_allowed1 >> 31 & 1),
    0x48C: lambda c: c.offers("ept|vpid"),
    0x491: lambda c: c.offers("vm_functions"),
    0x492: lambda c: c.offers("tertiary_controls"),
    0x493: lambda c: c.offers("secondary_exit_controls"),
}


def _fail(index: int, value: int, problem: str) -> InvalidArgument:
    return InvalidArgument(f"capabilities: {MSR_NAMES[index]} = {value:#018x}: {problem}")


def readable_msrs(caps: Capabilities) -> dict[int, int]:
    """The IA32_VMX_* MSRs a processor with these capabilities lets ``rdmsr`` read, by index."""
    return {i: v for i, v in caps.msrs().items() if i not in _EXISTS or _EXISTS[i](caps)}


def _check_given(msrs: Mapping[int, int]) -> None:
    """What the model would otherwise drop silently: an allowed-0 half it does not hold, or
    twins that disagree on the allowed-1 settings."""
    basic = msrs.get(_BASIC, 0)
    if basic >> 31 & 1:
        raise _fail(_BASIC, basic, "bit 31 is always 0 (SDM A.1)")
    if basic >> 32 & 0x1FFF > 4096:
        raise _fail(_BASIC, basic, f"a VMCS region of {basic >> 32 & 0x1FFF} bytes (at most 4096)")
    if msrs.get(_SECONDARY, 0) & _U32:  # the model has no must-be-1 secondary control
        raise _fail(_SECONDARY, msrs[_SECONDARY], "bits 31:0 (must-be-1 controls) must be 0")
    for true, plain in _TRUE_OF.items():
        if true in msrs and plain in msrs and (msrs[true] ^ msrs[plain]) >> 32:
            raise _fail(
                true, msrs[true], f"bits 63:32 differ from {MSR_NAMES[plain]}'s"
                f" {msrs[plain] >> 32:#x} (both report the allowed 1-settings)",
            )  # fmt: skip


def check_msrs(caps: Capabilities) -> None:
    """Raise ``InvalidArgument`` naming the first MSR whose value no processor can report."""
    msrs = caps.msrs()
    for index in _CONTROLS + (tuple(_TRUE_OF) if caps.true_controls else ()):
        value = msrs[index]
        impossible = value & _U32 & ~(value >> 32)
        if impossible:
            bit = impossible.bit_length() - 1
            raise _fail(
                index, value, f"control bit {bit} must be 1 (bit {bit} set) but may not be 1"
                f" (bit {bit + 32} clear)",
            )  # fmt: skip
    for plain, default1 in DEFAULT1_CLASS.items():
        missing = default1 & ~msrs[plain]
        if missing:
            raise _fail(
                plain, msrs[plain], f"default1 bits {missing:#x} read as 0 (a processor reports"
                " them as 1; clear them in the TRUE_* MSR with IA32_VMX_BASIC bit 55)",
            )  # fmt: skip
    if caps.true_controls:
        for true, plain in _TRUE_OF.items():
            other = (msrs[true] ^ msrs[plain]) & _U32 & ~DEFAULT1_CLASS[plain]
            if other:
                raise _fail(
                    true, msrs[true], f"bits {other:#x} differ from {MSR_NAMES[plain]} outside"
                    " the default1 class",
                )  # fmt: skip
    for fixed0, fixed1, register in ((0x486, 0x487, "CR0"), (0x488, 0x489, "CR4")):
        contradiction = msrs[fixed0] & ~msrs[fixed1]
        if contradiction:
            raise _fail(
                fixed0, msrs[fixed0], f"fixes {register} bits {contradiction:#x} to 1 but"
                f" {MSR_NAMES[fixed1]} = {msrs[fixed1]:#x} fixes them to 0",
            )  # fmt: skip


def with_msrs(base: Capabilities, msrs: Mapping[int, int]) -> Capabilities:
    """``base`` with these MSR values on top, checked (``check_msrs``)."""
    given = dict(msrs)
    unknown = sorted(set(given) - set(MSR_NAMES) - {FEATURE_CONTROL, MAXPHYADDR})
    if unknown:
        raise InvalidArgument(f"capabilities: MSR {unknown[0]:#x} is not an IA32_VMX_* MSR")
    for index, value in given.items():
        if not 0 <= value < 1 << 64:
            name = MSR_NAMES.get(index, "IA32_FEATURE_CONTROL" if index > 0 else "MAXPHYADDR")
            raise InvalidArgument(f"capabilities: {name} value {value:#x} does not fit 64 bits")
    extra = {
        "maxphyaddr": given.pop(MAXPHYADDR, base.maxphyaddr),
        "feature_control": given.pop(FEATURE_CONTROL, base.feature_control),
    }
    _check_given(given)
    full = base.msrs()
    for a, b in [*_TRUE_OF.items(), *((p, t) for t, p in _TRUE_OF.items())]:
        if a in given and b not in given:  # one allowed-1 set per control word
            full[b] = full[b] & _U32 | given[a] & ~_U32
    full.update(given)
    try:
        # what no MSR holds (e.g. the MSR-field bits) stays base's: the fields in which base
        # differs from its own MSRs read back
        read_back = Capabilities.from_msrs(base.msrs(), maxphyaddr=base.maxphyaddr,
                                           feature_control=base.feature_control)  # fmt: skip
        kept = {
            f.name: getattr(base, f.name)
            for f in fields(Capabilities)
            if getattr(base, f.name) != getattr(read_back, f.name)
        }
        caps = Capabilities.from_msrs(full, **{**kept, **extra})
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"capabilities: {exc}") from None
    check_msrs(caps)
    return caps
