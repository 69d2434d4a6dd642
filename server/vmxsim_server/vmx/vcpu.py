"""A vCPU in VMX operation and its VMX instructions, with the outcomes Intel SDM Vol. 3C chapter 31
("VMX Instruction Reference") defines.

Every instruction returns an ``Outcome``; none raises for an architectural condition:
- ``VMsucceed``; ``VMfailInvalid`` when there is no current VMCS; ``VMfailValid(n)`` when there
  is one, after writing n to its VM_INSTRUCTION_ERROR field (SDM 31.2 "Conventions");
- ``fault`` with ``#UD`` (outside VMX operation; VMXON with CR4.VMXE clear) or ``#GP`` (VMXON
  with CR0/CR4 outside their fixed bits or IA32_FEATURE_CONTROL not enabling VMX);
- ``entry-failed``: VMLAUNCH/VMRESUME passed the control and host checks but not the guest
  checks, and came back as a VM exit with reason 33 | bit 31 (SDM 27.8);
- ``vm-exit``: the instruction ran in VMX non-root operation (the guest executed it) and caused
  a VM exit with its own basic reason (SDM 26.1.2).
Python exceptions (``exceptions.InvalidArgument``) are for operands that no register could hold
(negative, wider than 64 bits). CPL is always 0: vmxsim models the hypervisor's own code.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .capabilities import DEFAULT_CAPABILITIES, Capabilities
from .entry_checks import CHECKS, Failure, UnknownField, evaluate
from .entry_checks.incremental import PassedState
from .exceptions import InvalidArgument, StateError
from .exit_reasons import lookup_reason
from .fields import ALL_FIELDS, BY_ENCODING, BY_NAME, Field, Kind
from .memory import PhysicalMemory
from .records import ExitRecord
from .vmcs import LaunchState, VmcsRegion

__all__ = ["INVALID_POINTER", "Mode", "Outcome", "Result", "Vcpu", "write_exit_information"]

INVALID_POINTER = 0xFFFF_FFFF_FFFF_FFFF
"""The current-VMCS pointer when no VMCS is current (SDM 25.1)."""

IA32_FEATURE_CONTROL = 0x3A
_U64 = (1 << 64) - 1


class Mode(enum.Enum):
    """Where the vCPU is: outside VMX operation, in VMX root or in VMX non-root operation."""

    OFF = "off"
    ROOT = "root"
    NON_ROOT = "non-root"


class Result(enum.Enum):
    """The architectural result of one instruction; values are the ``--json`` spellings."""

    VMSUCCEED = "VMsucceed"
    VMFAIL_INVALID = "VMfailInvalid"
    VMFAIL_VALID = "VMfailValid"
    FAULT = "fault"
    ENTRY_FAILED = "entry-failed"
    VM_EXIT = "vm-exit"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one instruction did. Optional members are set only where they apply."""

    result: Result
    error: int | None = None
    fault: str | None = None
    value: int | None = None
    exit_reason: int | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """True for VMsucceed."""
        return self.result is Result.VMSUCCEED


SUCCEED = Outcome(Result.VMSUCCEED)
_UD = Outcome(Result.FAULT, fault="#UD")

_EXIT_INFO = (
    BY_NAME["VM_EXIT_REASON"].bit,
    BY_NAME["EXIT_QUALIFICATION"].bit,
    BY_NAME["VM_EXIT_INTR_INFO"].bit,
    BY_NAME["VM_EXIT_INTR_ERROR_CODE"].bit,
    BY_NAME["VM_EXIT_INSTRUCTION_LEN"].bit,
    BY_NAME["IDT_VECTORING_INFO_FIELD"].bit,
    BY_NAME["GUEST_RIP"].bit,
    BY_NAME["GUEST_PHYSICAL_ADDRESS"].bit,
)
_EPT_REASONS = frozenset((48, 49))
_FIELD_BITS = {f.name: f.bit for f in ALL_FIELDS}


