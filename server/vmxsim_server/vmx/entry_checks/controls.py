"""Checks on the VM-execution, VM-exit and VM-entry control fields (SDM 27.2.1); a failure is
VMfailValid(7). Rows follow the order of 27.2.1.1, 27.2.1.2 and 27.2.1.3."""

from __future__ import annotations

from ..capabilities import Capabilities
from .bits import (
    CR0_PE,
    ENTRY_DEACTIVATE_DUAL_MONITOR,
    ENTRY_LOAD_RTIT_CTL,
    ENTRY_TO_SMM,
    EXIT_ACK_INTERRUPT_ON_EXIT,
    EXIT_CLEAR_RTIT_CTL,
    EXIT_SAVE_PREEMPTION_TIMER,
    PIN_EXTERNAL_INTERRUPT_EXITING,
    PIN_NMI_EXITING,
    PIN_POSTED_INTERRUPTS,
    PIN_PREEMPTION_TIMER,
    PIN_VIRTUAL_NMIS,
    PROC_MONITOR_TRAP_FLAG,
    PROC_NMI_WINDOW_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    PROC_USE_TPR_SHADOW,
    SEC_APIC_REGISTER_VIRTUALIZATION,
    SEC_ENABLE_EPT,
    SEC_ENABLE_PML,
    SEC_ENABLE_VM_FUNCTIONS,
    SEC_ENABLE_VPID,
    SEC_EPT_VIOLATION_VE,
    SEC_MODE_BASED_EPT_EXECUTE,
    SEC_PT_USES_GUEST_PHYSICAL,
    SEC_SUB_PAGE_WRITE_PERMISSIONS,
    SEC_UNRESTRICTED_GUEST,
    SEC_VIRTUAL_INTERRUPT_DELIVERY,
    SEC_VIRTUALIZE_APIC_ACCESSES,
    SEC_VIRTUALIZE_X2APIC_MODE,
    SEC_VMCS_SHADOWING,
    TER_ENABLE_HLAT,
    TER_EPT_PAGING_WRITE_CONTROL,
    TER_GUEST_PAGING_VERIFICATION,
    TER_IPI_VIRTUALIZATION,
    U64,
    entry_controls,
    exit2,
    exit_controls,
    page_ok,
    physical_ok,
    pin,
    proc,
    respects,
    rows_for,
    secondary,
    tertiary,
)
from .table import MEMORY_PREFIX, Stage, Values

_row = rows_for(Stage.CONTROL)

# EPTP (SDM 25.6.11) and IA32_VMX_EPT_VPID_CAP (SDM A.10) bits
_EPT_CAP_WALK4, _EPT_CAP_WALK5 = 1 << 6, 1 << 7
_EPT_CAP_UC, _EPT_CAP_WB, _EPT_CAP_AD = 1 << 8, 1 << 14, 1 << 21
_EPTP_AD = 1 << 6

# VM-entry interruption-information types (SDM table 25-17)
NMI, HARDWARE_EXCEPTION, OTHER_EVENT = 2, 3, 7
EXTERNAL_INTERRUPT, SOFTWARE_INTERRUPT, PRIVILEGED_SOFTWARE_EXCEPTION = 0, 4, 5
SOFTWARE_EXCEPTION = 6
_ERROR_CODE_VECTORS = frozenset((8, 10, 11, 12, 13, 14, 17))  # #DF #TS #NP #SS #GP #PF #AC
_CP_VECTOR = 21  # #CP delivers an error code where CET is supported


def _eptp_memory_type_ok(eptp: int, c: Capabilities) -> bool:
    kind = eptp & 7
    return (kind == 0 and bool(c.ept_vpid_cap & _EPT_CAP_UC)) or (
        kind == 6 and bool(c.ept_vpid_cap & _EPT_CAP_WB)
    )


def _eptp_walk_ok(eptp: int, c: Capabilities) -> bool:
    levels = (eptp >> 3 & 7) + 1
    return (levels == 4 and bool(c.ept_vpid_cap & _EPT_CAP_WALK4)) or (
        levels == 5 and bool(c.ept_vpid_cap & _EPT_CAP_WALK5)
    )


def _ept(v: Values) -> bool:
    return bool(secondary(v) & SEC_ENABLE_EPT)


