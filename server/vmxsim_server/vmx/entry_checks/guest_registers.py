"""Checks on the guest's control registers, debug registers and MSRs (SDM 27.3.1.1); a failure
is a VM exit with basic reason 33 and bit 31 set."""

from __future__ import annotations

from ..capabilities import Capabilities
from .bits import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_CET,
    CR4_PAE,
    CR4_PCIDE,
    EFER_LMA,
    EFER_LME,
    ENTRY_LOAD_BNDCFGS,
    ENTRY_LOAD_CET_STATE,
    ENTRY_LOAD_DEBUG_CONTROLS,
    ENTRY_LOAD_EFER,
    ENTRY_LOAD_FRED,
    ENTRY_LOAD_LBR_CTL,
    ENTRY_LOAD_PAT,
    ENTRY_LOAD_PERF_GLOBAL_CTRL,
    ENTRY_LOAD_PKRS,
    ENTRY_LOAD_RTIT_CTL,
    ENTRY_LOAD_UINV,
    canonical,
    entry_controls,
    fred_fields,
    fred_problem,
    ia32e_guest,
    per_name,
    physical_ok,
    rows_for,
    unrestricted,
)
from .host import efer_reserved_ok, pat_ok, s_cet_ok
from .table import Stage, Values

_row = rows_for(Stage.GUEST)


def _cr0_fixed0(v: Values, c: Capabilities) -> int:
    """PE and PG need not be 1 with "unrestricted guest" (27.3.1.1)."""
    return c.cr0_fixed0 & ~(CR0_PE | CR0_PG) if unrestricted(v) else c.cr0_fixed0


def _fixed(value: int, fixed0: int, fixed1: int) -> bool:
    return value & fixed0 == fixed0 and value & ~fixed1 & 0xFFFF_FFFF == 0 and value >> 32 == 0


def _loads(v: Values, control: int) -> bool:
    return bool(entry_controls(v) & control)


_BNDCFGS_RESERVED = 0xFFC  # bits 11:2 (SDM 17.3.3, IA32_BNDCFGS)

