"""``valid_state``: a VMCS (64-bit guest and host) that passes every entry check for given
capabilities, built from the capabilities (never a constant that only fits the defaults).

This is what a hypervisor's VMCS set-up writes (e.g. KVM's ``init_vmcs`` and
``vmx_set_segment``): flat 64-bit code and data segments, a busy 64-bit TSS, an unusable LDTR,
EPT with a write-back 4-level EPTP when the capabilities offer it, IA32_EFER loaded on entry and
exit when offered. Every field a check reads and that exists for the capabilities is in the
result, so a dump of it is complete. The engine uses it for a vCPU driven without a set-up of
its own; harnesses and tests start from it.
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

_CR0 = 0x8005_0033  # PG AM WP NE ET MP PE
_CR4 = 0x0000_2020  # VMXE PAE
_EFER_SCE = 1
_CODE64 = 0xA09B  # G, L, P, DPL 0, S, type 11 (execute/read, accessed)
_DATA = 0xC093  # G, D/B, P, DPL 0, S, type 3 (read/write, accessed)
_TSS64 = 0x008B  # P, type 11 (busy 64-bit TSS)
_UNUSABLE = 0x1_0000
_EPT_CAP_WALK4, _EPT_CAP_WB = 1 << 6, 1 << 14


def _offered(value: int, must_be1: int, allowed1: int) -> int:
    """``value`` with the must-be-1 bits and without the bits the capabilities do not allow."""
    return (value | must_be1) & allowed1


def _eptp(caps: Capabilities) -> int:
    memory_type = 6 if caps.ept_vpid_cap & _EPT_CAP_WB else 0
    walk = 3 if caps.ept_vpid_cap & _EPT_CAP_WALK4 else 4
    return 0x1000 | walk << 3 | memory_type


def _fixed(value: int, fixed0: int, fixed1: int) -> int:
    return (value | fixed0) & fixed1


def _controls(caps: Capabilities) -> dict[str, int]:
    proc = _offered(PROC_ACTIVATE_SECONDARY, caps.proc_must_be1, caps.proc_allowed1)
    state = {
        "PIN_BASED_VM_EXEC_CONTROL": caps.pin_must_be1,
        "CPU_BASED_VM_EXEC_CONTROL": proc,
        "VM_EXIT_CONTROLS": _offered(
            EXIT_HOST_ADDRESS_SPACE_SIZE | EXIT_LOAD_EFER, caps.exit_must_be1, caps.exit_allowed1
        ),
        "VM_ENTRY_CONTROLS": _offered(
            ENTRY_IA32E_MODE_GUEST | ENTRY_LOAD_EFER, caps.entry_must_be1, caps.entry_allowed1
        ),
        "CR3_TARGET_COUNT": 0,
        "VM_ENTRY_INTR_INFO_FIELD": 0,
        "VM_ENTRY_MSR_LOAD_COUNT": 0,
        "VM_EXIT_MSR_LOAD_COUNT": 0,
        "VM_EXIT_MSR_STORE_COUNT": 0,
    }
    if proc & PROC_ACTIVATE_SECONDARY:
        state["SECONDARY_VM_EXEC_CONTROL"] = caps.secondary_allowed1 & SEC_ENABLE_EPT
        if caps.offers("ept"):
            state["EPT_POINTER"] = _eptp(caps)
    return state


def _host(caps: Capabilities) -> dict[str, int]:
    return {
        "HOST_CR0": _fixed(_CR0, caps.cr0_fixed0, caps.cr0_fixed1),
        "HOST_CR3": 0x10_0000,
        "HOST_CR4": _fixed(_CR4, caps.cr4_fixed0, caps.cr4_fixed1),
        "HOST_ES_SELECTOR": 0,
        "HOST_CS_SELECTOR": 0x10,
        "HOST_SS_SELECTOR": 0x18,
        "HOST_DS_SELECTOR": 0,
        "HOST_FS_SELECTOR": 0,
        "HOST_GS_SELECTOR": 0,
        "HOST_TR_SELECTOR": 0x40,
        "HOST_FS_BASE": 0,
        "HOST_GS_BASE": 0xFFFF_8880_0000_0000,
        "HOST_TR_BASE": 0xFFFF_FE00_0000_3000,
        "HOST_GDTR_BASE": 0xFFFF_FE00_0000_1000,
        "HOST_IDTR_BASE": 0xFFFF_FE00_0000_0000,
        "HOST_IA32_SYSENTER_ESP": 0,
        "HOST_IA32_SYSENTER_EIP": 0,
        "HOST_IA32_EFER": EFER_LME | EFER_LMA | _EFER_SCE,
        "HOST_RIP": 0xFFFF_FFFF_8100_0000,
        "HOST_RSP": 0xFFFF_C900_0000_0000,
    }


def _segment(
    name: str, selector: int, access_rights: int, limit: int = 0xFFFF_FFFF
) -> dict[str, int]:
    return {
        f"GUEST_{name}_SELECTOR": selector,
        f"GUEST_{name}_BASE": 0,
        f"GUEST_{name}_LIMIT": limit,
        f"GUEST_{name}_AR_BYTES": access_rights,
    }


def _guest(caps: Capabilities) -> dict[str, int]:
    state = {
        "GUEST_CR0": _fixed(_CR0, caps.cr0_fixed0, caps.cr0_fixed1),
        "GUEST_CR3": 0x20_0000,
        "GUEST_CR4": _fixed(_CR4, caps.cr4_fixed0, caps.cr4_fixed1),
        "GUEST_DR7": 0x400,
        "GUEST_IA32_DEBUGCTL": 0,
        "GUEST_IA32_EFER": EFER_LME | EFER_LMA,
        **_segment("CS", 0x10, _CODE64),
        **_segment("SS", 0x18, _DATA),
        **_segment("DS", 0x18, _DATA),
        **_segment("ES", 0x18, _DATA),
        **_segment("FS", 0, _UNUSABLE, 0),
        **_segment("GS", 0, _UNUSABLE, 0),
        **_segment("LDTR", 0, _UNUSABLE, 0),
        **_segment("TR", 0x40, _TSS64, 0x67),
        "GUEST_GDTR_BASE": 0xFFFF_FE00_0000_1000,
        "GUEST_GDTR_LIMIT": 0x7F,
        "GUEST_IDTR_BASE": 0xFFFF_FE00_0000_0000,
        "GUEST_IDTR_LIMIT": 0xFFF,
        "GUEST_RFLAGS": 0x2,
        "GUEST_RIP": 0xFFF0,
        "GUEST_RSP": 0x8000,
        "GUEST_SYSENTER_ESP": 0,
        "GUEST_SYSENTER_EIP": 0,
        "GUEST_ACTIVITY_STATE": 0,
        "GUEST_INTERRUPTIBILITY_INFO": 0,
        "GUEST_PENDING_DBG_EXCEPTIONS": 0,
        "VMCS_LINK_POINTER": 0xFFFF_FFFF_FFFF_FFFF,
    }
    return state


def valid_state(caps: Capabilities, **overrides: int) -> dict[str, int]:
    """Field values with which VM entry passes every check: a 64-bit guest and host.

    ``overrides`` replace or add fields (names from the field table; an unknown name is a
    ``KeyError`` naming it) and are kept even for a field the capabilities do not offer, so a
    harness that writes it sees VMfailValid(12). The builder's own fields that the capabilities
    do not offer are left out.
    """
    built = {**_controls(caps), **_host(caps), **_guest(caps)}
    if not built["VM_ENTRY_CONTROLS"] & ENTRY_IA32E_MODE_GUEST:
        raise ValueError("valid_state: the capabilities do not allow 'IA-32e mode guest'")
    state = {name: value for name, value in built.items() if caps.offers(BY_NAME[name].feature)}
    for name, value in overrides.items():
        if name not in BY_NAME:
            raise KeyError(f"valid_state: {name!r} is not a VMCS field")
        state[name] = value
    return state
