"""``valid_state``: a VMCS (64-bit guest and host) that passes every entry check for given
capabilities, built from the capabilities (never a constant that only fits the defaults).

This is what a hypervisor's VMCS set-up writes (e.g. KVM's ``init_vmcs``); the engine uses it
for a vCPU driven without a set-up of its own, harnesses and tests start from it.
"""

from __future__ import annotations

from ..capabilities import Capabilities
from ..fields import BY_NAME
from .bits import (
    EFER_LMA,
    EFER_LME,
    ENTRY_IA32E_MODE_GUEST,
    ENTRY_LOAD_EFER,
    EXIT_HOST_ADDRESS_SPACE_SIZE,
    EXIT_LOAD_EFER,
    PROC_ACTIVATE_SECONDARY,
    SEC_ENABLE_EPT,
)

__all__ = ["valid_state"]


def valid_state(caps: Capabilities, **overrides: int) -> dict[str, int]:
    """Field values with which VM entry passes every check: a 64-bit guest and host.

    ``overrides`` replace or add fields (names from the field table); an unknown name is a
    ``KeyError`` naming it.
    """
    state = {
        "PIN_BASED_VM_EXEC_CONTROL": caps.pin_must_be1,
        "CPU_BASED_VM_EXEC_CONTROL": caps.proc_must_be1 | PROC_ACTIVATE_SECONDARY,
        "SECONDARY_VM_EXEC_CONTROL": SEC_ENABLE_EPT,
        "EPT_POINTER": 0x1000 | (3 << 3) | 6,
        "VM_EXIT_CONTROLS": caps.exit_must_be1 | EXIT_HOST_ADDRESS_SPACE_SIZE | EXIT_LOAD_EFER,
        "VM_ENTRY_CONTROLS": caps.entry_must_be1 | ENTRY_IA32E_MODE_GUEST | ENTRY_LOAD_EFER,
        "HOST_CR0": 0x8005_0033 | caps.cr0_fixed0,
        "HOST_CR3": 0x10_0000,
        "HOST_CR4": 0x0000_2020 | caps.cr4_fixed0,
        "HOST_CS_SELECTOR": 0x10,
        "HOST_SS_SELECTOR": 0x18,
        "HOST_TR_SELECTOR": 0x40,
        "HOST_IA32_EFER": EFER_LME | EFER_LMA | 1,
        "HOST_RIP": 0xFFFF_FFFF_8100_0000,
        "HOST_RSP": 0xFFFF_C900_0000_0000,
        "GUEST_CR0": 0x8005_0033 | caps.cr0_fixed0,
        "GUEST_CR3": 0x20_0000,
        "GUEST_CR4": 0x0000_2020 | caps.cr4_fixed0,
        "GUEST_IA32_EFER": EFER_LME | EFER_LMA,
        "GUEST_CS_SELECTOR": 0x10,
        "GUEST_TR_SELECTOR": 0x40,
        "GUEST_CS_AR_BYTES": 0xA09B,
        "GUEST_TR_AR_BYTES": 0x008B,
        "GUEST_RFLAGS": 0x2,
        "GUEST_RIP": 0xFFF0,
        "VMCS_LINK_POINTER": 0xFFFF_FFFF_FFFF_FFFF,
    }
    for name, value in overrides.items():
        if name not in BY_NAME:
            raise KeyError(f"valid_state: {name!r} is not a VMCS field")
        state[name] = value
    return state
