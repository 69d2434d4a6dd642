"""A vCPU's VMX capabilities, chosen at creation: every IA32_VMX_* MSR a VMM reads (SDM appendix A).

Defaults (DESIGN.md "Default vCPU capabilities") make a vCPU look like a current Intel host as
KVM's nested VMX presents it to L1 (``nested_vmx_setup_ctls_msrs`` in arch/x86/kvm/vmx/nested.c):
- VMCS revision identifier 0x11E57ED0 (IA32_VMX_BASIC[30:0]; KVM's ``VMCS12_REVISION`` in
  arch/x86/kvm/vmx/vmcs12.h), MAXPHYADDR 46, 48-bit linear addresses;
- IA32_FEATURE_CONTROL 0x5: lock bit and "enable VMX outside SMX" (SDM 24.7);
- CR0 fixed-0 bits PE, NE, PG (IA32_VMX_CR0_FIXED0 = 0x80000021), CR4 fixed-0 bit VMXE
  (IA32_VMX_CR4_FIXED0 = 0x2000) (SDM A.7, A.8); fixed-1 MSRs allow every CR0 bit and the CR4
  bits of a current host without LA57, SMXE and Key Locker;
- control MSRs' default1 bits (SDM A.2-A.5): pin-based 0x16, primary processor-based 0x0401E172,
  VM-exit 0x36DFF, VM-entry 0x11FF; allowed-1 bits include I/O and MSR bitmaps, secondary
  controls, host address-space size, IA-32e mode guest, load PAT and load/save IA32_EFER;
- IA32_VMX_BASIC bit 55 set: the TRUE_* control MSRs (SDM A.2) report default1 bits that may be
  cleared: CR3-load/store exiting (TRUE_PROCBASED 0x04006172), save debug controls (TRUE_EXIT
  0x36DFB) and load debug controls (TRUE_ENTRY 0x11FB), as KVM offers ("We support free control
  of CR3 access interception" etc.). VM entry checks the controls against the TRUE_* MSRs when
  bit 55 is set and against the plain MSRs otherwise (SDM A.2);
- IA32_VMX_MISC: preemption-timer rate 5, "store EFER.LMA" (bit 5), activity states HLT,
  shutdown, wait-for-SIPI, CR3-target count 4 (bits 24:16), bit 29 (VMWRITE to VM-exit
  information fields) clear unless asked, bit 30 (zero-length instruction injection) set;
- IA32_VMX_EPT_VPID_CAP 0x00000F0106734141 (execute-only, 4-level walks, UC and WB, 2 MiB and
  1 GiB pages, INVEPT, accessed/dirty flags, INVVPID), IA32_VMX_VMFUNC 1 (EPTP switching);
- VMCS shadowing (secondary control bit 14), tertiary controls and secondary VM-exit controls
  not offered unless asked;
- the MSR bits the checks of MSR fields accept: IA32_PERF_GLOBAL_CTRL 8 general and 3 fixed
  counters and PERF_METRICS (bit 48), IA32_DEBUGCTL bits 0-1 and 6-15, IA32_RTIT_CTL of an
  Intel PT with address ranges 0-3, IA32_LBR_CTL bits 0-3 and 16-22 (SDM Vol. 4 table 2-2); no SGX.

``msrs()`` gives the MSR values, ``from_msrs`` builds capabilities from MSR values (``rdmsr``).
``offers(feature)`` answers whether a VMCS field's feature exists (``FEATURES``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace

__all__ = ["DEFAULT_CAPABILITIES", "FEATURES", "MSR_NAMES", "Capabilities"]

_SECONDARY_VMCS_SHADOWING = 1 << 14
_U32 = 0xFFFF_FFFF

MSR_NAMES: dict[int, str] = {
    0x480: "IA32_VMX_BASIC",
    0x481: "IA32_VMX_PINBASED_CTLS",
    0x482: "IA32_VMX_PROCBASED_CTLS",
    0x483: "IA32_VMX_EXIT_CTLS",
    0x484: "IA32_VMX_ENTRY_CTLS",
    0x485: "IA32_VMX_MISC",
    0x486: "IA32_VMX_CR0_FIXED0",
    0x487: "IA32_VMX_CR0_FIXED1",
    0x488: "IA32_VMX_CR4_FIXED0",
    0x489: "IA32_VMX_CR4_FIXED1",
    0x48A: "IA32_VMX_VMCS_ENUM",
    0x48B: "IA32_VMX_PROCBASED_CTLS2",
    0x48C: "IA32_VMX_EPT_VPID_CAP",
    0x48D: "IA32_VMX_TRUE_PINBASED_CTLS",
    0x48E: "IA32_VMX_TRUE_PROCBASED_CTLS",
    0x48F: "IA32_VMX_TRUE_EXIT_CTLS",
    0x490: "IA32_VMX_TRUE_ENTRY_CTLS",
    0x491: "IA32_VMX_VMFUNC",
    0x492: "IA32_VMX_PROCBASED_CTLS3",
    0x493: "IA32_VMX_EXIT_CTLS2",
}
"""Every IA32_VMX_* capability MSR (SDM appendix A, table 2-2) by index."""


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
    # --- added with the full VM-entry checks (SDM appendix A) ---
    linear_address_width: int = 48
    cr0_fixed1: int = 0xFFFF_FFFF
    cr4_fixed1: int = 0x01F7_2FFF
    true_controls: bool = True
    true_pin_default1: int = 0x16
    true_proc_default1: int = 0x0400_6172
    true_exit_default1: int = 0x0003_6DFB
    true_entry_default1: int = 0x11FB
    tertiary_allowed1: int = 0
    exit2_allowed1: int = 0
    ept_vpid_cap: int = 0x0000_0F01_0673_4141
    vmfunc: int = 1
    preemption_timer_rate: int = 5
    store_lma: bool = True
    activity_states: int = 0x7
    msr_list_size: int = 0
    zero_length_injection: bool = True
    hardware_exception_error_code_free: bool = False
    # --- MSR bits the processor supports, for the checks of MSR fields (SDM Vol. 4, 27.2.2)
    perf_global_ctrl_valid: int = 0x0001_0007_0000_00FF
    debugctl_valid: int = 0xFFC3
    rtit_ctl_valid: int = 0x0100_FFFF_0F7B_FFFF
    lbr_ctl_valid: int = 0x007F_000F
    sgx: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.revision_id < 1 << 31:
            raise ValueError(f"revision id {self.revision_id:#x} does not fit 31 bits")
        if not 32 <= self.maxphyaddr <= 52:
            raise ValueError(f"MAXPHYADDR {self.maxphyaddr} is outside 32..52")
        if self.linear_address_width not in (48, 57):
            raise ValueError(f"linear-address width {self.linear_address_width} is not 48 or 57")
        if not 0 <= self.cr3_target_count < 1 << 9:  # IA32_VMX_MISC[24:16] (SDM A.6)
            raise ValueError(f"CR3-target count {self.cr3_target_count} does not fit 9 bits")
        for name, bits in _WIDTHS.items():
            value = getattr(self, name)
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name} {value:#x} does not fit {bits} bits")
        if self.vmcs_shadowing:
            object.__setattr__(
                self, "secondary_allowed1", self.secondary_allowed1 | _SECONDARY_VMCS_SHADOWING
            )

    # --- what VM entry checks the controls against (SDM A.2: TRUE_* MSRs when bit 55 is set)

    @property
    def pin_must_be1(self) -> int:
        """Pin-based controls that must be 1 (TRUE_PINBASED_CTLS when bit 55 is set)."""
        return self.true_pin_default1 if self.true_controls else self.pin_default1

    @property
    def proc_must_be1(self) -> int:
        """Primary processor-based controls that must be 1."""
        return self.true_proc_default1 if self.true_controls else self.proc_default1

    @property
    def exit_must_be1(self) -> int:
        """Primary VM-exit controls that must be 1."""
        return self.true_exit_default1 if self.true_controls else self.exit_default1

    @property
    def entry_must_be1(self) -> int:
        """VM-entry controls that must be 1."""
        return self.true_entry_default1 if self.true_controls else self.entry_default1

    # --- the MSRs --------------------------------------------------------------------------

    @property
    def vmx_basic(self) -> int:
        """IA32_VMX_BASIC: revision id, 4 KiB region size (bits 44:32), WB (53:50), INS/OUTS
        information (54), true controls (55), error-code-free hardware exceptions (56)."""
        return (
            self.revision_id
            | (4096 << 32)
            | (6 << 50)
            | (1 << 54)
            | (int(self.true_controls) << 55)
            | (int(self.hardware_exception_error_code_free) << 56)
        )

    @property
    def vmx_misc(self) -> int:
        """IA32_VMX_MISC: timer rate, store LMA, activity states, CR3 targets, MSR-list size,
        bit 29 and bit 30 (SDM A.6)."""
        return (
            self.preemption_timer_rate
            | (int(self.store_lma) << 5)
            | (self.activity_states << 6)
            | (self.cr3_target_count << 16)
            | (self.msr_list_size << 25)
            | (int(self.vmx_misc_bit29) << 29)
            | (int(self.zero_length_injection) << 30)
        )

    @property
    def max_msr_list(self) -> int:
        """The recommended maximum number of MSR-list entries, 512 * (N + 1) (SDM A.6)."""
        return 512 * (self.msr_list_size + 1)

    @property
    def physical_address_limit(self) -> int:
        """One past the highest physical address (2**MAXPHYADDR)."""
        return 1 << self.maxphyaddr

    def msrs(self) -> dict[int, int]:
        """Every IA32_VMX_* MSR's value by index (SDM appendix A)."""
        from .fields import max_index

        return {
            0x480: self.vmx_basic,
            0x481: _ctls(self.pin_default1, self.pin_allowed1),
            0x482: _ctls(self.proc_default1, self.proc_allowed1),
            0x483: _ctls(self.exit_default1, self.exit_allowed1),
            0x484: _ctls(self.entry_default1, self.entry_allowed1),
            0x485: self.vmx_misc,
            0x486: self.cr0_fixed0,
            0x487: self.cr0_fixed1,
            0x488: self.cr4_fixed0,
            0x489: self.cr4_fixed1,
            0x48A: max_index(self) << 1,
            0x48B: _ctls(0, self.secondary_allowed1),
            0x48C: self.ept_vpid_cap,
            0x48D: _ctls(self.true_pin_default1, self.pin_allowed1),
            0x48E: _ctls(self.true_proc_default1, self.proc_allowed1),
            0x48F: _ctls(self.true_exit_default1, self.exit_allowed1),
            0x490: _ctls(self.true_entry_default1, self.entry_allowed1),
            0x491: self.vmfunc,
            0x492: self.tertiary_allowed1,
            0x493: self.exit2_allowed1,
        }

    @classmethod
    def from_msrs(cls, msrs: Mapping[int, int], **changes: object) -> Capabilities:
        """Capabilities from IA32_VMX_* MSR values (e.g. ``rdmsr`` output); MSRs not given keep
        the defaults. ``changes`` sets the rest (``maxphyaddr``, ``feature_control``)."""
        values: dict[str, object] = {}
        for index, value in msrs.items():
            decode = _DECODERS.get(index)
            if decode is None:
                raise ValueError(f"MSR {index:#x} is not an IA32_VMX_* capability MSR")
            if not 0 <= value < 1 << 64:
                raise ValueError(f"{MSR_NAMES[index]} value {value:#x} does not fit 64 bits")
            values.update(decode(value))
        values.update(changes)
        return cls(**values)  # type: ignore[arg-type]

    def offers(self, feature: str | None) -> bool:
        """Whether the processor supports ``feature`` (a VMCS field's ``feature``)."""
        return feature is None or FEATURES[feature](self)

    def with_changes(self, **changes: object) -> Capabilities:
        """A copy with some capabilities changed (validated like a new one)."""
        return replace(self, **changes)  # type: ignore[arg-type]