GUEST_REGISTER_CHECKS = (
    _row("guest.cr0.fixed", "27.3.1.1",
         "GUEST_CR0 CPU_BASED_VM_EXEC_CONTROL SECONDARY_VM_EXEC_CONTROL",
         lambda v, c: _fixed(v("GUEST_CR0"), _cr0_fixed0(v, c), c.cr0_fixed1),
         "guest CR0 {GUEST_CR0:#x} outside IA32_VMX_CR0_FIXED0/FIXED1 (PE and PG free with "
         "'unrestricted guest')"),
    _row("guest.cr0.pg_pe", "27.3.1.1", "GUEST_CR0",
         lambda v, c: not v("GUEST_CR0") & CR0_PG or bool(v("GUEST_CR0") & CR0_PE),
         "guest CR0 {GUEST_CR0:#x} sets PG without PE"),
    _row("guest.cr4.fixed", "27.3.1.1", "GUEST_CR4",
         lambda v, c: _fixed(v("GUEST_CR4"), c.cr4_fixed0, c.cr4_fixed1),
         "guest CR4 {GUEST_CR4:#x} outside IA32_VMX_CR4_FIXED0/FIXED1"),
    _row("guest.cr4.cet_wp", "27.3.1.1", "GUEST_CR0 GUEST_CR4",
         lambda v, c: not v("GUEST_CR4") & CR4_CET or bool(v("GUEST_CR0") & CR0_WP),
         "guest CR4.CET set with CR0.WP clear (CR0 {GUEST_CR0:#x}, CR4 {GUEST_CR4:#x})"),
    _row("guest.debugctl", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_DEBUGCTL",
         lambda v, c: not _loads(v, ENTRY_LOAD_DEBUG_CONTROLS)
         or v("GUEST_IA32_DEBUGCTL") & ~c.debugctl_valid == 0,
         "guest IA32_DEBUGCTL {GUEST_IA32_DEBUGCTL:#x} sets reserved bits"),
    _row("guest.ia32e.paging", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_CR0 GUEST_CR4",
         lambda v, c: not ia32e_guest(v)
         or (bool(v("GUEST_CR0") & CR0_PG) and bool(v("GUEST_CR4") & CR4_PAE)),
         "'IA-32e mode guest' with guest CR0.PG or CR4.PAE clear (CR0 {GUEST_CR0:#x}, CR4 "
         "{GUEST_CR4:#x})"),
    _row("guest.cr4.pcide", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_CR4",
         lambda v, c: ia32e_guest(v) or not v("GUEST_CR4") & CR4_PCIDE,
         "guest CR4 {GUEST_CR4:#x} sets PCIDE without 'IA-32e mode guest'"),
    _row("guest.cr3.width", "27.3.1.1", "GUEST_CR3",
         lambda v, c: physical_ok(v("GUEST_CR3"), c),
         "guest CR3 {GUEST_CR3:#x} sets bits beyond MAXPHYADDR"),
    _row("guest.dr7", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_DR7",
         lambda v, c: not _loads(v, ENTRY_LOAD_DEBUG_CONTROLS) or v("GUEST_DR7") >> 32 == 0,
         "guest DR7 {GUEST_DR7:#x} sets bits 63:32"),
    _row("guest.sysenter.canonical", "27.3.1.1", "GUEST_SYSENTER_ESP GUEST_SYSENTER_EIP",
         lambda v, c: canonical(v("GUEST_SYSENTER_ESP"), c)
         and canonical(v("GUEST_SYSENTER_EIP"), c),
         per_name(("GUEST_SYSENTER_ESP", "GUEST_SYSENTER_EIP"),
                  lambda x, c: not canonical(x, c), "is not canonical")),
    _row("guest.cet.s_cet", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_S_CET",
         lambda v, c: not _loads(v, ENTRY_LOAD_CET_STATE) or s_cet_ok(v("GUEST_S_CET"), c),
         "guest IA32_S_CET {GUEST_S_CET:#x} sets reserved bits 9:6, both bits 10 and 11, or is "
         "not canonical"),
    _row("guest.cet.interrupt_ssp_table", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_INTR_SSP_TABLE",
         lambda v, c: not _loads(v, ENTRY_LOAD_CET_STATE)
         or canonical(v("GUEST_INTR_SSP_TABLE"), c),
         "guest IA32_INTERRUPT_SSP_TABLE_ADDR {GUEST_INTR_SSP_TABLE:#x} is not canonical"),
    _row("guest.perf_global_ctrl", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_PERF_GLOBAL_CTRL",
         lambda v, c: not _loads(v, ENTRY_LOAD_PERF_GLOBAL_CTRL)
         or v("GUEST_IA32_PERF_GLOBAL_CTRL") & ~c.perf_global_ctrl_valid == 0,
         "guest IA32_PERF_GLOBAL_CTRL {GUEST_IA32_PERF_GLOBAL_CTRL:#x} sets reserved bits"),
    _row("guest.pat", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_PAT",
         lambda v, c: not _loads(v, ENTRY_LOAD_PAT) or pat_ok(v("GUEST_IA32_PAT")),
         "guest IA32_PAT {GUEST_IA32_PAT:#x} has a byte that is not a memory type (0, 1, 4-7)"),
    _row("guest.efer.reserved", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_EFER",
         lambda v, c: not _loads(v, ENTRY_LOAD_EFER) or efer_reserved_ok(v("GUEST_IA32_EFER")),
         "guest IA32_EFER {GUEST_IA32_EFER:#x} sets reserved bits"),
    _row("guest.efer.lma", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_EFER",
         lambda v, c: not _loads(v, ENTRY_LOAD_EFER)
         or bool(v("GUEST_IA32_EFER") & EFER_LMA) == ia32e_guest(v),
         "guest IA32_EFER {GUEST_IA32_EFER:#x}: LMA differs from 'IA-32e mode guest' (VM-entry "
         "controls {VM_ENTRY_CONTROLS:#x})"),
    _row("guest.efer.lme", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_EFER GUEST_CR0",
         lambda v, c: not _loads(v, ENTRY_LOAD_EFER) or not v("GUEST_CR0") & CR0_PG
         or bool(v("GUEST_IA32_EFER") & EFER_LMA) == bool(v("GUEST_IA32_EFER") & EFER_LME),
         "guest IA32_EFER {GUEST_IA32_EFER:#x}: LME differs from LMA with CR0.PG set"),
    _row("guest.bndcfgs", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_BNDCFGS",
         lambda v, c: not _loads(v, ENTRY_LOAD_BNDCFGS)
         or (v("GUEST_BNDCFGS") & _BNDCFGS_RESERVED == 0
             and canonical(v("GUEST_BNDCFGS") & ~0xFFF, c)),
         "guest IA32_BNDCFGS {GUEST_BNDCFGS:#x} sets reserved bits 11:2 or its base is not "
         "canonical"),
    _row("guest.rtit_ctl", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_RTIT_CTL",
         lambda v, c: not _loads(v, ENTRY_LOAD_RTIT_CTL)
         or v("GUEST_IA32_RTIT_CTL") & ~c.rtit_ctl_valid == 0,
         "guest IA32_RTIT_CTL {GUEST_IA32_RTIT_CTL:#x} sets reserved bits"),
    _row("guest.fred", "27.3.1.1", ("VM_ENTRY_CONTROLS", *fred_fields("GUEST")),
         lambda v, c: not (ia32e_guest(v) and _loads(v, ENTRY_LOAD_FRED))
         or fred_problem("GUEST", v, c) is None,
         lambda v, c: f"guest FRED state: {fred_problem('GUEST', v, c)}"),
    _row("guest.uinv", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_UINV",
         lambda v, c: not _loads(v, ENTRY_LOAD_UINV) or v("GUEST_UINV") >> 8 == 0,
         "guest UINV {GUEST_UINV:#x} sets bits 15:8"),
    _row("guest.pkrs", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_PKRS",
         lambda v, c: not _loads(v, ENTRY_LOAD_PKRS) or v("GUEST_IA32_PKRS") >> 32 == 0,
         "guest IA32_PKRS {GUEST_IA32_PKRS:#x} sets bits 63:32"),
    _row("guest.lbr_ctl", "27.3.1.1", "VM_ENTRY_CONTROLS GUEST_IA32_LBR_CTL",
         lambda v, c: not _loads(v, ENTRY_LOAD_LBR_CTL)
         or v("GUEST_IA32_LBR_CTL") & ~c.lbr_ctl_valid == 0,
         "guest IA32_LBR_CTL {GUEST_IA32_LBR_CTL:#x} sets reserved bits"),
)  # fmt: skip
