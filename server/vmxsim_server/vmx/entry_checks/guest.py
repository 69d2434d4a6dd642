"""Checks on the guest-state area (SDM 27.3.1); a failure is a VM exit with reason 33 | bit 31."""

from __future__ import annotations

from ..capabilities import Capabilities
from .bits import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    ENTRY_IA32E_MODE_GUEST,
    ENTRY_LOAD_EFER,
    SEC_VMCS_SHADOWING,
    entry_controls,
    ia32e_guest,
    rows_for,
    secondary,
    unrestricted,
)
from .table import Stage, Values

_row = rows_for(Stage.GUEST)


def _cr0_fixed0(v: Values, c: Capabilities) -> int:
    return c.cr0_fixed0 & ~(CR0_PE | CR0_PG) if unrestricted(v) else c.cr0_fixed0


GUEST_CHECKS = (
    _row("guest.cr0.fixed", "27.3.1.1",
         "GUEST_CR0 CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: v("GUEST_CR0") & _cr0_fixed0(v, c) == _cr0_fixed0(v, c),
         "guest CR0 {GUEST_CR0:#x} lacks IA32_VMX_CR0_FIXED0 bits"),
    _row("guest.cr0.pg_pe", "27.3.1.1", "GUEST_CR0",
         lambda v, c: not v("GUEST_CR0") & CR0_PG or bool(v("GUEST_CR0") & CR0_PE),
         "guest CR0 {GUEST_CR0:#x} sets PG without PE"),
    _row("guest.cr4.fixed", "27.3.1.1", "GUEST_CR4",
         lambda v, c: v("GUEST_CR4") & c.cr4_fixed0 == c.cr4_fixed0,
         "guest CR4 {GUEST_CR4:#x} lacks IA32_VMX_CR4_FIXED0 bits"),
    _row("guest.ia32e.paging", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_CR0 GUEST_CR4",
         lambda v, c: not ia32e_guest(v)
         or (bool(v("GUEST_CR0") & CR0_PG) and bool(v("GUEST_CR4") & CR4_PAE)),
         "'IA-32e mode guest' with guest CR0 {GUEST_CR0:#x} / CR4 {GUEST_CR4:#x}"),
    _row("guest.link_pointer", "27.3.1.5",
         "CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL VMCS_LINK_POINTER",
         lambda v, c: bool(secondary(v) & SEC_VMCS_SHADOWING)
         or v("VMCS_LINK_POINTER") == 0xFFFF_FFFF_FFFF_FFFF,
         "VMCS link pointer {VMCS_LINK_POINTER:#x} is not FFFFFFFF_FFFFFFFFH"),
    _row("guest.rflags.reserved", "27.3.1.4", "GUEST_RFLAGS",
         lambda v, c: v("GUEST_RFLAGS") & 2 == 2 and v("GUEST_RFLAGS") & ~0x3F7FD7 == 0,
         "guest RFLAGS {GUEST_RFLAGS:#x} sets reserved bits or clears bit 1"),
    _row("guest.activity.range", "27.3.1.5", "GUEST_ACTIVITY_STATE",
         lambda v, c: v("GUEST_ACTIVITY_STATE") <= 3,
         "guest activity state {GUEST_ACTIVITY_STATE} is not 0..3"),
    _row("guest.tr.ti", "27.3.1.2", "GUEST_TR_SELECTOR",
         lambda v, c: v("GUEST_TR_SELECTOR") & 4 == 0,
         "guest TR selector {GUEST_TR_SELECTOR:#x} has TI = 1"),
    _row("guest.efer.lma", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_EFER",
         lambda v, c: not entry_controls(v) & ENTRY_LOAD_EFER
         or bool(v("GUEST_IA32_EFER") & EFER_LMA)
         == bool(entry_controls(v) & ENTRY_IA32E_MODE_GUEST),
         "guest IA32_EFER {GUEST_IA32_EFER:#x} LMA differs from 'IA-32e mode guest'"),
)  # fmt: skip
