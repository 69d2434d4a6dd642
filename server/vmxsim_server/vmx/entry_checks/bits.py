"""Control bits, register bits and helpers the check rows share (SDM chapter 25 tables).

Names follow the SDM's control names; every constant is a bit mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from ..capabilities import Capabilities
from .table import Check, Stage, Values

# Pin-based VM-execution controls (SDM table 25-5)
PIN_EXTERNAL_INTERRUPT_EXITING = 1 << 0
PIN_NMI_EXITING = 1 << 3
PIN_VIRTUAL_NMIS = 1 << 5
PIN_PREEMPTION_TIMER = 1 << 6
PIN_POSTED_INTERRUPTS = 1 << 7

# Primary processor-based VM-execution controls (SDM table 25-6)
PROC_INTERRUPT_WINDOW_EXITING = 1 << 2
PROC_CR3_LOAD_EXITING = 1 << 15
PROC_CR3_STORE_EXITING = 1 << 16
PROC_ACTIVATE_TERTIARY = 1 << 17
PROC_CR8_LOAD_EXITING = 1 << 19
PROC_CR8_STORE_EXITING = 1 << 20
PROC_USE_TPR_SHADOW = 1 << 21
PROC_NMI_WINDOW_EXITING = 1 << 22
PROC_USE_IO_BITMAPS = 1 << 25
PROC_MONITOR_TRAP_FLAG = 1 << 27
PROC_USE_MSR_BITMAPS = 1 << 28
PROC_ACTIVATE_SECONDARY = 1 << 31

# Secondary processor-based VM-execution controls (SDM table 25-7)
SEC_VIRTUALIZE_APIC_ACCESSES = 1 << 0
SEC_ENABLE_EPT = 1 << 1
SEC_DESCRIPTOR_TABLE_EXITING = 1 << 2
SEC_ENABLE_RDTSCP = 1 << 3
SEC_VIRTUALIZE_X2APIC_MODE = 1 << 4
SEC_ENABLE_VPID = 1 << 5
SEC_WBINVD_EXITING = 1 << 6
SEC_UNRESTRICTED_GUEST = 1 << 7
SEC_APIC_REGISTER_VIRTUALIZATION = 1 << 8
SEC_VIRTUAL_INTERRUPT_DELIVERY = 1 << 9
SEC_PAUSE_LOOP_EXITING = 1 << 10
SEC_RDRAND_EXITING = 1 << 11
SEC_ENABLE_INVPCID = 1 << 12
SEC_ENABLE_VM_FUNCTIONS = 1 << 13
SEC_VMCS_SHADOWING = 1 << 14
SEC_ENCLS_EXITING = 1 << 15
SEC_RDSEED_EXITING = 1 << 16
SEC_ENABLE_PML = 1 << 17
SEC_EPT_VIOLATION_VE = 1 << 18
SEC_CONCEAL_VMX_FROM_PT = 1 << 19
SEC_ENABLE_XSAVES = 1 << 20
SEC_PASID_TRANSLATION = 1 << 21
SEC_MODE_BASED_EPT_EXECUTE = 1 << 22
SEC_SUB_PAGE_WRITE_PERMISSIONS = 1 << 23
SEC_PT_USES_GUEST_PHYSICAL = 1 << 24
SEC_USE_TSC_SCALING = 1 << 25
SEC_ENABLE_USER_WAIT_PAUSE = 1 << 26
SEC_ENABLE_PCONFIG = 1 << 27
SEC_ENABLE_ENCLV_EXITING = 1 << 28
SEC_VMM_BUS_LOCK_DETECTION = 1 << 30
SEC_INSTRUCTION_TIMEOUT = 1 << 31

# Tertiary processor-based VM-execution controls (SDM table 25-8)
TER_LOADIWKEY_EXITING = 1 << 0
TER_ENABLE_HLAT = 1 << 1
TER_EPT_PAGING_WRITE_CONTROL = 1 << 2
TER_GUEST_PAGING_VERIFICATION = 1 << 3
TER_IPI_VIRTUALIZATION = 1 << 4
TER_ENABLE_MSR_LIST_INSTRUCTIONS = 1 << 6
TER_VIRTUALIZE_IA32_SPEC_CTRL = 1 << 7

# Primary VM-exit controls (SDM table 25-13)
EXIT_SAVE_DEBUG_CONTROLS = 1 << 2
EXIT_HOST_ADDRESS_SPACE_SIZE = 1 << 9
EXIT_LOAD_PERF_GLOBAL_CTRL = 1 << 12
EXIT_ACK_INTERRUPT_ON_EXIT = 1 << 15
EXIT_SAVE_PAT = 1 << 18
EXIT_LOAD_PAT = 1 << 19
EXIT_SAVE_EFER = 1 << 20
EXIT_LOAD_EFER = 1 << 21
EXIT_SAVE_PREEMPTION_TIMER = 1 << 22
EXIT_CLEAR_BNDCFGS = 1 << 23
EXIT_CONCEAL_VMX_FROM_PT = 1 << 24
EXIT_CLEAR_RTIT_CTL = 1 << 25
EXIT_CLEAR_LBR_CTL = 1 << 26
EXIT_CLEAR_UINV = 1 << 27
EXIT_LOAD_CET_STATE = 1 << 28
EXIT_LOAD_PKRS = 1 << 29
EXIT_SAVE_PERF_GLOBAL_CTRL = 1 << 30
EXIT_ACTIVATE_SECONDARY = 1 << 31

# Secondary VM-exit controls (SDM table 25-14)
EXIT2_SAVE_FRED = 1 << 0
EXIT2_LOAD_FRED = 1 << 1
EXIT2_PREMATURELY_BUSY_SHADOW_STACK = 1 << 3

# VM-entry controls (SDM table 25-15)
ENTRY_LOAD_DEBUG_CONTROLS = 1 << 2
ENTRY_IA32E_MODE_GUEST = 1 << 9
ENTRY_TO_SMM = 1 << 10
ENTRY_DEACTIVATE_DUAL_MONITOR = 1 << 11
ENTRY_LOAD_PERF_GLOBAL_CTRL = 1 << 13
ENTRY_LOAD_PAT = 1 << 14
ENTRY_LOAD_EFER = 1 << 15
ENTRY_LOAD_BNDCFGS = 1 << 16
ENTRY_CONCEAL_VMX_FROM_PT = 1 << 17
ENTRY_LOAD_RTIT_CTL = 1 << 18
ENTRY_LOAD_UINV = 1 << 19
ENTRY_LOAD_CET_STATE = 1 << 20
ENTRY_LOAD_LBR_CTL = 1 << 21
ENTRY_LOAD_PKRS = 1 << 22
ENTRY_LOAD_FRED = 1 << 23

# Control and flag registers
CR0_PE, CR0_NE, CR0_WP, CR0_CD, CR0_NW, CR0_PG = 1, 1 << 5, 1 << 16, 1 << 30, 1 << 29, 1 << 31
CR4_PAE, CR4_PCIDE, CR4_CET, CR4_PKS = 1 << 5, 1 << 17, 1 << 23, 1 << 24
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
RFLAGS_TF, RFLAGS_IF, RFLAGS_VM = 1 << 8, 1 << 9, 1 << 17

U64 = (1 << 64) - 1


def canonical(address: int, caps: Capabilities) -> bool:
    """Canonical for the processor's linear-address width (SDM 3.3.7.1)."""
    top = address >> (caps.linear_address_width - 1)
    return top in (0, (1 << (65 - caps.linear_address_width)) - 1)