_WIDTHS = {
    f.name: 64 if f.name in ("feature_control", "ept_vpid_cap", "vmfunc", "tertiary_allowed1",
                             "exit2_allowed1", "perf_global_ctrl_valid", "debugctl_valid",
                             "rtit_ctl_valid", "lbr_ctl_valid") else 32
    for f in fields(Capabilities)
    if f.type == "int" and f.name not in ("revision_id", "maxphyaddr", "linear_address_width",
                                          "cr3_target_count", "preemption_timer_rate",
                                          "activity_states", "msr_list_size")
}  # fmt: skip
_WIDTHS.update(preemption_timer_rate=5, activity_states=3, msr_list_size=3)


def _ctls(default1: int, allowed1: int) -> int:
    """A control MSR: allowed-0 settings (must be 1) in 31:0, allowed-1 settings in 63:32."""
    return default1 | allowed1 << 32


def _split(prefix: str, default1: str | None) -> Callable[[int], dict[str, object]]:
    def decode(value: int) -> dict[str, object]:
        out: dict[str, object] = {f"{prefix}_allowed1": value >> 32}
        if default1:
            out[default1] = value & _U32
        return out

    return decode


def _basic(value: int) -> dict[str, object]:
    return {
        "revision_id": value & 0x7FFF_FFFF,
        "true_controls": bool(value >> 55 & 1),
        "hardware_exception_error_code_free": bool(value >> 56 & 1),
    }


