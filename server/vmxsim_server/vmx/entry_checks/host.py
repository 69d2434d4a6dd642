"""Checks on the host-state area (SDM 27.2.2-27.2.4); a failure is VMfailValid(8).

vmxsim models a 64-bit VMM: the processor is in IA-32e mode (IA32_EFER.LMA = 1) when it executes
VMLAUNCH/VMRESUME, so 27.2.4 requires "host address-space size" = 1. The checks that apply only
when that control is 0 (27.2.3: SS selector not 0000H; 27.2.4: IA-32e mode guest 0, CR4.PCIDE 0,
RIP bits 63:32 clear) can therefore never fail alone and are not rows.
"""

from __future__ import annotations

from ..capabilities import Capabilities
from .bits import (
    CR0_WP,
    CR4_CET,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EXIT2_LOAD_FRED,
    EXIT_HOST_ADDRESS_SPACE_SIZE,
    EXIT_LOAD_CET_STATE,
    EXIT_LOAD_EFER,
    EXIT_LOAD_PAT,
    EXIT_LOAD_PERF_GLOBAL_CTRL,
    EXIT_LOAD_PKRS,
    canonical,
    exit2,
    exit_controls,
    fred_fields,
    fred_problem,
    per_name,
    physical_ok,
    rows_for,
)
from .table import Check, Stage, Values

_row = rows_for(Stage.HOST)

_SELECTORS = ("ES", "CS", "SS", "DS", "FS", "GS", "TR")
_BASES = ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_GDTR_BASE", "HOST_IDTR_BASE", "HOST_TR_BASE")
_EFER_VALID = 0xD01  # SCE, LME, LMA, NXE (SDM Vol. 4 table 2-2 IA32_EFER)
_PAT_TYPES = frozenset((0, 1, 4, 5, 6, 7))  # UC WC WT WP WB UC- (SDM 13.12.2)
S_CET_RESERVED = 0x3C0  # bits 9:6 (SDM 18.3.1, IA32_S_CET)
S_CET_SUPPRESS_AND_TRACKER = 0xC00  # bits 10 and 11 may not both be 1


def pat_ok(value: int) -> bool:
    """Every byte of an IA32_PAT value is a valid memory type (SDM 27.2.2, 27.3.1.1)."""
    return all(value >> (8 * i) & 0xFF in _PAT_TYPES for i in range(8))


def efer_reserved_ok(value: int) -> bool:
    return value & ~_EFER_VALID == 0


def s_cet_ok(value: int, c: Capabilities) -> bool:
    """IA32_S_CET: reserved bits 9:6 clear, not both SUPPRESS and TRACKER, canonical."""
    return (
        value & S_CET_RESERVED == 0
        and value & S_CET_SUPPRESS_AND_TRACKER != S_CET_SUPPRESS_AND_TRACKER
        and canonical(value, c)
    )


def _hass(v: Values) -> bool:
    return bool(exit_controls(v) & EXIT_HOST_ADDRESS_SPACE_SIZE)


def _fixed(value: int, fixed0: int, fixed1: int) -> bool:
    return value & fixed0 == fixed0 and value & ~fixed1 & 0xFFFF_FFFF == 0 and value >> 32 == 0


def _cet_rows() -> tuple[Check, ...]:
    on = EXIT_LOAD_CET_STATE
    return (
        _row("host.cet.s_cet", "27.2.2", "VM_EXIT_CONTROLS HOST_S_CET",
             lambda v, c: not exit_controls(v) & on or s_cet_ok(v("HOST_S_CET"), c),
             "host IA32_S_CET {HOST_S_CET:#x} sets reserved bits 9:6, both bits 10 and 11, or is "
             "not canonical"),
        _row("host.cet.ssp", "27.2.2", "VM_EXIT_CONTROLS HOST_SSP",
             lambda v, c: not exit_controls(v) & on
             or (v("HOST_SSP") & 3 == 0 and canonical(v("HOST_SSP"), c)),
             "host SSP {HOST_SSP:#x} sets bits 1:0 or is not canonical"),
        _row("host.cet.interrupt_ssp_table", "27.2.2", "VM_EXIT_CONTROLS HOST_INTR_SSP_TABLE",
             lambda v, c: not exit_controls(v) & on or canonical(v("HOST_INTR_SSP_TABLE"), c),
             "host IA32_INTERRUPT_SSP_TABLE_ADDR {HOST_INTR_SSP_TABLE:#x} is not canonical"),
    )  # fmt: skip


_SELECTOR_FIELDS = tuple(f"HOST_{s}_SELECTOR" for s in _SELECTORS)