def physical_ok(address: int, caps: Capabilities) -> bool:
    """The address sets no bit beyond the processor's physical-address width."""
    return address >> caps.maxphyaddr == 0


def page_ok(address: int, caps: Capabilities) -> bool:
    """4 KiB aligned and within the physical-address width."""
    return address & 0xFFF == 0 and physical_ok(address, caps)


def respects(value: int, must_be1: int, may_be1: int) -> bool:
    """A control value sets every must-be-1 bit and no bit outside the may-be-1 bits."""
    return value & must_be1 == must_be1 and value & ~may_be1 == 0


def pin(v: Values) -> int:
    return v("PIN_BASED_VM_EXEC_CONTROL")


def proc(v: Values) -> int:
    return v("CPU_BASED_VM_EXEC_CONTROL")


def secondary(v: Values) -> int:
    """The secondary controls in effect (0 unless "activate secondary controls" is set)."""
    return v("SECONDARY_VM_EXEC_CONTROL") if proc(v) & PROC_ACTIVATE_SECONDARY else 0


def tertiary(v: Values) -> int:
    """The tertiary controls in effect (0 unless "activate tertiary controls" is set)."""
    return v("TERTIARY_VM_EXEC_CONTROL") if proc(v) & PROC_ACTIVATE_TERTIARY else 0