def write_exit_information(values: list[int], record: ExitRecord) -> None:
    """The processor's side of a VM exit: store the record's exit information in the VMCS.

    VM_EXIT_REASON, EXIT_QUALIFICATION, VM_EXIT_INTR_INFO, VM_EXIT_INTR_ERROR_CODE,
    VM_EXIT_INSTRUCTION_LEN, IDT_VECTORING_INFO_FIELD, GUEST_RIP (when the record has one), and
    GUEST_PHYSICAL_ADDRESS for EPT violations and misconfigurations (SDM 28.2).
    """
    reason, qual, intr, err, length, idt, rip, gpa = _EXIT_INFO
    values[reason] = record.reason & 0xFFFF_FFFF
    values[qual] = record.qualification & _U64
    values[intr] = record.intr_info & 0xFFFF_FFFF
    values[err] = record.error_code & 0xFFFF_FFFF
    values[length] = record.instruction_len & 0xFFFF_FFFF
    values[idt] = record.info2 & 0xFFFF_FFFF
    if record.rip:
        values[rip] = record.rip & _U64
    if record.reason & 0xFFFF in _EPT_REASONS:
        values[gpa] = record.guest_physical_address & _U64


def _operand(value: int, what: str) -> int:
    if not 0 <= value <= _U64:
        raise InvalidArgument(f"{what} {value:#x} does not fit 64 bits")
    return value