def _event(v: Values) -> int:
    """The VM-entry interruption information when its valid bit is set, else 0."""
    info = v("VM_ENTRY_INTR_INFO_FIELD")
    return info if info >> 31 else 0


def _event_type(info: int) -> int:
    return info >> 8 & 7


def _error_code_expected(v: Values, c: Capabilities) -> bool:
    """Whether 'deliver error code' must be 1 for the injected event (SDM 27.2.1.3)."""
    info = _event(v)
    if _event_type(info) != HARDWARE_EXCEPTION:
        return False
    if secondary(v) & SEC_UNRESTRICTED_GUEST and not v("GUEST_CR0") & CR0_PE:
        return False
    vectors = _ERROR_CODE_VECTORS | ({_CP_VECTOR} if c.offers("entry_load_cet") else set())
    return info & 0xFF in vectors


def _error_code_ok(v: Values, c: Capabilities) -> bool:
    info = _event(v)
    if not info:
        return True
    deliver = bool(info >> 11 & 1)
    expected = _error_code_expected(v, c)
    if c.hardware_exception_error_code_free and _event_type(info) == HARDWARE_EXCEPTION:
        # IA32_VMX_BASIC bit 56: any hardware exception may or may not deliver an error code,
        # except in real mode of an unrestricted guest (SDM A.1, 27.2.1.3).
        expected_off = bool(secondary(v) & SEC_UNRESTRICTED_GUEST) and not v("GUEST_CR0") & CR0_PE
        return not (deliver and expected_off)
    return deliver == expected


def _vector_ok(info: int, c: Capabilities) -> bool:
    kind, vector = _event_type(info), info & 0xFF
    if kind == NMI:
        return vector == 2
    if kind == HARDWARE_EXCEPTION:
        return vector <= 31
    if kind == OTHER_EVENT:
        return vector == 0
    return True


def _type_ok(info: int, c: Capabilities) -> bool:
    kind = _event_type(info)
    if kind == 1:
        return False
    return kind != OTHER_EVENT or bool(c.proc_allowed1 & PROC_MONITOR_TRAP_FLAG)


def _length_ok(v: Values, c: Capabilities) -> bool:
    # Bochs (cpu/vmx.cc VMenterLoadCheckVmControls) refuses length 0 whatever IA32_VMX_MISC
    # says; the SDM allows it when bit 30 is set, as KVM's nested_check_vm_entry_controls does.
    info = _event(v)
    if _event_type(info) not in (SOFTWARE_INTERRUPT, PRIVILEGED_SOFTWARE_EXCEPTION,
                                 SOFTWARE_EXCEPTION):  # fmt: skip
        return True
    length = v("VM_ENTRY_INSTRUCTION_LEN")
    return length <= 15 and (length > 0 or c.zero_length_injection)


def _msr_area_ok(address: int, count: int, c: Capabilities) -> bool:
    """An MSR area: 16-byte aligned, first and last byte within MAXPHYADDR (27.2.1.2)."""
    if count == 0:
        return True
    return address & 0xF == 0 and physical_ok(address + count * 16 - 1, c)


def _vtpr_ok(v: Values, c: Capabilities) -> bool:
    if not proc(v) & PROC_USE_TPR_SHADOW or secondary(v) & (
        SEC_VIRTUAL_INTERRUPT_DELIVERY | SEC_VIRTUALIZE_APIC_ACCESSES
    ):
        return True
    page = v("VIRTUAL_APIC_PAGE_ADDR")
    if not page_ok(page, c):
        return True  # control.tpr_shadow.virtual_apic_page reports it
    vtpr = v(f"{MEMORY_PREFIX}{page + 0x80:x}") & 0xFF
    return v("TPR_THRESHOLD") & 0xF <= vtpr >> 4


_HLATP_RESERVED = 0xFE7  # bits 11:5 and 2:0; bits 4:3 are PWT/PCD (SDM 25.6.23)