HOST_CHECKS = (
    # --- 27.2.2 host control registers and MSRs
    _row("host.cr0.fixed", "27.2.2", "HOST_CR0",
         lambda v, c: _fixed(v("HOST_CR0"), c.cr0_fixed0, c.cr0_fixed1),
         "host CR0 {HOST_CR0:#x} outside IA32_VMX_CR0_FIXED0/FIXED1"),
    _row("host.cr4.fixed", "27.2.2", "HOST_CR4",
         lambda v, c: _fixed(v("HOST_CR4"), c.cr4_fixed0, c.cr4_fixed1),
         "host CR4 {HOST_CR4:#x} outside IA32_VMX_CR4_FIXED0/FIXED1"),
    _row("host.cr3.width", "27.2.2", "HOST_CR3",
         lambda v, c: physical_ok(v("HOST_CR3"), c),
         "host CR3 {HOST_CR3:#x} sets bits beyond MAXPHYADDR"),
    _row("host.cr4.cet_wp", "27.2.2", "HOST_CR0 HOST_CR4",
         lambda v, c: not v("HOST_CR4") & CR4_CET or bool(v("HOST_CR0") & CR0_WP),
         "host CR4.CET set with CR0.WP clear (CR0 {HOST_CR0:#x}, CR4 {HOST_CR4:#x})"),
    *_cet_rows(),
    _row("host.sysenter.canonical", "27.2.2", "HOST_IA32_SYSENTER_ESP HOST_IA32_SYSENTER_EIP",
         lambda v, c: canonical(v("HOST_IA32_SYSENTER_ESP"), c)
         and canonical(v("HOST_IA32_SYSENTER_EIP"), c),
         per_name(("HOST_IA32_SYSENTER_ESP", "HOST_IA32_SYSENTER_EIP"),
                   lambda x, c: not canonical(x, c), "is not canonical")),
    _row("host.perf_global_ctrl", "27.2.2", "VM_EXIT_CONTROLS HOST_IA32_PERF_GLOBAL_CTRL",
         lambda v, c: not exit_controls(v) & EXIT_LOAD_PERF_GLOBAL_CTRL
         or v("HOST_IA32_PERF_GLOBAL_CTRL") & ~c.perf_global_ctrl_valid == 0,
         "host IA32_PERF_GLOBAL_CTRL {HOST_IA32_PERF_GLOBAL_CTRL:#x} sets reserved bits"),
    _row("host.pat", "27.2.2", "VM_EXIT_CONTROLS HOST_IA32_PAT",
         lambda v, c: not exit_controls(v) & EXIT_LOAD_PAT or pat_ok(v("HOST_IA32_PAT")),
         "host IA32_PAT {HOST_IA32_PAT:#x} has a byte that is not a memory type (0, 1, 4-7)"),
    _row("host.efer.reserved", "27.2.2", "VM_EXIT_CONTROLS HOST_IA32_EFER",
         lambda v, c: not exit_controls(v) & EXIT_LOAD_EFER
         or efer_reserved_ok(v("HOST_IA32_EFER")),
         "host IA32_EFER {HOST_IA32_EFER:#x} sets reserved bits"),
    _row("host.efer.lma_lme", "27.2.2", "VM_EXIT_CONTROLS HOST_IA32_EFER",
         lambda v, c: not exit_controls(v) & EXIT_LOAD_EFER
         or bool(v("HOST_IA32_EFER") & EFER_LMA) == bool(v("HOST_IA32_EFER") & EFER_LME)
         == _hass(v),
         "host IA32_EFER {HOST_IA32_EFER:#x}: LMA and LME must equal 'host address-space size'"),
    _row("host.pkrs", "27.2.2", "VM_EXIT_CONTROLS HOST_IA32_PKRS",
         lambda v, c: not exit_controls(v) & EXIT_LOAD_PKRS or v("HOST_IA32_PKRS") >> 32 == 0,
         "host IA32_PKRS {HOST_IA32_PKRS:#x} sets bits 63:32"),
    _row("host.fred", "27.2.2", ("VM_EXIT_CONTROLS", "SECONDARY_VM_EXIT_CONTROLS",
                                 *fred_fields("HOST")),
         lambda v, c: not (_hass(v) and exit2(v) & EXIT2_LOAD_FRED)
         or fred_problem("HOST", v, c) is None,
         lambda v, c: f"host FRED state: {fred_problem('HOST', v, c)}"),
    # --- 27.2.3 host segment and descriptor-table registers
    _row("host.selectors.rpl_ti", "27.2.3", _SELECTOR_FIELDS,
         lambda v, c: all(v(name) & 7 == 0 for name in _SELECTOR_FIELDS),
         per_name(_SELECTOR_FIELDS, lambda x, c: x & 7, "has RPL or TI set")),
    _row("host.selectors.cs_tr", "27.2.3", "HOST_CS_SELECTOR HOST_TR_SELECTOR",
         lambda v, c: v("HOST_CS_SELECTOR") != 0 and v("HOST_TR_SELECTOR") != 0,
         "host CS selector {HOST_CS_SELECTOR:#x} or TR selector {HOST_TR_SELECTOR:#x} is 0000H"),
    _row("host.bases.canonical", "27.2.3", _BASES,
         lambda v, c: all(canonical(v(name), c) for name in _BASES),
         per_name(_BASES, lambda x, c: not canonical(x, c), "is not canonical")),
    # --- 27.2.4 checks related to address-space size
    _row("host.address_space_size", "27.2.4", "VM_EXIT_CONTROLS",
         lambda v, c: _hass(v),
         "'host address-space size' is 0 (exit controls {VM_EXIT_CONTROLS:#x}) but the processor "
         "is in IA-32e mode"),
    _row("host.cr4.pae", "27.2.4", "VM_EXIT_CONTROLS HOST_CR4",
         lambda v, c: not _hass(v) or bool(v("HOST_CR4") & CR4_PAE),
         "host CR4 {HOST_CR4:#x} has PAE clear with 'host address-space size' 1"),
    _row("host.rip.canonical", "27.2.4", "VM_EXIT_CONTROLS HOST_RIP",
         lambda v, c: not _hass(v) or canonical(v("HOST_RIP"), c),
         "host RIP {HOST_RIP:#x} is not canonical"),
)  # fmt: skip
