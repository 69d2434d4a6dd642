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

__all__ = [
    "DEFAULT_CAPABILITIES",
    "EVERY_FEATURE",
    "FEATURES",
    "MSR_NAMES",
    "Capabilities",
    "Feature",
]

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
        """Whether the processor supports ``feature`` (a VMCS field's ``feature``; names joined
        by ``|`` mean any of them)."""
        if feature is None:
            return True
        return any(FEATURES[name].offered(self) for name in feature.split("|"))

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


@dataclass(frozen=True, slots=True)
class Feature:
    """A processor feature that makes VMCS fields exist: the capability bit that offers it."""

    name: str
    msr: str
    bit: int
    control: str

    def offered(self, caps: Capabilities) -> bool:
        """Whether these capabilities allow the control's 1-setting (and the MSR is reachable)."""
        return bool(_ALLOWED[self.msr](caps) >> self.bit & 1)

    @property
    def description(self) -> str:
        """E.g. ``IA32_VMX_PROCBASED_CTLS2 bit 1 (enable EPT)``."""
        return f"{self.msr} bit {self.bit} ({self.control})"


def _reach(bit: int, field_name: str) -> Callable[[Capabilities], int]:
    """An allowed-1 word that is 0 unless the primary control that activates it is allowed."""
    return lambda c: getattr(c, field_name) if c.proc_allowed1 >> bit & 1 else 0


_ALLOWED: dict[str, Callable[[Capabilities], int]] = {
    "IA32_VMX_PINBASED_CTLS": lambda c: c.pin_allowed1,
    "IA32_VMX_PROCBASED_CTLS": lambda c: c.proc_allowed1,
    "IA32_VMX_PROCBASED_CTLS2": _reach(31, "secondary_allowed1"),
    "IA32_VMX_PROCBASED_CTLS3": _reach(17, "tertiary_allowed1"),
    "IA32_VMX_EXIT_CTLS": lambda c: c.exit_allowed1,
    "IA32_VMX_EXIT_CTLS2": lambda c: c.exit2_allowed1 if c.exit_allowed1 >> 31 & 1 else 0,
    "IA32_VMX_ENTRY_CTLS": lambda c: c.entry_allowed1,
    "IA32_VMX_VMFUNC": lambda c: c.vmfunc if _reach(31, "secondary_allowed1")(c) >> 13 & 1 else 0,
    "IA32_VMX_BASIC": lambda c: c.vmx_basic,
}

_PIN, _PROC, _PROC2, _PROC3 = (
    "IA32_VMX_PINBASED_CTLS", "IA32_VMX_PROCBASED_CTLS", "IA32_VMX_PROCBASED_CTLS2",
    "IA32_VMX_PROCBASED_CTLS3",
)  # fmt: skip
_EXIT, _EXIT2, _ENTRY = "IA32_VMX_EXIT_CTLS", "IA32_VMX_EXIT_CTLS2", "IA32_VMX_ENTRY_CTLS"

FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        # pin-based and primary processor-based controls (SDM tables 25-5, 25-6)
        Feature("preemption_timer", _PIN, 6, "activate VMX-preemption timer"),
        Feature("posted_interrupts", _PIN, 7, "process posted interrupts"),
        Feature("tertiary_controls", _PROC, 17, "activate tertiary controls"),
        Feature("tpr_shadow", _PROC, 21, "use TPR shadow"),
        # secondary processor-based controls (table 25-7)
        Feature("virtualize_apic_accesses", _PROC2, 0, "virtualize APIC accesses"),
        Feature("ept", _PROC2, 1, "enable EPT"),
        Feature("vpid", _PROC2, 5, "enable VPID"),
        Feature("virtual_interrupt_delivery", _PROC2, 9, "virtual-interrupt delivery"),
        Feature("pause_loop_exiting", _PROC2, 10, "PAUSE-loop exiting"),
        Feature("vm_functions", _PROC2, 13, "enable VM functions"),
        Feature("vmcs_shadowing", _PROC2, 14, "VMCS shadowing"),
        Feature("encls_exiting", _PROC2, 15, "enable ENCLS exiting"),
        Feature("pml", _PROC2, 17, "enable PML"),
        Feature("ept_violation_ve", _PROC2, 18, "EPT-violation #VE"),
        Feature("xsaves", _PROC2, 20, "enable XSAVES/XRSTORS"),
        Feature("pasid_translation", _PROC2, 21, "PASID translation"),
        Feature("sub_page_write_permissions", _PROC2, 23, "sub-page write permissions for EPT"),
        Feature("tsc_scaling", _PROC2, 25, "use TSC scaling"),
        Feature("pconfig", _PROC2, 27, "enable PCONFIG"),
        Feature("enclv_exiting", _PROC2, 28, "enable ENCLV exiting"),
        Feature("instruction_timeout", _PROC2, 31, "instruction timeout"),
        # tertiary processor-based controls (table 25-8)
        Feature("hlat", _PROC3, 1, "enable HLAT"),
        Feature("ipi_virtualization", _PROC3, 4, "IPI virtualization"),
        Feature("virtualize_spec_ctrl", _PROC3, 7, "virtualize IA32_SPEC_CTRL"),
        # VM-exit controls (tables 25-13, 25-14)
        Feature("exit_load_perf_global_ctrl", _EXIT, 12, "load IA32_PERF_GLOBAL_CTRL"),
        Feature("exit_save_pat", _EXIT, 18, "save IA32_PAT"),
        Feature("exit_load_pat", _EXIT, 19, "load IA32_PAT"),
        Feature("exit_save_efer", _EXIT, 20, "save IA32_EFER"),
        Feature("exit_load_efer", _EXIT, 21, "load IA32_EFER"),
        Feature("exit_clear_bndcfgs", _EXIT, 23, "clear IA32_BNDCFGS"),
        Feature("exit_clear_rtit_ctl", _EXIT, 25, "clear IA32_RTIT_CTL"),
        Feature("exit_clear_lbr_ctl", _EXIT, 26, "clear IA32_LBR_CTL"),
        Feature("exit_clear_uinv", _EXIT, 27, "clear UINV"),
        Feature("exit_load_cet", _EXIT, 28, "load CET state"),
        Feature("exit_load_pkrs", _EXIT, 29, "load PKRS"),
        Feature("exit_save_perf_global_ctrl", _EXIT, 30, "save IA32_PERF_GLOBAL_CTL"),
        Feature("secondary_exit_controls", _EXIT, 31, "activate secondary controls"),
        Feature("exit_load_fred", _EXIT2, 1, "load FRED"),
        # VM-entry controls (table 25-15)
        Feature("entry_load_perf_global_ctrl", _ENTRY, 13, "load IA32_PERF_GLOBAL_CTRL"),
        Feature("entry_load_pat", _ENTRY, 14, "load IA32_PAT"),
        Feature("entry_load_efer", _ENTRY, 15, "load IA32_EFER"),
        Feature("entry_load_bndcfgs", _ENTRY, 16, "load IA32_BNDCFGS"),
        Feature("entry_load_rtit_ctl", _ENTRY, 18, "load IA32_RTIT_CTL"),
        Feature("entry_load_uinv", _ENTRY, 19, "load UINV"),
        Feature("entry_load_cet", _ENTRY, 20, "load CET state"),
        Feature("entry_load_lbr_ctl", _ENTRY, 21, "load guest IA32_LBR_CTL"),
        Feature("entry_load_pkrs", _ENTRY, 22, "load PKRS"),
        Feature("entry_load_fred", _ENTRY, 23, "load FRED"),
        # VM functions (SDM A.11)
        Feature("eptp_switching", "IA32_VMX_VMFUNC", 0, "EPTP switching"),
    )
}
"""Features that make VMCS fields exist (SDM 25.6-25.9: a field "exists only on processors that
support the 1-setting of" its control). A field's ``feature`` names one, or several joined by
``|`` (the field exists when any of them is offered)."""


DEFAULT_CAPABILITIES = Capabilities()

EVERY_FEATURE = Capabilities(
    vmcs_shadowing=True,
    proc_allowed1=0xFFFF_FFFE,
    secondary_allowed1=0xFFFF_FFFF,
    tertiary_allowed1=0xFF,
    exit_allowed1=0xFFFF_FFFF,
    exit2_allowed1=0xF,
    entry_allowed1=0x00FF_FFFF,
)
"""Capabilities that offer every control with a VMCS field (every field exists)."""
