"""A vCPU's VMX capabilities, chosen at creation.

Defaults (DESIGN.md "Default vCPU capabilities") make a vCPU look like a current Intel host as
KVM's nested VMX presents it to L1:
- VMCS revision identifier 0x11E57ED0 (IA32_VMX_BASIC[30:0]; KVM's ``VMCS12_REVISION`` in
  arch/x86/kvm/vmx/vmcs12.h), MAXPHYADDR 46;
- IA32_FEATURE_CONTROL 0x5: lock bit and "enable VMX outside SMX" (SDM 24.7);
- CR0 fixed-0 bits PE, NE, PG (IA32_VMX_CR0_FIXED0 = 0x80000021), CR4 fixed-0 bit VMXE
  (IA32_VMX_CR4_FIXED0 = 0x2000) (SDM A.7, A.8);
- control MSRs' default1 bits (SDM A.2-A.5): pin-based 0x16, primary processor-based 0x0401E172,
  VM-exit 0x36DFF, VM-entry 0x11FF; allowed-1 bits include I/O and MSR bitmaps, secondary
  controls, host address-space size, IA-32e mode guest, load PAT and load/save IA32_EFER;
- IA32_VMX_MISC: CR3-target count 4 (bits 24:16); bit 29 (VMWRITE to VM-exit information
  fields) clear unless asked; VMCS shadowing (secondary control bit 14) not offered unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["DEFAULT_CAPABILITIES", "Capabilities"]

_SECONDARY_VMCS_SHADOWING = 1 << 14


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the emulated processor reports in its VMX capability MSRs."""

    revision_id: int = 0x11E5_7ED0
    maxphyaddr: int = 46
    feature_control: int = 0x5
    cr0_fixed0: int = 0x8000_0021
    cr4_fixed0: int = 0x2000
    vmx_misc_bit29: bool = False
    vmcs_shadowing: bool = False
    cr3_target_count: int = 4
    pin_default1: int = 0x16
    pin_allowed1: int = 0xFF
    proc_default1: int = 0x0401_E172
    proc_allowed1: int = 0xFFF9_FFFE
    secondary_allowed1: int = field(default=0x0FFF_BFFF)
    exit_default1: int = 0x0003_6DFF
    exit_allowed1: int = 0x003F_FFFF
    entry_default1: int = 0x11FF
    entry_allowed1: int = 0xFFFF

    def __post_init__(self) -> None:
        if not 0 <= self.revision_id < 1 << 31:
            raise ValueError(f"revision id {self.revision_id:#x} does not fit 31 bits")
        if not 32 <= self.maxphyaddr <= 52:
            raise ValueError(f"MAXPHYADDR {self.maxphyaddr} is outside 32..52")
        if not 0 <= self.cr3_target_count < 1 << 9:  # IA32_VMX_MISC[24:16] (SDM A.6)
            raise ValueError(f"CR3-target count {self.cr3_target_count} does not fit 9 bits")
        if not 0 <= self.feature_control < 1 << 64:
            raise ValueError(f"IA32_FEATURE_CONTROL {self.feature_control:#x} does not fit 64 bits")
        if self.vmcs_shadowing:
            object.__setattr__(
                self, "secondary_allowed1", self.secondary_allowed1 | _SECONDARY_VMCS_SHADOWING
            )

    @property
    def vmx_basic(self) -> int:
        """IA32_VMX_BASIC: revision id, 4 KiB region size (bits 44:32), true controls (bit 55)."""
        return self.revision_id | (4096 << 32) | (6 << 50) | (1 << 54) | (1 << 55)

    @property
    def vmx_misc(self) -> int:
        """IA32_VMX_MISC: activity states HLT/shutdown/wait-for-SIPI, CR3 targets, bit 29."""
        return (0x7 << 6) | (self.cr3_target_count << 16) | (int(self.vmx_misc_bit29) << 29)

    @property
    def physical_address_limit(self) -> int:
        """One past the highest physical address (2**MAXPHYADDR)."""
        return 1 << self.maxphyaddr

    def with_changes(self, **changes: object) -> Capabilities:
        """A copy with some capabilities changed (validated like a new one)."""
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_CAPABILITIES = Capabilities()
