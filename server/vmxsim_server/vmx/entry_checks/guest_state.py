"""Checks on guest RIP, RFLAGS and SSP (SDM 27.3.1.4), non-register state: activity and
interruptibility state, pending debug exceptions, the VMCS link pointer (27.3.1.5), and the
PDPTEs of a PAE-paging guest (27.3.1.6). A failure is a VM exit with basic reason 33 and bit 31
set; the exit qualification is 2 for the PDPTEs, 3 for an NMI injected under blocking by STI and
4 for the VMCS link pointer (SDM 27.8)."""

from __future__ import annotations

from ..capabilities import Capabilities
from .bits import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    ENTRY_LOAD_CET_STATE,
    PIN_VIRTUAL_NMIS,
    RFLAGS_IF,
    RFLAGS_TF,
    RFLAGS_VM,
    SEC_ENABLE_EPT,
    SEC_VMCS_SHADOWING,
    canonical,
    entry_controls,
    ia32e_guest,
    physical_ok,
    pin,
    rows_for,
    secondary,
)
from .controls import EXTERNAL_INTERRUPT, HARDWARE_EXCEPTION, NMI, OTHER_EVENT
from .table import MEMORY_PREFIX, Stage, Values

_row = rows_for(Stage.GUEST)

ACTIVE, HLT, SHUTDOWN, WAIT_FOR_SIPI = 0, 1, 2, 3
BLOCKING_STI, BLOCKING_MOV_SS, BLOCKING_SMI, BLOCKING_NMI = 1, 2, 4, 8
ENCLAVE_INTERRUPTION = 1 << 4
_PENDING_BS, _PENDING_ENABLED_BP, _PENDING_RTM = 1 << 14, 1 << 12, 1 << 16
_PENDING_RESERVED = ~(0xF | _PENDING_ENABLED_BP | _PENDING_BS | _PENDING_RTM) & ((1 << 64) - 1)
_DEBUGCTL_BTF = 1 << 1
INVALID_LINK = (1 << 64) - 1


def _cs_long(v: Values) -> bool:
    return ia32e_guest(v) and bool(v("GUEST_CS_AR_BYTES") >> 13 & 1)


def _event(v: Values) -> int:
    info = v("VM_ENTRY_INTR_INFO_FIELD")
    return info if info >> 31 else 0


def _injects(v: Values, kind: int) -> bool:
    info = _event(v)
    return bool(info) and info >> 8 & 7 == kind


def _interruptibility(v: Values) -> int:
    return v("GUEST_INTERRUPTIBILITY_INFO")


def _activity_injection_ok(v: Values, c: Capabilities) -> bool:
    """Which events VM entry may inject into a guest in each activity state (27.3.1.5)."""
    info, state = _event(v), v("GUEST_ACTIVITY_STATE")
    if not info or state == ACTIVE:
        return True
    kind, vector = info >> 8 & 7, info & 0xFF
    if state == HLT:
        return kind in (EXTERNAL_INTERRUPT, NMI) or (
            kind == HARDWARE_EXCEPTION and vector in (1, 18)
        ) or (kind == OTHER_EVENT and vector == 0)  # fmt: skip
    if state == SHUTDOWN:
        return kind == NMI or (kind == HARDWARE_EXCEPTION and vector == 18)
    return False  # wait-for-SIPI: no event injection


def _pending_bs_ok(v: Values, c: Capabilities) -> bool:
    """BS (bit 14) must reflect a pending single-step trap when events are blocked (27.3.1.5)."""
    if not (_interruptibility(v) & (BLOCKING_STI | BLOCKING_MOV_SS)
            or v("GUEST_ACTIVITY_STATE") == HLT):  # fmt: skip
        return True
    bs = bool(v("GUEST_PENDING_DBG_EXCEPTIONS") & _PENDING_BS)
    single_step = (
        bool(v("GUEST_RFLAGS") & RFLAGS_TF) and not v("GUEST_IA32_DEBUGCTL") & _DEBUGCTL_BTF
    )
    return bs == single_step


