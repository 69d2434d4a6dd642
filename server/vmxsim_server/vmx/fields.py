"""The VMCS field table: every component of Intel SDM Vol. 3 Appendix B, and what derives from it.

This table is vmxsim's X-macro (compare Linux ``arch/x86/kvm/vmx/vmcs_shadow_fields.h`` and the
seed's ``VMCS_COMPS`` list in intel/haxm PR #130 ``core/include/vmx.h``): lookups, bit positions,
validation, CLI listings and cache masks are computed from it, never typed a second time.

Sources:
- Encodings and groups: Intel SDM Vol. 3D, Appendix B "Field Encoding in VMCS" (tables B-1 .. B-14)
  and section 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields" (bit layout below).
- Names: Linux ``arch/x86/include/asm/vmx.h`` ``enum vmcs_field``. Components that Linux does not
  name carry the SDM's name in the same style (EPTP_INDEX, IO_RCX, IO_RSI, IO_RDI, IO_RIP,
  GUEST_SMBASE, VE_INFORMATION_ADDRESS, EXECUTIVE_VMCS_POINTER, HLAT_PREFIX_SIZE, SPPTP, HLATP,
  LOW/HIGH_PASID_DIRECTORY_ADDRESS, SHARED_EPT_POINTER, PCONFIG_EXITING_BITMAP,
  IA32_SPEC_CTRL_MASK/SHADOW). NOTIFY_WINDOW is the SDM's "instruction-timeout control".
- The FRED fields (guest/host IA32_FRED_*, injected- and original-event data) follow Intel's
  FRED specification and Linux's FRED patches to ``vmx.h`` (GUEST_IA32_FRED_CONFIG 0x281A ...).
- ``feature``: the control whose 1-setting makes the field exist (SDM 25.6-25.9 "exists only on
  processors that support the 1-setting of ..."); names of ``capabilities.FEATURES``, several
  joined by ``|`` when any one suffices. VMREAD/VMWRITE of a field the vCPU's capabilities do
  not offer fail with VMfailValid(12) ("unsupported VMCS component").

Encoding bit layout (SDM 25.11.2, table 25-21):
  bit 0       access type: 0 full, 1 high (only for 64-bit fields; reads/writes bits 63:32)
  bits 9:1    index
  bits 11:10  type: 0 control, 1 VM-exit information (read-only data), 2 guest state, 3 host state
  bit 12      reserved, 0
  bits 14:13  width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width
  bits 31:15  reserved, 0

Invariants (pinned by tests/test_fields.py):
- every row's encoding agrees with the width and type of the group it is declared in;
- names and encodings are unique; access bit 0 is clear in every declared row;
- each 64-bit field also exists as ``NAME_HIGH`` with ``encoding | 1`` (derived, not declared).
Natural width is 64 bits: vmxsim models an x86-64 host (IA32_VMX_BASIC[48] = 0).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .capabilities import Capabilities

__all__ = [
    "ALL_FIELDS",
    "BY_BIT",
    "BY_ENCODING",
    "BY_NAME",
    "FIELDS",
    "Access",
    "DecodedEncoding",
    "Field",
    "Kind",
    "Width",
    "decode_encoding",
    "kind_mask",
    "lookup",
    "mask_of",
    "max_index",
]


class Width(enum.Enum):
    """Field width; the value is the encoding's bits 14:13."""

    BITS16 = 0
    BITS64 = 1
    BITS32 = 2
    NATURAL = 3

    @property
    def bits(self) -> int:
        """Bits a VMWRITE keeps (natural width is 64 bits on x86-64)."""
        return _WIDTH_BITS[self]

    @property
    def label(self) -> str:
        """The name used in listings: 16, 32, 64 or natural."""
        return _WIDTH_LABEL[self]


_WIDTH_BITS = {Width.BITS16: 16, Width.BITS32: 32, Width.BITS64: 64, Width.NATURAL: 64}
_WIDTH_LABEL = {
    Width.BITS16: "16",
    Width.BITS32: "32",
    Width.BITS64: "64",
    Width.NATURAL: "natural",
}


class Kind(enum.Enum):
    """Field type; the value is the encoding's bits 11:10."""

    CONTROL = 0
    READ_ONLY = 1
    GUEST = 2
    HOST = 3

    @property
    def label(self) -> str:
        """The name used in listings: control, read-only, guest or host."""
        return _KIND_LABEL[self]


