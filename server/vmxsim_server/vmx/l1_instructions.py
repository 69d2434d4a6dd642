"""Instructions other than VMREAD/VMWRITE that an L1 hypervisor executes and an L0 may intercept.

Two tables, data from which profiles (``instructions = [...]`` rows), L0 models (which of them exit)
and the run summary (``instructions.other``, ``l0.by_cause``) are derived:

- ``OPS``: each op kind with the kind of operand it names (an MSR, a control register, a debug
  register, or none) and the cause an L0 counts its exit under (SDM Vol. 3 Appendix C basic exit
  reasons: MOV to and from CR share CR_ACCESS, reported here as ``MOV_CR``; likewise ``MOV_DR``).
  The VMX instructions themselves are ops too (``VMX_OPS``), so an L0 model prices all of them in
  one table; profiles do not list VMX ops as rows (the engine counts them from the field lists and
  the run section).
- ``MSRS``: architectural MSR names and numbers (SDM Vol. 4, "Model-Specific Registers", table
  2-2 "IA-32 Architectural MSRs"). An operand may also be a hex number (``"0xC0000080"``), which is
  normalised to the table's name when it has one, so one MSR is one key.

Invariant: every op has exactly one cause, and an operand of an op with an operand kind is
normalised by ``operand_of`` before anyone compares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "MSRS",
    "OPS",
    "VMX_OPS",
    "Op",
    "OperandKind",
    "operand_of",
]


class OperandKind(Enum):
    """What an op's ``operand`` names."""

    NONE = "none"
    MSR = "msr"
    CR = "cr"
    DR = "dr"


@dataclass(frozen=True)
class Op:
    """One instruction kind: its name, operand kind and the L0 exit cause it is counted under."""

    name: str
    operand: OperandKind
    cause: str


_O = OperandKind
OPS_TABLE = (
    # MSR access (SDM exit reasons 31/32, MSR bitmaps 25.1.3)
    Op("RDMSR", _O.MSR, "RDMSR"),
    Op("WRMSR", _O.MSR, "WRMSR"),
    # control and debug registers (exit reasons 28/29; CR0/CR4 guest/host masks, CR3-load/store
    # exiting, CR8 with the TPR shadow; MOV-DR exiting)
    Op("MOV_TO_CR", _O.CR, "MOV_CR"),
    Op("MOV_FROM_CR", _O.CR, "MOV_CR"),
    Op("MOV_TO_DR", _O.DR, "MOV_DR"),
    Op("MOV_FROM_DR", _O.DR, "MOV_DR"),
    Op("CLTS", _O.NONE, "MOV_CR"),
    Op("LMSW", _O.NONE, "MOV_CR"),
    # unconditionally exiting in VMX non-root operation (SDM 26.1.2)
    Op("CPUID", _O.NONE, "CPUID"),
    Op("XSETBV", _O.NONE, "XSETBV"),
    Op("INVD", _O.NONE, "INVD"),
    Op("GETSEC", _O.NONE, "GETSEC"),
    Op("INVEPT", _O.NONE, "INVEPT"),
    Op("INVVPID", _O.NONE, "INVVPID"),
    # conditionally exiting (primary/secondary processor-based controls, SDM 26.1.3)
    Op("RDTSC", _O.NONE, "RDTSC"),
    Op("RDTSCP", _O.NONE, "RDTSCP"),
    Op("RDPMC", _O.NONE, "RDPMC"),
    Op("WBINVD", _O.NONE, "WBINVD"),
    Op("INVLPG", _O.NONE, "INVLPG"),
    Op("INVPCID", _O.NONE, "INVPCID"),
    Op("XSAVES", _O.NONE, "XSAVES"),
    Op("XRSTORS", _O.NONE, "XRSTORS"),
    Op("HLT", _O.NONE, "HLT"),
    Op("PAUSE", _O.NONE, "PAUSE"),
    Op("LGDT", _O.NONE, "GDTR_IDTR"),
    Op("LIDT", _O.NONE, "GDTR_IDTR"),
    Op("SGDT", _O.NONE, "GDTR_IDTR"),
    Op("SIDT", _O.NONE, "GDTR_IDTR"),
    Op("LLDT", _O.NONE, "LDTR_TR"),
    Op("LTR", _O.NONE, "LDTR_TR"),
    Op("SLDT", _O.NONE, "LDTR_TR"),
    Op("STR", _O.NONE, "LDTR_TR"),
    Op("IN", _O.NONE, "IO_INSTRUCTION"),
    Op("OUT", _O.NONE, "IO_INSTRUCTION"),
    # the VMX instructions (exit reasons 18-27, SDM 26.1.2), counted by the engine
    Op("VMREAD", _O.NONE, "VMREAD"),
    Op("VMWRITE", _O.NONE, "VMWRITE"),
    Op("VMPTRLD", _O.NONE, "VMPTRLD"),
    Op("VMPTRST", _O.NONE, "VMPTRST"),
    Op("VMCLEAR", _O.NONE, "VMCLEAR"),
    Op("VMXON", _O.NONE, "VMXON"),
    Op("VMXOFF", _O.NONE, "VMXOFF"),
    Op("VMLAUNCH", _O.NONE, "VMLAUNCH"),
    Op("VMRESUME", _O.NONE, "VMRESUME"),
    Op("VMCALL", _O.NONE, "VMCALL"),
)
OPS = {op.name: op for op in OPS_TABLE}
VMX_OPS = frozenset(
    {"VMREAD", "VMWRITE", "VMPTRLD", "VMPTRST", "VMCLEAR", "VMXON", "VMXOFF", "VMLAUNCH",
     "VMRESUME"}
)  # fmt: skip
"""Ops the engine derives from a profile's field lists and run section, never listed as rows."""