def _pending_rtm_ok(v: Values, c: Capabilities) -> bool:
    pending = v("GUEST_PENDING_DBG_EXCEPTIONS")
    if not pending & _PENDING_RTM:
        return True
    return (
        pending & _PENDING_ENABLED_BP != 0
        and pending & (0xF | _PENDING_BS) == 0
        and not _interruptibility(v) & BLOCKING_MOV_SS
    )


def _link(v: Values) -> int:
    return v("VMCS_LINK_POINTER")


def _link_header_ok(v: Values, c: Capabilities) -> bool:
    link = _link(v)
    if link == INVALID_LINK or not (link & 0xFFF == 0 and physical_ok(link, c)):
        return True
    header = v(f"{MEMORY_PREFIX}{link:x}") & 0xFFFF_FFFF
    shadow = bool(secondary(v) & SEC_VMCS_SHADOWING)
    return header & 0x7FFF_FFFF == c.revision_id and bool(header >> 31) == shadow


def pae_paging(v: Values) -> bool:
    """A guest with CR0.PG, CR4.PAE and not IA-32e mode uses PAE paging (27.3.1.6)."""
    return bool(v("GUEST_CR0") & CR0_PG) and bool(v("GUEST_CR4") & CR4_PAE) and not ia32e_guest(v)


def pdpte_ok(entry: int, c: Capabilities) -> bool:
    """A PDPTE is valid when not present, or present with reserved bits 2:1, 8:5 and 63:MAXPHYADDR
    clear (SDM 4.4.1)."""
    return not entry & 1 or (entry & 0x1E6 == 0 and physical_ok(entry, c))


def _pdptes_in_memory(v: Values) -> list[int]:
    table = v("GUEST_CR3") & 0xFFFF_FFE0
    return [v(f"{MEMORY_PREFIX}{table + 8 * i:x}") for i in range(4)]


_PDPTRS = tuple(f"GUEST_PDPTR{i}" for i in range(4))
_INTERRUPTIBILITY_RESERVED = ~0x1F & 0xFFFF_FFFF


