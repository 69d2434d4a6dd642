"""HAXM's ``dump_vmcs`` (intel/haxm core/dump_vmcs.c): one ``vmread_dump`` line per field,
``"%04x %s: %llx\\n"`` (encoding, HAXM's name, value in hex without 0x) through ``hax_log``.

The platform log adds its own prefix (``haxm_warning: ``, ``haxm_warning:``, ``haxm_warn: ``
on macOS, DebugView's ``00000047<TAB>10.163<TAB>``, NetBSD's ``[  2804,119878] ``); lines of
concurrent vCPUs may interleave, so a field line is found anywhere in its line. A dump starts
at ``VMX_PIN_CONTROLS``, the first entry of ``dump_vmcs_list``.

The name table maps HAXM's names (``setup_vmcs_name`` in dump_vmcs.c, the constants of
core/include/vmx.h) to the field table's; a name missing from it is looked up by its encoding.
"""

from __future__ import annotations

import re

from ..fields import BY_ENCODING
from .dump import CURRENT_VMCS, Dump, DumpError
from .text import unescape

__all__ = ["HAXM_NAMES", "parse"]

NAME = "haxm-dump_vmcs"

HAXM_NAMES: dict[str, str] = {
    # controls
    "VMX_PIN_CONTROLS": "PIN_BASED_VM_EXEC_CONTROL",
    "VMX_PRIMARY_PROCESSOR_CONTROLS": "CPU_BASED_VM_EXEC_CONTROL",
    "VMX_SECONDARY_PROCESSOR_CONTROLS": "SECONDARY_VM_EXEC_CONTROL",
    "VMX_EXCEPTION_BITMAP": "EXCEPTION_BITMAP",
    "VMX_PAGE_FAULT_ERROR_CODE_MASK": "PAGE_FAULT_ERROR_CODE_MASK",
    "VMX_PAGE_FAULT_ERROR_CODE_MATCH": "PAGE_FAULT_ERROR_CODE_MATCH",
    "VMX_EXIT_CONTROLS": "VM_EXIT_CONTROLS",
    "VMX_EXIT_MSR_STORE_COUNT": "VM_EXIT_MSR_STORE_COUNT",
    "VMX_EXIT_MSR_LOAD_COUNT": "VM_EXIT_MSR_LOAD_COUNT",
    "VMX_ENTRY_CONTROLS": "VM_ENTRY_CONTROLS",
    "VMX_ENTRY_MSR_LOAD_COUNT": "VM_ENTRY_MSR_LOAD_COUNT",
    "VMX_ENTRY_INTERRUPT_INFO": "VM_ENTRY_INTR_INFO_FIELD",
    "VMX_ENTRY_EXCEPTION_ERROR_CODE": "VM_ENTRY_EXCEPTION_ERROR_CODE",
    "VMX_ENTRY_INSTRUCTION_LENGTH": "VM_ENTRY_INSTRUCTION_LEN",
    "VMX_TPR_THRESHOLD": "TPR_THRESHOLD",
    "VMX_CR0_MASK": "CR0_GUEST_HOST_MASK",
    "VMX_CR4_MASK": "CR4_GUEST_HOST_MASK",
    "VMX_CR0_READ_SHADOW": "CR0_READ_SHADOW",
    "VMX_CR4_READ_SHADOW": "CR4_READ_SHADOW",
    "VMX_CR3_TARGET_COUNT": "CR3_TARGET_COUNT",
    "VMX_CR3_TARGET_VAL_BASE": "CR3_TARGET_VALUE0",
    "VMX_VPID": "VIRTUAL_PROCESSOR_ID",
    "VMX_IO_BITMAP_A": "IO_BITMAP_A",
    "VMX_IO_BITMAP_B": "IO_BITMAP_B",
    "VMX_MSR_BITMAP": "MSR_BITMAP",
    "VMX_EXIT_MSR_STORE_ADDRESS": "VM_EXIT_MSR_STORE_ADDR",
    "VMX_EXIT_MSR_LOAD_ADDRESS": "VM_EXIT_MSR_LOAD_ADDR",
    "VMX_ENTRY_MSR_LOAD_ADDRESS": "VM_ENTRY_MSR_LOAD_ADDR",
    "VMX_TSC_OFFSET": "TSC_OFFSET",
    "VMX_VAPIC_PAGE": "VIRTUAL_APIC_PAGE_ADDR",
    "VMX_APIC_ACCESS_PAGE": "APIC_ACCESS_ADDR",
    "VMX_EPTP": "EPT_POINTER",
    "VMX_PREEMPTION_TIMER": "VMX_PREEMPTION_TIMER_VALUE",
    # VM-exit information
    "VMX_INSTRUCTION_ERROR_CODE": "VM_INSTRUCTION_ERROR",
    "VM_EXIT_INFO_REASON": "VM_EXIT_REASON",
    "VM_EXIT_INFO_INTERRUPT_INFO": "VM_EXIT_INTR_INFO",
    "VM_EXIT_INFO_EXCEPTION_ERROR_CODE": "VM_EXIT_INTR_ERROR_CODE",
    "VM_EXIT_INFO_IDT_VECTORING": "IDT_VECTORING_INFO_FIELD",
    "VM_EXIT_INFO_IDT_VECTORING_ERROR_CODE": "IDT_VECTORING_ERROR_CODE",
    "VM_EXIT_INFO_INSTRUCTION_LENGTH": "VM_EXIT_INSTRUCTION_LEN",
    "VM_EXIT_INFO_INSTRUCTION_INFO": "VMX_INSTRUCTION_INFO",
    "VM_EXIT_INFO_QUALIFICATION": "EXIT_QUALIFICATION",
    "VM_EXIT_INFO_IO_ECX": "IO_RCX",
    "VM_EXIT_INFO_IO_ESI": "IO_RSI",
    "VM_EXIT_INFO_IO_EDI": "IO_RDI",
    "VM_EXIT_INFO_IO_EIP": "IO_RIP",
    "VM_EXIT_INFO_GUEST_LINEAR_ADDRESS": "GUEST_LINEAR_ADDRESS",
    "VM_EXIT_INFO_GUEST_PHYSICAL_ADDRESS": "GUEST_PHYSICAL_ADDRESS",
    # host state (HOST_* names are the field table's except these)
    "HOST_SYSENTER_CS": "HOST_IA32_SYSENTER_CS",
    "HOST_SYSENTER_ESP": "HOST_IA32_SYSENTER_ESP",
    "HOST_SYSENTER_EIP": "HOST_IA32_SYSENTER_EIP",
    # guest state (GUEST_* names are the field table's except these)
    **{f"GUEST_{seg}_AR": f"GUEST_{seg}_AR_BYTES"
       for seg in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")},
    "GUEST_VMCS_LINK_PTR": "VMCS_LINK_POINTER",
    "GUEST_DEBUGCTL": "GUEST_IA32_DEBUGCTL",
    "GUEST_PAT": "GUEST_IA32_PAT",
    "GUEST_EFER": "GUEST_IA32_EFER",
    "GUEST_PERF_GLOBAL_CTRL": "GUEST_IA32_PERF_GLOBAL_CTRL",
    **{f"GUEST_PDPTE{i}": f"GUEST_PDPTR{i}" for i in range(4)},
    "GUEST_PENDING_DBE": "GUEST_PENDING_DBG_EXCEPTIONS",
    "GUEST_INTERRUPTIBILITY": "GUEST_INTERRUPTIBILITY_INFO",
}  # fmt: skip
"""HAXM name -> field-table name, where they differ."""

FIRST = "VMX_PIN_CONTROLS"
_LINE = re.compile(r"(?<![0-9A-Za-z])([0-9a-fA-F]{4}) ([A-Z][A-Z0-9_]+): ([0-9a-fA-F]+)\b")


def _field_name(encoding: int, haxm_name: str, where: str) -> str:
    mapped = HAXM_NAMES.get(haxm_name)
    if mapped is not None:
        return mapped
    found = BY_ENCODING.get(encoding)
    if found is None:
        raise DumpError(f"{where}: {haxm_name} ({encoding:#06x}) is not a VMCS field encoding")
    return found.full_name


def parse(text: str) -> list[Dump]:
    """Every HAXM ``dump_vmcs`` in ``text``."""
    dumps: list[Dump] = []
    seen_first = False
    for number, line in enumerate(unescape(text).splitlines(), 1):
        where = f"line {number}"
        for match in _LINE.finditer(line):
            encoding, haxm_name, value = int(match[1], 16), match[2], int(match[3], 16)
            if not dumps or (haxm_name == FIRST and seen_first):
                dumps.append(Dump(NAME, number, pseudo={CURRENT_VMCS: 1}))  # read with VMREAD
                seen_first = False
            seen_first = seen_first or haxm_name == FIRST
            dumps[-1].set(_field_name(encoding, haxm_name, where), value, where)
    return dumps