def _misc(value: int) -> dict[str, object]:
    return {
        "preemption_timer_rate": value & 0x1F,
        "store_lma": bool(value >> 5 & 1),
        "activity_states": value >> 6 & 7,
        "cr3_target_count": value >> 16 & 0x1FF,
        "msr_list_size": value >> 25 & 7,
        "vmx_misc_bit29": bool(value >> 29 & 1),
        "zero_length_injection": bool(value >> 30 & 1),
    }


def _one(name: str, mask: int = (1 << 64) - 1) -> Callable[[int], dict[str, object]]:
    return lambda value: {name: value & mask}


_DECODERS: dict[int, Callable[[int], dict[str, object]]] = {
    0x480: _basic,
    0x481: _split("pin", "pin_default1"),
    0x482: _split("proc", "proc_default1"),
    0x483: _split("exit", "exit_default1"),
    0x484: _split("entry", "entry_default1"),
    0x485: _misc,
    0x486: _one("cr0_fixed0", _U32),
    0x487: _one("cr0_fixed1", _U32),
    0x488: _one("cr4_fixed0", _U32),
    0x489: _one("cr4_fixed1", _U32),
    0x48A: lambda value: {},  # derived from the field table and the other capabilities
    0x48B: lambda value: {
        "secondary_allowed1": value >> 32,
        "vmcs_shadowing": bool(value >> 32 & _SECONDARY_VMCS_SHADOWING),
    },
    0x48C: _one("ept_vpid_cap"),
    0x48D: lambda value: {"true_pin_default1": value & _U32, "pin_allowed1": value >> 32},
    0x48E: lambda value: {"true_proc_default1": value & _U32, "proc_allowed1": value >> 32},
    0x48F: lambda value: {"true_exit_default1": value & _U32, "exit_allowed1": value >> 32},
    0x490: lambda value: {"true_entry_default1": value & _U32, "entry_allowed1": value >> 32},
    0x491: _one("vmfunc"),
    0x492: _one("tertiary_allowed1"),
    0x493: _one("exit2_allowed1"),
}