_KIND_LABEL = {
    Kind.CONTROL: "control",
    Kind.READ_ONLY: "read-only",
    Kind.GUEST: "guest",
    Kind.HOST: "host",
}


class Access(enum.Enum):
    """Access type; the value is the encoding's bit 0."""

    FULL = 0
    HIGH = 1

    @property
    def label(self) -> str:
        """The name used in listings: full or high."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Field:
    """One VMCS component: a declared row, or the derived high half of a 64-bit row.

    ``bit`` is the component's position in the cache's valid/dirty bitmasks (high halves share
    the bit of their full field, because they alias the same storage). ``feature`` names what
    makes it exist (None: every VMX processor has it).
    """

    name: str
    encoding: int
    width: Width
    kind: Kind
    access: Access = Access.FULL
    bit: int = -1
    feature: str | None = None

    @property
    def index(self) -> int:
        """Bits 9:1 of the encoding."""
        return (self.encoding >> 1) & 0x1FF

    @property
    def mask(self) -> int:
        """The value mask a VMWRITE truncates to (32 bits for a high half)."""
        if self.access is Access.HIGH:
            return 0xFFFF_FFFF
        return (1 << self.width.bits) - 1

    @property
    def full_name(self) -> str:
        """The name of the storage this encoding accesses (without ``_HIGH``)."""
        return self.name.removesuffix("_HIGH") if self.access is Access.HIGH else self.name


@dataclass(frozen=True, slots=True)
class DecodedEncoding:
    """The bit fields of a 32-bit encoding, whether or not a component exists there."""

    encoding: int
    access: Access
    index: int
    kind: Kind
    width: Width
    reserved_bits_set: bool

    @property
    def well_formed(self) -> bool:
        """True when no reserved bit is set and the high access applies to a 64-bit width."""
        return not self.reserved_bits_set and (
            self.access is Access.FULL or self.width is Width.BITS64
        )


def decode_encoding(encoding: int) -> DecodedEncoding:
    """Split an encoding into its SDM bit fields (table 25-21)."""
    if not 0 <= encoding <= 0xFFFF_FFFF:
        raise ValueError(f"encoding {encoding:#x} does not fit 32 bits")
    return DecodedEncoding(
        encoding=encoding,
        access=Access(encoding & 1),
        index=(encoding >> 1) & 0x1FF,
        kind=Kind((encoding >> 10) & 3),
        width=Width((encoding >> 13) & 3),
        reserved_bits_set=bool(encoding & 0xFFFF_9000),
    )


def _group(width: Width, kind: Kind, *rows: tuple[str, int] | tuple[str, int, str]) -> list[Field]:
    return [
        Field(row[0], row[1], width, kind, feature=row[2] if len(row) == 3 else None)
        for row in rows
    ]


_W16, _W32, _W64, _WN = Width.BITS16, Width.BITS32, Width.BITS64, Width.NATURAL
_C, _R, _G, _H = Kind.CONTROL, Kind.READ_ONLY, Kind.GUEST, Kind.HOST

_DECLARED: list[Field] = [
    # 16-bit control fields (SDM B.1.1)
    *_group(_W16, _C,
        ("VIRTUAL_PROCESSOR_ID", 0x0000, "vpid"),
        ("POSTED_INTR_NV", 0x0002, "posted_interrupts"),
        ("EPTP_INDEX", 0x0004, "ept_violation_ve"),
        ("HLAT_PREFIX_SIZE", 0x0006, "hlat"),
        ("LAST_PID_POINTER_INDEX", 0x0008, "ipi_virtualization")),
    # 16-bit guest-state fields (SDM B.1.2)
    *_group(_W16, _G,
        ("GUEST_ES_SELECTOR", 0x0800), ("GUEST_CS_SELECTOR", 0x0802),
        ("GUEST_SS_SELECTOR", 0x0804), ("GUEST_DS_SELECTOR", 0x0806),
        ("GUEST_FS_SELECTOR", 0x0808), ("GUEST_GS_SELECTOR", 0x080A),
        ("GUEST_LDTR_SELECTOR", 0x080C), ("GUEST_TR_SELECTOR", 0x080E),
        ("GUEST_INTR_STATUS", 0x0810, "virtual_interrupt_delivery"),
        ("GUEST_PML_INDEX", 0x0812, "pml"),
        ("GUEST_UINV", 0x0814, "entry_load_uinv|exit_clear_uinv")),
    # 16-bit host-state fields (SDM B.1.3)
    *_group(_W16, _H,
        ("HOST_ES_SELECTOR", 0x0C00), ("HOST_CS_SELECTOR", 0x0C02), ("HOST_SS_SELECTOR", 0x0C04),
        ("HOST_DS_SELECTOR", 0x0C06), ("HOST_FS_SELECTOR", 0x0C08), ("HOST_GS_SELECTOR", 0x0C0A),
        ("HOST_TR_SELECTOR", 0x0C0C)),
    # 64-bit control fields (SDM B.2.1)
    *_group(_W64, _C,
        ("IO_BITMAP_A", 0x2000), ("IO_BITMAP_B", 0x2002), ("MSR_BITMAP", 0x2004),
        ("VM_EXIT_MSR_STORE_ADDR", 0x2006), ("VM_EXIT_MSR_LOAD_ADDR", 0x2008),
        ("VM_ENTRY_MSR_LOAD_ADDR", 0x200A), ("EXECUTIVE_VMCS_POINTER", 0x200C),
        ("PML_ADDRESS", 0x200E, "pml"),
        ("TSC_OFFSET", 0x2010),
        ("VIRTUAL_APIC_PAGE_ADDR", 0x2012, "tpr_shadow"),
        ("APIC_ACCESS_ADDR", 0x2014, "virtualize_apic_accesses"),
        ("POSTED_INTR_DESC_ADDR", 0x2016, "posted_interrupts"),
        ("VM_FUNCTION_CONTROL", 0x2018, "vm_functions"), ("EPT_POINTER", 0x201A, "ept"),
        ("EOI_EXIT_BITMAP0", 0x201C, "virtual_interrupt_delivery"),
        ("EOI_EXIT_BITMAP1", 0x201E, "virtual_interrupt_delivery"),
        ("EOI_EXIT_BITMAP2", 0x2020, "virtual_interrupt_delivery"),
        ("EOI_EXIT_BITMAP3", 0x2022, "virtual_interrupt_delivery"),
        ("EPTP_LIST_ADDRESS", 0x2024, "eptp_switching"),
        ("VMREAD_BITMAP", 0x2026, "vmcs_shadowing"), ("VMWRITE_BITMAP", 0x2028, "vmcs_shadowing"),
        ("VE_INFORMATION_ADDRESS", 0x202A, "ept_violation_ve"),
        ("XSS_EXIT_BITMAP", 0x202C, "xsaves"),
        ("ENCLS_EXITING_BITMAP", 0x202E, "encls_exiting"),
        ("SPPTP", 0x2030, "sub_page_write_permissions"),
        ("TSC_MULTIPLIER", 0x2032, "tsc_scaling"),
        ("TERTIARY_VM_EXEC_CONTROL", 0x2034, "tertiary_controls"),
        ("ENCLV_EXITING_BITMAP", 0x2036, "enclv_exiting"),
        ("LOW_PASID_DIRECTORY_ADDRESS", 0x2038, "pasid_translation"),
        ("HIGH_PASID_DIRECTORY_ADDRESS", 0x203A, "pasid_translation"),
        # The shared-EPT pointer serves Intel TDX (SEAM), which vmxsim does not model; it exists
        # here with EPT so that a dump showing it loads.
        ("SHARED_EPT_POINTER", 0x203C, "ept"),
        ("PCONFIG_EXITING_BITMAP", 0x203E, "pconfig"),
        ("HLATP", 0x2040, "hlat"),
        ("PID_POINTER_TABLE", 0x2042, "ipi_virtualization"),
        ("SECONDARY_VM_EXIT_CONTROLS", 0x2044, "secondary_exit_controls"),
        ("IA32_SPEC_CTRL_MASK", 0x204A, "virtualize_spec_ctrl"),
        ("IA32_SPEC_CTRL_SHADOW", 0x204C, "virtualize_spec_ctrl"),
        ("INJECTED_EVENT_DATA", 0x2052, "entry_load_fred")),
    # 64-bit read-only data field (SDM B.2.2)
    *_group(_W64, _R, ("GUEST_PHYSICAL_ADDRESS", 0x2400),
        ("ORIGINAL_EVENT_DATA", 0x2404, "entry_load_fred|exit_load_fred")),
    # 64-bit guest-state fields (SDM B.2.3)
    *_group(_W64, _G,
        ("VMCS_LINK_POINTER", 0x2800), ("GUEST_IA32_DEBUGCTL", 0x2802),
        ("GUEST_IA32_PAT", 0x2804, "entry_load_pat|exit_save_pat"),
        ("GUEST_IA32_EFER", 0x2806, "entry_load_efer|exit_save_efer"),
        ("GUEST_IA32_PERF_GLOBAL_CTRL", 0x2808,
         "entry_load_perf_global_ctrl|exit_save_perf_global_ctrl"),
        ("GUEST_PDPTR0", 0x280A, "ept"),
        ("GUEST_PDPTR1", 0x280C, "ept"),
        ("GUEST_PDPTR2", 0x280E, "ept"),
        ("GUEST_PDPTR3", 0x2810, "ept"),
        ("GUEST_BNDCFGS", 0x2812, "entry_load_bndcfgs|exit_clear_bndcfgs"),
        ("GUEST_IA32_RTIT_CTL", 0x2814, "entry_load_rtit_ctl|exit_clear_rtit_ctl"),
        ("GUEST_IA32_LBR_CTL", 0x2816, "entry_load_lbr_ctl|exit_clear_lbr_ctl"),
        ("GUEST_IA32_PKRS", 0x2818, "entry_load_pkrs"),
        ("GUEST_IA32_FRED_CONFIG", 0x281A, "entry_load_fred"),
        ("GUEST_IA32_FRED_RSP1", 0x281C, "entry_load_fred"),
        ("GUEST_IA32_FRED_RSP2", 0x281E, "entry_load_fred"),
        ("GUEST_IA32_FRED_RSP3", 0x2820, "entry_load_fred"),
        ("GUEST_IA32_FRED_STKLVLS", 0x2822, "entry_load_fred"),
        ("GUEST_IA32_FRED_SSP1", 0x2824, "entry_load_fred"),
        ("GUEST_IA32_FRED_SSP2", 0x2826, "entry_load_fred"),
        ("GUEST_IA32_FRED_SSP3", 0x2828, "entry_load_fred")),
    # 64-bit host-state fields (SDM B.2.4)
    *_group(_W64, _H,
        ("HOST_IA32_PAT", 0x2C00, "exit_load_pat"), ("HOST_IA32_EFER", 0x2C02, "exit_load_efer"),
        ("HOST_IA32_PERF_GLOBAL_CTRL", 0x2C04, "exit_load_perf_global_ctrl"),
        ("HOST_IA32_PKRS", 0x2C06, "exit_load_pkrs"),
        ("HOST_IA32_FRED_CONFIG", 0x2C08, "exit_load_fred"),
        ("HOST_IA32_FRED_RSP1", 0x2C0A, "exit_load_fred"),
        ("HOST_IA32_FRED_RSP2", 0x2C0C, "exit_load_fred"),
        ("HOST_IA32_FRED_RSP3", 0x2C0E, "exit_load_fred"),
        ("HOST_IA32_FRED_STKLVLS", 0x2C10, "exit_load_fred"),
        ("HOST_IA32_FRED_SSP1", 0x2C12, "exit_load_fred"),
        ("HOST_IA32_FRED_SSP2", 0x2C14, "exit_load_fred"),
        ("HOST_IA32_FRED_SSP3", 0x2C16, "exit_load_fred")),
    # 32-bit control fields (SDM B.3.1)
    *_group(_W32, _C,
        ("PIN_BASED_VM_EXEC_CONTROL", 0x4000), ("CPU_BASED_VM_EXEC_CONTROL", 0x4002),
        ("EXCEPTION_BITMAP", 0x4004), ("PAGE_FAULT_ERROR_CODE_MASK", 0x4006),
        ("PAGE_FAULT_ERROR_CODE_MATCH", 0x4008), ("CR3_TARGET_COUNT", 0x400A),
        ("VM_EXIT_CONTROLS", 0x400C), ("VM_EXIT_MSR_STORE_COUNT", 0x400E),
        ("VM_EXIT_MSR_LOAD_COUNT", 0x4010), ("VM_ENTRY_CONTROLS", 0x4012),
        ("VM_ENTRY_MSR_LOAD_COUNT", 0x4014), ("VM_ENTRY_INTR_INFO_FIELD", 0x4016),
        ("VM_ENTRY_EXCEPTION_ERROR_CODE", 0x4018), ("VM_ENTRY_INSTRUCTION_LEN", 0x401A),
        ("TPR_THRESHOLD", 0x401C, "tpr_shadow"), ("SECONDARY_VM_EXEC_CONTROL", 0x401E),
        ("PLE_GAP", 0x4020, "pause_loop_exiting"),
        ("PLE_WINDOW", 0x4022, "pause_loop_exiting"),
        ("NOTIFY_WINDOW", 0x4024, "instruction_timeout")),
    # 32-bit read-only data fields (SDM B.3.2)
    *_group(_W32, _R,
        ("VM_INSTRUCTION_ERROR", 0x4400), ("VM_EXIT_REASON", 0x4402),
        ("VM_EXIT_INTR_INFO", 0x4404), ("VM_EXIT_INTR_ERROR_CODE", 0x4406),
        ("IDT_VECTORING_INFO_FIELD", 0x4408), ("IDT_VECTORING_ERROR_CODE", 0x440A),
        ("VM_EXIT_INSTRUCTION_LEN", 0x440C), ("VMX_INSTRUCTION_INFO", 0x440E)),
    # 32-bit guest-state fields (SDM B.3.3)
    *_group(_W32, _G,
        ("GUEST_ES_LIMIT", 0x4800), ("GUEST_CS_LIMIT", 0x4802), ("GUEST_SS_LIMIT", 0x4804),
        ("GUEST_DS_LIMIT", 0x4806), ("GUEST_FS_LIMIT", 0x4808), ("GUEST_GS_LIMIT", 0x480A),
        ("GUEST_LDTR_LIMIT", 0x480C), ("GUEST_TR_LIMIT", 0x480E),
        ("GUEST_GDTR_LIMIT", 0x4810), ("GUEST_IDTR_LIMIT", 0x4812),
        ("GUEST_ES_AR_BYTES", 0x4814), ("GUEST_CS_AR_BYTES", 0x4816),
        ("GUEST_SS_AR_BYTES", 0x4818), ("GUEST_DS_AR_BYTES", 0x481A),
        ("GUEST_FS_AR_BYTES", 0x481C), ("GUEST_GS_AR_BYTES", 0x481E),
        ("GUEST_LDTR_AR_BYTES", 0x4820), ("GUEST_TR_AR_BYTES", 0x4822),
        ("GUEST_INTERRUPTIBILITY_INFO", 0x4824), ("GUEST_ACTIVITY_STATE", 0x4826),
        ("GUEST_SMBASE", 0x4828), ("GUEST_SYSENTER_CS", 0x482A),
        ("VMX_PREEMPTION_TIMER_VALUE", 0x482E, "preemption_timer")),
    # 32-bit host-state field (SDM B.3.4)
    *_group(_W32, _H, ("HOST_IA32_SYSENTER_CS", 0x4C00)),
    # natural-width control fields (SDM B.4.1)
    *_group(_WN, _C,
        ("CR0_GUEST_HOST_MASK", 0x6000), ("CR4_GUEST_HOST_MASK", 0x6002),
        ("CR0_READ_SHADOW", 0x6004), ("CR4_READ_SHADOW", 0x6006),
        ("CR3_TARGET_VALUE0", 0x6008), ("CR3_TARGET_VALUE1", 0x600A),
        ("CR3_TARGET_VALUE2", 0x600C), ("CR3_TARGET_VALUE3", 0x600E)),
    # natural-width read-only data fields (SDM B.4.2)
    *_group(_WN, _R,
        ("EXIT_QUALIFICATION", 0x6400), ("IO_RCX", 0x6402), ("IO_RSI", 0x6404),
        ("IO_RDI", 0x6406), ("IO_RIP", 0x6408), ("GUEST_LINEAR_ADDRESS", 0x640A)),
    # natural-width guest-state fields (SDM B.4.3)
    *_group(_WN, _G,
        ("GUEST_CR0", 0x6800), ("GUEST_CR3", 0x6802), ("GUEST_CR4", 0x6804),
        ("GUEST_ES_BASE", 0x6806), ("GUEST_CS_BASE", 0x6808), ("GUEST_SS_BASE", 0x680A),
        ("GUEST_DS_BASE", 0x680C), ("GUEST_FS_BASE", 0x680E), ("GUEST_GS_BASE", 0x6810),
        ("GUEST_LDTR_BASE", 0x6812), ("GUEST_TR_BASE", 0x6814), ("GUEST_GDTR_BASE", 0x6816),
        ("GUEST_IDTR_BASE", 0x6818), ("GUEST_DR7", 0x681A), ("GUEST_RSP", 0x681C),
        ("GUEST_RIP", 0x681E), ("GUEST_RFLAGS", 0x6820),
        ("GUEST_PENDING_DBG_EXCEPTIONS", 0x6822), ("GUEST_SYSENTER_ESP", 0x6824),
        ("GUEST_SYSENTER_EIP", 0x6826),
        ("GUEST_S_CET", 0x6828, "entry_load_cet"),
        ("GUEST_SSP", 0x682A, "entry_load_cet"),
        ("GUEST_INTR_SSP_TABLE", 0x682C, "entry_load_cet")),
    # natural-width host-state fields (SDM B.4.4)
    *_group(_WN, _H,
        ("HOST_CR0", 0x6C00), ("HOST_CR3", 0x6C02), ("HOST_CR4", 0x6C04),
        ("HOST_FS_BASE", 0x6C06), ("HOST_GS_BASE", 0x6C08), ("HOST_TR_BASE", 0x6C0A),
        ("HOST_GDTR_BASE", 0x6C0C), ("HOST_IDTR_BASE", 0x6C0E),
        ("HOST_IA32_SYSENTER_ESP", 0x6C10), ("HOST_IA32_SYSENTER_EIP", 0x6C12),
        ("HOST_RSP", 0x6C14), ("HOST_RIP", 0x6C16), ("HOST_S_CET", 0x6C18, "exit_load_cet"),
        ("HOST_SSP", 0x6C1A, "exit_load_cet"), ("HOST_INTR_SSP_TABLE", 0x6C1C, "exit_load_cet")),
]  # fmt: skip


def _number(declared: list[Field]) -> tuple[tuple[Field, ...], tuple[Field, ...]]:
    """Give each declared field its mask bit and derive the ``_HIGH`` half of 64-bit fields."""
    fields: list[Field] = []
    every: list[Field] = []
    for bit, row in enumerate(declared):
        full = Field(row.name, row.encoding, row.width, row.kind, Access.FULL, bit, row.feature)
        fields.append(full)
        every.append(full)
        if row.width is Width.BITS64:
            every.append(
                Field(
                    f"{row.name}_HIGH",
                    row.encoding | 1,
                    row.width,
                    row.kind,
                    Access.HIGH,
                    bit,
                    row.feature,
                )
            )
    return tuple(fields), tuple(every)


FIELDS, ALL_FIELDS = _number(_DECLARED)
"""FIELDS: one row per component (bit = position in masks). ALL_FIELDS: plus every _HIGH half."""

BY_NAME: dict[str, Field] = {f.name: f for f in ALL_FIELDS}
BY_ENCODING: dict[int, Field] = {f.encoding: f for f in ALL_FIELDS}
BY_BIT: tuple[Field, ...] = FIELDS


def lookup(key: str | int) -> Field | None:
    """Find a field by name (any case) or by encoding (int, or a string in hex or decimal)."""
    if isinstance(key, int):
        return BY_ENCODING.get(key)
    text = key.strip()
    found = BY_NAME.get(text.upper())
    if found is not None:
        return found
    try:
        return BY_ENCODING.get(int(text, 0))
    except ValueError:
        return None


def mask_of(names: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> int:
    """The bitmask of the named fields' storage (a _HIGH name maps to its full field's bit)."""
    result = 0
    for name in names:
        result |= 1 << BY_NAME[name].bit
    return result


def kind_mask(*kinds: Kind) -> int:
    """The bitmask of every field of the given kinds."""
    return sum(1 << f.bit for f in FIELDS if f.kind in kinds)


def max_index(caps: Capabilities) -> int:
    """The highest index (encoding bits 9:1) of a field these capabilities offer: the value of
    IA32_VMX_VMCS_ENUM bits 9:1 (SDM A.9)."""
    return max(f.index for f in FIELDS if caps.offers(f.feature))
