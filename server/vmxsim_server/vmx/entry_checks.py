"""The checks VMLAUNCH and VMRESUME run before entering the guest: a documented subset of
Intel SDM Vol. 3C chapter 27 (chapter 26 before 2023), "VM Entries".

Each check is a row of data: a description (used as the failure message) and a predicate over
the VMCS values and the vCPU's capabilities. ``CONTROL_CHECKS`` fail VM entry with
VMfailValid(7), ``HOST_CHECKS`` with VMfailValid(8) (SDM 27.2); ``GUEST_CHECKS`` make the entry
fail as a VM exit with basic reason 33 and bit 31 set (SDM 27.3, 27.8).

Implemented subset:
- controls (27.2.1): pin-based, primary and VM-exit/VM-entry controls respect their default1 and
  allowed-1 bits; secondary controls respect allowed-1 when activated; CR3-target count <= the
  capability; I/O- and MSR-bitmap addresses 4 KiB aligned and below MAXPHYADDR when used; the
  EPT pointer's memory type (UC or WB) and page-walk length 4 when EPT is on; VM-entry
  interruption information without reserved bits when valid;
- host state (27.2.2-27.2.4): CR0 and CR4 fixed-0 bits, CR3 below MAXPHYADDR, "host address-space
  size" set on this x86-64 host with CR4.PAE and a canonical RIP, selectors with RPL = TI = 0,
  CS and TR selectors non-zero, canonical FS/GS/TR/GDTR/IDTR bases, IA32_EFER consistent when
  "load IA32_EFER" is set;
- guest state (27.3.1): CR0 fixed-0 bits (PE and PG relaxed by "unrestricted guest"), CR0.PG
  implies CR0.PE, CR4 fixed-0 bits, IA-32e mode guest implies CR0.PG and CR4.PAE, VMCS link
  pointer all ones, RFLAGS reserved bits (bit 1 set; 63:22, 15, 5, 3 clear), activity state
  0..3, TR selector TI = 0, IA32_EFER.LMA equal to "IA-32e mode guest" when "load IA32_EFER".
Everything else the SDM checks is accepted as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .capabilities import Capabilities
from .fields import BY_NAME

__all__ = ["CONTROL_CHECKS", "GUEST_CHECKS", "HOST_CHECKS", "Check", "first_failure", "valid_state"]

Values = Callable[[str], int]

# Control bits used below (SDM tables 25-5 .. 25-16)
PROC_USE_IO_BITMAPS = 1 << 25
PROC_USE_MSR_BITMAPS = 1 << 28
PROC_ACTIVATE_SECONDARY = 1 << 31
SECONDARY_ENABLE_EPT = 1 << 1
SECONDARY_UNRESTRICTED_GUEST = 1 << 7
SECONDARY_VMCS_SHADOWING = 1 << 14
EXIT_HOST_ADDRESS_SPACE_SIZE = 1 << 9
EXIT_LOAD_EFER = 1 << 21
ENTRY_IA32E_MODE_GUEST = 1 << 9
ENTRY_LOAD_EFER = 1 << 15
CR0_PE, CR0_PG = 1 << 0, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


@dataclass(frozen=True, slots=True)
class Check:
    """One VM-entry check: its SDM description and a predicate that is True when it holds."""

    description: str
    holds: Callable[[Values, Capabilities], bool]


def _respects(value: int, default1: int, allowed1: int) -> bool:
    return value & default1 == default1 and value & ~allowed1 & 0xFFFF_FFFF == 0


def _canonical(address: int) -> bool:
    return (address >> 47) in (0, 0x1FFFF)


def _secondary(v: Values) -> int:
    return (
        v("SECONDARY_VM_EXEC_CONTROL")
        if v("CPU_BASED_VM_EXEC_CONTROL") & PROC_ACTIVATE_SECONDARY
        else 0
    )


def _page_address_ok(address: int, caps: Capabilities) -> bool:
    return address % 4096 == 0 and address < caps.physical_address_limit


CONTROL_CHECKS: tuple[Check, ...] = (
    Check("pin-based VM-execution controls respect IA32_VMX_PINBASED_CTLS",
          lambda v, c: _respects(v("PIN_BASED_VM_EXEC_CONTROL"), c.pin_default1, c.pin_allowed1)),
    Check("primary processor-based controls respect IA32_VMX_PROCBASED_CTLS",
          lambda v, c: _respects(v("CPU_BASED_VM_EXEC_CONTROL"), c.proc_default1, c.proc_allowed1)),
    Check("secondary processor-based controls respect IA32_VMX_PROCBASED_CTLS2",
          lambda v, c: _respects(_secondary(v), 0, c.secondary_allowed1)),
    Check("CR3-target count is not greater than IA32_VMX_MISC[24:16]",
          lambda v, c: v("CR3_TARGET_COUNT") <= c.cr3_target_count),
    Check("I/O-bitmap addresses are 4 KiB aligned and below MAXPHYADDR",
          lambda v, c: not v("CPU_BASED_VM_EXEC_CONTROL") & PROC_USE_IO_BITMAPS
          or (_page_address_ok(v("IO_BITMAP_A"), c) and _page_address_ok(v("IO_BITMAP_B"), c))),
    Check("MSR-bitmap address is 4 KiB aligned and below MAXPHYADDR",
          lambda v, c: not v("CPU_BASED_VM_EXEC_CONTROL") & PROC_USE_MSR_BITMAPS
          or _page_address_ok(v("MSR_BITMAP"), c)),
    Check("EPT pointer has memory type UC or WB and a page-walk length of 4",
          lambda v, c: not _secondary(v) & SECONDARY_ENABLE_EPT
          or (v("EPT_POINTER") & 7 in (0, 6) and (v("EPT_POINTER") >> 3) & 7 == 3)),
    Check("VM-exit controls respect IA32_VMX_EXIT_CTLS",
          lambda v, c: _respects(v("VM_EXIT_CONTROLS"), c.exit_default1, c.exit_allowed1)),
    Check("VM-entry controls respect IA32_VMX_ENTRY_CTLS",
          lambda v, c: _respects(v("VM_ENTRY_CONTROLS"), c.entry_default1, c.entry_allowed1)),
    Check("VM-entry interruption information has no reserved bits set when valid",
          lambda v, c: not v("VM_ENTRY_INTR_INFO_FIELD") >> 31
          or (v("VM_ENTRY_INTR_INFO_FIELD") & 0x7FFF_F000 == 0
              and (v("VM_ENTRY_INTR_INFO_FIELD") >> 8) & 7 != 1)),
)  # fmt: skip

_HOST_SELECTORS = ("ES", "CS", "SS", "DS", "FS", "GS", "TR")
_HOST_BASES = ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_TR_BASE", "HOST_GDTR_BASE", "HOST_IDTR_BASE")

HOST_CHECKS: tuple[Check, ...] = (
    Check("host CR0 has the IA32_VMX_CR0_FIXED0 bits set",
          lambda v, c: v("HOST_CR0") & c.cr0_fixed0 == c.cr0_fixed0),
    Check("host CR4 has the IA32_VMX_CR4_FIXED0 bits set",
          lambda v, c: v("HOST_CR4") & c.cr4_fixed0 == c.cr4_fixed0),
    Check("host CR3 is below MAXPHYADDR",
          lambda v, c: v("HOST_CR3") < c.physical_address_limit),
    Check("'host address-space size' is set on an x86-64 host",
          lambda v, c: bool(v("VM_EXIT_CONTROLS") & EXIT_HOST_ADDRESS_SPACE_SIZE)),
    Check("host CR4.PAE is set and host RIP is canonical",
          lambda v, c: bool(v("HOST_CR4") & CR4_PAE) and _canonical(v("HOST_RIP"))),
    Check("host selectors have RPL = 0 and TI = 0",
          lambda v, c: all(v(f"HOST_{s}_SELECTOR") & 7 == 0 for s in _HOST_SELECTORS)),
    Check("host CS and TR selectors are not zero",
          lambda v, c: v("HOST_CS_SELECTOR") != 0 and v("HOST_TR_SELECTOR") != 0),
    Check("host FS, GS, TR, GDTR and IDTR bases are canonical",
          lambda v, c: all(_canonical(v(name)) for name in _HOST_BASES)),
    Check("host IA32_EFER is consistent when 'load IA32_EFER' is set",
          lambda v, c: not v("VM_EXIT_CONTROLS") & EXIT_LOAD_EFER
          or (v("HOST_IA32_EFER") & ~0xD01 == 0
              and bool(v("HOST_IA32_EFER") & EFER_LMA) == bool(v("HOST_IA32_EFER") & EFER_LME)
              == bool(v("VM_EXIT_CONTROLS") & EXIT_HOST_ADDRESS_SPACE_SIZE))),
)  # fmt: skip


def _guest_cr0_fixed0(v: Values, c: Capabilities) -> int:
    if _secondary(v) & SECONDARY_UNRESTRICTED_GUEST:
        return c.cr0_fixed0 & ~(CR0_PE | CR0_PG)
    return c.cr0_fixed0


GUEST_CHECKS: tuple[Check, ...] = (
    Check("guest CR0 has the IA32_VMX_CR0_FIXED0 bits set",
          lambda v, c: v("GUEST_CR0") & _guest_cr0_fixed0(v, c) == _guest_cr0_fixed0(v, c)),
    Check("guest CR0.PG implies CR0.PE",
          lambda v, c: not v("GUEST_CR0") & CR0_PG or bool(v("GUEST_CR0") & CR0_PE)),
    Check("guest CR4 has the IA32_VMX_CR4_FIXED0 bits set",
          lambda v, c: v("GUEST_CR4") & c.cr4_fixed0 == c.cr4_fixed0),
    Check("'IA-32e mode guest' implies guest CR0.PG and CR4.PAE",
          lambda v, c: not v("VM_ENTRY_CONTROLS") & ENTRY_IA32E_MODE_GUEST
          or (bool(v("GUEST_CR0") & CR0_PG) and bool(v("GUEST_CR4") & CR4_PAE))),
    Check("VMCS link pointer is FFFFFFFF_FFFFFFFFH",
          lambda v, c: bool(_secondary(v) & SECONDARY_VMCS_SHADOWING)
          or v("VMCS_LINK_POINTER") == 0xFFFF_FFFF_FFFF_FFFF),
    Check("guest RFLAGS has bit 1 set and bits 63:22, 15, 5 and 3 clear",
          lambda v, c: v("GUEST_RFLAGS") & 2 == 2 and v("GUEST_RFLAGS") & ~0x3F7FD7 == 0),
    Check("guest activity state is 0..3",
          lambda v, c: v("GUEST_ACTIVITY_STATE") <= 3),
    Check("guest TR selector has TI = 0",
          lambda v, c: v("GUEST_TR_SELECTOR") & 4 == 0),
    Check("guest IA32_EFER.LMA equals 'IA-32e mode guest' when 'load IA32_EFER' is set",
          lambda v, c: not v("VM_ENTRY_CONTROLS") & ENTRY_LOAD_EFER
          or bool(v("GUEST_IA32_EFER") & EFER_LMA)
          == bool(v("VM_ENTRY_CONTROLS") & ENTRY_IA32E_MODE_GUEST)),
)  # fmt: skip


def first_failure(checks: tuple[Check, ...], values: list[int], caps: Capabilities) -> Check | None:
    """The first check in ``checks`` that does not hold for these VMCS values, or None."""

    def value(name: str) -> int:
        return values[BY_NAME[name].bit]

    for check in checks:
        if not check.holds(value, caps):
            return check
    return None


def valid_state(caps: Capabilities) -> dict[str, int]:
    """Field values with which VM entry passes every check above: a 64-bit guest and host.

    This is what a hypervisor's VMCS set-up writes (e.g. KVM's ``init_vmcs``); the engine uses it
    for a vCPU driven without a set-up of its own.
    """
    return {
        "PIN_BASED_VM_EXEC_CONTROL": caps.pin_default1,
        "CPU_BASED_VM_EXEC_CONTROL": caps.proc_default1 | PROC_ACTIVATE_SECONDARY,
        "SECONDARY_VM_EXEC_CONTROL": SECONDARY_ENABLE_EPT,
        "EPT_POINTER": 0x1000 | (3 << 3) | 6,
        "VM_EXIT_CONTROLS": caps.exit_default1 | EXIT_HOST_ADDRESS_SPACE_SIZE | EXIT_LOAD_EFER,
        "VM_ENTRY_CONTROLS": caps.entry_default1 | ENTRY_IA32E_MODE_GUEST | ENTRY_LOAD_EFER,
        "HOST_CR0": 0x8005_0033,
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