# SDM Vol. 4 table 2-2 (IA-32 architectural MSRs), the ones hypervisors save, restore or probe.
MSRS = {
    "IA32_TIME_STAMP_COUNTER": 0x10,
    "IA32_PLATFORM_ID": 0x17,
    "IA32_APIC_BASE": 0x1B,
    "IA32_FEATURE_CONTROL": 0x3A,
    "IA32_TSC_ADJUST": 0x3B,
    "IA32_SPEC_CTRL": 0x48,
    "IA32_PRED_CMD": 0x49,
    "IA32_BIOS_SIGN_ID": 0x8B,
    "IA32_PMC0": 0xC1,
    "IA32_PMC1": 0xC2,
    "IA32_PMC2": 0xC3,
    "IA32_PMC3": 0xC4,
    "IA32_MPERF": 0xE7,
    "IA32_APERF": 0xE8,
    "IA32_MTRRCAP": 0xFE,
    "IA32_ARCH_CAPABILITIES": 0x10A,
    "IA32_FLUSH_CMD": 0x10B,
    "IA32_SYSENTER_CS": 0x174,
    "IA32_SYSENTER_ESP": 0x175,
    "IA32_SYSENTER_EIP": 0x176,
    "IA32_MCG_CAP": 0x179,
    "IA32_MCG_STATUS": 0x17A,
    "IA32_PERFEVTSEL0": 0x186,
    "IA32_PERFEVTSEL1": 0x187,
    "IA32_PERFEVTSEL2": 0x188,
    "IA32_PERFEVTSEL3": 0x189,
    "IA32_PERF_STATUS": 0x198,
    "IA32_PERF_CTL": 0x199,
    "IA32_MISC_ENABLE": 0x1A0,
    "IA32_DEBUGCTL": 0x1D9,
    "IA32_PAT": 0x277,
    "IA32_MTRR_DEF_TYPE": 0x2FF,
    "IA32_FIXED_CTR0": 0x309,
    "IA32_FIXED_CTR1": 0x30A,
    "IA32_FIXED_CTR2": 0x30B,
    "IA32_PERF_CAPABILITIES": 0x345,
    "IA32_FIXED_CTR_CTRL": 0x38D,
    "IA32_PERF_GLOBAL_STATUS": 0x38E,
    "IA32_PERF_GLOBAL_CTRL": 0x38F,
    "IA32_PERF_GLOBAL_OVF_CTRL": 0x390,
    "IA32_VMX_BASIC": 0x480,
    "IA32_VMX_PINBASED_CTLS": 0x481,
    "IA32_VMX_PROCBASED_CTLS": 0x482,
    "IA32_VMX_EXIT_CTLS": 0x483,
    "IA32_VMX_ENTRY_CTLS": 0x484,
    "IA32_VMX_MISC": 0x485,
    "IA32_VMX_CR0_FIXED0": 0x486,
    "IA32_VMX_CR0_FIXED1": 0x487,
    "IA32_VMX_CR4_FIXED0": 0x488,
    "IA32_VMX_CR4_FIXED1": 0x489,
    "IA32_VMX_VMCS_ENUM": 0x48A,
    "IA32_VMX_PROCBASED_CTLS2": 0x48B,
    "IA32_VMX_EPT_VPID_CAP": 0x48C,
    "IA32_VMX_TRUE_PINBASED_CTLS": 0x48D,
    "IA32_VMX_TRUE_PROCBASED_CTLS": 0x48E,
    "IA32_VMX_TRUE_EXIT_CTLS": 0x48F,
    "IA32_VMX_TRUE_ENTRY_CTLS": 0x490,
    "IA32_VMX_VMFUNC": 0x491,
    "IA32_A_PMC0": 0x4C1,
    "IA32_XSS": 0xDA0,
    "IA32_EFER": 0xC0000080,
    "IA32_STAR": 0xC0000081,
    "IA32_LSTAR": 0xC0000082,
    "IA32_CSTAR": 0xC0000083,
    "IA32_FMASK": 0xC0000084,
    "IA32_FS_BASE": 0xC0000100,
    "IA32_GS_BASE": 0xC0000101,
    "IA32_KERNEL_GS_BASE": 0xC0000102,
    "IA32_TSC_AUX": 0xC0000103,
}
_MSR_BY_NUMBER = {number: name for name, number in MSRS.items()}
_SYNONYMS = {"IA32_SF_MASK": "IA32_FMASK", "MSR_SYSCALL_MASK": "IA32_FMASK"}
_CRS = ("CR0", "CR2", "CR3", "CR4", "CR8")
_DRS = tuple(f"DR{i}" for i in range(8))


def operand_of(op: Op, operand: object) -> str | None:
    """The normalised operand of ``op`` (MSR name or ``0x...``, ``CRn``, ``DRn``), or None when
    the op takes none. Raises ``ValueError`` with a readable message for a bad operand."""
    if op.operand is OperandKind.NONE:
        if operand not in (None, ""):
            raise ValueError(f"{op.name} takes no operand (got {operand!r})")
        return None
    if not isinstance(operand, str) or not operand:
        raise ValueError(f"{op.name} needs an operand ({op.operand.value})")
    name = operand.strip().upper()
    if op.operand is OperandKind.MSR:
        name = _SYNONYMS.get(name, name)
        if name in MSRS:
            return name
        try:
            number = int(name, 16) if name.startswith("0X") else None
        except ValueError:
            number = None
        if number is None or not 0 <= number <= 0xFFFF_FFFF:
            raise ValueError(f"unknown MSR {operand!r} (an IA32_* name or a hex number 0x...)")
        return _MSR_BY_NUMBER.get(number, f"{number:#x}")
    allowed = _CRS if op.operand is OperandKind.CR else _DRS
    if name not in allowed:
        raise ValueError(f"{op.name} operand must be one of {', '.join(allowed)} (got {operand!r})")
    return name
