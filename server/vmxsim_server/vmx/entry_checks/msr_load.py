"""Loading MSRs from the VM-entry MSR-load area (SDM 27.4): after the guest state is checked and
loaded, each 16-byte entry (bits 31:0 MSR index, 63:32 reserved, 127:64 value) is loaded in turn.
An entry that fails makes VM entry fail with basic reason 34 and bit 31 set; the exit
qualification is the entry's number, 1 for the first (SDM 27.8).

An entry fails when (27.4): its index is IA32_FS_BASE or IA32_GS_BASE; bits 31:8 of the index are
000008H (x2APIC MSRs); the MSR can be written only in SMM (IA32_SMM_MONITOR_CTL); bits 63:32 are
not 0. KVM's ``nested_vmx_load_msr_check`` also refuses the microcode MSRs and checks the x2APIC
range only with x2APIC enabled; the SDM wins: x2APIC indexes always fail and the microcode MSRs are
not named by 27.4. Not modelled: a value WRMSR would refuse with #GP (vmxsim models no MSR's
reserved bits) and the "model-specific reasons" of 27.4. The SDM leaves a count above the
recommended maximum (512 * (IA32_VMX_MISC[27:25] + 1), A.6) undefined; vmxsim fails the first
entry beyond it, as KVM's ``nested_vmx_load_msr`` does.
"""

from __future__ import annotations

from ..capabilities import Capabilities
from .bits import rows_for
from .table import MEMORY_PREFIX, Stage, Values

_row = rows_for(Stage.MSR_LOAD)

IA32_FS_BASE, IA32_GS_BASE, IA32_SMM_MONITOR_CTL = 0xC000_0100, 0xC000_0101, 0x9B


def entry_problem(index: int, reserved: int) -> str | None:
    """Why one MSR-load entry fails (its index and bits 63:32), or None."""
    if index in (IA32_FS_BASE, IA32_GS_BASE):
        return f"loads IA32_FS_BASE/IA32_GS_BASE ({index:#x})"
    if index >> 8 == 0x8:
        return f"loads an x2APIC MSR ({index:#x})"
    if index == IA32_SMM_MONITOR_CTL:
        return "loads IA32_SMM_MONITOR_CTL, writable only in SMM"
    if reserved:
        return f"sets reserved bits 63:32 ({reserved:#x})"
    return None


def _entries(v: Values) -> tuple[int, int]:
    return v("VM_ENTRY_MSR_LOAD_ADDR"), v("VM_ENTRY_MSR_LOAD_COUNT")


def _word(v: Values, address: int) -> int:
    return v(f"{MEMORY_PREFIX}{address:x}")


def first_bad_entry(v: Values, c: Capabilities) -> tuple[int, str] | None:
    """The number (1-based) of the first failing entry and why, or None."""
    address, count = _entries(v)
    for number in range(1, count + 1):
        if number > c.max_msr_list:
            return number, f"is beyond the supported {c.max_msr_list} entries"
        word = _word(v, address + 16 * (number - 1))
        problem = entry_problem(word & 0xFFFF_FFFF, word >> 32)
        if problem:
            return number, problem
    return None


def _explain(v: Values, c: Capabilities) -> str:
    found = first_bad_entry(v, c)
    number, problem = found if found else (0, "fails")
    address, _ = _entries(v)
    return f"VM-entry MSR-load entry {number} (area {address:#x}) {problem}"


def _qualification(v: Values, c: Capabilities) -> int:
    found = first_bad_entry(v, c)
    return found[0] if found else 0


MSR_LOAD_CHECKS = (
    _row("msr_load.entry", "27.4", "VM_ENTRY_MSR_LOAD_COUNT VM_ENTRY_MSR_LOAD_ADDR",
         lambda v, c: first_bad_entry(v, c) is None, _explain,
         needs_memory=True, qualification=_qualification),
)  # fmt: skip
