"""Checks on the host-state area (SDM 27.2.2-27.2.4); a failure is VMfailValid(8)."""

from __future__ import annotations

from .bits import (
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EXIT_HOST_ADDRESS_SPACE_SIZE,
    EXIT_LOAD_EFER,
    canonical,
    exit_controls,
    physical_ok,
    rows_for,
)
from .table import Stage

_row = rows_for(Stage.HOST)

_SELECTORS = ("ES", "CS", "SS", "DS", "FS", "GS", "TR")
_BASES = ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_TR_BASE", "HOST_GDTR_BASE", "HOST_IDTR_BASE")

HOST_CHECKS = (
    _row("host.cr0.fixed", "27.2.2", "HOST_CR0",
         lambda v, c: v("HOST_CR0") & c.cr0_fixed0 == c.cr0_fixed0,
         "host CR0 {HOST_CR0:#x} lacks IA32_VMX_CR0_FIXED0 bits"),
    _row("host.cr4.fixed", "27.2.2", "HOST_CR4",
         lambda v, c: v("HOST_CR4") & c.cr4_fixed0 == c.cr4_fixed0,
         "host CR4 {HOST_CR4:#x} lacks IA32_VMX_CR4_FIXED0 bits"),
    _row("host.cr3.width", "27.2.2", "HOST_CR3",
         lambda v, c: physical_ok(v("HOST_CR3"), c),
         "host CR3 {HOST_CR3:#x} sets bits beyond MAXPHYADDR"),
    _row("host.address_space_size", "27.2.4", "VM_EXIT_CONTROLS",
         lambda v, c: bool(exit_controls(v) & EXIT_HOST_ADDRESS_SPACE_SIZE),
         "'host address-space size' is clear ({VM_EXIT_CONTROLS:#x}) on an x86-64 host"),
    _row("host.cr4.pae", "27.2.4", "HOST_CR4 HOST_RIP",
         lambda v, c: bool(v("HOST_CR4") & CR4_PAE) and canonical(v("HOST_RIP"), c),
         "host CR4.PAE clear or host RIP {HOST_RIP:#x} not canonical"),
    _row("host.selectors.rpl_ti", "27.2.3", tuple(f"HOST_{s}_SELECTOR" for s in _SELECTORS),
         lambda v, c: all(v(f"HOST_{s}_SELECTOR") & 7 == 0 for s in _SELECTORS),
         "a host selector has RPL or TI set"),
    _row("host.selectors.cs_tr", "27.2.3", "HOST_CS_SELECTOR HOST_TR_SELECTOR",
         lambda v, c: v("HOST_CS_SELECTOR") != 0 and v("HOST_TR_SELECTOR") != 0,
         "host CS {HOST_CS_SELECTOR:#x} or TR {HOST_TR_SELECTOR:#x} selector is 0"),
    _row("host.bases.canonical", "27.2.3", _BASES,
         lambda v, c: all(canonical(v(name), c) for name in _BASES),
         "a host FS/GS/TR/GDTR/IDTR base is not canonical"),
    _row("host.efer", "27.2.2", "VM_EXIT_CONTROLS HOST_IA32_EFER",
         lambda v, c: not exit_controls(v) & EXIT_LOAD_EFER
         or (v("HOST_IA32_EFER") & ~0xD01 == 0
             and bool(v("HOST_IA32_EFER") & EFER_LMA) == bool(v("HOST_IA32_EFER") & EFER_LME)
             == bool(exit_controls(v) & EXIT_HOST_ADDRESS_SPACE_SIZE)),
         "host IA32_EFER {HOST_IA32_EFER:#x} inconsistent"),
)  # fmt: skip