def _secondary(bit: int) -> Callable[[Capabilities], bool]:
    return lambda c: bool(c.proc_allowed1 >> 31 & 1 and c.secondary_allowed1 >> bit & 1)


def _tertiary(bit: int) -> Callable[[Capabilities], bool]:
    return lambda c: bool(c.proc_allowed1 >> 17 & 1 and c.tertiary_allowed1 >> bit & 1)


def _bit(name: str, bit: int) -> Callable[[Capabilities], bool]:
    return lambda c: bool(getattr(c, name) >> bit & 1)


FEATURES: dict[str, Callable[[Capabilities], bool]] = {
    # pin-based (SDM table 25-5)
    "posted_interrupts": _bit("pin_allowed1", 7),
    "preemption_timer": _bit("pin_allowed1", 6),
    # primary processor-based (table 25-6)
    "tpr_shadow": _bit("proc_allowed1", 21),
    "tertiary_controls": _bit("proc_allowed1", 17),
    # secondary processor-based (table 25-7)
    "virtualize_apic_accesses": _secondary(0),
    "ept": _secondary(1),
    "vpid": _secondary(5),
    "virtual_interrupt_delivery": _secondary(9),
    "pause_loop_exiting": _secondary(10),
    "vm_functions": _secondary(13),
    "vmcs_shadowing": _secondary(14),
    "encls_exiting": _secondary(15),
    "pml": _secondary(17),
    "ept_violation_ve": _secondary(18),
    "xsaves": _secondary(20),
    "pasid_translation": _secondary(21),
    "sub_page_write_permissions": _secondary(23),
    "tsc_scaling": _secondary(25),
    "pconfig": _secondary(27),
    "enclv_exiting": _secondary(28),
    "instruction_timeout": _secondary(31),
    # tertiary processor-based (table 25-8)
    "hlat": _tertiary(1),
    "ipi_virtualization": _tertiary(4),
    "virtualize_spec_ctrl": _tertiary(7),
    # VM-exit controls (tables 25-13, 25-14)
    "secondary_exit_controls": _bit("exit_allowed1", 31),
    "exit_load_perf_global_ctrl": _bit("exit_allowed1", 12),
    "exit_load_cet": _bit("exit_allowed1", 28),
    "exit_load_pkrs": _bit("exit_allowed1", 29),
    "exit_save_perf_global_ctrl": _bit("exit_allowed1", 30),
    # VM-entry controls (table 25-15)
    "entry_load_perf_global_ctrl": _bit("entry_allowed1", 13),
    "entry_load_bndcfgs": _bit("entry_allowed1", 16),
    "entry_load_rtit_ctl": _bit("entry_allowed1", 18),
    "entry_load_uinv": _bit("entry_allowed1", 19),
    "entry_load_cet": _bit("entry_allowed1", 20),
    "entry_load_lbr_ctl": _bit("entry_allowed1", 21),
    "entry_load_pkrs": _bit("entry_allowed1", 22),
    # VM functions (SDM A.11)
    "eptp_switching": lambda c: bool(c.vmfunc & 1) and _secondary(13)(c),
    # IA32_VMX_MISC bits (SDM A.6)
    "smm": lambda c: True,
}
"""What makes a VMCS field exist: a feature name -> the capability bit(s) that offer it."""


DEFAULT_CAPABILITIES = Capabilities()