class Vcpu:
    """One logical processor with VMX: its root-mode state, VMXON region and current VMCS."""

    def __init__(
        self,
        memory: PhysicalMemory | None = None,
        capabilities: Capabilities = DEFAULT_CAPABILITIES,
    ) -> None:
        self.capabilities = capabilities
        self.memory = memory if memory is not None else PhysicalMemory(capabilities.maxphyaddr)
        self.mode = Mode.OFF
        self.cr0 = 0x8005_0033
        self.cr4 = 0x0000_2020 | capabilities.cr4_fixed0
        self.msrs: dict[int, int] = {IA32_FEATURE_CONTROL: capabilities.feature_control}
        self.vmxon_pointer: int | None = None
        self.current_pointer = INVALID_POINTER
        self.current: VmcsRegion | None = None
        self.vmxon_epoch = 0
        self.mov_ss_blocking = False
        self._passed: dict[int, PassedState] = {}
        """Per VMCS address: its values when it last passed every entry check (incremental)."""
        """True while the next instruction follows MOV SS / POP SS (VM entry fails with 26)."""

    # --- helpers -------------------------------------------------------------------------------

    def _fail(self, number: int, message: str | None = None) -> Outcome:
        """VMfail(n): VMfailInvalid without a current VMCS, else VMfailValid(n) (SDM 31.2)."""
        if self.current is None:
            return Outcome(Result.VMFAIL_INVALID, message=message)
        self.current.values[BY_NAME["VM_INSTRUCTION_ERROR"].bit] = number
        return Outcome(Result.VMFAIL_VALID, error=number, message=message)

    def _guest_executes(self, reason_name: str) -> Outcome:
        """A VMX instruction in non-root operation causes a VM exit (SDM 26.1.2)."""
        reason = lookup_reason(reason_name)
        assert reason is not None
        self.vm_exit(ExitRecord(reason=reason.number))
        return Outcome(Result.VM_EXIT, exit_reason=reason.number)

    def _bad_address(self, address: int) -> bool:
        return address % 4096 != 0 or address >= self.capabilities.physical_address_limit

    def _region_revision_ok(self, address: int) -> bool:
        word = self.memory.read32(address)
        shadow = word >> 31
        return (word & 0x7FFF_FFFF) == self.capabilities.revision_id and (
            not shadow or self.capabilities.vmcs_shadowing
        )

    def _field(self, encoding: int) -> Field | None:
        field = BY_ENCODING.get(encoding)
        if field is None:
            return None
        if not self.capabilities.offers(field.feature):
            return None
        return field

    # --- root-mode environment (what a hypervisor sets up before VMXON) ------------------------

    def set_cr0(self, value: int) -> None:
        """Set CR0 (the pseudo-op ``CR0``)."""
        self.cr0 = _operand(value, "CR0 value")

    def set_cr4(self, value: int) -> None:
        """Set CR4 (the pseudo-op ``CR4``)."""
        self.cr4 = _operand(value, "CR4 value")

    def wrmsr(self, index: int, value: int) -> None:
        """Write an MSR (the pseudo-op ``WRMSR``); IA32_FEATURE_CONTROL is what VMXON checks."""
        if not 0 <= index <= 0xFFFF_FFFF:
            raise InvalidArgument(f"MSR index {index:#x} does not fit 32 bits")
        self.msrs[index] = _operand(value, "MSR value")

    # --- VMX instructions ---------------------------------------------------------------------

    def vmxon(self, address: int) -> Outcome:
        """VMXON: enter VMX root operation with the VMXON region at ``address``."""
        _operand(address, "VMXON pointer")
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMON")
        if self.mode is Mode.ROOT:
            return self._fail(15)
        if not self.cr4 & 0x2000:
            return Outcome(Result.FAULT, fault="#UD", message="CR4.VMXE is clear")
        caps = self.capabilities
        if (
            self.cr0 & caps.cr0_fixed0 != caps.cr0_fixed0
            or self.cr4 & caps.cr4_fixed0 != caps.cr4_fixed0
        ):
            return Outcome(Result.FAULT, fault="#GP", message="CR0/CR4 outside the VMX fixed bits")
        control = self.msrs.get(IA32_FEATURE_CONTROL, 0)
        if control & 0x5 != 0x5:
            return Outcome(
                Result.FAULT,
                fault="#GP",
                message="IA32_FEATURE_CONTROL is not locked with VMX outside SMX",
            )
        if self._bad_address(address):
            return Outcome(
                Result.VMFAIL_INVALID,
                message="VMXON pointer not 4 KiB aligned or beyond MAXPHYADDR",
            )
        if not self._region_revision_ok(address):
            return Outcome(
                Result.VMFAIL_INVALID, message="VMXON region has the wrong revision identifier"
            )
        self.mode = Mode.ROOT
        self.vmxon_pointer = address
        self.current_pointer = INVALID_POINTER
        self.current = None
        self.vmxon_epoch += 1
        return SUCCEED

    def vmxoff(self) -> Outcome:
        """VMXOFF: leave VMX operation (the current VMCS is not written back; SDM 31.3)."""
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMOFF")
        self.mode = Mode.OFF
        self.vmxon_pointer = None
        self.current_pointer = INVALID_POINTER
        self.current = None
        return SUCCEED

    def vmclear(self, address: int) -> Outcome:
        """VMCLEAR: make the VMCS at ``address`` clear (and not current if it was)."""
        _operand(address, "VMCS pointer")
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMCLEAR")
        if self._bad_address(address):
            return self._fail(2)
        if address == self.vmxon_pointer:
            return self._fail(3)
        region = self.memory.region(address)
        region.launch_state = LaunchState.CLEAR
        if address == self.current_pointer:
            self.current_pointer = INVALID_POINTER
            self.current = None
        return SUCCEED

    def vmptrld(self, address: int) -> Outcome:
        """VMPTRLD: make the VMCS at ``address`` current."""
        _operand(address, "VMCS pointer")
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMPTRLD")
        if self._bad_address(address):
            return self._fail(9)
        if address == self.vmxon_pointer:
            return self._fail(10)
        if not self._region_revision_ok(address):
            return self._fail(11)
        self.current_pointer = address
        self.current = self.memory.region(address)
        return SUCCEED

    def vmptrst(self) -> Outcome:
        """VMPTRST: the current-VMCS pointer (FFFFFFFF_FFFFFFFFH when none)."""
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMPTRST")
        return Outcome(Result.VMSUCCEED, value=self.current_pointer)

    def vmread(self, encoding: int) -> Outcome:
        """VMREAD: the value of the component ``encoding`` of the current VMCS."""
        _operand(encoding, "encoding")
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMREAD")
        if self.current is None:
            return Outcome(Result.VMFAIL_INVALID)
        field = self._field(encoding)
        if field is None:
            return self._fail(12)
        return Outcome(Result.VMSUCCEED, value=self.current.read(field))

    def vmwrite(self, encoding: int, value: int) -> Outcome:
        """VMWRITE: store ``value`` (truncated to the width) in component ``encoding``."""
        _operand(encoding, "encoding")
        _operand(value, "value")
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMWRITE")
        if self.current is None:
            return Outcome(Result.VMFAIL_INVALID)
        field = self._field(encoding)
        if field is None:
            return self._fail(12)
        if field.kind is Kind.READ_ONLY and not self.capabilities.vmx_misc_bit29:
            return self._fail(13)
        self.current.write(field, value)
        return SUCCEED

    def vmlaunch(self) -> Outcome:
        """VMLAUNCH: enter the guest with a clear current VMCS."""
        return self._enter(launch=True)

    def vmresume(self) -> Outcome:
        """VMRESUME: re-enter the guest with a launched current VMCS."""
        return self._enter(launch=False)

    def _enter(self, launch: bool) -> Outcome:
        if self.mode is Mode.OFF:
            return _UD
        if self.mode is Mode.NON_ROOT:
            return self._guest_executes("VMLAUNCH" if launch else "VMRESUME")
        region = self.current
        passed = self._passed.get(region.address) if region is not None else None
        checks = passed.checks_for(region.values) if passed and region else CHECKS
        report = evaluate(
            self.entry_values(), self.capabilities, self.memory, launch=launch,
            stop_at_first=True, checks=checks,
        )  # fmt: skip
        if report.failures:
            return self._entry_failed(report.failures[0])
        assert region is not None  # basic.current_vmcs passed
        if passed is None:
            passed = self._passed[region.address] = PassedState(CHECKS)
        passed.record(region.values)
        if launch:
            region.launch_state = LaunchState.LAUNCHED
            region.launch_epoch = self.vmxon_epoch
        self.mode = Mode.NON_ROOT
        return SUCCEED

    def entry_values(self) -> Callable[[str], int]:
        """The ``Values`` accessor the entry checks read: the current VMCS's fields and the
        vCPU state behind the ``@`` pseudo-values (``entry_checks.table``)."""
        region = self.current
        values = region.values if region is not None else [0] * len(_FIELD_BITS)
        launched = region is not None and region.launch_state is LaunchState.LAUNCHED
        pseudo = {
            "@current_vmcs": int(region is not None),
            "@current_vmcs_pointer": self.current_pointer,
            "@shadow_indicator": self.memory.read32(region.address) >> 31 if region else 0,
            "@mov_ss_blocking": int(self.mov_ss_blocking),
            "@launch_state": int(launched),
            "@vmxon_epoch_ok": int(region is not None and region.launch_epoch == self.vmxon_epoch),
        }
        bits = _FIELD_BITS

        def value(name: str) -> int:
            bit = bits.get(name)
            if bit is not None:
                return values[bit]
            found = pseudo.get(name)
            if found is None:
                raise UnknownField(name)
            return found

        return value

    def _entry_failed(self, failure: Failure) -> Outcome:
        """The SDM outcome of the first failing check (its ``outcome`` spelling)."""
        kind, _, number = failure.outcome.partition(" ")
        if kind == "VMfailInvalid":
            return Outcome(Result.VMFAIL_INVALID, message=failure.message)
        if kind == "VMfailValid":
            return self._fail(int(number), failure.message)
        assert self.current is not None
        reason = int(number, 16)
        self.current.values[BY_NAME["VM_EXIT_REASON"].bit] = reason
        self.current.values[BY_NAME["EXIT_QUALIFICATION"].bit] = failure.qualification
        return Outcome(Result.ENTRY_FAILED, exit_reason=reason, message=failure.message)

    # --- the processor's side of a VM exit -----------------------------------------------------

    def vm_exit(self, record: ExitRecord) -> None:
        """Leave the guest: write the exit information and return to VMX root operation."""
        if self.mode is not Mode.NON_ROOT or self.current is None:
            raise StateError("a VM exit needs a running guest (VMLAUNCH or VMRESUME first)")
        write_exit_information(self.current.values, record)
        self.mode = Mode.ROOT