CONTROL_CHECKS = (
    # --- 27.2.1.1 VM-execution control fields
    _row("control.pin.allowed", "27.2.1.1", "PIN_BASED_VM_EXEC_CONTROL",
         lambda v, c: respects(pin(v), c.pin_must_be1, c.pin_allowed1),
         "pin-based controls {PIN_BASED_VM_EXEC_CONTROL:#x} outside IA32_VMX_(TRUE_)PINBASED_CTLS"),
    _row("control.proc.allowed", "27.2.1.1", "CPU_BASED_VM_EXEC_CONTROL",
         lambda v, c: respects(proc(v), c.proc_must_be1, c.proc_allowed1),
         "primary processor-based controls {CPU_BASED_VM_EXEC_CONTROL:#x} outside "
         "IA32_VMX_(TRUE_)PROCBASED_CTLS"),
    _row("control.secondary.allowed", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: respects(secondary(v), 0, c.secondary_allowed1),
         "secondary controls {SECONDARY_VM_EXEC_CONTROL:#x} outside IA32_VMX_PROCBASED_CTLS2"),
    _row("control.tertiary.allowed", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL TERTIARY_VM_EXEC_CONTROL",
         lambda v, c: respects(tertiary(v), 0, c.tertiary_allowed1),
         "tertiary controls {TERTIARY_VM_EXEC_CONTROL:#x} outside IA32_VMX_PROCBASED_CTLS3"),
    _row("control.cr3_target_count", "27.2.1.1", "CR3_TARGET_COUNT",
         lambda v, c: v("CR3_TARGET_COUNT") <= c.cr3_target_count,
         "CR3-target count {CR3_TARGET_COUNT} exceeds IA32_VMX_MISC[24:16]"),
    _row("control.io_bitmaps", "27.2.1.1", "CPU_BASED_VM_EXEC_CONTROL IO_BITMAP_A IO_BITMAP_B",
         lambda v, c: not proc(v) & PROC_USE_IO_BITMAPS
         or (page_ok(v("IO_BITMAP_A"), c) and page_ok(v("IO_BITMAP_B"), c)),
         "I/O-bitmap addresses {IO_BITMAP_A:#x}, {IO_BITMAP_B:#x} not 4 KiB aligned within "
         "MAXPHYADDR"),
    _row("control.msr_bitmap", "27.2.1.1", "CPU_BASED_VM_EXEC_CONTROL MSR_BITMAP",
         lambda v, c: not proc(v) & PROC_USE_MSR_BITMAPS or page_ok(v("MSR_BITMAP"), c),
         "MSR-bitmap address {MSR_BITMAP:#x} not 4 KiB aligned within MAXPHYADDR"),
    _row("control.tpr_shadow.virtual_apic_page", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL VIRTUAL_APIC_PAGE_ADDR",
         lambda v, c: not proc(v) & PROC_USE_TPR_SHADOW or page_ok(v("VIRTUAL_APIC_PAGE_ADDR"), c),
         "virtual-APIC address {VIRTUAL_APIC_PAGE_ADDR:#x} not 4 KiB aligned within MAXPHYADDR"),
    _row("control.tpr_shadow.threshold", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL TPR_THRESHOLD",
         lambda v, c: not proc(v) & PROC_USE_TPR_SHADOW
         or bool(secondary(v) & SEC_VIRTUAL_INTERRUPT_DELIVERY)
         or v("TPR_THRESHOLD") >> 4 == 0,
         "TPR threshold {TPR_THRESHOLD:#x} sets bits 31:4 (use TPR shadow, no virtual-interrupt "
         "delivery)"),
    _row("control.tpr_shadow.vtpr", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL TPR_THRESHOLD "
         "VIRTUAL_APIC_PAGE_ADDR", _vtpr_ok,
         "TPR threshold {TPR_THRESHOLD:#x} bits 3:0 exceed VTPR bits 7:4 (virtual-APIC page "
         "{VIRTUAL_APIC_PAGE_ADDR:#x} byte 80H)", needs_memory=True),
    _row("control.tpr_shadow.required", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: bool(proc(v) & PROC_USE_TPR_SHADOW) or not secondary(v) & (
             SEC_VIRTUALIZE_X2APIC_MODE | SEC_APIC_REGISTER_VIRTUALIZATION
             | SEC_VIRTUAL_INTERRUPT_DELIVERY),
         "secondary controls {SECONDARY_VM_EXEC_CONTROL:#x} use x2APIC virtualization, APIC-"
         "register virtualization or virtual-interrupt delivery without 'use TPR shadow'"),
    _row("control.virtual_nmis", "27.2.1.1", "PIN_BASED_VM_EXEC_CONTROL",
         lambda v, c: bool(pin(v) & PIN_NMI_EXITING) or not pin(v) & PIN_VIRTUAL_NMIS,
         "'virtual NMIs' without 'NMI exiting' (pin-based {PIN_BASED_VM_EXEC_CONTROL:#x})"),
    _row("control.nmi_window", "27.2.1.1", "PIN_BASED_VM_EXEC_CONTROL CPU_BASED_VM_EXEC_CONTROL",
         lambda v, c: bool(pin(v) & PIN_VIRTUAL_NMIS) or not proc(v) & PROC_NMI_WINDOW_EXITING,
         "'NMI-window exiting' without 'virtual NMIs' (primary {CPU_BASED_VM_EXEC_CONTROL:#x})"),
    _row("control.apic_access_page", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL APIC_ACCESS_ADDR",
         lambda v, c: not secondary(v) & SEC_VIRTUALIZE_APIC_ACCESSES
         or page_ok(v("APIC_ACCESS_ADDR"), c),
         "APIC-access address {APIC_ACCESS_ADDR:#x} not 4 KiB aligned within MAXPHYADDR"),
    _row("control.x2apic_mode", "27.2.1.1", "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not secondary(v) & SEC_VIRTUALIZE_X2APIC_MODE
         or not secondary(v) & SEC_VIRTUALIZE_APIC_ACCESSES,
         "'virtualize x2APIC mode' with 'virtualize APIC accesses' (secondary "
         "{SECONDARY_VM_EXEC_CONTROL:#x})"),
    _row("control.virtual_interrupt_delivery", "27.2.1.1",
         "PIN_BASED_VM_EXEC_CONTROL CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not secondary(v) & SEC_VIRTUAL_INTERRUPT_DELIVERY
         or bool(pin(v) & PIN_EXTERNAL_INTERRUPT_EXITING),
         "'virtual-interrupt delivery' without 'external-interrupt exiting' (pin-based "
         "{PIN_BASED_VM_EXEC_CONTROL:#x})"),
    _row("control.posted_interrupts.controls", "27.2.1.1",
         "PIN_BASED_VM_EXEC_CONTROL CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL "
         "VM_EXIT_CONTROLS",
         lambda v, c: not pin(v) & PIN_POSTED_INTERRUPTS
         or (bool(secondary(v) & SEC_VIRTUAL_INTERRUPT_DELIVERY)
             and bool(exit_controls(v) & EXIT_ACK_INTERRUPT_ON_EXIT)),
         "'process posted interrupts' needs 'virtual-interrupt delivery' and 'acknowledge "
         "interrupt on exit' (exit controls {VM_EXIT_CONTROLS:#x})"),
    _row("control.posted_interrupts.vector", "27.2.1.1",
         "PIN_BASED_VM_EXEC_CONTROL POSTED_INTR_NV",
         lambda v, c: not pin(v) & PIN_POSTED_INTERRUPTS or v("POSTED_INTR_NV") >> 8 == 0,
         "posted-interrupt notification vector {POSTED_INTR_NV:#x} is above 255"),
    _row("control.posted_interrupts.descriptor", "27.2.1.1",
         "PIN_BASED_VM_EXEC_CONTROL POSTED_INTR_DESC_ADDR",
         lambda v, c: not pin(v) & PIN_POSTED_INTERRUPTS
         or (v("POSTED_INTR_DESC_ADDR") & 0x3F == 0
             and physical_ok(v("POSTED_INTR_DESC_ADDR"), c)),
         "posted-interrupt descriptor address {POSTED_INTR_DESC_ADDR:#x} not 64-byte aligned "
         "within MAXPHYADDR"),
    _row("control.vpid", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VIRTUAL_PROCESSOR_ID",
         lambda v, c: not secondary(v) & SEC_ENABLE_VPID or v("VIRTUAL_PROCESSOR_ID") != 0,
         "'enable VPID' with VPID 0000H"),
    _row("control.eptp.memory_type", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL EPT_POINTER",
         lambda v, c: not _ept(v) or _eptp_memory_type_ok(v("EPT_POINTER"), c),
         "EPTP {EPT_POINTER:#x} memory type (bits 2:0) not offered by IA32_VMX_EPT_VPID_CAP"),
    _row("control.eptp.walk_length", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL EPT_POINTER",
         lambda v, c: not _ept(v) or _eptp_walk_ok(v("EPT_POINTER"), c),
         "EPTP {EPT_POINTER:#x} page-walk length (bits 5:3) not offered by "
         "IA32_VMX_EPT_VPID_CAP"),
    _row("control.eptp.accessed_dirty", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL EPT_POINTER",
         lambda v, c: not _ept(v) or not v("EPT_POINTER") & _EPTP_AD
         or bool(c.ept_vpid_cap & _EPT_CAP_AD),
         "EPTP {EPT_POINTER:#x} enables accessed/dirty flags (bit 6) without "
         "IA32_VMX_EPT_VPID_CAP bit 21"),
    # Bit 7 (supervisor shadow-stack control) is treated as reserved, as KVM's
    # nested_vmx_check_eptp does: vmxsim offers no supervisor shadow stacks in EPT.
    _row("control.eptp.reserved", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL EPT_POINTER",
         lambda v, c: not _ept(v)
         or (v("EPT_POINTER") & 0xF80 == 0 and physical_ok(v("EPT_POINTER"), c)),
         "EPTP {EPT_POINTER:#x} sets reserved bits 11:7 or bits beyond MAXPHYADDR"),
    _row("control.pml.ept", "27.2.1.1", "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not secondary(v) & SEC_ENABLE_PML or _ept(v),
         "'enable PML' without 'enable EPT' (secondary {SECONDARY_VM_EXEC_CONTROL:#x})"),
    _row("control.pml.address", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL PML_ADDRESS",
         lambda v, c: not secondary(v) & SEC_ENABLE_PML or page_ok(v("PML_ADDRESS"), c),
         "PML address {PML_ADDRESS:#x} not 4 KiB aligned within MAXPHYADDR"),
    _row("control.unrestricted_guest.ept", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not secondary(v) & SEC_UNRESTRICTED_GUEST or _ept(v),
         "'unrestricted guest' without 'enable EPT' (secondary {SECONDARY_VM_EXEC_CONTROL:#x})"),
    _row("control.mode_based_ept.ept", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not secondary(v) & SEC_MODE_BASED_EPT_EXECUTE or _ept(v),
         "'mode-based execute control for EPT' without 'enable EPT' (secondary "
         "{SECONDARY_VM_EXEC_CONTROL:#x})"),
    _row("control.spp.ept", "27.2.1.1", "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not secondary(v) & SEC_SUB_PAGE_WRITE_PERMISSIONS or _ept(v),
         "'sub-page write permissions for EPT' without 'enable EPT'"),
    _row("control.spp.pointer", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL SPPTP",
         lambda v, c: not secondary(v) & SEC_SUB_PAGE_WRITE_PERMISSIONS or page_ok(v("SPPTP"), c),
         "SPPTP {SPPTP:#x} not 4 KiB aligned within MAXPHYADDR"),
    _row("control.pt_guest_physical", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VM_EXIT_CONTROLS VM_ENTRY_CONTROLS",
         lambda v, c: not secondary(v) & SEC_PT_USES_GUEST_PHYSICAL
         or (_ept(v) and bool(entry_controls(v) & ENTRY_LOAD_RTIT_CTL)
             and bool(exit_controls(v) & EXIT_CLEAR_RTIT_CTL)),
         "'Intel PT uses guest physical addresses' needs 'enable EPT', 'load IA32_RTIT_CTL' and "
         "'clear IA32_RTIT_CTL'"),
    _row("control.vmfunc.allowed", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VM_FUNCTION_CONTROL",
         lambda v, c: not secondary(v) & SEC_ENABLE_VM_FUNCTIONS
         or v("VM_FUNCTION_CONTROL") & ~c.vmfunc & U64 == 0,
         "VM-function controls {VM_FUNCTION_CONTROL:#x} outside IA32_VMX_VMFUNC"),
    _row("control.vmfunc.eptp_switching", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VM_FUNCTION_CONTROL "
         "EPTP_LIST_ADDRESS",
         lambda v, c: not secondary(v) & SEC_ENABLE_VM_FUNCTIONS
         or not v("VM_FUNCTION_CONTROL") & 1
         or (_ept(v) and page_ok(v("EPTP_LIST_ADDRESS"), c)),
         "EPTP switching needs 'enable EPT' and a 4 KiB aligned EPTP-list address within "
         "MAXPHYADDR ({EPTP_LIST_ADDRESS:#x})"),
    _row("control.vmcs_shadowing.bitmaps", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VMREAD_BITMAP VMWRITE_BITMAP",
         lambda v, c: not secondary(v) & SEC_VMCS_SHADOWING
         or (page_ok(v("VMREAD_BITMAP"), c) and page_ok(v("VMWRITE_BITMAP"), c)),
         "VMREAD/VMWRITE bitmap addresses {VMREAD_BITMAP:#x}, {VMWRITE_BITMAP:#x} not 4 KiB "
         "aligned within MAXPHYADDR"),
    _row("control.ept_violation_ve", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VE_INFORMATION_ADDRESS",
         lambda v, c: not secondary(v) & SEC_EPT_VIOLATION_VE
         or page_ok(v("VE_INFORMATION_ADDRESS"), c),
         "virtualization-exception information address {VE_INFORMATION_ADDRESS:#x} not 4 KiB "
         "aligned within MAXPHYADDR"),
    _row("control.hlat.ept", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL TERTIARY_VM_EXEC_CONTROL",
         lambda v, c: not tertiary(v) & TER_ENABLE_HLAT or _ept(v),
         "'enable HLAT' without 'enable EPT'"),
    _row("control.hlat.pointer", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL TERTIARY_VM_EXEC_CONTROL HLATP",
         lambda v, c: not tertiary(v) & TER_ENABLE_HLAT
         or (v("HLATP") & _HLATP_RESERVED == 0 and physical_ok(v("HLATP"), c)),
         "HLATP {HLATP:#x} sets reserved bits 11:5, 2:0 or bits beyond MAXPHYADDR"),
    _row("control.ept_paging_write.ept", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL TERTIARY_VM_EXEC_CONTROL",
         lambda v, c: not tertiary(v) & (TER_EPT_PAGING_WRITE_CONTROL
                                         | TER_GUEST_PAGING_VERIFICATION) or _ept(v),
         "'EPT paging-write control' or 'guest-paging verification' without 'enable EPT'"),
    _row("control.ipi_virtualization", "27.2.1.1",
         "CPU_BASED_VM_EXEC_CONTROL TERTIARY_VM_EXEC_CONTROL PID_POINTER_TABLE",
         lambda v, c: not tertiary(v) & TER_IPI_VIRTUALIZATION
         or (v("PID_POINTER_TABLE") & 7 == 0 and physical_ok(v("PID_POINTER_TABLE"), c)),
         "PID-pointer table address {PID_POINTER_TABLE:#x} not 8-byte aligned within "
         "MAXPHYADDR"),
    # --- 27.2.1.2 VM-exit control fields
    _row("control.exit.allowed", "27.2.1.2", "VM_EXIT_CONTROLS",
         lambda v, c: respects(exit_controls(v), c.exit_must_be1, c.exit_allowed1),
         "VM-exit controls {VM_EXIT_CONTROLS:#x} outside IA32_VMX_(TRUE_)EXIT_CTLS"),
    _row("control.exit2.allowed", "27.2.1.2", "VM_EXIT_CONTROLS SECONDARY_VM_EXIT_CONTROLS",
         lambda v, c: respects(exit2(v), 0, c.exit2_allowed1),
         "secondary VM-exit controls {SECONDARY_VM_EXIT_CONTROLS:#x} outside "
         "IA32_VMX_EXIT_CTLS2"),
    _row("control.exit.preemption_timer", "27.2.1.2",
         "PIN_BASED_VM_EXEC_CONTROL VM_EXIT_CONTROLS",
         lambda v, c: bool(pin(v) & PIN_PREEMPTION_TIMER)
         or not exit_controls(v) & EXIT_SAVE_PREEMPTION_TIMER,
         "'save VMX-preemption timer value' without 'activate VMX-preemption timer'"),
    _row("control.exit.msr_store", "27.2.1.2", "VM_EXIT_MSR_STORE_COUNT VM_EXIT_MSR_STORE_ADDR",
         lambda v, c: _msr_area_ok(v("VM_EXIT_MSR_STORE_ADDR"), v("VM_EXIT_MSR_STORE_COUNT"), c),
         "VM-exit MSR-store area {VM_EXIT_MSR_STORE_ADDR:#x} ({VM_EXIT_MSR_STORE_COUNT} entries) "
         "not 16-byte aligned within MAXPHYADDR"),
    _row("control.exit.msr_load", "27.2.1.2", "VM_EXIT_MSR_LOAD_COUNT VM_EXIT_MSR_LOAD_ADDR",
         lambda v, c: _msr_area_ok(v("VM_EXIT_MSR_LOAD_ADDR"), v("VM_EXIT_MSR_LOAD_COUNT"), c),
         "VM-exit MSR-load area {VM_EXIT_MSR_LOAD_ADDR:#x} ({VM_EXIT_MSR_LOAD_COUNT} entries) "
         "not 16-byte aligned within MAXPHYADDR"),
    # --- 27.2.1.3 VM-entry control fields
    _row("control.entry.allowed", "27.2.1.3", "VM_ENTRY_CONTROLS",
         lambda v, c: respects(entry_controls(v), c.entry_must_be1, c.entry_allowed1),
         "VM-entry controls {VM_ENTRY_CONTROLS:#x} outside IA32_VMX_(TRUE_)ENTRY_CTLS"),
    _row("control.entry.event.type", "27.2.1.3", "VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: not _event(v) or _type_ok(_event(v), c),
         "injected event {VM_ENTRY_INTR_INFO_FIELD:#x} has a reserved interruption type (1, or 7 "
         "without monitor-trap-flag support)"),
    _row("control.entry.event.vector", "27.2.1.3", "VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: not _event(v) or _vector_ok(_event(v), c),
         "injected event {VM_ENTRY_INTR_INFO_FIELD:#x}: vector does not fit its type (NMI 2, "
         "hardware exception 0-31, other event 0)"),
    _row("control.entry.event.deliver_error_code", "27.2.1.3",
         "VM_ENTRY_INTR_INFO_FIELD CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL GUEST_CR0",
         _error_code_ok,
         "injected event {VM_ENTRY_INTR_INFO_FIELD:#x}: 'deliver error code' (bit 11) does not "
         "match the vector and mode"),
    _row("control.entry.event.reserved", "27.2.1.3", "VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: _event(v) & 0x7FFF_F000 == 0,
         "injected event {VM_ENTRY_INTR_INFO_FIELD:#x} sets reserved bits 30:12"),
    _row("control.entry.event.error_code", "27.2.1.3",
         "VM_ENTRY_INTR_INFO_FIELD VM_ENTRY_EXCEPTION_ERROR_CODE",
         lambda v, c: not _event(v) >> 11 & 1 or v("VM_ENTRY_EXCEPTION_ERROR_CODE") >> 16 == 0,
         "VM-entry exception error code {VM_ENTRY_EXCEPTION_ERROR_CODE:#x} sets bits 31:16"),
    _row("control.entry.event.instruction_length", "27.2.1.3",
         "VM_ENTRY_INTR_INFO_FIELD VM_ENTRY_INSTRUCTION_LEN", _length_ok,
         "VM-entry instruction length {VM_ENTRY_INSTRUCTION_LEN} for a software event is not "
         "1-15 (0 only with IA32_VMX_MISC bit 30)"),
    _row("control.entry.msr_load", "27.2.1.3", "VM_ENTRY_MSR_LOAD_COUNT VM_ENTRY_MSR_LOAD_ADDR",
         lambda v, c: _msr_area_ok(v("VM_ENTRY_MSR_LOAD_ADDR"), v("VM_ENTRY_MSR_LOAD_COUNT"), c),
         "VM-entry MSR-load area {VM_ENTRY_MSR_LOAD_ADDR:#x} ({VM_ENTRY_MSR_LOAD_COUNT} entries) "
         "not 16-byte aligned within MAXPHYADDR"),
    # vmxsim never runs in SMM, so both controls must be 0 (27.2.1.3, 34.15.1).
    _row("control.entry.smm", "27.2.1.3", "VM_ENTRY_CONTROLS",
         lambda v, c: not entry_controls(v) & (ENTRY_TO_SMM | ENTRY_DEACTIVATE_DUAL_MONITOR),
         "'entry to SMM' or 'deactivate dual-monitor treatment' set outside SMM (VM-entry "
         "controls {VM_ENTRY_CONTROLS:#x})"),
)  # fmt: skip