def exit_controls(v: Values) -> int:
    return v("VM_EXIT_CONTROLS")


def exit2(v: Values) -> int:
    """The secondary VM-exit controls in effect."""
    return v("SECONDARY_VM_EXIT_CONTROLS") if exit_controls(v) & EXIT_ACTIVATE_SECONDARY else 0


def entry_controls(v: Values) -> int:
    return v("VM_ENTRY_CONTROLS")


def ia32e_guest(v: Values) -> bool:
    return bool(entry_controls(v) & ENTRY_IA32E_MODE_GUEST)


def unrestricted(v: Values) -> bool:
    return bool(secondary(v) & SEC_UNRESTRICTED_GUEST)


class _Lazy(Mapping[str, Any]):
    """A mapping that reads a field's value when a message template names it."""

    def __init__(self, values: Values) -> None:
        self._values = values

    def __getitem__(self, key: str) -> int:
        return self._values(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


def say(template: str) -> Callable[[Values, Capabilities], str]:
    """An ``explain`` from a template that names fields: ``"CR0 = {GUEST_CR0:#x}"``."""

    def explain(values: Values, caps: Capabilities) -> str:
        return template.format_map(_Lazy(values))

    return explain


Holds = Callable[[Values, Capabilities], bool]
Explain = Callable[[Values, Capabilities], str]


def per_name(
    names: tuple[str, ...], bad: Callable[[int, Capabilities], object], what: str
) -> Explain:
    """An ``explain`` naming the first of ``names`` whose value is ``bad``."""

    def explain(v: Values, c: Capabilities) -> str:
        for name in names:
            if bad(v(name), c):
                return f"{name} = {v(name):#x} {what}"
        return f"one of {', '.join(names)} {what}"  # pragma: no cover - called on failure only

    return explain


def _row(
    stage: Stage,
    id: str,
    section: str,
    fields: tuple[str, ...] | str,
    holds: Holds,
    explain: Explain | str,
    **extra: Any,
) -> Check:
    names = tuple(fields.split()) if isinstance(fields, str) else fields
    return Check(
        id, section, stage, names, holds, say(explain) if isinstance(explain, str) else explain,
        **extra,
    )  # fmt: skip


def rows_for(stage: Stage) -> Callable[..., Check]:
    """A row constructor for one stage: ``row(id, section, "FIELD ...", holds, explain)``."""
    return partial(_row, stage)


FRED_CONFIG_RESERVED = 1 << 11 | 3 << 4 | 1 << 2  # IA32_FRED_CONFIG bits 11, 5:4, 2 (FRED spec)


def fred_problem(prefix: str, v: Values, c: Capabilities) -> str | None:
    """What is wrong with the FRED MSR fields of the guest or host area (``prefix`` GUEST/HOST):
    IA32_FRED_CONFIG reserved bits and a non-canonical page, RSP1-3 not 64-byte aligned or not
    canonical, SSP1-3 not 8-byte aligned or not canonical (Intel FRED specification, the
    VM-entry checks KVM's FRED patches to nested_vmx_check_{host,guest}_state implement)."""
    config = v(f"{prefix}_IA32_FRED_CONFIG")
    if config & FRED_CONFIG_RESERVED or not canonical(config & ~0xFFF, c):
        return f"{prefix}_IA32_FRED_CONFIG = {config:#x} sets reserved bits or is not canonical"
    for level in (1, 2, 3):
        rsp, ssp = v(f"{prefix}_IA32_FRED_RSP{level}"), v(f"{prefix}_IA32_FRED_SSP{level}")
        if rsp & 0x3F or not canonical(rsp, c):
            return f"{prefix}_IA32_FRED_RSP{level} = {rsp:#x} is not 64-byte aligned and canonical"
        if ssp & 7 or not canonical(ssp, c):
            return f"{prefix}_IA32_FRED_SSP{level} = {ssp:#x} is not 8-byte aligned and canonical"
    return None


def fred_fields(prefix: str) -> tuple[str, ...]:
    """The FRED MSR fields the FRED checks read (``fred_problem``)."""
    levels = [f"{prefix}_IA32_FRED_{kind}{n}" for kind in ("RSP", "SSP") for n in (1, 2, 3)]
    return (f"{prefix}_IA32_FRED_CONFIG", *levels)