GUEST_STATE_CHECKS = (
    # --- 27.3.1.4 RIP, RFLAGS and SSP
    _row("guest.rip.high", "27.3.1.4", "VM_ENTRY_CONTROLS GUEST_CS_AR_BYTES GUEST_RIP",
         lambda v, c: _cs_long(v) or v("GUEST_RIP") >> 32 == 0,
         "guest RIP {GUEST_RIP:#x} sets bits 63:32 outside 64-bit mode"),
    _row("guest.rip.canonical", "27.3.1.4", "VM_ENTRY_CONTROLS GUEST_CS_AR_BYTES GUEST_RIP",
         lambda v, c: not _cs_long(v) or canonical(v("GUEST_RIP"), c),
         "guest RIP {GUEST_RIP:#x} is not canonical in 64-bit mode"),
    _row("guest.rflags.reserved", "27.3.1.4", "GUEST_RFLAGS",
         lambda v, c: v("GUEST_RFLAGS") & 2 == 2 and v("GUEST_RFLAGS") & ~0x3F7FD7 == 0,
         "guest RFLAGS {GUEST_RFLAGS:#x} sets reserved bits (63:22, 15, 5, 3) or clears bit 1"),
    _row("guest.rflags.vm", "27.3.1.4", "VM_ENTRY_CONTROLS GUEST_CR0 GUEST_RFLAGS",
         lambda v, c: not v("GUEST_RFLAGS") & RFLAGS_VM
         or (not ia32e_guest(v) and bool(v("GUEST_CR0") & CR0_PE)),
         "guest RFLAGS {GUEST_RFLAGS:#x} sets VM in an IA-32e mode guest or with CR0.PE clear"),
    _row("guest.rflags.if_injection", "27.3.1.4", "VM_ENTRY_INTR_INFO_FIELD GUEST_RFLAGS",
         lambda v, c: not _injects(v, EXTERNAL_INTERRUPT) or bool(v("GUEST_RFLAGS") & RFLAGS_IF),
         "injecting an external interrupt with guest RFLAGS.IF = 0 (RFLAGS {GUEST_RFLAGS:#x})"),
    _row("guest.ssp", "27.3.1.4", "VM_ENTRY_CONTROLS GUEST_CS_AR_BYTES GUEST_SSP",
         lambda v, c: not entry_controls(v) & ENTRY_LOAD_CET_STATE or (
             v("GUEST_SSP") & 3 == 0
             and (canonical(v("GUEST_SSP"), c) if _cs_long(v) else v("GUEST_SSP") >> 32 == 0)),
         "guest SSP {GUEST_SSP:#x} sets bits 1:0, bits 63:32 outside 64-bit mode, or is not "
         "canonical"),
    # --- 27.3.1.5 activity state
    _row("guest.activity.range", "27.3.1.5", "GUEST_ACTIVITY_STATE",
         lambda v, c: v("GUEST_ACTIVITY_STATE") <= WAIT_FOR_SIPI,
         "guest activity state {GUEST_ACTIVITY_STATE} is not 0-3"),
    # KVM's nested_check_guest_non_reg_state accepts active, HLT and wait-for-SIPI only (its
    # IA32_VMX_MISC offers no shutdown state); vmxsim asks IA32_VMX_MISC[8:6], as the SDM says.
    _row("guest.activity.supported", "27.3.1.5", "GUEST_ACTIVITY_STATE",
         lambda v, c: not ACTIVE < v("GUEST_ACTIVITY_STATE") <= WAIT_FOR_SIPI
         or bool(c.activity_states >> (v("GUEST_ACTIVITY_STATE") - 1) & 1),
         "guest activity state {GUEST_ACTIVITY_STATE} is not offered by IA32_VMX_MISC[8:6]"),
    _row("guest.activity.hlt_dpl", "27.3.1.5", "GUEST_ACTIVITY_STATE GUEST_SS_AR_BYTES",
         lambda v, c: v("GUEST_ACTIVITY_STATE") != HLT or v("GUEST_SS_AR_BYTES") >> 5 & 3 == 0,
         "guest activity state HLT with SS DPL {GUEST_SS_AR_BYTES:#x} not 0"),
    _row("guest.activity.blocking", "27.3.1.5",
         "GUEST_ACTIVITY_STATE GUEST_INTERRUPTIBILITY_INFO",
         lambda v, c: v("GUEST_ACTIVITY_STATE") == ACTIVE
         or not _interruptibility(v) & (BLOCKING_STI | BLOCKING_MOV_SS),
         "guest activity state {GUEST_ACTIVITY_STATE} is not active with blocking by STI or MOV SS "
         "(interruptibility {GUEST_INTERRUPTIBILITY_INFO:#x})"),
    _row("guest.activity.injection", "27.3.1.5", "GUEST_ACTIVITY_STATE VM_ENTRY_INTR_INFO_FIELD",
         _activity_injection_ok,
         "injected event {VM_ENTRY_INTR_INFO_FIELD:#x} cannot be delivered in activity state "
         "{GUEST_ACTIVITY_STATE}"),
    # --- 27.3.1.5 interruptibility state
    _row("guest.interruptibility.reserved", "27.3.1.5", "GUEST_INTERRUPTIBILITY_INFO",
         lambda v, c: _interruptibility(v) & _INTERRUPTIBILITY_RESERVED == 0,
         "guest interruptibility state {GUEST_INTERRUPTIBILITY_INFO:#x} sets reserved bits 31:5"),
    _row("guest.interruptibility.sti_mov_ss", "27.3.1.5", "GUEST_INTERRUPTIBILITY_INFO",
         lambda v, c: _interruptibility(v) & 3 != 3,
         "guest interruptibility state {GUEST_INTERRUPTIBILITY_INFO:#x} sets blocking by both STI "
         "and MOV SS"),
    _row("guest.interruptibility.sti_if", "27.3.1.5", "GUEST_INTERRUPTIBILITY_INFO GUEST_RFLAGS",
         lambda v, c: not _interruptibility(v) & BLOCKING_STI
         or bool(v("GUEST_RFLAGS") & RFLAGS_IF),
         "blocking by STI (interruptibility {GUEST_INTERRUPTIBILITY_INFO:#x}) with RFLAGS.IF = 0 "
         "(RFLAGS {GUEST_RFLAGS:#x})"),
    _row("guest.interruptibility.external_interrupt", "27.3.1.5",
         "GUEST_INTERRUPTIBILITY_INFO VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: not _injects(v, EXTERNAL_INTERRUPT) or not _interruptibility(v) & 3,
         "injecting an external interrupt with blocking by STI or MOV SS (interruptibility "
         "{GUEST_INTERRUPTIBILITY_INFO:#x})"),
    _row("guest.interruptibility.nmi_mov_ss", "27.3.1.5",
         "GUEST_INTERRUPTIBILITY_INFO VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: not _injects(v, NMI) or not _interruptibility(v) & BLOCKING_MOV_SS,
         "injecting an NMI with blocking by MOV SS (interruptibility "
         "{GUEST_INTERRUPTIBILITY_INFO:#x})"),
    # The SDM lets a processor refuse NMI injection under blocking by STI ("model-specific");
    # vmxsim models a processor that does, with exit qualification 3 (27.8). KVM does not check.
    _row("guest.interruptibility.nmi_sti", "27.3.1.5",
         "GUEST_INTERRUPTIBILITY_INFO VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: not _injects(v, NMI) or not _interruptibility(v) & BLOCKING_STI,
         "injecting an NMI with blocking by STI (interruptibility "
         "{GUEST_INTERRUPTIBILITY_INFO:#x})", qualification=lambda v, c: 3),
    _row("guest.interruptibility.smi", "27.3.1.5", "GUEST_INTERRUPTIBILITY_INFO",
         lambda v, c: not _interruptibility(v) & BLOCKING_SMI,
         "blocking by SMI (interruptibility {GUEST_INTERRUPTIBILITY_INFO:#x}) outside SMM"),
    _row("guest.interruptibility.virtual_nmi", "27.3.1.5",
         "PIN_BASED_VM_EXEC_CONTROL GUEST_INTERRUPTIBILITY_INFO VM_ENTRY_INTR_INFO_FIELD",
         lambda v, c: not (pin(v) & PIN_VIRTUAL_NMIS and _injects(v, NMI))
         or not _interruptibility(v) & BLOCKING_NMI,
         "injecting a virtual NMI with blocking by NMI (interruptibility "
         "{GUEST_INTERRUPTIBILITY_INFO:#x})"),
    _row("guest.interruptibility.enclave", "27.3.1.5", "GUEST_INTERRUPTIBILITY_INFO",
         lambda v, c: not _interruptibility(v) & ENCLAVE_INTERRUPTION
         or (c.sgx and not _interruptibility(v) & BLOCKING_MOV_SS),
         "enclave interruption (interruptibility {GUEST_INTERRUPTIBILITY_INFO:#x}) without SGX "
         "or with blocking by MOV SS"),
    # --- 27.3.1.5 pending debug exceptions
    _row("guest.pending_debug.reserved", "27.3.1.5", "GUEST_PENDING_DBG_EXCEPTIONS",
         lambda v, c: v("GUEST_PENDING_DBG_EXCEPTIONS") & _PENDING_RESERVED == 0,
         "guest pending debug exceptions {GUEST_PENDING_DBG_EXCEPTIONS:#x} set reserved bits "
         "(11:4, 13, 15, 63:17)"),
    _row("guest.pending_debug.bs", "27.3.1.5",
         "GUEST_INTERRUPTIBILITY_INFO GUEST_ACTIVITY_STATE GUEST_PENDING_DBG_EXCEPTIONS "
         "GUEST_RFLAGS GUEST_IA32_DEBUGCTL", _pending_bs_ok,
         "pending debug exceptions {GUEST_PENDING_DBG_EXCEPTIONS:#x}: BS does not match RFLAGS.TF "
         "{GUEST_RFLAGS:#x} / DEBUGCTL.BTF {GUEST_IA32_DEBUGCTL:#x} while events are blocked"),
    _row("guest.pending_debug.rtm", "27.3.1.5",
         "GUEST_PENDING_DBG_EXCEPTIONS GUEST_INTERRUPTIBILITY_INFO", _pending_rtm_ok,
         "pending debug exceptions {GUEST_PENDING_DBG_EXCEPTIONS:#x} set RTM without exactly "
         "'enabled breakpoint', or with blocking by MOV SS"),
    # --- 27.3.1.5 VMCS link pointer
    _row("guest.link_pointer.address", "27.3.1.5", "VMCS_LINK_POINTER",
         lambda v, c: _link(v) == INVALID_LINK
         or (_link(v) & 0xFFF == 0 and physical_ok(_link(v), c)),
         "VMCS link pointer {VMCS_LINK_POINTER:#x} is neither FFFFFFFF_FFFFFFFFH nor 4 KiB aligned "
         "within MAXPHYADDR", qualification=lambda v, c: 4),
    _row("guest.link_pointer.header", "27.3.1.5",
         "VMCS_LINK_POINTER CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         _link_header_ok,
         "the VMCS at link pointer {VMCS_LINK_POINTER:#x} has the wrong revision identifier, or "
         "its shadow-VMCS indicator differs from 'VMCS shadowing'", needs_memory=True,
         qualification=lambda v, c: 4),
    _row("guest.link_pointer.current", "27.3.1.5", ("VMCS_LINK_POINTER", "@current_vmcs_pointer"),
         lambda v, c: _link(v) == INVALID_LINK or _link(v) != v("@current_vmcs_pointer"),
         "VMCS link pointer {VMCS_LINK_POINTER:#x} is the current-VMCS pointer",
         qualification=lambda v, c: 4),
    # --- 27.3.1.6 PDPTEs (PAE paging); loaded from the guest's memory without EPT
    _row("guest.pdpte.memory", "27.3.1.6",
         "GUEST_CR0 GUEST_CR4 GUEST_CR3 VM_ENTRY_CONTROLS CPU_BASED_VM_EXEC_CONTROL "
         "SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: not pae_paging(v) or bool(secondary(v) & SEC_ENABLE_EPT)
         or all(pdpte_ok(e, c) for e in _pdptes_in_memory(v)),
         lambda v, c: "a PDPTE at guest CR3 {:#x} is present with reserved bits set: {}".format(
             v("GUEST_CR3"), ", ".join(f"{e:#x}" for e in _pdptes_in_memory(v))),
         needs_memory=True, qualification=lambda v, c: 2),
    _row("guest.pdpte.fields", "27.3.1.6",
         ("GUEST_CR0", "GUEST_CR4", "VM_ENTRY_CONTROLS", "CPU_BASED_VM_EXEC_CONTROL",
          "SECONDARY_VM_EXEC_CONTROL", *_PDPTRS),
         lambda v, c: not pae_paging(v) or not secondary(v) & SEC_ENABLE_EPT
         or all(pdpte_ok(v(name), c) for name in _PDPTRS),
         lambda v, c: "a GUEST_PDPTRn field is present with reserved bits set: " + ", ".join(
             f"{v(name):#x}" for name in _PDPTRS),
         qualification=lambda v, c: 2),
)  # fmt: skip
